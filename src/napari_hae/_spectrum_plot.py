"""A small matplotlib canvas for a dock: one spectrum with the scalarizer band(s) shaded.

Artists are reused between updates and the layout is fixed (no tight_layout), so a redraw stays in the ~10 ms
range and never stalls napari's event loop during a run.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

BAND_COLORS = ("tab:orange", "tab:blue")


class SpectrumPlot(FigureCanvasQTAgg):
    def __init__(self, parent=None):
        self.figure = Figure(figsize=(3.2, 2.0))
        self.figure.subplots_adjust(left=0.2, right=0.97, bottom=0.22, top=0.88)
        super().__init__(self.figure)
        self.setParent(parent)
        self.ax = self.figure.add_subplot(111)
        self.ax.tick_params(labelsize=7)
        (self.line,) = self.ax.plot([], [], lw=0.8, color="k")
        self.bands = [self.ax.axvspan(0, 1, color=c, alpha=0.3, visible=False) for c in BAND_COLORS]
        self.image = None
        self.title = ""

    def show_spectrum(self, energy: np.ndarray | None, spectrum: np.ndarray, bands=(), title: str = "",
                      units: str = "eV") -> None:
        ax = self.ax
        spectrum = np.asarray(spectrum)
        if spectrum.ndim == 1:
            x = np.arange(len(spectrum)) if energy is None else np.asarray(energy)
            self.line.set_data(x, spectrum)
            self._place_bands(bands)
            ax.set_xlim(float(x.min()), float(x.max()))
            lo, hi = float(spectrum.min()), float(spectrum.max())
            ax.set_ylim(lo, hi + 0.05 * (hi - lo) + 1e-12)
            ax.set_xlabel(f"energy ({units})" if energy is not None else "channel", fontsize=7)
            ax.set_ylabel("counts", fontsize=7)
        else:  # 2-D signal (diffraction pattern)
            if self.image is None:
                self.image = ax.imshow(spectrum, cmap="magma")
            else:
                self.image.set_data(spectrum)
        self.title = title
        ax.set_title(title, fontsize=8)
        self.draw_idle()

    def _place_bands(self, bands) -> None:
        for patch, band in zip(self.bands, list(bands) + [None] * len(self.bands)):
            patch.set_visible(band is not None and band[1] > band[0])
            if band is not None:
                patch.set_x(band[0])
                patch.set_width(band[1] - band[0])

    def set_bands(self, bands) -> None:
        """Move the shaded band(s) (eV) without replotting the spectrum."""
        self._place_bands(bands)
        self.draw_idle()

    def save(self, path) -> None:
        self.figure.savefig(path)
