"""Policies against stagnation, as wrappers around any acquisition function (in the spirit of BoTorch's
penalized and proximal acquisition wrappers).

- :class:`LocalPenalty` multiplies a non-negative score by ``1 - exp(-d^2 / 2 r^2)`` (d: distance to the nearest
  measured point): already-explored neighbourhoods stop attracting picks (local penalisation, Gonzalez et al.
  2016).
- :class:`TravelCost` subtracts ``cost`` (standardized units) per scan diagonal of distance from the probe.
- :class:`BetaSchedule` anneals a UCB's ``beta`` geometrically over the budget: explore early, exploit late.
- :func:`penalize_pending` lowers any policy's scores around the positions being measured while the next point is
  chosen (a pipelined run): local penalisation of a batch (Gonzalez et al. 2016), for scores of any sign or scale.

The registered ``ei_penalized``, ``ucb_travel`` and ``ucb_scheduled`` are these wrappers around EI and UCB; wrap
your own policy the same way::

    LocalPenalty(make_policy("my_policy"), radius=8)
"""

from __future__ import annotations

import numpy as np

from ..errors import HAEInputError
from .acquisition import ExpectedImprovement, UpperConfidenceBound
from .base import AcquisitionContext, AcquisitionFunction, _nonneg, register_policy


def nearest_measured_distance(ctx: AcquisitionContext) -> np.ndarray:
    """Distance (pixels) from every candidate to the nearest measured position."""
    from scipy.spatial import cKDTree

    if ctx.measured is None or len(ctx.measured) == 0 or ctx.positions is None:
        raise HAEInputError("This policy needs the measured positions.", "use it inside an Experiment.")
    d, _ = cKDTree(np.asarray(ctx.measured, float)).query(np.asarray(ctx.positions, float))
    return d


def penalize_pending(scores: np.ndarray, ctx: AcquisitionContext, radius: float) -> np.ndarray:
    """``scores`` lowered by ``span * exp(-d^2 / 2 r^2)`` (d: distance to the nearest pending position; span: the
    best available score minus the median one): at a pending position a score falls to the typical one, at
    ``radius`` by 61% of the span, at twice the radius by 14%. The model has not seen the pending points' values
    yet and rates their neighbours (whose patches overlap theirs) as it rated them; this keeps the next pick from
    duplicating a measurement in flight. Scores of any sign, and log scores (whose lowest values may be -700 or
    -inf), are handled alike: the span is taken from the median, not the minimum."""
    scores = np.asarray(scores, dtype=np.float64)
    if ctx.pending is None or len(ctx.pending) == 0 or ctx.positions is None or radius <= 0:
        return scores
    from scipy.spatial import cKDTree

    finite = np.isfinite(scores) & np.asarray(ctx.available, dtype=bool)
    if finite.sum() < 2:
        return scores
    span = float(scores[finite].max() - np.median(scores[finite]))
    d, _ = cKDTree(np.asarray(ctx.pending, float).reshape(-1, 2)).query(np.asarray(ctx.positions, float))
    return scores - span * np.exp(-0.5 * (d / radius) ** 2)


def base_default(cls, name: str):
    """The default of ``cls``'s parameter ``name``: a wrapper's inner parameter keeps the inner policy's default
    (written once, in the inner policy's signature)."""
    import inspect

    return inspect.signature(cls.__init__).parameters[name].default


class Wrapper(AcquisitionFunction):
    """A policy around another (``base``): its parameters are the base's, read there, and its ``own``."""

    own: tuple[str, ...] = ()

    def get_params(self) -> dict:
        return {**self.base.get_params(), **{p: getattr(self, p) for p in self.own}}


class LocalPenalty(Wrapper):
    """``base`` score (must be >= 0) times a penalty around every measured position; for a base scoring in log
    space (EI, PI: ``log_scale``) the log of the penalty is added instead."""

    own = ("radius",)

    def __init__(self, base: AcquisitionFunction, radius: float = 5.0):
        self.base = base
        self.radius = _nonneg("radius", radius)

    def __call__(self, post, ctx):
        score = self.base(post, ctx)
        if self.radius == 0:
            return score
        d = nearest_measured_distance(ctx)
        if getattr(self.base, "log_scale", False):
            with np.errstate(divide="ignore"):
                return score + np.log1p(-np.exp(-0.5 * (d / self.radius) ** 2))
        return score * (1.0 - np.exp(-0.5 * (d / self.radius) ** 2))


class TravelCost(Wrapper):
    """``base`` score minus ``cost`` per scan diagonal of distance from the current probe position: short moves
    are preferred when candidates are otherwise alike (less drift, dose and stage time)."""

    own = ("cost",)

    def __init__(self, base: AcquisitionFunction, cost: float = 1.0):
        self.base = base
        self.cost = _nonneg("cost", cost)

    def __call__(self, post, ctx):
        score = self.base(post, ctx)
        if ctx.current is None or ctx.positions is None:
            return score
        pos = np.asarray(ctx.positions, float)
        diag = float(np.hypot(*(pos.max(0) - pos.min(0) + 1)))
        d = np.hypot(*(pos - np.asarray(ctx.current, float)).T)
        return score - self.cost * d / diag


class BetaSchedule(AcquisitionFunction):
    """UCB whose ``beta`` falls geometrically from ``beta_start`` (first step) to ``beta_end`` (last step)."""

    def __init__(self, beta_start: float = 16.0, beta_end: float = 0.5):
        self.beta_start = _nonneg("beta_start", beta_start)
        self.beta_end = _nonneg("beta_end", beta_end)

    def beta_at(self, step: int, budget: int) -> float:
        f = min(1.0, step / max(1, budget - 1))
        lo, hi = max(self.beta_end, 1e-12), max(self.beta_start, 1e-12)
        return float(hi * (lo / hi) ** f)

    def __call__(self, post, ctx):
        return UpperConfidenceBound(self.beta_at(ctx.step, ctx.budget))(post, ctx)


@register_policy("ei_penalized")
class PenalizedExpectedImprovement(LocalPenalty):
    """EI with a local penalty of ``radius`` pixels around every measured position."""

    params = ExpectedImprovement.params + LocalPenalty.own

    def __init__(self, xi: float = base_default(ExpectedImprovement, "xi"), radius: float = 5.0):
        super().__init__(ExpectedImprovement(xi), radius)


@register_policy("ucb_travel")
class TravelCostUCB(TravelCost):
    """UCB minus a travel cost (``cost`` standardized units per scan diagonal)."""

    params = UpperConfidenceBound.params + TravelCost.own

    def __init__(self, beta: float = base_default(UpperConfidenceBound, "beta"), cost: float = 1.0):
        super().__init__(UpperConfidenceBound(beta), cost)


@register_policy("ucb_scheduled")
class ScheduledUCB(BetaSchedule):
    """Explore early, exploit late: UCB with ``beta`` annealed from ``beta_start`` to ``beta_end``."""

    params = ("beta_start", "beta_end")
