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

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import ndtr

from ..errors import HAEInputError

_SQRT_2PI = np.sqrt(2.0 * np.pi)


@dataclass
class Posterior:
    """Posterior over all candidates, standardized units. ``sample(idx, rng)`` draws one joint sample at idx."""

    mean: np.ndarray
    std: np.ndarray
    sample: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None


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


POLICIES: dict[str, type[AcquisitionFunction]] = {}


def register_policy(name: str):
    """Class decorator adding an AcquisitionFunction subclass to the registry under ``name``."""

    def deco(cls):
        cls.name = name
        POLICIES[name] = cls
        return cls

    return deco


def make_policy(name: str, **params) -> AcquisitionFunction:
    """Instantiate a registered policy, e.g. ``make_policy("ei", xi=0.01)``."""
    if name not in POLICIES:
        raise HAEInputError(f"Unknown policy {name!r}.",
                            f"choose one of {sorted(POLICIES)} or register your own with register_policy().")
    cls = POLICIES[name]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - allowed
    if unknown:
        raise HAEInputError(f"Policy {name!r} has no parameter(s) {sorted(unknown)}.",
                            f"its parameters are {sorted(allowed) or 'none'}.")
    return cls(**params)


def policy_from_dict(d: dict) -> AcquisitionFunction:
    return make_policy(d["name"], **d.get("params", {}))


def _nonneg(name, value):
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise HAEInputError(f"Policy parameter {name}={value} must be a finite number >= 0.",
                            f"give {name} >= 0 (typical: xi 0.01-0.1, beta 1-10).")
    return value


# ---------------------------------------------------------------------------------------------------------------

def expected_improvement(mean, std, best, xi=0.0):
    """EI for maximisation: (mu - best - xi) Phi(z) + sigma phi(z), z = (mu - best - xi) / sigma."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    imp = mean - best - xi
    safe = np.where(std > 0, std, 1.0)
    z = imp / safe
    ei = imp * ndtr(z) + std * np.exp(-0.5 * z**2) / _SQRT_2PI
    return np.where(std > 0, ei, np.maximum(imp, 0.0))


def probability_of_improvement(mean, std, best, xi=0.0):
    """PI for maximisation: Phi((mu - best - xi) / sigma)."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    imp = mean - best - xi
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, ndtr(imp / safe), (imp > 0).astype(float))


def upper_confidence_bound(mean, std, beta=2.0):
    """UCB: mu + sqrt(beta) * sigma (BoTorch convention)."""
    return np.asarray(mean, float) + np.sqrt(beta) * np.asarray(std, float)


@register_policy("ei")
class ExpectedImprovement(AcquisitionFunction):
    """Expected improvement over the best measured value with exploration margin ``xi`` (standardized units)."""

    params = ("xi",)

    def __init__(self, xi: float = 0.01):
        self.xi = _nonneg("xi", xi)

    def __call__(self, post, ctx):
        return expected_improvement(post.mean, post.std, ctx.best, self.xi)


@register_policy("pi")
class ProbabilityOfImprovement(AcquisitionFunction):
    """Probability of improving on the best measured value by more than ``xi``."""

    params = ("xi",)

    def __init__(self, xi: float = 0.01):
        self.xi = _nonneg("xi", xi)

    def __call__(self, post, ctx):
        return probability_of_improvement(post.mean, post.std, ctx.best, self.xi)


@register_policy("ucb")
class UpperConfidenceBound(AcquisitionFunction):
    """Upper confidence bound mu + sqrt(beta) sigma; larger ``beta`` explores more."""

    params = ("beta",)

    def __init__(self, beta: float = 4.0):
        self.beta = _nonneg("beta", beta)

    def __call__(self, post, ctx):
        return upper_confidence_bound(post.mean, post.std, self.beta)


@register_policy("mu")
class MaximumUncertainty(AcquisitionFunction):
    """Pure exploration: the largest predictive standard deviation."""

    def __call__(self, post, ctx):
        return np.asarray(post.std, float).copy()


@register_policy("thompson")
class ThompsonSampling(AcquisitionFunction):
    """One joint posterior sample, maximised. Drawn over ``n_candidates`` random available positions (a joint
    sample over all positions would need an n x n covariance)."""

    params = ("n_candidates",)

    def __init__(self, n_candidates: int = 1024):
        self.n_candidates = int(n_candidates)
        if self.n_candidates < 1:
            raise HAEInputError(f"n_candidates={n_candidates} must be >= 1.", "use e.g. 1024.")

    def __call__(self, post, ctx):
        scores = np.full(len(post.mean), -np.inf)
        idx = np.flatnonzero(ctx.available)
        if len(idx) > self.n_candidates:
            idx = np.sort(ctx.rng.choice(idx, self.n_candidates, replace=False))
        if post.sample is None:
            scores[idx] = post.mean[idx] + post.std[idx] * ctx.rng.standard_normal(len(idx))
        else:
            scores[idx] = post.sample(idx, ctx.rng)
        return scores

    def to_dict(self):
        return {"name": self.name, "params": {"n_candidates": self.n_candidates}}


