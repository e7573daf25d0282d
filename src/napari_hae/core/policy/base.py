"""Acquisition functions (policies): small composable objects in the spirit of BoTorch.

Each policy scores every candidate from the model's posterior; the experiment picks the highest-scoring position
that is neither measured nor inside an "avoid" object. Scores are computed on the *standardized* target
(z-scores of the measured values), so ``xi`` and ``beta`` mean the same thing whatever the scalarizer's units.
All policies maximise; to minimise a target the experiment negates it.

Add your own with a few lines::

    @register_policy("greedy")
    class Greedy(AcquisitionFunction):
        def __call__(self, post, ctx):
            return post.mean
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import HAEInputError
from ..model.base import Posterior
from ..registry import Entry, ParamSpec, Registry, specs_from_signature


@dataclass
class AcquisitionContext:
    """What a policy may use besides the posterior."""

    best: float                       # best measured value so far (standardized)
    rng: np.random.Generator
    available: np.ndarray             # bool mask of candidates that may be picked
    step: int = 0                     # policy step number (0 = first pick after seeds)
    budget: int = 0                   # total policy steps planned
    current: tuple[int, int] | None = None   # current probe position (y, x), pixels
    positions: np.ndarray | None = None      # (n_candidates, 2) positions (y, x), pixels
    measured: np.ndarray | None = None       # (n_measured, 2) measured positions, pixels
    pending: np.ndarray | None = None        # (n_pending, 2) positions being measured now (a pipelined run)


class AcquisitionFunction:
    """Base class: ``__call__(posterior, ctx) -> scores`` (higher is better), one per candidate."""

    name = "base"
    params: tuple[str, ...] = ()

    def __call__(self, post: Posterior, ctx: AcquisitionContext) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in self.params}

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.get_params()}

    def label(self) -> str:
        ps = ", ".join(f"{k}={v:g}" for k, v in self.get_params().items())
        return f"{self.name}({ps})" if ps else self.name


# units and ranges of the built-in parameters (a plug-in's parameters get specs from its __init__ signature). A
# policy's own default is its __init__'s (EI's xi 0, PI's 0.01): the default here only types a parameter whose
# signature gives none; the registry's entry is the one table the dock, the CLI and the settings read
PARAM_SPECS = {
    "xi": ParamSpec("xi", 0.01, "std. units", 0.0, 10.0, "exploration margin over the best value"),
    "beta": ParamSpec("beta", 4.0, "", 0.0, 1e4, "exploration weight: mu + sqrt(beta) sigma"),
    "radius": ParamSpec("radius", 5.0, "px", 0.0, 1e4, "radius of the penalty around measured points"),
    "cost": ParamSpec("cost", 1.0, "std. units", 0.0, 1e4, "travel cost per scan diagonal"),
    "beta_start": ParamSpec("beta_start", 16.0, "", 0.0, 1e4, "UCB beta at the first step"),
    "beta_end": ParamSpec("beta_end", 0.5, "", 0.0, 1e4, "UCB beta at the last step"),
    "n_candidates": ParamSpec("n_candidates", 1024, "", 1, 1e7, "random candidates per Thompson draw"),
}


def _entry(cls, name: str) -> Entry:
    given = tuple(PARAM_SPECS[p] for p in getattr(cls, "params", ()) if p in PARAM_SPECS)
    specs = specs_from_signature(cls.__init__, given)
    defaults = {p.name: p for p in specs_from_signature(cls.__init__)}
    # the signature's default wins over the table's (a subclass may choose another default)
    specs = tuple(ParamSpec(p.name, defaults[p.name].default if p.name in defaults else p.default, p.unit, p.low,
                            p.high, p.help) for p in specs)
    return Entry(name, cls, specs, (cls.__doc__ or "").strip().split("\n")[0])


def _describe(obj, name):
    obj.name = name
    return _entry(obj, name)


POLICIES = Registry("policy", "napari_hae.policies", describe=_describe)


def register_policy(name: str):
    """Class decorator adding an AcquisitionFunction subclass to the registry under ``name``."""

    def deco(cls):
        cls.name = name
        POLICIES.add(_entry(cls, name))
        return cls

    return deco


def make_policy(name: str, **params) -> AcquisitionFunction:
    """Instantiate a registered policy, e.g. ``make_policy("ei", xi=0.01)``."""
    POLICIES.check_params(name, params)
    return POLICIES.get(name).obj(**params)


def policy_from_dict(d: dict) -> AcquisitionFunction:
    return make_policy(d["name"], **(d.get("params") or {}))


def _nonneg(name, value):
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise HAEInputError(f"Policy parameter {name}={value} must be a finite number >= 0.",
                            f"give {name} >= 0 (typical: xi 0.01-0.1, beta 1-10).")
    return value




def select(scores: np.ndarray, available: np.ndarray, rng: np.random.Generator | None = None) -> int:
    """Index of the best available candidate. Ties are broken at random with ``rng`` (without one: the lowest
    index); an all-equal map must not turn into a raster scan. Raises if nothing is available."""
    s = np.where(available, np.nan_to_num(np.asarray(scores, float), nan=-np.inf, posinf=np.inf), -np.inf)
    if not available.any():
        raise HAEInputError("No position is left to measure: all are measured or excluded by 'avoid' objects.",
                            "lower the budget, or remove/shrink 'avoid' objects.")
    best = np.max(s)
    tied = np.flatnonzero(available) if best == -np.inf else np.flatnonzero(s == best)
    if rng is None or len(tied) == 1:
        return int(tied[0])
    return int(tied[rng.integers(len(tied))])

