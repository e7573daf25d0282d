"""The built-in acquisition functions: EI, PI, UCB, maximum uncertainty, Thompson sampling, random.

EI and PI score in **log space** (as BoTorch's ``LogExpectedImprovement``): the ranking is that of EI and PI
wherever they are representable, and where an overconfident model makes them underflow to exactly 0 everywhere
(z = (mu - best) / sigma below about -38) their logarithms still rank the candidates, so the pick is never left
to the tie-break.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtr

from ..errors import HAEInputError
from ..model.improvement import (  # noqa: F401  (re-exported: the policies' math)
    _SQRT_2PI,
    log_expected_improvement,
    log_expected_improvement_lognormal,
    log_h,
)
from .base import AcquisitionFunction, _nonneg, register_policy

# ---------------------------------------------------------------------------------------------------------------

def expected_improvement(mean, std, best, xi=0.0):
    """EI for maximisation: (mu - best - xi) Phi(z) + sigma phi(z), z = (mu - best - xi) / sigma."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    imp = mean - best - xi
    safe = np.where(std > 0, std, 1.0)
    z = imp / safe
    ei = imp * ndtr(z) + std * np.exp(-0.5 * z**2) / _SQRT_2PI
    return np.where(std > 0, ei, np.maximum(imp, 0.0))


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
        return post.log_expected_improvement(ctx.best, self.xi)


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


