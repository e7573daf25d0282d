"""A small matplotlib canvas for a dock: one spectrum with the scalarizer band(s) shaded, the fitted power-law
background drawn over its window, band 1 draggable with the mouse, the wheel zooming the energy axis (a double
click shows it all), in napari's theme colours.

Energies come in eV and are drawn in the unit the user types bands in (:meth:`SpectrumPlot.set_units`: keV for
EDS). A full redraw (axes, ticks, labels) costs ~60 ms of pure Python, which beside a run's drawing made
napari's event loop miss its 100 ms; so what changes from step to step (the spectrum, the background, the bands
and the title) is *blitted* over a saved picture of the axes, ~5 ms, and the counts axis is kept while the new
spectrum fills most of it (:meth:`SpectrumPlot._limits`): the full redraw happens only when the axes change.
Dragging moves only a patch; the new band is reported once, on release (``on_band``), as the fields report a
number once it is typed in full.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

BAND_COLORS = ("tab:orange", "tab:blue")
EDGE_GRAB = 0.02     # a press this close to a band edge (fraction of the visible axis) moves that edge


class SpectrumPlot(FigureCanvasQTAgg):
    def __init__(self, parent=None):
        self.figure = Figure(figsize=(3.2, 2.0))
        self.figure.subplots_adjust(left=0.2, right=0.97, bottom=0.22, top=0.88)
        super().__init__(self.figure)
        self.setParent(parent)
        self.ax = self.figure.add_subplot(111)
        self.ax.tick_params(labelsize=7)
        (self.line,) = self.ax.plot([], [], lw=0.8, color="k")
        (self.bg_line,) = self.ax.plot([], [], lw=1.0, ls="--", color="tab:red", visible=False)
        self.bg_window = self.ax.axvspan(0, 1, color="0.6", alpha=0.25, visible=False)
        self.bands = [self.ax.axvspan(0, 1, color=c, alpha=0.3, visible=False) for c in BAND_COLORS]
        # drawn over the saved axes on each update instead of with them (see the module's docstring)
        self._dynamic = [self.bg_window, *self.bands, self.bg_line, self.line, self.ax.title]
        for artist in self._dynamic:
            artist.set_animated(True)
        self._background = None   # (the axes' picture, the limits it was drawn with)
        self.n_full_draws = 0
        self.image = None
        self.title = ""
        self.units, self.per_unit = "eV", 1.0
        self.log = False
        self.on_band: Callable[[float, float], None] | None = None   # called with (a, b) in eV after a drag
        self._drag = None     # (what, x at press, band at press) while the mouse button is down
        self._spectrum = None
        self._xlim: tuple[float, float] | None = None   # zoomed energy range (plot units), None: the whole axis
        self._x = None
        self.mpl_connect("scroll_event", self._scroll)
        self.mpl_connect("button_press_event", self._press)
        self.mpl_connect("motion_notify_event", self._move)
        self.mpl_connect("button_release_event", self._release)
        self.mpl_connect("draw_event", self._on_draw)

    # -- drawing: a full draw saves the axes' picture, an update blits the changing artists over it -------------
    def _frame(self):
        return (self.ax.get_xlim(), self.ax.get_ylim(), self.ax.get_yscale(), self.ax.get_xlabel(),
                self.figure.bbox.bounds)

    def _on_draw(self, _event) -> None:
        self.n_full_draws += 1
        self._background = (self.copy_from_bbox(self.figure.bbox), self._frame())
        self._draw_dynamic()

    def _draw_dynamic(self) -> None:
        for artist in self._dynamic:
            if artist.get_visible():
                self.figure.draw_artist(artist)

    def refresh(self) -> None:
        """Show the current state: a blit when the axes are as last drawn, else a full (idle) redraw."""
        if self._background is None or self._background[1] != self._frame() or self.image is not None:
            self.draw_idle()
            return
        self.restore_region(self._background[0])
        self._draw_dynamic()
        self.update()   # painted with the next frame (blit() repaints at once: one more window composition)

    def set_units(self, units: str, per_unit: float) -> None:
        """Draw energies in ``units`` (``per_unit`` eV each)."""
        self.units, self.per_unit = units, float(per_unit)

    def set_log(self, log: bool) -> None:
        """Counts on a log axis (the zero-loss peak or a bremsstrahlung maximum dwarfs the edges)."""
        self.log = bool(log)
        if self._spectrum is not None:
            self._limits(self._spectrum)
            self.draw_idle()

    def show_spectrum(self, energy: np.ndarray | None, spectrum: np.ndarray, bands=(), title: str = "",
                      background=None, hold: bool = False) -> None:
        """``energy`` and ``bands`` in eV (drawn in :attr:`units`); ``background``: (window (eV), fitted curve over
        ``energy``) to draw, or None. ``hold`` (a run's spectra, one a step): the counts axis stays while it holds
        the spectrum, however little of it the spectrum fills, and grows with room when it does not
        (:meth:`_limits`)."""
        ax = self.ax
        spectrum = np.asarray(spectrum)
        if spectrum.ndim == 1:
            x = np.arange(len(spectrum)) if energy is None else np.asarray(energy) / self.per_unit
            self._spectrum = spectrum
            self.line.set_data(x, spectrum)
            self._x = x
            self._place_bands(bands)
            self.show_background(energy, background)
            ax.set_xlim(*(self._xlim or (float(x.min()), float(x.max()))))
            self._limits(spectrum, keep=True, hold=hold)
            ax.set_xlabel(f"energy ({self.units})" if energy is not None else "channel", fontsize=7)
            ax.set_ylabel("counts", fontsize=7)
        else:  # 2-D signal (diffraction pattern)
            if self.image is None:
                self.image = ax.imshow(spectrum, cmap="magma")
            else:
                self.image.set_data(spectrum)
        self.title = title
        ax.set_title(title, fontsize=8)
        self.refresh()

    def _limits(self, spectrum, keep: bool = False, hold: bool = False) -> None:
        """Counts axis fitted to the part of the spectrum in view; with ``keep``, the present axis stays while it
        holds that part and the part fills at least 60% of it (linear) or a decade of it (log), so that a run's
        next spectrum is usually a blit, not a redraw of the axes. With ``hold`` it stays whenever it holds the
        part, and else grows to hold both, with room (a run going from particles to background and back redrew
        the axes at each change, 130-190 ms on the GUI thread beside the model's fit)."""
        if self._x is not None and len(self._x) == len(spectrum):
            a, b = self.ax.get_xlim()
            seen = spectrum[(self._x >= a) & (self._x <= b)]
            spectrum = seen if seen.size else spectrum
        lo, hi = float(np.min(spectrum)), float(np.max(spectrum))
        scale = "log" if self.log else "linear"
        if self.log:
            pos = spectrum[spectrum > 0]
            lo = float(pos.min()) if pos.size else 0.1
            limits = (lo, max(hi, 1.0) * 1.5)
        else:   # a kept axis gets room for the next spectra
            pad = (0.1 if keep else 0.0, 0.1 if keep else 0.05)
            limits = (lo - pad[0] * (hi - lo), hi + pad[1] * (hi - lo) + 1e-12)
        a, b = self.ax.get_ylim()
        same = self.ax.get_yscale() == scale
        if keep and same and a <= lo and hi <= b and (
                hold or ((hi - lo) >= 0.6 * (b - a) if scale == "linear" else b <= 10 * limits[1])):
            return
        if hold and same and scale == "linear":   # the union of both, room above for the next spectra
            lo, hi = min(lo, a), max(hi, b)
            limits = (lo, hi + 0.25 * (hi - lo))
        elif hold and same:
            limits = (min(limits[0], a), max(limits[1], b))
        self.ax.set_yscale(scale)
        self.ax.set_ylim(*limits)

    def show_background(self, energy, background) -> None:
        """Draw the fitted background (dashed) from its window to the end of band 1, the window shaded."""
        if background is None or energy is None:
            self.bg_line.set_visible(False)
            self.bg_window.set_visible(False)
            return
        (c, d), curve = background
        e = np.asarray(energy)
        band = self.bands[0]
        end = (band.get_x() + band.get_width()) * self.per_unit if band.get_visible() else e[-1]
        keep = (e >= c) & (e <= max(end, d))
        self.bg_line.set_data(e[keep] / self.per_unit, np.asarray(curve)[keep])
        self.bg_line.set_visible(True)
        self.bg_window.set_x(c / self.per_unit)
        self.bg_window.set_width((d - c) / self.per_unit)
        self.bg_window.set_visible(True)

    def _place_bands(self, bands) -> None:
        for patch, band in zip(self.bands, list(bands) + [None] * len(self.bands)):
            patch.set_visible(band is not None and band[1] > band[0])
            if band is not None:
                patch.set_x(band[0] / self.per_unit)
                patch.set_width((band[1] - band[0]) / self.per_unit)

    def set_bands(self, bands) -> None:
        """Move the shaded band(s) (eV) without replotting the spectrum."""
        self._place_bands(bands)
        self.refresh()

    # -- dragging band 1: press near an edge moves it, inside moves the band, elsewhere draws a new one -------
    def band(self) -> tuple[float, float]:
        """Band 1 as drawn (eV)."""
        p = self.bands[0]
        return p.get_x() * self.per_unit, (p.get_x() + p.get_width()) * self.per_unit

    def set_theme(self, background: str, text: str) -> None:
        """napari's theme colours: the figure on the dock's background, text, ticks, spines and the spectrum in
        its text colour (a white figure in napari's dark theme glared)."""
        self.figure.set_facecolor(background)
        self.ax.set_facecolor(background)
        for spine in self.ax.spines.values():
            spine.set_color(text)
        self.ax.tick_params(colors=text)
        for label in (self.ax.xaxis.label, self.ax.yaxis.label, self.ax.title):
            label.set_color(text)
        self.line.set_color(text)
        self._background = None
        self.draw_idle()

    # -- zoom: the wheel zooms the energy axis around the cursor, a double click shows the whole axis ----------
    def _scroll(self, event) -> None:
        if event.inaxes is not self.ax or event.xdata is None or self._x is None:
            return
        a, b = self.ax.get_xlim()
        f = 0.8 if event.button == "up" else 1.25
        x = float(event.xdata)
        full = (float(self._x.min()), float(self._x.max()))
        a, b = max(full[0], x - (x - a) * f), min(full[1], x + (b - x) * f)
        self._xlim = None if (a, b) == full else (a, b)
        self.ax.set_xlim(a, b)
        self._limits(self._spectrum)
        self.draw_idle()

    def _press(self, event) -> None:
        if event.dblclick and event.inaxes is self.ax and self._x is not None:
            self._drag, self._xlim = None, None
            self.ax.set_xlim(float(self._x.min()), float(self._x.max()))
            self._limits(self._spectrum)
            self.draw_idle()
            return
        if event.inaxes is not self.ax or event.xdata is None or self._spectrum is None or event.button != 1:
            return
        patch, x = self.bands[0], float(event.xdata)
        a, b = patch.get_x(), patch.get_x() + patch.get_width()
        grab = EDGE_GRAB * abs(np.subtract(*self.ax.get_xlim()))
        if patch.get_visible() and abs(x - a) <= grab:
            what = "start"
        elif patch.get_visible() and abs(x - b) <= grab:
            what = "end"
        elif patch.get_visible() and a < x < b:
            what = "move"
        else:
            what, a, b = "new", x, x
        self._drag = (what, x, a, b)

    def _move(self, event) -> None:
        if self._drag is None or event.xdata is None:
            return
        what, x0, a, b = self._drag
        x = float(event.xdata)
        if what == "start":
            a = x
        elif what == "end":
            b = x
        elif what == "move":
            a, b = a + x - x0, b + x - x0
        else:
            a, b = x0, x
        a, b = min(a, b), max(a, b)
        patch = self.bands[0]
        patch.set_x(a)
        patch.set_width(b - a)
        patch.set_visible(b > a)
        self.refresh()

    def _release(self, event) -> None:
        if self._drag is None:
            return
        self._move(event)
        self._drag = None
        a, b = self.band()
        if b > a and self.on_band is not None:
            self.on_band(a, b)

    def save(self, path) -> None:
        self.figure.savefig(path)
