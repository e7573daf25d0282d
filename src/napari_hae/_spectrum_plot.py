"""A small matplotlib canvas for a dock: one spectrum with the scalarizer band(s) shaded."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class SpectrumPlot(FigureCanvasQTAgg):
    def __init__(self, parent=None):
        self.figure = Figure(figsize=(3.2, 2.0), tight_layout=True)
        super().__init__(self.figure)
        self.setParent(parent)
        self.ax = self.figure.add_subplot(111)
        self.setMinimumHeight(170)
        self.title = ""

    def show_spectrum(self, energy: np.ndarray | None, spectrum: np.ndarray, bands=(), title: str = "",
                      units: str = "eV") -> None:
        ax = self.ax
        ax.clear()
        spectrum = np.asarray(spectrum)
        if spectrum.ndim == 1:
            x = np.arange(len(spectrum)) if energy is None else energy
            ax.plot(x, spectrum, lw=0.8, color="k")
            for i, (a, b) in enumerate(bands):
                ax.axvspan(a, b, color=("tab:orange", "tab:blue")[i % 2], alpha=0.3)
            ax.set_xlabel(f"energy ({units})" if energy is not None else "channel")
            ax.set_ylabel("counts")
        else:
            ax.imshow(spectrum, cmap="magma")
        self.title = title
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        self.draw_idle()

    def save(self, path) -> None:
        self.figure.savefig(path)
