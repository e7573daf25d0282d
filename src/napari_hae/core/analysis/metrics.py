"""Run metrics: discovery (steps to reach a top-q location) and the random-sampling baseline. Travel is scan
geometry (:mod:`napari_hae.core.data.patches`), the Pareto set the objective's (:mod:`..targets.objective`)."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def top_mask(truth: np.ndarray, q: float = 0.01) -> np.ndarray:
    """Bool mask of the top fraction ``q`` of ``truth`` (at least one position)."""
    t = np.asarray(truth, dtype=float).ravel()
    k = max(1, int(round(q * t.size)))
    thr = np.partition(t, t.size - k)[t.size - k]
    return (np.asarray(truth) >= thr)


def steps_to_top(trace_or_positions, kinds, truth: np.ndarray, q: float = 0.01,
                 seeds_count: bool = True) -> int | None:
    """Policy steps (1-based) until the first measured position in the top-q of ``truth``; 0 if a seed already
    hit, None if never reached. ``kinds`` is the per-point kind list ('seed' points are not counted as steps).
    ``seeds_count=False``: the policy's own picks only (a seed that landed in the top-q is no success of the
    policy's)."""
    pos = np.asarray(trace_or_positions, dtype=int).reshape(-1, 2)
    hit = top_mask(truth, q)[pos[:, 0], pos[:, 1]]
    is_seed = np.asarray([k == "seed" for k in kinds])
    if seeds_count and hit[is_seed].any():
        return 0
    steps = np.cumsum(~is_seed)
    first = np.flatnonzero(hit & ~is_seed)
    return int(steps[first[0]]) if len(first) else None


def random_first_hit_cdf(n_remaining: int, n_targets: int, s: np.ndarray) -> np.ndarray:
    """P(first hit within s draws) when drawing uniformly without replacement from ``n_remaining`` positions of
    which ``n_targets`` are targets: 1 - C(M-K, s) / C(M, s)."""
    M, K = int(n_remaining), int(n_targets)
    s = np.asarray(s, dtype=float)
    ok = s <= M - K
    log_ratio = (gammaln(M - K + 1) - gammaln(M - K - np.where(ok, s, 0) + 1)
                 - gammaln(M + 1) + gammaln(M - np.where(ok, s, 0) + 1))
    return np.where(ok, 1.0 - np.exp(log_ratio), 1.0)


def measurements_to_top(positions, truth: np.ndarray, q: float = 0.01) -> int | None:
    """Measurements (1-based, seeds included: the dose a run spent) until the first one in the top-q of ``truth``;
    None if never."""
    pos = np.asarray(positions, dtype=int).reshape(-1, 2)
    hit = np.flatnonzero(top_mask(truth, q)[pos[:, 0], pos[:, 1]])
    return int(hit[0]) + 1 if hit.size else None


def baselines(structural: np.ndarray, truth: np.ndarray, budget: int, q: float = 0.01) -> dict:
    """Measurements to the first top-q position by the rules a microscopist would use without a model, counted as
    :func:`measurements_to_top`: ``brightness`` (positions in order of the structural image's brightness),
    ``brightness_smoothed`` (after a Gaussian of 1 px), ``darkness`` and ``darkness_smoothed`` (the same from the
    darkest: a target the image shows dim, e.g. a lighter phase or the support), ``random_median`` (exact median of
    random sampling), ``grid`` (a regular grid of ``budget`` points at equal dose, centred, in raster order; None if
    none of them hits) and ``grid_median``: the median over every placement of that grid (its offset within one
    cell, :func:`grid_placements`), a grid that never hits counted as ``budget + 1`` as a run that never does; as
    random sampling's, the figure a grid gives when nothing tells where to put it (one placement is one draw:
    the centred grid hits the Zn-rich particles of CuZn at 5, 22 of its 42 placements never do)."""
    from scipy.ndimage import gaussian_filter

    ny, nx = np.shape(truth)
    mask = top_mask(truth, q).ravel()

    def ranked(image):
        order = np.argsort(-np.asarray(image, dtype=np.float64).ravel(), kind="stable")
        return int(np.flatnonzero(mask[order])[0]) + 1

    rows, cols = grid_shape((ny, nx), budget)
    ys = np.linspace(0, ny - 1, rows + 2)[1:-1].round().astype(int) if rows < ny else np.arange(ny)
    xs = np.linspace(0, nx - 1, cols + 2)[1:-1].round().astype(int) if cols < nx else np.arange(nx)
    grid = [(y, x) for y in ys for x in xs]
    placed = [measurements_to_top(points, truth, q) for points in grid_placements((ny, nx), budget)]
    placed = np.array([budget + 1 if m is None else m for m in placed])
    image = np.asarray(structural, dtype=np.float64)
    smoothed = gaussian_filter(image, 1.0, mode="nearest")
    return {"brightness": ranked(image), "brightness_smoothed": ranked(smoothed),
            "darkness": ranked(-image), "darkness_smoothed": ranked(-smoothed),
            "random_median": random_median_steps(ny * nx, int(mask.sum())),
            "grid": measurements_to_top(grid, truth, q), "grid_points": len(grid),
            "grid_median": float(np.median(placed)), "grid_never": float(np.mean(placed > budget)),
            "grid_placements": len(placed)}


def grid_shape(scan_shape: tuple[int, int], budget: int) -> tuple[int, int]:
    """(rows, columns) of a regular grid of about ``budget`` points over ``scan_shape``, cells as square as
    the scan allows."""
    ny, nx = scan_shape
    cols = max(1, int(round(np.sqrt(budget * nx / ny))))
    return max(1, int(round(budget / cols))), cols


def grid_placements(scan_shape: tuple[int, int], budget: int) -> list[np.ndarray]:
    """Every placement of the regular grid of :func:`grid_shape`: its points (raster order, (n, 2)) for each
    whole-pixel offset of its first point within one cell (cells ``ny / rows`` x ``nx / columns`` pixels)."""
    ny, nx = scan_shape
    rows, cols = grid_shape(scan_shape, budget)
    rows, cols = min(rows, ny), min(cols, nx)
    sy, sx = ny / rows, nx / cols
    out = []
    for oy in range(int(np.ceil(sy))):
        ys = np.floor(oy + np.arange(rows) * sy).astype(int)
        for ox in range(int(np.ceil(sx))):
            xs = np.floor(ox + np.arange(cols) * sx).astype(int)
            if ys[-1] < ny and xs[-1] < nx:
                out.append(np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2))
    return out


def random_median_steps(n_remaining: int, n_targets: int) -> int:
    """Median number of random draws to the first target (the exact random-sampling baseline)."""
    s = np.arange(0, n_remaining + 1)
    return int(s[np.argmax(random_first_hit_cdf(n_remaining, n_targets, s) >= 0.5 - 1e-9)])   # 0.5 to rounding: in


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination."""
    y_true = np.asarray(y_true, dtype=np.float64)
    ss_res = float(np.sum((y_true - np.asarray(y_pred)) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else -np.inf)
