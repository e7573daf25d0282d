"""The expected improvement of a normal, and of a lognormal, prediction: in log space, without underflow.

The model's posterior asks these for its acquisition (:meth:`Posterior.log_expected_improvement
<napari_hae.core.model.base.Posterior.log_expected_improvement>`): the improvement of the value itself, whatever
scale the model predicts it on (its warp), so that a policy never needs to know how the target was transformed.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfcx, log_ndtr, ndtr

_SQRT_2PI = np.sqrt(2.0 * np.pi)
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def log_h(z) -> np.ndarray:
    """``log(phi(z) + z Phi(z))``, accurate for every z (EI = sigma h(z)). For z < -1 it is written with the scaled
    complementary error function, ``h = phi(z) (1 - r)``, ``r = |z| sqrt(pi/2) erfcx(|z| / sqrt 2)`` (-> 1), and for
    |z| > 1e4 by its asymptotic series ``1 - r ~ 1/z^2 - 3/z^4 + 15/z^6``."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    hi = z >= -1.0
    zh = z[hi]
    out[hi] = np.log(np.exp(-0.5 * zh**2) / _SQRT_2PI + zh * ndtr(zh))
    lo = ~hi
    a = -z[lo]                                            # a > 1
    with np.errstate(over="ignore", invalid="ignore"):
        r = a * np.sqrt(np.pi / 2.0) * erfcx(a / np.sqrt(2.0))
        log_one_minus_r = np.where(a < 1e4, np.log1p(-r), -2.0 * np.log(a) + np.log1p(-3.0 / a**2 + 15.0 / a**4))
    out[lo] = -0.5 * a**2 - _LOG_SQRT_2PI + log_one_minus_r
    return out


def log_expected_improvement(mean, std, best, xi=0.0):
    """``log EI`` for maximisation, without underflow (-inf only where sigma = 0 and there is no improvement)."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    imp = mean - best - xi
    pos = std > 0
    safe = np.where(pos, std, 1.0)
    with np.errstate(divide="ignore"):
        return np.where(pos, np.log(safe) + log_h(imp / safe), np.log(np.maximum(imp, 0.0)))


def log_expected_improvement_lognormal(mean, std, log_best):
    """``log E[(exp(W) - exp(log_best))+]`` for W ~ N(mean, std^2): the expected improvement of a value whose log
    the model predicts (its log scale, :mod:`..model.warp`), in the value's own units:
    EI = exp(m + s^2/2) Phi(d + s) - b Phi(d), d = (m - log b) / s. Where the two terms cancel to float precision
    (far below the best with a tiny std) it falls back to log b + log EI of W itself, a lower bound with the same
    ranking there (exp(x) - 1 >= x)."""
    m, s = np.asarray(mean, float), np.asarray(std, float)
    u = m - log_best
    pos = s > 0
    safe = np.where(pos, s, 1.0)
    d = u / safe
    la = u + 0.5 * safe**2 + log_ndtr(d + safe)
    lb = log_ndtr(d)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.exp(lb - la)
        exact = log_best + la + np.log1p(-np.minimum(ratio, 1.0))
        lower = log_best + np.log(safe) + log_h(d)
        out = np.where(ratio < 1.0 - 1e-9, exact, lower)
        return np.where(pos, out, np.log(np.maximum(np.exp(m) - np.exp(log_best), 0.0)))


