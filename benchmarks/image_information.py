"""How much does the structural image tell of where a task's top 1% is, to learners with far more labels than a run?

Issue 27 asks the deep kernel (a model of each position's image patch) to find the top 1% of a "hard" target in
half the measurements of the best baseline, a plain GP included. Here each task's whole map is labelled and
learners far stronger in data than a run (thousands of labelled patches against a run's 55) are trained on part of
the map and asked to rank the rest:

- the map is cut into tiles of twice the patch size, assigned at random to ``--folds`` groups; each group is
  ranked by a learner trained on every position at least one patch away from it (a **buffer**: overlapping patches
  of neighbouring positions would otherwise let a learner read a position's value off its neighbour's, which is
  where-was-it-high, not what-does-it-look-like);
- the learners see what the run's models see, the patch of the structural image: k nearest neighbours on the
  4 x 4 block means (the plain GP's features), ridge regression on 16 principal components, gradient-boosted trees
  on both, and a two-layer MLP on the whole patch (the DKL's network, trained alone);
- figures: measurements to the first top-1% position when the held-out positions are measured in the learner's
  order (all groups' rankings merged; 1 = its first pick), and precision at 1% (the share of the top 1% among the
  learner's top 1%; chance is 0.01), median / mean over ``--repeats`` draws of the groups.

A learner that finds the top 1% of a held-out region from its look means the image carries the target; one at
chance means the image's look, learnt from thousands of examples elsewhere on the map, does not say where the top
1% is, and a run can find it only by measuring near what it has measured (spatial search, which any smooth model
of overlapping patches does alike).

    python benchmarks/image_information.py                          # every task, 3 repeats (7.4 min on 2 cores)
    python benchmarks/image_information.py --tasks sio2 sio2_carbon --learners knn ridge --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TOP = 0.01


def block_means(patches: np.ndarray, patch: int) -> np.ndarray:
    """Each patch's 4 x 4 block means: the plain GP's features (its fixed pooling layer, ``model="gp"``)."""
    from napari_hae.core.model.gp import pooling

    return patches @ pooling(patch, 4).T


def spatial_folds(shape: tuple[int, int], tile: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Each position's group: square tiles of ``tile`` px, each tile assigned to one of ``folds`` groups at random."""
    rows, cols = np.arange(shape[0]) // tile, np.arange(shape[1]) // tile
    tiles = rows[:, None] * (cols[-1] + 1) + cols[None, :]
    return rng.integers(0, folds, int(tiles.max()) + 1)[tiles].ravel()


def cross_fitted(make, features: np.ndarray, y: np.ndarray, groups: np.ndarray, shape, buffer: int) -> np.ndarray:
    """Each group's prediction by ``make()`` fitted on the positions more than ``buffer`` px from that group."""
    from scipy.ndimage import binary_dilation

    out = np.full(len(y), np.nan)
    square = np.ones((2 * buffer + 1,) * 2, bool)
    for g in np.unique(groups):
        held = groups == g
        train = ~binary_dilation(held.reshape(shape), square).ravel()
        if train.sum() < 20:
            continue
        out[held] = make().fit(features[train], y[train]).predict(features[held])
    return out


def measured_in_order(pred: np.ndarray, top: np.ndarray) -> tuple[int, float]:
    """Measurements to the first ``top`` position when positions are measured by decreasing ``pred`` (NaN last),
    and the share of ``top`` among the first ``top.sum()`` of them."""
    order = np.argsort(-np.nan_to_num(pred, nan=-np.inf), kind="stable")
    hits = top[order]
    return int(np.flatnonzero(hits)[0]) + 1, float(hits[: int(top.sum())].mean())


def learners(patches: np.ndarray, patch: int) -> dict:
    """name -> (estimator factory, features): what a run's models see, given to learners with all the data."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.neural_network import MLPRegressor

    x = (patches - patches.mean()) / patches.std()
    blocks, pcs = block_means(x, patch), PCA(16, random_state=0).fit_transform(x)
    return {"knn": (lambda: KNeighborsRegressor(10), blocks),
            "ridge": (lambda: RidgeCV(alphas=np.logspace(-3, 3, 13)), pcs),
            "trees": (lambda: HistGradientBoostingRegressor(max_iter=200, random_state=0), np.hstack([blocks, pcs])),
            "mlp": (lambda: MLPRegressor(hidden_layer_sizes=(64, 32), early_stopping=True, max_iter=200,
                                         random_state=0), x)}


def information(structural, truth, patch: int, names, folds: int, repeats: int) -> dict:
    """Per learner: median measurements to the top 1% and mean precision at 1% over ``repeats`` draws of groups."""
    from napari_hae.core.analysis.metrics import top_mask
    from napari_hae.core.data.patches import PatchGrid

    truth = np.asarray(truth, float)
    top, y = top_mask(truth, TOP).ravel(), truth.ravel()
    table = learners(np.asarray(PatchGrid(structural, patch), float), patch)
    out = {}
    for name in names:
        make, features = table[name]
        counts, precision = [], []
        for rep in range(repeats):
            groups = spatial_folds(truth.shape, 2 * patch, folds, np.random.default_rng(rep))
            pred = cross_fitted(make, features, y, groups, truth.shape, buffer=patch)
            n, p = measured_in_order(pred, top)
            counts.append(n)
            precision.append(p)
        out[name] = {"measurements": counts, "median": float(np.median(counts)),
                     "precision_at_1pct": float(np.mean(precision))}
    return out


def main(argv=None) -> dict:
    import discovery

    from napari_hae.core.targets.scalarizers import Scalarizer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(discovery.DATASETS))
    p.add_argument("--learners", nargs="+", default=["knn", "ridge", "trees", "mlp"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    result = {"tasks": []}
    for task in a.tasks:
        spec, data, t0 = discovery.DATASETS[task], discovery._data(task), time.perf_counter()
        truth = np.asarray(data.scalarize(Scalarizer.from_dict(spec["scalarizer"])), float)
        row = information(data.structural, truth, spec["patch"], a.learners, a.folds, a.repeats)
        for name, r in row.items():
            print(f"{task:15s} {name:6s} measurements to the top 1%: median {r['median']:6.1f} {r['measurements']}"
                  f"   precision at 1%: {r['precision_at_1pct']:.2f}", flush=True)
        best = min(row.values(), key=lambda r: r["median"])
        result["tasks"].append({"name": task, "dataset": spec["data"], "learners": row,
                                "best_median": best["median"],
                                "best_precision": max(r["precision_at_1pct"] for r in row.values()),
                                "wall_s": round(time.perf_counter() - t0, 1)})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
