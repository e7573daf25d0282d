"""The dock's microscope: the run panel's adapter made on the selected dataset, at once when it replays the open
data, in a worker when it connects to an instrument (napari stays usable while it waits), and checked to scan the
selected layer's grid."""

from __future__ import annotations

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

from ..core.errors import HAEInputError
from ..core.instrument.adapters import MICROSCOPES, make_microscope


class MicroscopeActions:
    """Mixed into :class:`~napari_hae._widget.HAEWidget` through :class:`~.run_actions.RunActions`."""

    _connecting = None   # the worker making a connecting microscope, while it connects

    def _microscope(self, data, seed: int):
        """The microscope adapter chosen in the run panel, on the selected dataset."""
        name, params = self.run_panel.microscope()
        return self._on_grid(make_microscope(name, data, seed=seed, **params), data)

    def _on_grid(self, mic, data):
        """``mic`` if it scans the grid of the selected layer (a live instrument must scan that region)."""
        if data is not None and tuple(mic.scan_shape) != tuple(data.scan_shape):
            name = self.run_panel.microscope()[0]
            raise HAEInputError(f"The {name} microscope scans {tuple(mic.scan_shape)}, the selected layer is "
                                f"{data.scan_shape}.", "select the layer of the region the microscope scans.")
        return mic

    def with_microscope(self, seed: int, then) -> None:
        """Call ``then(mic)`` with the run panel's microscope. An adapter replaying the open data is made at once;
        one that connects to an instrument is made in a worker (no server answering blocked napari for the
        whole timeout), with Start greyed meanwhile; its error is shown like any other."""
        name, params = self.run_panel.microscope()
        if MICROSCOPES.get(name).extra.get("needs_data"):
            then(self._microscope(self.dataset, seed))
            return
        data = self.dataset

        def connect():   # (microscope, error): a raised error, or a returned one, napari would report itself
            try:
                return make_microscope(name, data, seed=seed, **params), None
            except Exception as exc:
                return None, exc

        worker = create_worker(connect)
        self._connecting = worker
        worker.returned.connect(lambda result: self._connected(then, *result, data))
        worker.finished.connect(self._connect_done)
        self.status.value = (f"Connecting to the {name} microscope (up to {params.get('timeout', '?')} s); napari "
                             f"stays usable meanwhile...")
        worker.start()
        self._update_buttons()

    def _connected(self, then, mic, error, data):
        if error is not None:
            self._cannot_start(error if isinstance(error, HAEInputError) else
                               f"connecting to the microscope failed ({type(error).__name__}: {error})")
            return
        try:
            then(self._on_grid(mic, data))
        except HAEInputError as exc:
            self._cannot_start(exc)

    def _connect_done(self):
        self._connecting = None
        self._update_buttons()

    def _cannot_start(self, exc):
        show_error(str(exc))
        self.status.value = f"Cannot start: {exc}"

