"""Summary figure and numbers of a run (matplotlib, Agg; no Qt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import steps_to_top, travel_distance
from .trace import Trace


def summarize(trace: Trace, truth: np.ndarray | None = None, wall_time: float | None = None) -> dict:
    """Numbers a microscopist wants at the end of a run."""
    pos = trace.positions_array()
    pixel = float(trace.dataset.get("pixel_size", 1.0))
    travel = travel_distance(pos)
    st = trace.step_array("step_time")
    out = {
        "points_measured": trace.n_points,
        "policy_steps": trace.n_steps,
        "seeds": int(sum(k == "seed" for k in trace.kinds)),
        "best_value": float(np.max(trace.values)) if trace.values else None,
        "best_position": [int(c) for c in pos[int(np.argmax(trace.values))]] if trace.values else None,
        "travel_distance_px": float(travel[-1]) if len(travel) else 0.0,
        "travel_distance_units": float(travel[-1] * pixel) if len(travel) else 0.0,
        "pixel_units": trace.dataset.get("pixel_units", "px"),
        "median_step_time_s": float(np.median(st)) if len(st) else None,
        "interventions": len(trace.interventions),
    }
    if wall_time is not None:
        out["wall_time_s"] = float(wall_time)
    if truth is not None:
        out["truth_max"] = float(np.max(truth))
        out["best_fraction_of_truth_max"] = (out["best_value"] / out["truth_max"]
                                             if out["truth_max"] and out["best_value"] is not None else None)
        out["steps_to_top1pct"] = steps_to_top(pos, trace.kinds, truth, 0.01)
        out["steps_to_top5pct"] = steps_to_top(pos, trace.kinds, truth, 0.05)
    return out


def summary_figure(trace: Trace, path, truth: np.ndarray | None = None, title: str = "") -> Path:
    """PNG: structural image with seeds and trajectory, predicted mean, uncertainty, acquisition, learning curve."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pos = trace.positions_array()
    seeds = np.array([k == "seed" for k in trace.kinds])
    last = trace.map_steps[-1] if trace.map_steps else None
    ncols = 4 if truth is None else 5
    fig = plt.figure(figsize=(4 * ncols, 8), constrained_layout=True)
    gs = fig.add_gridspec(2, ncols)
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(trace.structural, cmap="gray")
    if len(pos):
        ax.plot(pos[~seeds, 1], pos[~seeds, 0], "-", color="w", lw=0.6, alpha=0.7)
        sc = ax.scatter(pos[~seeds, 1], pos[~seeds, 0], c=np.arange((~seeds).sum()), cmap="plasma", s=12)
        ax.scatter(pos[seeds, 1], pos[seeds, 0], marker="s", facecolors="none", edgecolors="cyan", s=25,
                   label="seeds")
        fig.colorbar(sc, ax=ax, shrink=0.7, label="step")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_title("structural image + trajectory")
    panels = [("mean", "predicted mean", "viridis"), ("std", "uncertainty (std)", "magma"),
              ("acq", "acquisition", "cividis")]
    for i, (key, name, cmap) in enumerate(panels, start=1):
        a = fig.add_subplot(gs[0, i])
        m = trace.map_at(key, last) if last is not None else None
        if m is not None:
            m = np.where(np.isfinite(m), m, np.nan)
            im = a.imshow(m, cmap=cmap)
            fig.colorbar(im, ax=a, shrink=0.7)
        a.set_title(f"{name} (step {last})" if last is not None else f"{name}: not recorded")
    if truth is not None:
        a = fig.add_subplot(gs[0, 4])
        im = a.imshow(truth, cmap="viridis")
        a.scatter(pos[:, 1], pos[:, 0], s=4, c="r")
        fig.colorbar(im, ax=a, shrink=0.7)
        a.set_title("complete data (ground truth)")
    steps = np.arange(trace.n_steps)
    a = fig.add_subplot(gs[1, 0:2])
    if trace.n_steps:
        a.plot(steps, trace.steps["std_mean"], label="mean uncertainty (all patches)")
        a.fill_between(steps, trace.steps["std_q10"], trace.steps["std_q90"], alpha=0.3, label="10-90% quantiles")
        a.plot(steps, trace.steps["next_std"], ".", ms=3, label="next-step uncertainty")
        for iv in trace.interventions:
            a.axvline(iv["step"], color="k", ls="--", lw=0.8)
    a.set_xlabel("step")
    a.set_ylabel("predictive std (scalarizer units)")
    a.legend(fontsize=8)
    a.set_title("learning curve (dashed: interventions)")
    a = fig.add_subplot(gs[1, 2])
    if trace.n_steps:
        a.plot(steps, trace.steps["best_so_far"], label="best measured")
        vals = np.asarray(trace.values)[~seeds]
        a.plot(np.arange(len(vals)), vals, ".", ms=3, label="measured value")
        if truth is not None:
            a.axhline(float(np.max(truth)), color="r", ls=":", label="truth max")
    a.set_xlabel("step")
    a.legend(fontsize=8)
    a.set_title("scalarizer")
    a = fig.add_subplot(gs[1, 3])
    travel = travel_distance(pos)  # the probe's whole path, seeds included
    a.plot(np.arange(1, len(travel) + 1) - int(seeds.sum()) + 1, travel)
    a.set_xlabel("step (negative: seeds)")
    a.set_ylabel("pixels")
    a.set_title("cumulative travel distance")
    fig.suptitle(title or f"napari-hae run: {trace.settings.get('policy', {}).get('name', '')}")
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
