"""The report figure of a run (matplotlib, Agg; no Qt): maps, learning curves, travel, model error, latent plane."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..record.trace import Trace

NCOLS = 5   # the summary's panels per row


def summary_figure(trace: Trace, path, truth: np.ndarray | None = None, title: str = "",
                   step: int | None = None) -> Path:
    """The run's monitors in one PNG/SVG: structural image with the trajectory, predicted mean, uncertainty,
    acquisition (and ground truth); learning curves, scalarizer of measured points, travel distance, model error
    against truth / complete / final model, and the trajectory in the rVAE latent plane (when computed).
    ``step`` draws the maps of that step (default: the last stored)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4 * NCOLS, 8), constrained_layout=True)
    try:
        draw_summary(fig, trace, truth, title, step)
        path = Path(path)
        fig.savefig(path, dpi=80)
    finally:
        plt.close(fig)
    return path


def draw_summary(fig, trace: Trace, truth: np.ndarray | None = None, title: str = "",
                 step: int | None = None) -> None:
    """:func:`summary_figure`'s panels drawn into ``fig``."""
    from ..analysis.monitors import learning_curves

    pos = trace.positions_array()
    seeds = np.array([k == "seed" for k in trace.kinds])
    last = (trace.map_steps[-1] if trace.map_steps else None) if step is None else step
    mon = trace.monitors
    gs = fig.add_gridspec(2, NCOLS)
    _trajectory_panel(fig.add_subplot(gs[0, 0]), fig, trace.structural, pos, seeds)
    _map_panels([fig.add_subplot(gs[0, i]) for i in (1, 2, 3)], fig, trace, last)
    a = fig.add_subplot(gs[0, 4])
    if truth is not None:
        im = a.imshow(truth, cmap="viridis")
        a.scatter(pos[:, 1], pos[:, 0], s=4, c="r")
        fig.colorbar(im, ax=a, shrink=0.7)
        a.set_title("complete data (ground truth)")
    else:
        _latent_panel(a, fig, mon, seeds)
    cur = learning_curves(trace)
    _uncertainty_panel(fig.add_subplot(gs[1, 0]), trace, cur)
    _values_panel(fig.add_subplot(gs[1, 1]), trace, cur, seeds, truth)
    _travel_panel(fig.add_subplot(gs[1, 2]), trace, cur)
    _error_panel(fig.add_subplot(gs[1, 3]), mon)
    a = fig.add_subplot(gs[1, 4])
    if truth is not None:
        _latent_panel(a, fig, mon, seeds)
    else:
        a.axis("off")
    fig.suptitle(title or f"napari-hae run: {trace.settings.get('policy', {}).get('name', '')}")


def _steps_axis(a) -> None:
    """A step axis: labelled, ticks at whole steps (a short run's were at 0, 1.5, 3, 4.5)."""
    from matplotlib.ticker import MaxNLocator

    a.set_xlabel("step")
    a.xaxis.set_major_locator(MaxNLocator(integer=True))


def _trajectory_panel(ax, fig, structural: np.ndarray, pos: np.ndarray, seeds: np.ndarray) -> None:
    """The structural image with the trajectory: seeds as cyan squares, then the picks coloured by step."""
    ax.imshow(structural, cmap="gray")
    if len(pos):
        ax.plot(pos[~seeds, 1], pos[~seeds, 0], "-", color="w", lw=0.6, alpha=0.7)
        sc = ax.scatter(pos[~seeds, 1], pos[~seeds, 0], c=np.arange((~seeds).sum()), cmap="plasma", s=12)
        ax.scatter(pos[seeds, 1], pos[seeds, 0], marker="s", facecolors="none", edgecolors="cyan", s=25,
                   label="seeds")
        fig.colorbar(sc, ax=ax, shrink=0.7, label="step")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_title("structural image + trajectory")


def _map_panels(axes, fig, trace: Trace, last: int | None) -> None:
    """The predicted mean, uncertainty and acquisition maps of step ``last`` (said where not recorded)."""
    panels = [("mean", "predicted mean", "viridis"), ("std", "uncertainty (std)", "magma"),
              ("acq", "acquisition", "cividis")]
    for a, (key, name, cmap) in zip(axes, panels):
        m = trace.map_at(key, last) if last is not None else None
        if m is not None:
            m = np.where(np.isfinite(m), m, np.nan)
            im = a.imshow(m, cmap=cmap)
            fig.colorbar(im, ax=a, shrink=0.7)
        a.set_title(f"{name} (step {last})" if m is not None else f"{name}: not recorded")


def _uncertainty_panel(a, trace: Trace, cur: dict) -> None:
    """The learning curve of the predictive std, interventions dashed, stuck / overconfident steps ticked."""
    mon = trace.monitors
    if trace.n_steps:
        steps = cur["step"]
        a.plot(steps, cur["std_mean"], label="mean (all patches)")
        a.fill_between(steps, cur["std_q10"], cur["std_q90"], alpha=0.3, label="10-90% quantiles")
        a.plot(steps, cur["next_std"], ".", ms=3, label="next step")
        for iv in trace.interventions:
            a.axvline(iv["step"], color="k", ls="--", lw=0.8)
        flags = np.nan_to_num(trace.step_array("stuck"))
        if "stuck_latent" in mon and len(mon["stuck_latent"]) == len(flags):
            flags = np.maximum(flags, mon["stuck_latent"])
        stuck = np.flatnonzero(flags > 0)
        if len(stuck):
            a.plot(stuck, np.full(len(stuck), np.nanmax(cur["std_q90"])), "|", color="r", ms=8,
                   label="stuck-run warning")
        over = np.flatnonzero(np.nan_to_num(trace.step_array("overconfident")) > 0)
        if len(over):
            a.plot(over, np.full(len(over), 0.9 * np.nanmax(cur["std_q90"])), "|", color="tab:orange", ms=8,
                   label="model overconfident")
    _steps_axis(a)
    a.set_ylabel("predictive std (scalarizer units)")
    a.legend(fontsize=7)
    a.set_title("uncertainty (dashed: interventions)")


