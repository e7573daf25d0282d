"""The dock's answer to a dataset or structural image being chosen: the starting target, the layers on the
dataset's scale, objects drawn before on its grid, and a status line that says what to do next."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from napari.utils.notifications import show_error, show_warning

from .._layers import dataset_of
from ..core.data.io import TOTAL_INTENSITY_NOTE
from ..core.errors import HAEInputError
from ..core.targets.suggest import band_units, fallback_target, suggest_target
from .data_panel import FROM_FILE
from .layer_view import OBJECTS, SCAN_LAYERS, SEEDS
from .turns import one_per_turn


def fingerprint_ahead(data) -> None:
    """Hash ``data`` in a thread now, so that Start takes the digest (:meth:`SpectrumImage.fingerprint`, read once)
    instead of reading the whole spectrum image on the GUI thread: 0.23 s for the 128 x 128 x 2048 SiO2 map,
    seconds for a large file on disk."""
    def read():
        try:
            data.fingerprint()
        except Exception:   # noqa: BLE001 (Start reads it again, and says what is wrong there)
            pass

    if callable(getattr(data, "fingerprint", None)):
        threading.Thread(target=read, daemon=True, name="hae-fingerprint").start()


class DatasetSwitch:
    """Answers the data panel's choices; it owns no run state: it reads the run's (``run_view()``: the newest
    results, while ``controller.running``) and tells the interventions how many objects the layer holds."""

    def __init__(self, viewer, panels: dict, view, controller, status, spectra, interventions,
                 run_view: Callable):
        self.viewer, self.view, self.controller, self.status = viewer, view, controller, status
        self.data, self.target, self.run_panel = panels["data"], panels["target"], panels["run"]
        self.spectra, self.interventions, self._run_view = spectra, interventions, run_view

    @property
    def dataset(self):
        return self.data.dataset

    def dataset_changed(self, *_):
        data = self.dataset
        if data is None:
            return
        fingerprint_ahead(data)
        if self.controller.running:   # the fields and layers belong to the run going on until it ends
            last = self._run_view()
            run_data = last.dataset if last is not None else {}
            self.status.value = (f"The run goes on with {run_data.get('name', 'its data')}; "
                                 f"{data.name} is used from the next Start.")
            return
        combo = self.data.structural_combo
        if combo.value not in (None, FROM_FILE) and np.shape(self.viewer.layers[combo.value].data) != \
                tuple(data.scan_shape):
            combo.value = FROM_FILE   # that image belongs to another scan grid
        mean = self.spectra.use(data)
        units, per_unit = band_units(data.signal_type)
        self.spectra.plot.set_units(units, per_unit)
        suggestion = suggest_target(data, mean) if mean is not None else \
            fallback_target(data.name, data.energy)   # a live instrument: no spectrum before the run
        self.target.set_target(data.energy, units, per_unit, suggestion)
        self.data.fit_to(data)
        layer = self.data.layer_combo.value
        moved = self.view.follow(layer)
        self.view.ensure_input_layers(layer, data.scan_shape, self.run_panel.object_mode.value,
                                      self.interventions.objects_changed)
        objects = self.viewer.layers[OBJECTS]
        # the run's layers, made now (hidden) rather than in the run's first seconds, on this dataset's scale while
        # it stays the chosen one (another chosen meanwhile makes the rest on its own)
        one_per_turn([*self.view.output_layer_steps(self.view.geometry(layer), data.scan_shape, in_advance=True),
                      self.view.warm], self.viewer, still=lambda: self.data.layer_combo.value is layer)
        self.interventions.track_shapes()
        self.spectra.show_mean()
        if self.spectra.on_click not in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.append(self.spectra.on_click)
        kept = ("" if not moved or not (len(self.viewer.layers[SEEDS].data) or len(objects.data)) else
                " Seeds and objects drawn before now follow this dataset's scale at the same pixel positions.")
        target = (f"Target: {suggestion.reason}. Change the band in Scalarizer or drag it on the spectrum; "
                  if data.energy is not None else "")
        line = f"{target}click points into the Seeds layer or leave it empty; then Start."
        self.status.value = f"{line[0].upper()}{line[1:]}{kept}{self.structural_warning()}"

    def structural_warning(self) -> str:
        data = self.dataset
        if data is None or TOTAL_INTENSITY_NOTE not in data.notes:
            return ""
        return (" No HAADF was found beside the file: the model learns from the total spectrum intensity, which "
                "makes runs look better than an instrument would. Open the HAADF (File > Open File(s)...) and "
                "choose it under 'structural image'.")

    def structural_changed(self, *_):
        """A structural image chosen: accepted if it lies on the dataset's scan grid, else said and undone."""
        base, name = dataset_of(self.data.layer_combo.value), self.data.structural_combo.value
        if base is None:
            return
        if name in (None, FROM_FILE):
            self.status.value = f"Structural image: the dataset file's.{self.structural_warning()}"
            return
        try:
            self.data.with_structural(base, self.viewer.layers[name])
        except HAEInputError as exc:
            show_error(str(exc))
            self.data.structural_combo.value = FROM_FILE
            self.status.value = f"Structural image: {exc}"
            return
        ny, nx = base.scan_shape
        self.status.value = (f"Structural image: {name!r} ({ny} x {nx}, the dataset's scan grid); the model learns "
                             f"from its patches.")

    def layer_removed(self, event) -> None:
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
