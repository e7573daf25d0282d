"""The monitor figure (pure matplotlib + numpy, no Qt): learning curves, measured values, travel, and the
trajectory in the rVAE latent plane, drawn from a small snapshot of a trace.

It runs in a separate renderer process (see ``_monitor_plot``): drawing four axes takes 60-300 ms of pure
Python, which in napari's process would hold the GIL and stall the event loop.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .core.analysis.monitors import learning_curves


def snapshot(trace, upto: int | None = None) -> dict:
    """The numbers the figure needs (a few KB), taken on the GUI thread while the trace may keep growing."""
    c = learning_curves(trace)
    steps = np.asarray(trace.point_steps)
    m = trace.n_points if upto is None else int(np.sum(steps <= upto))
    return {"curves": c, "stuck": np.flatnonzero(np.nan_to_num(trace.step_array("stuck")) > 0),
            "overconfident": np.flatnonzero(np.nan_to_num(trace.step_array("overconfident")) > 0),
            "steps": steps[:m], "values": np.asarray(trace.values[:m]), "pos": trace.positions_array()[:m],
            "nx": trace.structural.shape[1], "upto": upto, "n": trace.n_steps,
            "length_units": str(trace.dataset.get("pixel_units") or "px")}


def _legend_above(ax, ncol: int) -> None:
    """The legend between the axes' title and its data, never over the curves it explains."""
    ax.legend(fontsize=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, frameon=False,
              borderaxespad=0.1, handlelength=1.5, columnspacing=2.0)


