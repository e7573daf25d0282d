"""The dock's spectrum plot: the mean spectrum or the spectrum under the cursor / of the last step, with the
scalarizer's bands and fitted background; the target fields checked as they change."""

from __future__ import annotations

import numpy as np

from ..core.errors import HAEInputError
from ..core.targets.scalarizers import subtract_power_law


class SpectrumActions:
    """Mixed into :class:`~napari_hae._widget.HAEWidget` (uses its target panel, plot and status line)."""

    _target_problem_said = False   # the status line says what is wrong with the target fields

    def _on_target_fields(self, *_):
        """A band or background field changed (typed in full, or dragged): redraw, and say what is wrong."""
        self._show_mean_spectrum()
        data = self.dataset
        problem = None if data is None else self.target.problem(data.energies, data.signal_shape)
        if problem is not None:
            self.status.value = f"Scalarizer: {problem}"
        elif self._target_problem_said:
            self.status.value = "Scalarizer fields are valid: Apply scalarizer during a run, or Start."
        self._target_problem_said = problem is not None

    def _show_mean_spectrum(self):
        if self.dataset is not None and self._mean_spectrum is not None:
            self.show_spectrum(self._mean_spectrum, "mean spectrum")

    def show_spectrum(self, spectrum, title: str, sc=None) -> None:
        """A spectrum on the plot with the bands and the fitted background of ``sc`` (default: the fields')."""
        energies = self.dataset.energies if self.dataset is not None else None
        window = (sc.background if sc is not None else self.target.window())
        bands = self.target.bands_of(sc) if sc is not None else self.target.current_bands()
        background = None
        if window is not None and energies is not None and np.ndim(spectrum) == 1:
            try:
                background = (window, spectrum - subtract_power_law(spectrum, energies, window))
            except HAEInputError:
                background = None   # the fields say what is wrong (status line)
        self.plot.show_spectrum(energies, spectrum, bands, title, background=background)

    def spectrum_at(self, y: int, x: int):
        """(spectrum, value, source) at a scan position: the measured one if measured, else the pre-acquired one."""
        i = None if self.experiment is None else self.experiment.trace.index_of((y, x))
        if i is not None:
            tr = self.experiment.trace
            return tr.spectra[i], tr.values[i], "measured"
        data = self.dataset
        spectrum = data.spectrum(y, x)
        if spectrum is None:   # a live instrument's image: nothing measured there yet
            return None, float("nan"), "not measured yet"
        return spectrum, float(self.target.scalarizer()(spectrum[None], data.energies)[0]), "pre-acquired"

    def _on_click(self, viewer, event):
        """A click anywhere on the canvas, whichever layer is selected (a viewer callback, not a layer's): the
        spectrum at that scan position of the selected dataset."""
        data, layer = self.dataset, self.layer_combo.value
        if data is None or layer is None or layer not in self.viewer.layers:
            return
        y, x = (int(round(c)) for c in layer.world_to_data(event.position)[-2:])
        if not (0 <= y < data.scan_shape[0] and 0 <= x < data.scan_shape[1]):
            return
        spectrum, value, source = self.spectrum_at(y, x)
        if spectrum is None:
            self.status.value = f"({y}, {x}) is {source}: a live instrument's spectra exist once the run measures them."
            return
        self.show_spectrum(spectrum, f"{source} at ({y}, {x}): {value:.4g}")
