"""Monitors of a run: learning curves, travel, model error against ground truth and reference models, and a
detector for runs that are stuck.

All functions read a :class:`~napari_hae.core.record.trace.Trace` (live or loaded), so the same numbers are drawn in
napari while a run goes and redrawn from a saved trace by ``napari-hae report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import step_lengths
from ..record.trace import Trace


def policy_travel(trace: Trace) -> np.ndarray:
    """Cumulative probe travel (pixels) after each policy step, counted from the last point measured before
    step 0 (normally the last seed)."""
    pos = trace.positions_array()
    idx = np.flatnonzero(np.asarray(trace.point_steps) >= 0)
    if len(idx) == 0:
        return np.zeros(0)
    cum = np.concatenate([[0.0], np.cumsum(step_lengths(pos))])    # travel to reach point i
    return cum[idx] - (cum[idx[0] - 1] if idx[0] > 0 else 0.0)


def learning_curves(trace: Trace) -> dict[str, np.ndarray]:
    """Per-step curves: uncertainty over all patches (mean, std, quantiles), next-step uncertainty, best value so
    far, travel in pixels and in calibrated units (``trace.dataset['pixel_size']``)."""
    out = {"step": np.arange(trace.n_steps)}
    for k in ("std_mean", "std_std", "std_q10", "std_q50", "std_q90", "next_std", "best_so_far"):
        out[k] = trace.step_array(k)
    out["travel_px"] = policy_travel(trace)
    out["travel_units"] = out["travel_px"] * float(trace.dataset.get("pixel_size", 1.0))
    return out


def _rmse(a, b) -> float:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean(d[np.isfinite(d)] ** 2)))


def model_errors(trace: Trace, truth: np.ndarray | None = None, complete: np.ndarray | None = None) -> dict:
    """Root-mean-square difference of each stored predicted-mean map against ``truth`` (the scalarizer of every
    pre-acquired spectrum), the ``complete`` model's mean map, and the run's **final** model (the last map).

    Returns ``{"step": steps with maps, "vs_truth", "vs_complete", "vs_final": arrays (NaN where not given)}``.
    Differences are in scalarizer units; comparisons across a scalarizer change are not meaningful.
    """
    steps = np.asarray(trace.map_steps, dtype=int)
    maps = trace.maps["mean"]
    nan = np.full(len(steps), np.nan)
    out = {"step": steps, "vs_truth": nan.copy(), "vs_complete": nan.copy(), "vs_final": nan.copy()}
    if not len(steps):
        return out
    final = maps[-1]
    for i, m in enumerate(maps):
        if truth is not None:
            out["vs_truth"][i] = _rmse(m, truth)
        if complete is not None:
            out["vs_complete"][i] = _rmse(m, complete)
        out["vs_final"][i] = _rmse(m, final)
    return out


def complete_model(structural: np.ndarray, truth: np.ndarray, patch_size: int, settings=None,
                   max_points: int = 2048, iterations: int = 200, seed: int = 0):
    """The **complete model**: the same DKL trained on (patch, scalarizer) pairs from every position (a random
    subset of ``max_points`` when there are more; the exact GP is cubic in the training size). Returns the
    predicted (mean, std) maps in scalarizer units: what the run's model would believe with all data."""
    from ..model.dkl import DKLRegressor
    from ..data.patches import extract_patches

    shape = np.shape(truth)
    X = extract_patches(structural, patch_size).reshape(shape[0] * shape[1], -1)
    y = np.asarray(truth, dtype=np.float64).ravel()
    idx = np.arange(len(y))
    if len(y) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(y), max_points, replace=False))
    kw = {}
    if settings is not None:
        kw = dict(embed_dim=settings.embed_dim, hidden=settings.hidden, kernel=settings.kernel, lr=settings.lr)
    model = DKLRegressor(X.shape[1], seed=seed, **kw)
    model.fit(X[idx], y[idx], iterations=iterations)
    mean, std = model.predict(X)
    return mean.reshape(shape), std.reshape(shape)


@dataclass
class StuckReport:
    """Verdict of :func:`detect_stuck`, with the numbers behind it and what to do."""

    stuck: bool
    reason: str
    spread_px: float = float("nan")
    latent_spread: float = float("nan")
    uncertainty_drop: float = float("nan")
    suggestions: list = field(default_factory=list)


SUGGESTIONS = [
    "make the policy more exploratory (raise EI's xi or UCB's beta)",
    "switch to maximum uncertainty (mu) for a few steps",
    "increase the patch size, so the model sees more context",
    "draw an 'avoid' object over the region the run keeps returning to",
]


def detect_stuck(trace: Trace, k: int = 10, **kw) -> StuckReport:
    """:func:`stuck_verdict` on the last ``k`` policy steps of ``trace``."""
    if trace.n_steps < k:
        return StuckReport(False, f"only {trace.n_steps} of the {k} steps needed to judge")
    return stuck_verdict(trace.steps["position"][-k:], trace.steps["std_mean"][-k:], trace.structural.shape, **kw)


def stuck_verdict(picks, std_means, scan_shape, radius: float | None = None, latent: np.ndarray | None = None,
                  latent_radius: float | None = None, stall: float = 0.05) -> StuckReport:
    """Is the run stuck? True when the ``picks`` (k, 2) of the last k policy steps stay within ``radius`` pixels
    of their centroid (default 5% of the larger scan side, at least 2 px), or within ``latent_radius`` of one
    point of the rVAE latent plane (``latent``: (n_positions, 2), default radius 10% of its range), **while** the
    mean uncertainty over all patches (``std_means``, per step) fell by less than ``stall`` (fraction) over those
    steps: the run keeps measuring one place and learns nothing about the rest.
    """
    picks = np.asarray(picks, dtype=float).reshape(-1, 2)
    std = np.asarray(std_means, dtype=float)
    k = len(picks)
    ny, nx = scan_shape
    radius = max(2.0, 0.05 * max(ny, nx)) if radius is None else float(radius)
    spread = float(np.max(np.hypot(*(picks - picks.mean(0)).T)))
    compact = spread <= radius
    lat_spread = float("nan")
    if latent is not None:
        lat = np.asarray(latent)
        z = lat[(picks[:, 0] * nx + picks[:, 1]).astype(int)]
        lr = 0.1 * float(np.max(np.ptp(lat, axis=0))) if latent_radius is None else float(latent_radius)
        lat_spread = float(np.max(np.linalg.norm(z - z.mean(0), axis=1)))
        compact = compact or lat_spread <= lr
    drop = float(1.0 - std[-1] / std[0]) if std[0] > 0 else 0.0
    stalled = drop < stall
    if compact and stalled:
        where = (f"within {spread:.1f} px" if spread <= radius else f"in one latent cluster (spread {lat_spread:.2g})")
        return StuckReport(True, f"the last {k} picks stay {where} while the mean uncertainty fell only "
                                 f"{100 * drop:.1f}%", spread, lat_spread, drop, list(SUGGESTIONS))
    why = "picks spread out" if not compact else f"uncertainty still falling ({100 * drop:.1f}% in {k} steps)"
    return StuckReport(False, why, spread, lat_spread, drop)
