import numpy as np
import pytest

from napari_hae.core.analysis.metrics import random_first_hit_cdf, random_median_steps, steps_to_top, top_mask
from napari_hae.core.data.patches import step_lengths, travel_distance


def test_travel_distance_by_hand():
    pos = [(0, 0), (3, 4), (3, 4), (0, 0)]
    np.testing.assert_allclose(step_lengths(pos), [5.0, 0.0, 5.0])
    np.testing.assert_allclose(travel_distance(pos, pixel_size=0.5), [2.5, 2.5, 5.0])


def test_top_mask_and_steps_to_top():
    truth = np.arange(100.0).reshape(10, 10)
    assert top_mask(truth, 0.05).sum() == 5 and top_mask(truth, 0.05)[9, 9]
    pos = [(0, 0), (0, 1), (5, 5), (9, 9), (9, 8)]
    kinds = ["seed", "seed", "policy", "policy", "policy"]
    assert steps_to_top(pos, kinds, truth, 0.05) == 2
    assert steps_to_top(pos[:3], kinds[:3], truth, 0.05) is None
    assert steps_to_top([(9, 9)], ["seed"], truth, 0.05) == 0


def test_random_baseline_matches_simulation():
    M, K = 500, 5
    rng = np.random.default_rng(0)
    sims = [np.flatnonzero(rng.permutation(M) < K)[0] + 1 for _ in range(4000)]
    assert abs(random_median_steps(M, K) - np.median(sims)) <= 3
    assert random_first_hit_cdf(M, K, np.array([0]))[0] == 0.0
    assert random_first_hit_cdf(M, K, np.array([1]))[0] == pytest.approx(K / M)
