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


def test_the_baselines_count_measurements_to_the_first_top_position():
    """Issue 27: the model is compared with the rules a microscopist would use, counted the same way (measurements,
    seeds included). Known answers on a made-up field."""
    from napari_hae.core.analysis.metrics import baselines, measurements_to_top

    truth = np.zeros((10, 10))
    truth[7, 2] = 5.0                                                  # the one top-1% position
    image = np.arange(100.0).reshape(10, 10)                           # brightest at the bottom right
    image[7, 2] = 95.5                                                 # fifth brightest: 99, 98, 97, 96, 95.5
    b = baselines(image, truth, budget=9)
    assert b["brightness"] == 5 and b["random_median"] == 50
    assert b["darkness"] == 100 - 5 + 1                                # from the darkest: 0, 1, ... 94, 95.5
    assert b["grid_points"] == 9 and b["grid"] == 7                    # rows and columns 2, 4, 7: (7, 2) is 7th
    assert measurements_to_top([(0, 0), (7, 2), (7, 2)], truth) == 2 and measurements_to_top([(0, 0)], truth) is None
    truth[7, 2], truth[5, 5] = 0.0, 5.0                                # between the grid's points
    assert baselines(image, truth, budget=9)["grid"] is None
