"""What the run loop needs from a surrogate model, and the registry of models.

A surrogate model maps flattened patches to a predictive distribution of the (signed, larger-is-better) target:

    report = model.fit(X, y, iterations=30, warm=True)    # -> FitReport
    post = model.posterior(X_all)                          # -> Posterior (standardized units + how to undo them)

``warm=False`` starts from fresh weights (first fit, new target, new patch size). Models are registered with
:func:`register_model` (or the ``napari_hae.models`` entry-point group) and built from a settings spec
``{"name": ..., "params": {...}}``; the spec is recorded in the trace, so a resumed run rebuilds the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from ..registry import Entry, ParamSpec, Registry, specs_from_signature
from .warp import NONE, Warp, calibration_scores


@dataclass
class Posterior:
    """Posterior over candidates in *standardized* target units (z-scores of the training targets).

    ``offset`` and ``scale`` turn them back into target units (``mean * scale + offset``, ``std * scale``);
    ``sample(idx, rng)`` draws one joint sample at candidates ``idx`` (standardized), when the model can.
    ``std`` is the latent function's; ``noise`` the observation noise's std (standardized; one per candidate
    where it differs, as with counting noise), so that a new measurement is predicted with std
    ``sqrt(std^2 + noise^2)`` (the calibration monitor's prediction).
    All of these are on the ``warp``'s scale (:mod:`.warp`: the log of positive targets by default); ``in_units``
    gives the median and half the central 68% interval in scalarizer units.
    """

    mean: np.ndarray
    std: np.ndarray
    sample: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    offset: float = 0.0
    scale: float = 1.0
    noise: float | np.ndarray = 0.0
    warp: Warp = NONE
    members: tuple = ()   # a model that chooses between others (:class:`ChoosesByRecord`): (record field, its own
                          # prediction), which the step's record scores: a Posterior, or a function of candidate
                          # indices giving one (predicted only where the step measures: see :meth:`members_at`)

    def members_at(self, i: int) -> Posterior:
        """The same prediction with each member predicted by a function made now at candidate ``i``, the step's pick
        (before a later fit changes the member: a pipelined run fits for the next step while this one measures)."""
        if not any(callable(m) for _, m in self.members):
            return self
        return replace(self, members=tuple((f, AtPick(i, m(np.array([i]))) if callable(m) else m)
                                           for f, m in self.members))

    def noise_at(self, i: int) -> float:
        """The observation noise's std (standardized) at candidate ``i``."""
        return float(self.noise if np.ndim(self.noise) == 0 else np.asarray(self.noise)[i])

    def widened(self, factor: float) -> Posterior:
        """The same prediction with its spread (latent std, noise and joint samples' deviations) times ``factor``
        (the run's recalibration from its own misses, :func:`..run.diagnostics.spread_factor`)."""
        if factor == 1.0:
            return self
        sample = self.sample
        if sample is not None:
            sample = lambda idx, rng: self.mean[idx] + factor * (self.sample(idx, rng) - self.mean[idx])  # noqa: E731
        return replace(self, std=self.std * factor, noise=self.noise * factor, sample=sample)

    def in_units(self) -> tuple[np.ndarray, np.ndarray]:
        return self.warp.to_units(self.mean * self.scale + self.offset, self.std * self.scale)

    def log_expected_improvement(self, best: float, xi: float = 0.0) -> np.ndarray:
        """log of the expected improvement of the *value* over ``best + xi`` (standardized), on whatever scale the
        model predicts it (the warp's business, not the policy's)."""
        return self.warp.log_expected_improvement(self.mean, self.std, best, xi, self.offset, self.scale)

    def standardize(self, y) -> np.ndarray | float:
        return (self.warp.forward(y) - self.offset) / self.scale

    def measurement(self, i: int, value: float | None = None, sign: float = 1.0) -> dict:
        """The predictive distribution of a new measurement at candidate ``i`` (latent std and noise): ``pred_std``
        and ``noise_std`` in scalarizer units (half the central 68% interval), ``pred_lo``/``pred_hi`` its central
        95% interval (times ``sign``, the goal's: in the scalarizer's own sign), and for a measured ``value`` (in
        the model's target units) its ``z_score`` and ``log_score`` (the calibration monitor)."""
        noise = self.noise_at(i)
        center, spread = self.mean[i] * self.scale + self.offset, float(np.hypot(self.std[i], noise) * self.scale)
        out = {k: float(self.warp.to_units(center, v)[1]) for k, v in (("pred_std", spread),
                                                                         ("noise_std", noise * self.scale))}
        ends = sorted(float(sign * self.warp.inverse(center + k * spread)) for k in (-2.0, 2.0))
        out.update(pred_lo=ends[0], pred_hi=ends[1])
        if value is not None:
            out.update(calibration_scores(value, float(self.warp.inverse(center)), spread, self.warp))
        return out

    def z_scores(self, values) -> np.ndarray:
        """Where each of ``values`` (scalarizer units, one per candidate) lies in its predictive distribution
        (latent std and noise): |z| <= 1 and <= 2 are the central 68% and 95% intervals."""
        return (self.standardize(values) - self.mean) / np.hypot(self.std, self.noise)


@dataclass(frozen=True)
class AtPick:
    """A member's prediction at the step's pick alone (candidate ``index``), answering as its full prediction would."""

    index: int
    posterior: Posterior   # of the one candidate

    def measurement(self, i: int, value: float | None = None, sign: float = 1.0) -> dict:
        if i != self.index:
            raise ValueError(f"Predicted at candidate {self.index} only, asked for {i}.")
        return self.posterior.measurement(0, value, sign)


OUTLIER_FENCE = 50.0   # robust standard deviations (1.4826 MAD) from the median
OUTLIER_SHARE = 0.05   # more targets than this share (or than one) beyond the fence are a population, kept


def robust_targets(y) -> tuple[np.ndarray, float, float, int]:
    """Training targets with wild values clipped, and the (offset, scale) that standardise them.

    Values beyond ``OUTLIER_FENCE`` robust standard deviations (1.4826 MAD) from the median are clipped to that
    fence before the mean and standard deviation are taken, and the model trains on the clipped values: one
    artefact (a failed background fit at -2e6 among band integrals of order 10) would otherwise set the scale,
    every other target would standardise to ~0, and the GP would spend its noise term on that one point. The
    fence is far outside real targets' spread: on the bundled sample the highest target is ~28 robust standard
    deviations above the median, so nothing there is clipped. More than one target and more than
    ``OUTLIER_SHARE`` of them beyond the fence are a second population (particles on vacuum), not artefacts, and
    nothing is clipped. Returns ``(y, offset, scale, n_clipped)``; the
    measured values themselves are never changed (the trace keeps them).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    med = float(np.median(y))
    mad = 1.4826 * float(np.median(np.abs(y - med)))
    n_clipped = 0
    if mad > 0:
        lo, hi = med - OUTLIER_FENCE * mad, med + OUTLIER_FENCE * mad
        n_clipped = int(np.sum((y < lo) | (y > hi)))
        if n_clipped > max(1, int(OUTLIER_SHARE * y.size)):   # a population (particles beside vacuum), not
            n_clipped = 0                                     # artefacts: nothing is clipped
        else:
            y = np.clip(y, lo, hi)
    offset, scale = float(y.mean()), float(y.std())
    return y, offset, (scale if scale > 1e-12 * max(1.0, abs(offset)) else 1.0), n_clipped


def clip_event(n_clipped: int, before: int) -> list[str]:
    """The fit event to record when the number of clipped training targets changes (else none)."""
    if n_clipped == before:
        return []
    if n_clipped == 0:
        return ["no training target is clipped any more (the targets' spread has grown past the fence)"]
    return [f"{n_clipped} training target(s) lie beyond {OUTLIER_FENCE:g} robust standard deviations of the "
            f"median and are clipped to it for the model (measured values unchanged); check the scalarizer "
            f"(e.g. its background window) at those points"]


@dataclass
class FitReport:
    """What happened during one fit."""

    losses: list[float] = field(default_factory=list)
    retries: int = 0
    resets: int = 0
    events: list[str] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


@runtime_checkable
class SurrogateModel(Protocol):
    """The model interface of the run loop (see the module docstring)."""

    def fit(self, X, y, *, iterations: int, warm: bool) -> FitReport: ...

    def posterior(self, X) -> Posterior: ...


@runtime_checkable
class KnowsNoise(Protocol):
    """A model that can take each target's known (counting) variance: ``fit(X, y, iterations=, warm=, y_var=)``,
    ``y_var`` in the targets' units (NaN: not known). ``known_noise`` says whether its settings want it
    (:mod:`.noise`); the run computes the variances only then."""

    known_noise: bool

    def fit(self, X, y, *, iterations: int, warm: bool, y_var=None) -> FitReport: ...


@runtime_checkable
class ChoosesByRecord(Protocol):
    """A model that holds several and uses the one whose predictions of the run's measurements, made before each
    was measured, scored best: its posteriors carry each one's (``Posterior.members``), the step's record keeps the
    log score each gave the measured value (the fields ``score_fields``), and before each fit the run hands it
    those recorded scores (``choose``: (steps, members), NaN where not recorded), so that a resumed or replayed
    run chooses as the live one did."""

    score_fields: tuple[str, ...]

    def choose(self, scores: np.ndarray) -> None: ...


@runtime_checkable
class Seekable(Protocol):
    """A model whose fresh weights come from a random stream the run can position: before the fit of policy step
    ``k`` the run calls ``seek(k)``, so the fit draws what the k-th fit of an uninterrupted run drew. A run rebuilt
    from its records (resumed, replayed) then fits exactly as the live run did at that step; a model without it
    draws on from its own stream (the same decisions live, not necessarily after a resume)."""

    def seek(self, fit_index: int) -> None: ...


@runtime_checkable
class SizedByScan(Protocol):
    """A model whose defaults depend on the scan's size (a model class with ``for_scan``): the run writes them out
    once, before it records its settings, so that a resumed or replayed run rebuilds the model the live one had."""

    @classmethod
    def for_scan(cls, params: dict, n_positions: int) -> dict: ...


def params_for_scan(name: str, params: dict, n_positions: int) -> dict:
    """``params`` of the registered model ``name`` with what depends on a scan of ``n_positions`` written out."""
    cls = MODELS.get(name).obj
    return cls.for_scan(dict(params), int(n_positions)) if isinstance(cls, SizedByScan) else dict(params)


MODELS = Registry("model", "napari_hae.models",
                  describe=lambda obj, name: Entry(name, obj, specs_from_signature(obj.__init__, keyword_only=True,
                                                                                   skip=("self", "seed")),
                                                   (obj.__doc__ or "").strip().split("\n")[0]))


def _with_signature_defaults(cls, name: str, given: tuple[ParamSpec, ...]) -> tuple[ParamSpec, ...]:
    """``given`` (units, ranges, help, choices) with each default taken from ``cls.__init__``: a parameter's default
    is written once, in the signature. A table that writes another default is refused."""
    import dataclasses
    import inspect

    sig = inspect.signature(cls.__init__).parameters
    out = []
    for spec in given:
        p = sig.get(spec.name)
        default = spec.default if p is None or p.default is inspect.Parameter.empty else p.default
        if spec.default is not None and spec.default != default:
            raise ValueError(f"model {name!r}: the parameter table gives {spec.name}={spec.default!r}, the signature "
                             f"{default!r}; write the default once, in __init__'s signature")
        out.append(dataclasses.replace(spec, default=default))
    return tuple(out)


def register_model(name: str, params: tuple[ParamSpec, ...] = ()):
    """Class decorator: ``cls(input_dim, *, seed, **params)`` builds a :class:`SurrogateModel`. ``params`` give
    units, ranges and help (their defaults are the signature's); without them, the specs come from the keyword-only
    arguments of ``__init__``."""

    def deco(cls):
        specs = _with_signature_defaults(cls, name, tuple(params)) if params else specs_from_signature(
            cls.__init__, keyword_only=True, skip=("self", "seed"))
        MODELS.add(Entry(name, cls, specs, (cls.__doc__ or "").strip().split("\n")[0]))
        cls.registered_name = name
        return cls

    return deco


def make_model(spec: dict, input_dim: int, seed: int = 0):
    """Build the registered model of ``spec`` (``{"name": ..., "params": {...}}``) for inputs of ``input_dim``."""
    name, params = spec["name"], dict(spec.get("params") or {})
    MODELS.check_params(name, params)
    return MODELS.get(name).obj(int(input_dim), seed=int(seed), **params)
