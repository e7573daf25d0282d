import sys
from pathlib import Path

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
    # every placement of the 3 x 3 grid (cells 10/3 px: offsets 0-3 each way, 16): only rows 1, 4, 7 with columns
    # 2, 5, 8 reach (7, 2), as the 7th point; the other 15 never do (counted as budget + 1 = 10)
    assert b["grid_placements"] == 16 and b["grid_median"] == 10.0 and b["grid_never"] == 15 / 16
    truth[7, 2], truth[5, 5] = 0.0, 5.0                                # between the grid's points
    assert baselines(image, truth, budget=9)["grid"] is None


def test_every_grid_placement_is_a_whole_grid_inside_the_scan():
    """A grid's median is over its placements (issue 27: one placement is one draw); each is rows x columns
    distinct points inside the scan, and together they cover every position exactly once per cell offset."""
    from napari_hae.core.analysis.metrics import grid_placements, grid_shape

    assert grid_shape((50, 40), 55) == (8, 7)
    placements = grid_placements((50, 40), 55)
    assert len(placements) == 7 * 6                                   # cells 6.25 x 5.71 px
    for points in placements:
        assert points.shape == (56, 2) and len({tuple(p) for p in points}) == 56
        assert points.min() >= 0 and points[:, 0].max() < 50 and points[:, 1].max() < 40
    seen = np.zeros((50, 40), int)
    for points in placements:
        seen[points[:, 0], points[:, 1]] += 1
    assert seen.min() >= 1                                            # no position is out of every grid's reach


def test_a_task_is_judged_against_the_grid_median_and_the_plain_gp():
    """benchmarks/discovery.py's task line (issue 27): the best baseline is the lowest of the model-free rules (the
    grid by its median over placements, not its one centred placement) and the plain GP; hard when no model-free
    rule is within 15 measurements."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import discovery

    rules = {"brightness": 442, "brightness_smoothed": 435, "darkness": 7677, "darkness_smoothed": 6939,
             "random_median": 69, "grid": 5, "grid_points": 56, "grid_median": 56.0, "grid_never": 0.52,
             "grid_placements": 42}
    result = {"datasets": {"cuzn_zn_excess": {"default": {"median_measurements_to_top1": 39.5},
                                              "plain_gp": {"median_measurements_to_top1": 51.0}}},
              "baselines": {"cuzn_zn_excess": rules}}
    t = discovery.task_summary("cuzn_zn_excess", result, 45)
    assert t["baselines"] == {"brightness": 442, "brightness_smoothed": 435, "darkness": 7677,
                              "darkness_smoothed": 6939, "random": 69, "grid": 56.0, "plain_gp": 51.0}
    assert t["grid_centred"] == 5 and t["best_baseline"] == 51.0 and t["hard"] is True
    assert t["model_within_2x_plus_5"] is True and t["model_within_half_best"] is False
    result["baselines"]["cuzn_zn_excess"] = {**rules, "grid_median": 14.0}
    t = discovery.task_summary("cuzn_zn_excess", result, 45)
    assert t["hard"] is False and t["best_baseline"] == 14.0 and t["model_within_2x_plus_5"] is False