@register_policy("random")
class RandomSampling(AcquisitionFunction):
    """Uniformly random among available positions (the baseline)."""

    def __call__(self, post, ctx):
        return ctx.rng.random(len(post.mean))


# -- policies against stagnation -------------------------------------------------------------------------------

def _nearest_measured_distance(ctx: AcquisitionContext) -> np.ndarray:
    """Distance (pixels) from every candidate to the nearest measured position."""
    from scipy.spatial import cKDTree

    if ctx.measured is None or len(ctx.measured) == 0 or ctx.positions is None:
        raise HAEInputError("This policy needs the measured positions.", "use it inside an Experiment.")
    d, _ = cKDTree(np.asarray(ctx.measured, float)).query(np.asarray(ctx.positions, float))
    return d


@register_policy("ei_penalized")
class PenalizedExpectedImprovement(AcquisitionFunction):
    """EI times a local penalty around every measured position, 1 - exp(-d^2 / 2 r^2) (d: distance to the nearest
    measured point, ``radius`` r in pixels): already-explored neighbourhoods stop attracting picks, so EI cannot
    keep circling one spot (local penalisation, Gonzalez et al. 2016)."""

    params = ("xi", "radius")

    def __init__(self, xi: float = 0.01, radius: float = 5.0):
        self.xi = _nonneg("xi", xi)
        self.radius = _nonneg("radius", radius)

    def __call__(self, post, ctx):
        ei = expected_improvement(post.mean, post.std, ctx.best, self.xi)
        if self.radius == 0:
            return ei
        d = _nearest_measured_distance(ctx)
        return ei * (1.0 - np.exp(-0.5 * (d / self.radius) ** 2))


@register_policy("ucb_travel")
class TravelCostUCB(AcquisitionFunction):
    """UCB minus a travel cost: ``cost`` (standardized units) per scan diagonal of distance from the current probe
    position. Short moves are preferred when candidates are otherwise alike (less drift, dose and stage time)."""

    params = ("beta", "cost")

    def __init__(self, beta: float = 4.0, cost: float = 1.0):
        self.beta = _nonneg("beta", beta)
        self.cost = _nonneg("cost", cost)

    def __call__(self, post, ctx):
        ucb = upper_confidence_bound(post.mean, post.std, self.beta)
        if ctx.current is None or ctx.positions is None:
            return ucb
        pos = np.asarray(ctx.positions, float)
        diag = float(np.hypot(*(pos.max(0) - pos.min(0) + 1)))
        d = np.hypot(*(pos - np.asarray(ctx.current, float)).T)
        return ucb - self.cost * d / diag


@register_policy("ucb_scheduled")
class ScheduledUCB(AcquisitionFunction):
    """Explore early, exploit late: UCB whose ``beta`` falls geometrically from ``beta_start`` at the first step to
    ``beta_end`` at the last step of the budget."""

    params = ("beta_start", "beta_end")

    def __init__(self, beta_start: float = 16.0, beta_end: float = 0.5):
        self.beta_start = _nonneg("beta_start", beta_start)
        self.beta_end = _nonneg("beta_end", beta_end)

    def beta_at(self, step: int, budget: int) -> float:
        f = min(1.0, step / max(1, budget - 1))
        lo, hi = max(self.beta_end, 1e-12), max(self.beta_start, 1e-12)
        return float(hi * (lo / hi) ** f)

    def __call__(self, post, ctx):
        return upper_confidence_bound(post.mean, post.std, self.beta_at(ctx.step, ctx.budget))


def select(scores: np.ndarray, available: np.ndarray) -> int:
    """Index of the best available candidate (ties: the lowest index). Raises if nothing is available."""
    s = np.where(available, np.nan_to_num(np.asarray(scores, float), nan=-np.inf, posinf=np.inf), -np.inf)
    if not available.any():
        raise HAEInputError("No position is left to measure: all are measured or excluded by 'avoid' objects.",
                            "lower the budget, or remove/shrink 'avoid' objects.")
    best = np.max(s)
    if best == -np.inf:  # all available scored -inf: fall back to the first available
        return int(np.flatnonzero(available)[0])
    return int(np.flatnonzero(s == best)[0])
