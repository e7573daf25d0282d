"""Monitors of a run: learning curves, travel, model error against ground truth and reference models, and a
detector for runs that are stuck.

All functions read a :class:`~napari_hae.core.record.trace.Trace` (live or loaded), so the same numbers are drawn in
napari while a run goes and redrawn from a saved trace by ``napari-hae report``.
"""

from __future__ import annotations

import numpy as np

from ..data.patches import step_lengths
from ..record.trace import Trace
from ..run.diagnostics import STUCK_WINDOW, StuckReport, window_verdict


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
    """The **complete model**: the run's model (``settings.model``, default DKL) trained on (patch, scalarizer)
    pairs from every position (a random subset of ``max_points`` when there are more; the exact GP is cubic in the
    training size). Returns the predicted (mean, std) maps in scalarizer units: what the run's model would
    believe with all data."""
    from ..data.patches import PatchGrid
    from ..model.base import make_model
    from ..run.experiment import resolved_settings

    shape = np.shape(truth)
    X = PatchGrid(structural, patch_size)
    y = np.asarray(truth, dtype=np.float64).ravel()
    idx = np.arange(len(y))
    if len(y) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(y), max_points, replace=False))
    # the run's model (recorded: written out), else the defaults, written out for this scan as a run writes them
    spec = resolved_settings(settings, None, True, len(y)).model.to_dict()
    if spec["name"] == "dkl":   # trained on all max_points, not the run's bounded subset (issue 15)
        spec = {**spec, "params": {**spec["params"], "max_train": max(max_points, len(idx))}}
    model = make_model(spec, X.shape[1], seed=seed)
    model.fit(X[idx], y[idx], iterations=iterations, warm=False)
    mean, std = model.posterior(X).in_units()
    return mean.reshape(shape), std.reshape(shape)


def detect_stuck(trace: Trace, k: int = STUCK_WINDOW, **kw) -> StuckReport:
    """:func:`stuck_verdict` on the last ``k`` policy steps of ``trace``."""
    v = window_verdict(trace.steps, trace.structural.shape, k, **kw)
    return v if v is not None else StuckReport(False, f"only {trace.n_steps} of the {k} steps needed to judge")
