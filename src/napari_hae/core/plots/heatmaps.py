"""Paper-style heat maps of a sweep's table (matplotlib, Agg; no Qt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis.sweep import read_table, summary_grid
from ..errors import HAEInputError


def heatmaps(table, path, metrics=("steps_to_top1", "mean_std_mean", "mean_next_std", "travel_px", "stuck_run"),
             title: str = "") -> Path:
    """Paper-style heat maps: for each metric, its median over seeds for every policy (and parameter) x patch
    size. Runs that never reached the top 1% count as their step budget + 1 in ``steps_to_top1``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = read_table(table)
    if not rows:
        raise HAEInputError(f"The sweep table {str(table)!r} has no finished runs.", "run the sweep first.")
    n_labels = len({r["policy_label"] for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 0.45 * n_labels + 2.2),
                             constrained_layout=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        labels, patches, grid = summary_grid(rows, metric)
        im = ax.imshow(grid, cmap="viridis_r" if metric != "mean_std_mean" else "magma", aspect="auto")
        for i in range(len(labels)):
            for j in range(len(patches)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(patches)), [str(n) for n in patches])
        ax.set_yticks(range(len(labels)), labels if ax is axes[0][0] else [""] * len(labels), fontsize=7)
        ax.set_xlabel("patch size (px)")
        name = {"stuck_run": "fraction of stuck runs", "steps_to_top1": "steps to top 1% (median)",
                "mean_std_mean": "mean uncertainty (median)", "mean_next_std": "next-step uncertainty (median)",
                "travel_px": "travel distance, px (median)"}.get(metric, metric)
        ax.set_title(name, fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title or f"sweep: {len(rows)} runs")
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
