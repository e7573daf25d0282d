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


@pytest.mark.slow
def test_image_information_finds_a_target_the_image_shows_and_not_one_it_does_not():
    """benchmarks/image_information.py (issue 27): learners trained away from a held-out region rank it. A target
    that is the image's local brightness is found at the first measurement; one drawn independently of the image
    (blobs elsewhere) is at chance, 0.01 of the top 1% among the learner's top 1%. The buffer keeps a learner from
    reading a position off its neighbours: without it the independent blobs are found, since they are smooth."""
    from scipy.ndimage import gaussian_filter

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import image_information as info

    rng = np.random.default_rng(0)
    image = gaussian_filter(rng.normal(size=(64, 64)), 2.0)
    shown = gaussian_filter(image, 1.0)
    hidden = gaussian_filter(rng.normal(size=(64, 64)), 2.0)
    figures = {name: info.information(image, t, 8, ["knn", "ridge"], folds=5, repeats=2)
               for name, t in (("shown", shown), ("hidden", hidden))}
    assert figures["shown"]["ridge"]["median"] == 1.0
    assert figures["shown"]["ridge"]["precision_at_1pct"] >= 0.5
    for r in figures["hidden"].values():
        assert r["precision_at_1pct"] <= 0.1 and r["median"] > 5

    groups = info.spatial_folds((64, 64), 16, 5, np.random.default_rng(0))
    assert groups.shape == (64 * 64,) and len(np.unique(groups.reshape(64, 64)[:16, :16])) == 1
    from sklearn.neighbors import KNeighborsRegressor

    from napari_hae.core.data.patches import PatchGrid

    features = info.block_means(np.asarray(PatchGrid(image, 8), float), 8)
    top = (hidden >= np.quantile(hidden, 0.99)).ravel()
    scattered = np.random.default_rng(1).integers(0, 5, 64 * 64)    # held-out positions among trained ones
    leaky = info.cross_fitted(lambda: KNeighborsRegressor(3), features, hidden.ravel(), scattered, (64, 64), 0)
    assert info.measured_in_order(leaky, top)[1] > 0.3   # neighbours' overlapping patches give the blobs away


@pytest.mark.slow
def test_the_coordinates_gp_baseline_models_where_it_measured_and_not_the_image():
    """benchmarks/spatial_gp.py (issue 27's spatial-search baseline): each patch the run hands it is found again by
    its position; a smooth map of the coordinates is learnt from 40 points, whatever image the patches come from."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from spatial_gp import SpatialGP

    from napari_hae.core.data.patches import PatchGrid

    rows, cols = np.mgrid[0:24, 0:20]
    truth = (2.0 + np.sin(rows / 5.0) + np.cos(cols / 4.0)).ravel()
    at = np.random.default_rng(0).choice(truth.size, 40, replace=False)
    maps = []
    for seed in (1, 2):
        image = np.random.default_rng(seed).normal(size=(24, 20))
        grid = PatchGrid(image, 8)
        model = SpatialGP(image, 8, seed=0)
        model.fit(grid[at], truth[at], iterations=150)
        mean, _ = model.predict(grid)
        assert np.allclose(model.predict(grid[at[:5]])[0], mean[at[:5]], rtol=1e-5)
        maps.append(mean)
    assert np.corrcoef(maps[0], truth)[0, 1] > 0.95
    assert np.allclose(maps[0], maps[1], rtol=1e-4)
