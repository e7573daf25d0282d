import numpy as np
import pytest
from scipy.stats import norm

from napari_hae.core.errors import HAEInputError
from napari_hae.core.policy import (
    POLICIES,
    AcquisitionContext,
    AcquisitionFunction,
    Posterior,
    make_policy,
    register_policy,
    select,
)
from napari_hae.core.policy.acquisition import expected_improvement, probability_of_improvement, upper_confidence_bound


def test_ei_closed_form_values():
    # mu=1, sigma=1, best=0: EI = Phi(1) + phi(1)
    assert expected_improvement(1.0, 1.0, 0.0) == pytest.approx(norm.cdf(1) + norm.pdf(1), rel=1e-12)
    mu, sd, best, xi = np.array([0.3, -1.0, 2.0]), np.array([0.5, 2.0, 0.1]), 0.5, 0.1
    z = (mu - best - xi) / sd
    np.testing.assert_allclose(expected_improvement(mu, sd, best, xi),
                               (mu - best - xi) * norm.cdf(z) + sd * norm.pdf(z), rtol=1e-12)


def test_ei_and_pi_with_zero_std_are_deterministic_improvements():
    np.testing.assert_allclose(expected_improvement([1.0, -1.0], [0.0, 0.0], 0.0), [1.0, 0.0])
    np.testing.assert_allclose(probability_of_improvement([1.0, -1.0], [0.0, 0.0], 0.0), [1.0, 0.0])


def test_pi_and_ucb_closed_forms():
    mu, sd = np.array([0.0, 1.0]), np.array([1.0, 2.0])
    np.testing.assert_allclose(probability_of_improvement(mu, sd, 0.5, 0.1), norm.cdf((mu - 0.6) / sd))
    np.testing.assert_allclose(upper_confidence_bound(mu, sd, 4.0), mu + 2.0 * sd)


def _ctx(n, seed=0, available=None):
    return AcquisitionContext(best=0.0, rng=np.random.default_rng(seed),
                              available=np.ones(n, bool) if available is None else available)


def test_policies_rank_as_expected():
    post = Posterior(mean=np.array([0.0, 1.0, 0.5]), std=np.array([2.0, 0.1, 0.5]))
    assert select(make_policy("mu")(post, _ctx(3)), np.ones(3, bool)) == 0
    assert select(make_policy("ucb", beta=0.0)(post, _ctx(3)), np.ones(3, bool)) == 1
    assert select(make_policy("ucb", beta=100.0)(post, _ctx(3)), np.ones(3, bool)) == 0


def test_select_never_returns_unavailable_and_errors_when_nothing_left():
    scores = np.array([5.0, 4.0, 3.0])
    assert select(scores, np.array([False, True, True])) == 1
    with pytest.raises(HAEInputError, match="No position is left"):
        select(scores, np.zeros(3, bool))


def test_thompson_scores_only_a_candidate_subset_and_uses_joint_sampler():
    n = 50
    post = Posterior(np.zeros(n), np.ones(n), sample=lambda idx, rng: np.arange(len(idx), dtype=float))
    s = make_policy("thompson", n_candidates=10)(post, _ctx(n))
    assert np.isfinite(s).sum() == 10
    assert np.nanmax(s[np.isfinite(s)]) == 9.0


def test_random_policy_is_seeded():
    post = Posterior(np.zeros(20), np.ones(20))
    a = make_policy("random")(post, _ctx(20, seed=1))
    b = make_policy("random")(post, _ctx(20, seed=1))
    np.testing.assert_array_equal(a, b)


def test_policy_parameter_errors():
    with pytest.raises(HAEInputError, match="no parameter"):
        make_policy("ei", beta=2.0)
    with pytest.raises(HAEInputError, match=">= 0"):
        make_policy("ucb", beta=-1.0)
    with pytest.raises(HAEInputError, match="Unknown policy"):
        make_policy("nope")


def test_user_policy_registration():
    @register_policy("test_greedy")
    class Greedy(AcquisitionFunction):
        def __call__(self, post, ctx):
            return post.mean

    try:
        pol = make_policy("test_greedy")
        post = Posterior(np.array([0.0, 3.0, 1.0]), np.ones(3))
        assert select(pol(post, _ctx(3)), np.ones(3, bool)) == 1
        assert pol.to_dict() == {"name": "test_greedy", "params": {}}
    finally:
        POLICIES.pop("test_greedy")


def test_a_pending_position_and_its_neighbours_lose_their_scores_by_distance():
    """A pipelined run chooses the next point while one is measured: scores near it fall (any sign, log too)."""
    from napari_hae.core.policy.base import AcquisitionContext
    from napari_hae.core.policy.wrappers import penalize_pending

    positions = np.array([(0, x) for x in range(10)])
    scores = np.array([5.0, 4.9, 4.8, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0])
    ctx = AcquisitionContext(best=0.0, rng=np.random.default_rng(0), available=np.ones(10, bool),
                             positions=positions, pending=np.array([(0, 0)]))
    out = penalize_pending(scores, ctx, radius=2.0)
    span = 5.0 - (-2.5)                                                  # the best minus the median score
    np.testing.assert_allclose(out, scores - span * np.exp(-0.5 * (np.arange(10) / 2.0) ** 2))
    assert out[0] == -2.5 and int(np.argmax(out)) == 2                   # the pick moves away from the pending one
    log_scores = np.log(np.array([0.5, 0.4, 0.3, 1e-300, 0.0, 0.1, 0.2, 0.01, 0.02, 0.03]))   # -inf included
    out = penalize_pending(log_scores, ctx, radius=1.0)
    assert np.isneginf(out[4]) and np.all(np.isfinite(out[[0, 1, 2, 5]])) and int(np.argmax(out)) == 2
    np.testing.assert_array_equal(penalize_pending(scores, AcquisitionContext(
        0.0, np.random.default_rng(0), np.ones(10, bool), positions=positions), 2.0), scores)   # nothing pending
