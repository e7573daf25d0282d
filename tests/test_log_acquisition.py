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
