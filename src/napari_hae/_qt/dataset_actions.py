"""The dock's answer to a dataset or structural image being chosen: the starting target, the layers on the
dataset's scale, objects drawn before on its grid, and a status line that says what to do next."""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error, show_warning

from .._layers import dataset_of
from ..core.data.io import TOTAL_INTENSITY_NOTE
from ..core.errors import HAEInputError
from ..core.targets.suggest import band_units, fallback_target, suggest_target
from .data_panel import FROM_FILE
from .layer_view import OBJECTS, SCAN_LAYERS, SEEDS


class DatasetActions:
    """Mixed into :class:`~napari_hae._widget.HAEWidget` (uses its panels, layer view, plot and status line)."""

    def _on_dataset_changed(self, *_):
        data = self.dataset
        if data is None:
            return
        if self.controller.running:   # the fields and layers belong to the run going on until it ends
            run_data = self.last_view.dataset if self.last_view is not None else {}
            self.status.value = (f"The run goes on with {run_data.get('name', 'its data')}; "
                                 f"{data.name} is used from the next Start.")
            return
        name = self.structural_combo.value
        if name not in (None, FROM_FILE) and np.shape(self.viewer.layers[name].data) != tuple(data.scan_shape):
            self.structural_combo.value = FROM_FILE   # that image belongs to another scan grid
        self._mean_spectrum = data.mean_spectrum()
        units, per_unit = band_units(data.signal_type)
        self.plot.set_units(units, per_unit)
        suggestion = suggest_target(data, self._mean_spectrum) if self._mean_spectrum is not None else \
            fallback_target(data.name, data.energy)   # a live instrument: no spectrum before the run
        self.target.set_target(data.energy, units, per_unit, suggestion)
        self.data.fit_to(data)
        layer = self.layer_combo.value
        moved = self.view.follow(layer)
        self.view.ensure_input_layers(layer, data.scan_shape, self.object_mode.value, self._on_objects_changed)
        objects = self.viewer.layers[OBJECTS]
        self._n_objects_seen = len(objects.data)
        self._show_mean_spectrum()
        if self._on_click not in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.append(self._on_click)
        kept = ("" if not moved or not (len(self.viewer.layers[SEEDS].data) or len(objects.data)) else
                " Seeds and objects drawn before now follow this dataset's scale at the same pixel positions.")
        target = (f"Target: {suggestion.reason}. Change the band in Scalarizer or drag it on the spectrum; "
                  if data.energy is not None else "")
        line = f"{target}click points into the Seeds layer or leave it empty; then Start."
        self.status.value = f"{line[0].upper()}{line[1:]}{kept}{self._structural_warning()}"

    def _structural_warning(self) -> str:
        data = self.dataset
        if data is None or TOTAL_INTENSITY_NOTE not in data.notes:
            return ""
        return (" No HAADF was found beside the file: the model learns from the total spectrum intensity, which "
                "makes runs look better than an instrument would. Open the HAADF (File > Open File(s)...) and "
                "choose it under 'structural image'.")

    def _on_structural(self, *_):
        """A structural image chosen: accepted if it lies on the dataset's scan grid, else said and undone."""
        base, name = dataset_of(self.layer_combo.value), self.structural_combo.value
        if base is None:
            return
        if name in (None, FROM_FILE):
            self.status.value = f"Structural image: the dataset file's.{self._structural_warning()}"
            return
        try:
            self.data.with_structural(base, self.viewer.layers[name])
        except HAEInputError as exc:
            show_error(str(exc))
            self.structural_combo.value = FROM_FILE
            self.status.value = f"Structural image: {exc}"
            return
        ny, nx = base.scan_shape
        self.status.value = (f"Structural image: {name!r} ({ny} x {nx}, the dataset's scan grid); the model learns "
                             f"from its patches.")

    def _on_layer_removed(self, event) -> None:
        """A layer the dock uses was deleted during a run: say what happens (nothing is lost)."""
        layer = event.value
        if not self.controller.running:
            return
        if layer.name in (SEEDS, OBJECTS):
            what = "the objects and seeds given so far stay in force; the layer comes back when you pick the dataset"
        elif layer.name in SCAN_LAYERS:
            what = "the layer comes back at the next step"
        elif dataset_of(layer) is not None:
            what = "the run goes on with the data already loaded; open the file again to look at its spectra"
        else:
            return
        msg = (f"'{layer.name}' was deleted during the run: {what}. The run goes on and its journal holds every "
               f"measurement.")
        show_warning(msg)
        self.status.value = msg