def _values_panel(a, trace: Trace, cur: dict, seeds: np.ndarray, truth: np.ndarray | None) -> None:
    """The measured values and the best so far, with the interval the model predicted before each measurement
    (the calibration monitor) and the truth's maximum."""
    panel_title = "scalarizer of measured points"
    if trace.n_steps:
        steps = cur["step"]
        a.plot(steps, cur["best_so_far"], label="best measured")
        vals = np.asarray(trace.values)[~seeds]
        pm, ps = trace.step_array("next_mean"), trace.step_array("pred_std")
        if np.isfinite(ps).any():   # the calibration monitor: what the model predicted before each measurement
            lo, hi = trace.step_array("pred_lo"), trace.step_array("pred_hi")   # NaN in traces from before
            lo, hi = np.where(np.isfinite(lo), lo, pm - 2 * ps), np.where(np.isfinite(hi), hi, pm + 2 * ps)
            a.fill_between(steps, np.where(np.isfinite(ps), lo, np.nan), np.where(np.isfinite(ps), hi, np.nan),
                           color="tab:green", alpha=0.2, step="mid", label="predicted 95% interval")
            z = trace.step_array("z_score")
            z = z[np.isfinite(z)]
            if len(z):
                panel_title += f"\n{100 * np.mean(np.abs(z) <= 2):.0f}% within the predicted 2 sigma (calibrated: 95%)"
        a.plot(np.arange(len(vals)), vals, ".", ms=3, label="measured value")
        if truth is not None:
            a.axhline(float(np.max(truth)), color="r", ls=":", label="truth max")
        seen = np.concatenate([vals, [np.max(truth)] if truth is not None else []])
        if seen.size and np.all(np.isfinite(seen)) and np.ptp(seen) > 0:   # a log model's upper ends are far out:
            a.set_ylim(seen.min() - 0.1 * np.ptp(seen), seen.max() + 0.3 * np.ptp(seen))   # the values set the axis
    _steps_axis(a)
    a.legend(fontsize=7)
    a.set_title(panel_title, fontsize=9)


def _travel_panel(a, trace: Trace, cur: dict) -> None:
    """The cumulative travel in pixels (and in the dataset's length units on the right, where it has them)."""
    if trace.n_steps:
        a.plot(cur["step"], cur["travel_px"])
        units = trace.dataset.get("pixel_units", "px")
        if units != "px":
            sec = a.secondary_yaxis("right", functions=(
                lambda v: v * float(trace.dataset.get("pixel_size", 1.0)),
                lambda v: v / float(trace.dataset.get("pixel_size", 1.0))))
            sec.set_ylabel(units)
    _steps_axis(a)
    a.set_ylabel("pixels")
    a.set_title("cumulative travel distance")


def _error_panel(a, mon: dict) -> None:
    """The live model's error against the ground truth, the complete model and the final model."""
    if "error_step" in mon and len(mon["error_step"]):
        for k, lab in (("error_vs_truth", "vs ground truth"), ("error_vs_complete", "vs complete model"),
                       ("error_vs_final", "vs final model")):
            if k in mon and np.isfinite(mon[k]).any():
                a.plot(mon["error_step"], mon[k], label=lab)
        a.legend(fontsize=7)
    else:
        a.text(0.5, 0.5, "no stored maps", ha="center", transform=a.transAxes)
    _steps_axis(a)
    a.set_ylabel("RMS difference of predicted mean")
    a.set_title("live model error")


def _latent_panel(a, fig, mon: dict, seeds: np.ndarray) -> None:
    """The trajectory in the rVAE latent plane over the density of all patches, with aggregation points."""
    if "latent_all" not in mon or "latent_points" not in mon:
        a.text(0.5, 0.5, "feature space not computed\n(napari-hae run --feature-space)", ha="center",
               va="center", transform=a.transAxes, fontsize=8)
        a.set_axis_off()
        return
    from ..analysis.feature_space import density_maxima

    lat, pts = np.asarray(mon["latent_all"]), np.asarray(mon["latent_points"])
    a.hexbin(lat[:, 0], lat[:, 1], gridsize=40, cmap="Greys", bins="log")
    run = pts[~seeds[: len(pts)]]
    a.plot(run[:, 0], run[:, 1], "-", color="tab:orange", lw=0.5, alpha=0.6)
    sc = a.scatter(run[:, 0], run[:, 1], c=np.arange(len(run)), cmap="plasma", s=10, zorder=3)
    a.scatter(pts[seeds[: len(pts)], 0], pts[seeds[: len(pts)], 1], marker="s", facecolors="none",
              edgecolors="cyan", s=20, zorder=3)
    if len(run) >= 3:
        _, maxima, _ = density_maxima(run)
        a.scatter(maxima[:, 0], maxima[:, 1], marker="*", s=120, c="red", edgecolors="k", zorder=4,
                  label="aggregation points")
        a.legend(fontsize=7, loc="lower right")
    fig.colorbar(sc, ax=a, shrink=0.7, label="step")
    a.set_xlabel("latent z1")
    a.set_ylabel("latent z2")
    a.set_title("trajectory in rVAE latent space")
