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
    random sampling), and ``grid`` (a regular grid of ``budget`` points at equal dose, in raster order; None if none
    of them hits)."""
    from scipy.ndimage import gaussian_filter

    ny, nx = np.shape(truth)
    mask = top_mask(truth, q).ravel()

    def ranked(image):
        order = np.argsort(-np.asarray(image, dtype=np.float64).ravel(), kind="stable")
        return int(np.flatnonzero(mask[order])[0]) + 1

    k = max(1, int(round(np.sqrt(budget * nx / ny))))   # columns; rows so that rows x columns ~ budget
    rows = max(1, int(round(budget / k)))
    ys = np.linspace(0, ny - 1, rows + 2)[1:-1].round().astype(int) if rows < ny else np.arange(ny)
    xs = np.linspace(0, nx - 1, k + 2)[1:-1].round().astype(int) if k < nx else np.arange(nx)
    grid = [(y, x) for y in ys for x in xs]
    image = np.asarray(structural, dtype=np.float64)
    smoothed = gaussian_filter(image, 1.0, mode="nearest")
    return {"brightness": ranked(image), "brightness_smoothed": ranked(smoothed),
            "darkness": ranked(-image), "darkness_smoothed": ranked(-smoothed),
            "random_median": random_median_steps(ny * nx, int(mask.sum())),
            "grid": measurements_to_top(grid, truth, q), "grid_points": len(grid)}


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
