"""Target warps: the scale on which the GP models the target (as BoTorch's outcome transforms).

Band integrals, peak heights and ratios of counts are positive and vary by factors, not by fixed amounts: on the
bundled sample the targets span 2-217 with a median of 8. On that scale one Gaussian noise level is set by the
peaks the model cannot fit yet (40-50 counts), so the intervals were too wide on the flat background (1-sigma
coverage 0.95) and too narrow on the peaks (2-sigma coverage of the unmeasured top 1%: 0.65). Modelled as
log(y), the misfit is relative and the intervals follow the level (``docs/performance.md``, issue 16).

A warp is chosen per fit from the targets (log only where every one is > 0) and travels with the posterior:
``mean``/``std`` and the policies' scores live on the warped scale (the log is monotone, so "larger is better" and
every quantile keep their meaning), and :meth:`Warp.to_units` turns a predictive normal back into scalarizer units
as its median and half the width of its central 68% interval.
"""

from __future__ import annotations

import numpy as np

from .improvement import log_expected_improvement, log_expected_improvement_lognormal

MODES = ("log", "none")


class Warp:
    """The identity: the GP models the target as it is."""

    name = "none"

    def forward(self, y):
        return np.asarray(y, dtype=np.float64)

    def inverse(self, w):
        return np.asarray(w, dtype=np.float64)

    def log_jacobian(self, y):
        """log |dw/dy|: turns a density on the warped scale into one in scalarizer units."""
        return np.zeros_like(np.asarray(y, dtype=np.float64))

    def to_units(self, center, spread):
        """(median, half the central 68% interval) in scalarizer units of N(center, spread^2) on the warped scale."""
        return np.asarray(center, dtype=np.float64), np.asarray(spread, dtype=np.float64)

    def fits(self, y) -> bool:
        return True

    def log_expected_improvement(self, mean, std, best, xi, offset: float, scale: float):
        """log EI of the value over ``best + xi``; ``mean``/``std``/``best``/``xi`` standardized on this scale
        (``* scale + offset`` undoes it). On the identity scale: EI in standardized units (the same ranking)."""
        return log_expected_improvement(mean, std, best, xi)


class LogWarp(Warp):
    name = "log"

    def forward(self, y):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.asarray(y, dtype=np.float64))

    def inverse(self, w):
        return np.exp(np.minimum(np.asarray(w, dtype=np.float64), 700.0))

    def log_jacobian(self, y):
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log(np.asarray(y, dtype=np.float64))

    def to_units(self, center, spread):
        c, s = np.asarray(center, dtype=np.float64), np.minimum(np.asarray(spread, dtype=np.float64), 700.0)
        return self.inverse(c), self.inverse(c) * np.sinh(s)   # (e^(c+s) - e^(c-s)) / 2

    def fits(self, y) -> bool:
        y = np.asarray(y, dtype=np.float64)
        return bool(y.size) and bool(np.all(y > 0))

    def log_expected_improvement(self, mean, std, best, xi, offset: float, scale: float):
        """The improvement of the measured value, not of its logarithm: E[(exp(W) - exp(b))+] for the lognormal."""
        return log_expected_improvement_lognormal(mean * scale + offset, std * scale, (best + xi) * scale + offset)


NONE, LOG = Warp(), LogWarp()


def choose(y, mode: str, before: Warp | None = None) -> tuple[Warp, list[str]]:
    """The warp for targets ``y`` under ``mode`` ("log": log where every target is > 0, else none), and an event
    when it changes from the ``before`` fit's (a target <= 0 arrived, or all are positive again)."""
    warp = LOG if mode == "log" and LOG.fits(y) else NONE
    events = []
    if before is not None and warp is not before and mode == "log":
        events.append("the model fits the targets on a log scale again (all are > 0)" if warp is LOG else
                      f"a target <= 0 (min {float(np.min(y)):.4g}): the model fits the targets on their own scale "
                      "from here, not on a log scale")
    return warp, events


def calibration_scores(value: float, center: float, spread: float, warp: Warp = NONE) -> dict:
    """``z_score`` and ``log_score`` of a measured ``value`` under the prediction made before it was measured:
    normal with median ``center`` (scalarizer units) and std ``spread`` on ``warp``'s scale; the log density is in
    scalarizer units (NaN where anything is undefined)."""
    with np.errstate(all="ignore"):
        wv, wc = float(warp.forward(value)), float(warp.forward(center))
        if not (np.isfinite(wv) and np.isfinite(wc) and np.isfinite(spread) and spread > 0):
            return {"z_score": float("nan"), "log_score": float("nan")}
        z = (wv - wc) / spread
        return {"z_score": float(z), "log_score": float(-0.5 * z * z - np.log(spread) - 0.5 * np.log(2 * np.pi)
                                                        + float(warp.log_jacobian(value)))}
