"""Issue 16, 'acquisition without degenerate ties': EI and PI are computed in log space (as BoTorch's LogEI), so
an overconfident model's tiny standard deviations no longer underflow every score to 0 and hand the pick to the
tie-break (the raster scan of the issue)."""

import mpmath
import numpy as np
import pytest

from napari_hae.core.model.base import Posterior
from napari_hae.core.policy import AcquisitionContext, make_policy, select
from napari_hae.core.policy.acquisition import (
    expected_improvement,
    log_expected_improvement,
    log_h,
    log_probability_of_improvement,
)


def _exact_log_h(z):
    z = mpmath.mpf(z)
    return float(mpmath.log(mpmath.npdf(z) + z * mpmath.ncdf(z)))


@pytest.mark.parametrize("z", [-1e9, -1e6, -3e4, -1e3, -57.0, -38.5, -10.0, -1.5, -1.0, -0.3, 0.0, 2.0, 9.0])
def test_log_h_matches_high_precision(z):
    mpmath.mp.dps = 60
    assert log_h(np.array([z]))[0] == pytest.approx(_exact_log_h(z), rel=1e-9, abs=1e-12)


def test_log_ei_is_the_log_of_ei_where_ei_is_representable():
    rng = np.random.default_rng(0)
    mu, sd = rng.normal(size=200), rng.uniform(0.05, 2, 200)
    ei = expected_improvement(mu, sd, 0.3, 0.01)
    np.testing.assert_allclose(log_expected_improvement(mu, sd, 0.3, 0.01), np.log(ei), rtol=1e-10)
    np.testing.assert_allclose(log_expected_improvement([1.0, -1.0], [0.0, 0.0], 0.0), [0.0, -np.inf])
    from scipy.stats import norm

    np.testing.assert_allclose(log_probability_of_improvement(mu, sd, 0.5, 0.1), norm.logcdf((mu - 0.6) / sd))


def _overconfident(n=400, seed=0):
    """A posterior whose std is tiny next to the gap to the best value: every z <= -57 (the issue's step 36)."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(-3.0, -1.0, n)
    std = np.full(n, 0.0076) * rng.uniform(0.5, 1.5, n)
    return Posterior(mean=mean, std=std)


@pytest.mark.parametrize("name", ["ei", "pi", "ei_penalized"])
def test_an_overconfident_model_does_not_hand_the_pick_to_the_tie_break(name):
    post = _overconfident()
    n = len(post.mean)
    ny = 20
    positions = np.stack(np.unravel_index(np.arange(n), (ny, n // ny)), 1)
    ctx = AcquisitionContext(best=0.0, rng=np.random.default_rng(1), available=np.ones(n, bool), step=36,
                             budget=60, positions=positions, measured=positions[[0]], current=(0, 0))
    assert np.all(expected_improvement(post.mean, post.std, 0.0, 0.01) == 0)     # what plain EI gives here
    scores = make_policy(name)(post, ctx)
    finite = scores[np.isfinite(scores)]
    assert len(np.unique(finite)) == len(finite)                                  # no ties at all
    mpmath.mp.dps = 60
    xi = 0.01
    exact = []                                    # the same scores in 60-digit arithmetic
    for i in range(n):
        m, sd = mpmath.mpf(post.mean[i]), mpmath.mpf(post.std[i])
        z = (m - xi) / sd
        if name == "pi":
            v = mpmath.log(mpmath.ncdf(z))
        else:
            v = mpmath.log(sd) + mpmath.log(mpmath.npdf(z) + z * mpmath.ncdf(z))
        if name == "ei_penalized":
            d2 = float(np.sum((positions[i] - positions[0]) ** 2))
            v = v + mpmath.log(1 - mpmath.exp(-d2 / (2 * 5.0**2))) if d2 else -mpmath.inf
        exact.append(v)
    expect = int(np.argmax([float(v) if v != -mpmath.inf else -np.inf for v in exact]))
    picks = {select(scores, ctx.available, np.random.default_rng(s)) for s in range(5)}
    assert picks == {expect}


def _exact_log_ei_lognormal(m, s, log_b):
    """log E[(exp(W) - b)+], W ~ N(m, s^2), in 60-digit arithmetic (where float64 cancels)."""
    mpmath.mp.dps = 60
    m, s, log_b = mpmath.mpf(m), mpmath.mpf(s), mpmath.mpf(log_b)
    d = (m - log_b) / s
    return float(mpmath.log(mpmath.exp(m + s**2 / 2) * mpmath.ncdf(d + s) - mpmath.exp(log_b) * mpmath.ncdf(d)))


@pytest.mark.parametrize("m,s,log_b", [(1.0, 0.5, 1.2), (0.0, 2.0, 3.0), (5.0, 0.1, 4.0), (-3.0, 0.3, 2.0),
                                       (2.0, 0.05, 2.5), (0.3, 1.0, 0.3), (-1.0, 0.02, 1.0)])
def test_ei_on_a_log_scale_is_the_expected_improvement_of_the_value_itself(m, s, log_b):
    from napari_hae.core.policy.acquisition import log_expected_improvement_lognormal

    assert float(log_expected_improvement_lognormal(m, s, log_b)) == pytest.approx(
        _exact_log_ei_lognormal(m, s, log_b), rel=1e-6)


def test_ei_of_a_log_scale_model_ranks_by_the_improvement_of_the_value():
    """Two candidates, best measured 100: A surely at 110 (+10%), B at 37 but uncertain by a factor e. On the log
    scale A's sure gain wins (EI of log 0.095 vs 0.083); in the value's units (exp is convex) B's chance of a large
    gain does (EI 10.0 vs 14.5): the policy takes the units' answer, as a Monte Carlo estimate does."""
    from napari_hae.core.model.warp import LOG

    mean, std = np.log([110.0, 100.0 / np.e]), np.array([0.01, 1.0])
    post_log = Posterior(mean=mean, std=std, warp=LOG)
    ctx = AcquisitionContext(best=float(np.log(100.0)), rng=np.random.default_rng(0), available=np.ones(2, bool))
    assert np.argmax(log_expected_improvement(mean, std, np.log(100.0))) == 0      # the log scale's choice
    assert np.argmax(make_policy("ei", xi=0.0)(post_log, ctx)) == 1                # the value's
    mc = [np.mean(np.maximum(np.exp(np.random.default_rng(1).normal(mu, sd, 400_000)) - 100.0, 0))
          for mu, sd in zip(mean, std)]
    assert np.argmax(mc) == 1 and mc[0] == pytest.approx(10.0, abs=0.05) and mc[1] == pytest.approx(14.46, abs=0.3)
