"""The dock's spectrum plot: the mean spectrum or the spectrum under the cursor / of the last step, with the
scalarizer's bands and fitted background; the target fields checked as they change."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..core.errors import HAEInputError
from ..core.targets.scalarizers import subtract_power_law


class SpectrumView:
    """Owns the spectrum plot and the selected dataset's mean spectrum.

    ``dataset()`` and ``layer()`` give the data panel's selection; ``run_view()`` the newest recorded results of the
    run shown (a :class:`~napari_hae.core.run.results.RunView`, or None): spectra measured by the run are read from
    there, never from the experiment a worker is changing.
    """

    def __init__(self, plot, target, status, dataset: Callable, layer: Callable, run_view: Callable):
        self.plot, self.target, self.status = plot, target, status
        self._dataset, self._layer, self._run_view = dataset, layer, run_view
        self.mean_spectrum = None     # of the selected dataset, computed once when it is selected
        self._problem_said = False    # the status line says what is wrong with the target fields

    def use(self, data) -> np.ndarray | None:
        """A dataset was selected: its mean spectrum (None for a live instrument's image, with no spectra yet)."""
        self.mean_spectrum = data.mean_spectrum()
        return self.mean_spectrum

    def on_target_fields(self, *_):
        """A band or background field changed (typed in full, or dragged): redraw, and say what is wrong."""
        self.show_mean()
        problem = self.target.problem_for(self._dataset())
        if problem is not None:
            self.status.value = f"Scalarizer: {problem}"
        elif self._problem_said:
            self.status.value = "Scalarizer fields are valid: Apply scalarizer during a run, or Start."
        self._problem_said = problem is not None

    def show_mean(self):
        if self._dataset() is not None and self.mean_spectrum is not None:
            self.show(self.mean_spectrum, "mean spectrum")

    def show(self, spectrum, title: str, sc=None, hold: bool = False) -> None:
        """A spectrum on the plot with the bands and the fitted background of ``sc`` (default: the fields');
        ``hold``: a run's step, drawn on the counts axis the run's spectra hold (:meth:`SpectrumPlot.show_spectrum`)."""
        data = self._dataset()
        energies = data.energies if data is not None else None
        window = (sc.background if sc is not None else self.target.window())
        bands = self.target.bands_of(sc) if sc is not None else self.target.current_bands()
        background = None
        if window is not None and energies is not None and np.ndim(spectrum) == 1:
            try:
                background = (window, spectrum - subtract_power_law(spectrum, energies, window))
            except HAEInputError:
                background = None   # the fields say what is wrong (status line)
        self.plot.show_spectrum(energies, spectrum, bands, title, background=background, hold=hold)

    def spectrum_at(self, y: int, x: int):
        """(spectrum, value, source) at a scan position: the measured one if the run shown measured it (as
        recorded), else the pre-acquired one."""
        view = self._run_view()
        i = None if view is None else view.index_of((y, x))
        if i is not None:
            return view.spectra[i], view.values[i], "measured"
        data = self._dataset()
        spectrum = data.spectrum(y, x)
        if spectrum is None:   # a live instrument's image: nothing measured there yet
            return None, float("nan"), "not measured yet"
        return spectrum, float(self.target.scalarizer()(spectrum[None], data.energies)[0]), "pre-acquired"

    def on_click(self, viewer, event):
        """A click anywhere on the canvas, whichever layer is selected (a viewer callback, not a layer's): the
        spectrum at that scan position of the selected dataset."""
        data, layer = self._dataset(), self._layer()
        if data is None or layer is None or layer not in viewer.layers:
            return
        y, x = (int(round(c)) for c in layer.world_to_data(event.position)[-2:])
        if not (0 <= y < data.scan_shape[0] and 0 <= x < data.scan_shape[1]):
            return
        spectrum, value, source = self.spectrum_at(y, x)
        if spectrum is None:
            self.status.value = f"({y}, {x}) is {source}: a live instrument's spectra exist once the run measures them."
            return
        self.show(spectrum, f"{source} at ({y}, {x}): {value:.4g}")