class MonitorFigure:
    def __init__(self, size=(3.4, 5.6), dpi=100):
        self.figure = Figure(figsize=size, dpi=dpi)
        self.canvas = FigureCanvasAgg(self.figure)
        f = self.figure
        f.subplots_adjust(left=0.2, right=0.96, bottom=0.06, top=0.87, hspace=0.8)
        self.ax_std, self.ax_val, self.ax_travel, self.ax_latent = (f.add_subplot(4, 1, i) for i in range(1, 5))
        for ax in (self.ax_std, self.ax_val, self.ax_travel, self.ax_latent):
            ax.tick_params(labelsize=7)
            # few ticks: tick layout is most of the drawing time; steps are whole (the latent plane's x is not)
            ax.xaxis.set_major_locator(MaxNLocator(4, integer=ax is not self.ax_latent))
            ax.yaxis.set_major_locator(MaxNLocator(3))
        a = self.ax_std
        (self.l_std,) = a.plot([], [], lw=1, label="mean σ (all patches)")
        (self.l_q90,) = a.plot([], [], lw=0.6, ls="--", color="tab:blue", label="90% quantile")
        (self.l_next,) = a.plot([], [], ".", ms=2, color="tab:orange", label="next-step σ")
        (self.l_stuck,) = a.plot([], [], "|", color="r", ms=6, label="stuck warning")
        (self.l_over,) = a.plot([], [], "|", color="tab:orange", ms=6, label="model overconfident")
        a.set_title("uncertainty", fontsize=8, pad=36)
        _legend_above(a, ncol=2)
        a = self.ax_val
        (self.l_val,) = a.plot([], [], ".", ms=2, color="k", label="measured")
        (self.l_best,) = a.plot([], [], lw=1, color="tab:green", label="best so far")
        a.set_title("scalarizer of measured points", fontsize=8, pad=10)
        _legend_above(a, ncol=2)
        a = self.ax_travel
        (self.l_travel,) = a.plot([], [], lw=1, color="tab:purple")
        a.set_title("cumulative travel (px)", fontsize=8)
        self.markers = [ax.axvline(0, color="0.5", lw=0.8, visible=False)
                        for ax in (self.ax_std, self.ax_val, self.ax_travel)]
        a = self.ax_latent
        a.set_title("trajectory in rVAE latent space (not computed)", fontsize=8)
        self._lat_bg = a.scatter([], [], s=1, c="0.8")
        (self._lat_path,) = a.plot([], [], lw=0.5, color="tab:orange", alpha=0.6)
        self._lat_pts = a.scatter([], [], s=6, c=[], cmap="plasma")
        self._lat_max = a.scatter([], [], marker="*", s=60, c="red", edgecolors="k", zorder=4)
        self.latent = None
        self.theme = ("white", "black")

    def set_theme(self, background: str, text: str) -> None:
        """napari's theme colours: the figure on the dock's background; text, ticks, spines, legends and the
        measured values in its text colour (black points vanished on napari's dark theme)."""
        self.figure.set_facecolor(background)
        for ax in (self.ax_std, self.ax_val, self.ax_travel, self.ax_latent):
            ax.set_facecolor(background)
            for spine in ax.spines.values():
                spine.set_color(text)
            ax.tick_params(colors=text)
            ax.title.set_color(text)
            if (legend := ax.get_legend()) is not None:
                legend.get_frame().set_facecolor(background)
                legend.get_frame().set_edgecolor(text)
                for t in legend.get_texts():
                    t.set_color(text)
        self.l_val.set_color(text)
        self.ax_val.get_legend().legend_handles[0].set_color(text)
        self.theme = (background, text)

    def set_latent(self, latent) -> None:
        """All patches' latent coordinates (n_positions, 2), drawn as a grey background."""
        self.latent = None if latent is None else np.asarray(latent)
        a = self.ax_latent
        if self.latent is None:
            self._lat_bg.set_offsets(np.zeros((0, 2)))
            a.set_title("trajectory in rVAE latent space (not computed)", fontsize=8)
        else:
            sub = self.latent[:: max(1, len(self.latent) // 4000)]
            self._lat_bg.set_offsets(sub)
            lo, hi = sub.min(0), sub.max(0)
            pad = 0.05 * (hi - lo + 1e-9)
            a.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            a.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            a.set_title("trajectory in rVAE latent space", fontsize=8)

    def render(self, d) -> np.ndarray:
        """Draw snapshot ``d`` (see :func:`snapshot`); returns the RGBA image (h, w, 4) uint8."""
        self.draw_artists(d)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba()).copy()

    def draw_artists(self, d) -> None:
        c, n = d["curves"], d["n"]
        s = c["step"]
        self.l_std.set_data(s, c["std_mean"])
        self.l_q90.set_data(s, c["std_q90"])
        self.l_next.set_data(s, c["next_std"])
        top = float(np.nanmax(c["std_q90"])) if n else 0.0
        self.l_stuck.set_data(d["stuck"], np.full(len(d["stuck"]), top))
        over = d.get("overconfident", np.zeros(0, int))
        self.l_over.set_data(over, np.full(len(over), 0.9 * top))
        steps, vals = d["steps"], d["values"]
        pol = steps >= 0
        self.l_val.set_data(steps[pol], vals[pol])
        self.l_best.set_data(s, c["best_so_far"])
        units = d.get("length_units", "px")
        in_px = units in ("px", "pixel", "pixels")
        self.l_travel.set_data(s, c["travel_px"] if in_px else c["travel_units"])
        self.ax_travel.set_title(f"cumulative travel ({'px' if in_px else units})", fontsize=8)
        for ax in (self.ax_std, self.ax_val, self.ax_travel):
            ax.relim()
            ax.autoscale_view()
        upto = d["upto"]
        for mk in self.markers:
            mk.set_visible(upto is not None)
            if upto is not None:
                mk.set_xdata([upto, upto])
        if self.latent is not None and len(d["pos"]):
            pos = d["pos"]
            z = self.latent[pos[:, 0] * d["nx"] + pos[:, 1]]
            run = z[steps >= 0]
            self._lat_path.set_data(run[:, 0], run[:, 1])
            self._lat_pts.set_offsets(run)
            self._lat_pts.set_array(np.arange(len(run), dtype=float))
            self._lat_pts.set_clim(0, max(1, len(run)))
            maxima = np.zeros((0, 2))
            if len(run) >= 5:
                from .core.analysis.feature_space import density_maxima

                try:
                    maxima = density_maxima(run, grid=48)[1]
                except Exception:  # a degenerate point set: no maxima to show
                    pass
            self._lat_max.set_offsets(maxima)

    def save(self, path, d=None) -> None:
        if d is not None:
            self.draw_artists(d)
        self.figure.savefig(path)


def serve(conn) -> None:
    """Renderer process: answers ("render", snapshot) with an RGBA array, ("latent", array), ("theme", background,
    text) and
    ("save", path, snapshot) with None; exits on ("stop",) or when the pipe closes."""
    fig = MonitorFigure()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        try:
            if kind == "render":
                conn.send(("ok", fig.render(msg[1])))
            elif kind == "latent":
                fig.set_latent(msg[1])
                conn.send(("ok", None))
            elif kind == "theme":
                fig.set_theme(msg[1], msg[2])
                conn.send(("ok", None))
            elif kind == "save":
                fig.save(msg[1], msg[2])
                conn.send(("ok", None))
            else:
                return
        except Exception as exc:  # reported to the GUI, the renderer stays up
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
