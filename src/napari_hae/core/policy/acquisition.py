"""The built-in acquisition functions: EI, PI, UCB, maximum uncertainty, Thompson sampling, random.

EI and PI score in **log space** (as BoTorch's ``LogExpectedImprovement``): the ranking is that of EI and PI
wherever they are representable, and where an overconfident model makes them underflow to exactly 0 everywhere
(z = (mu - best) / sigma below about -38) their logarithms still rank the candidates, so the pick is never left
to the tie-break.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfcx, log_ndtr, ndtr

from ..errors import HAEInputError
from .base import AcquisitionFunction, _nonneg, register_policy

_SQRT_2PI = np.sqrt(2.0 * np.pi)


# ---------------------------------------------------------------------------------------------------------------

def expected_improvement(mean, std, best, xi=0.0):
    """EI for maximisation: (mu - best - xi) Phi(z) + sigma phi(z), z = (mu - best - xi) / sigma."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    imp = mean - best - xi
    safe = np.where(std > 0, std, 1.0)
    z = imp / safe
    ei = imp * ndtr(z) + std * np.exp(-0.5 * z**2) / _SQRT_2PI
    return np.where(std > 0, ei, np.maximum(imp, 0.0))


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


def log_probability_of_improvement(mean, std, best, xi=0.0):
    """``log PI`` for maximisation: log Phi((mu - best - xi) / sigma), without underflow."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    imp = mean - best - xi
    safe = np.where(std > 0, std, 1.0)
    with np.errstate(divide="ignore"):
        return np.where(std > 0, log_ndtr(imp / safe), np.where(imp > 0, 0.0, -np.inf))


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
    """Expected improvement over the best measured value with exploration margin ``xi`` (standardized units).
    Scores are log EI: the same ranking, no underflow."""

    params = ("xi",)
    log_scale = True

    def __init__(self, xi: float = 0.0):
        self.xi = _nonneg("xi", xi)

    def __call__(self, post, ctx):
        if post.warp.name == "log":   # the improvement of the measured value, not of its logarithm
            return log_expected_improvement_lognormal(post.mean * post.scale + post.offset, post.std * post.scale,
                                                      (ctx.best + self.xi) * post.scale + post.offset)
        return log_expected_improvement(post.mean, post.std, ctx.best, self.xi)


@register_policy("pi")
class ProbabilityOfImprovement(AcquisitionFunction):
    """Probability of improving on the best measured value by more than ``xi``. Scores are log PI."""

    params = ("xi",)
    log_scale = True

    def __init__(self, xi: float = 0.01):
        self.xi = _nonneg("xi", xi)

    def __call__(self, post, ctx):
        return log_probability_of_improvement(post.mean, post.std, ctx.best, self.xi)


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
    """Pure exploration: the largest predictive standard deviation in the target's units (the std map as shown;
    on a log-scale model the absolute, not the relative, uncertainty)."""

    def __call__(self, post, ctx):
        return np.asarray(post.in_units()[1], float).copy()


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


