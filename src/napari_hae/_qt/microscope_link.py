"""The dock's microscope: the run panel's adapter made on the selected dataset, at once when it replays the open
data, in a worker when it connects to an instrument (napari stays usable while it waits), and checked to scan the
selected layer's grid."""

from __future__ import annotations

import weakref
from collections.abc import Callable

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

from .._layers import DATASET_KEY, dataset_layer_data
from ..core.errors import HAEInputError
from ..core.instrument.adapters import MICROSCOPES, close_microscope, make_microscope
from ..core.instrument.live import LiveImage
from .turns import one_per_turn


class MicroscopeLink:
    """Owns the connection in progress (``connecting``: its worker) and hands microscopes to whoever asked.

    It reads the run panel's choice and the data panel's selection, keeps an instrument connected by Acquire image
    in the controller (``idle_instrument``, released when the dock goes), writes to the status line and calls
    ``on_change()`` when Start may have to be greyed or enabled again.
    """

    def __init__(self, viewer, data_panel, run_panel, controller, status, on_change: Callable):
        self.viewer, self.data_panel, self.run_panel = viewer, data_panel, run_panel
        self.controller, self.status, self.on_change = controller, status, on_change
        self.connecting = None   # the worker making a connecting microscope, while it connects

    @property
    def dataset(self):
        return self.data_panel.dataset

    def cannot_start(self, exc) -> None:
        """Say why nothing starts: a notification and the status line."""
        show_error(str(exc))
        self.status.value = f"Cannot start: {exc}"

    def microscope(self, data, seed: int):
        """The microscope adapter chosen in the run panel, on the selected dataset."""
        name, params = self.run_panel.microscope()
        return self.on_grid(make_microscope(name, data, seed=seed, **params), data)

    def on_grid(self, mic, data):
        """``mic`` if it scans the grid of the selected layer (a live instrument must scan that region)."""
        if data is not None and tuple(mic.scan_shape) != tuple(data.scan_shape):
            name = self.run_panel.microscope()[0]
            raise HAEInputError(f"The {name} microscope scans {tuple(mic.scan_shape)}, the selected layer is "
                                f"{data.scan_shape}.", "select the layer of the region the microscope scans.")
        return mic

    def with_microscope(self, seed: int, then) -> None:
        """Call ``then(mic)`` with the run panel's microscope. An adapter replaying the open data is made at once;
        one that connects to an instrument is made in a worker (no server answering blocked napari for the
        whole timeout), with Start greyed meanwhile; its error is shown like any other. The instrument whose image
        Acquire image opened is used as it is (the run then owns it)."""
        name, params = self.run_panel.microscope()
        if MICROSCOPES.get(name).extra.get("needs_data"):
            then(self.microscope(self.dataset, seed))
            return
        live = self.controller.idle_instrument
        if live is not None and live[:2] == (name, params) and self.dataset is live[3]:
            self.controller.idle_instrument = None
            then(live[2])
            return
        self._connect(name, params, seed, lambda mic, image: then(mic))

    def acquire_image(self, *_):
        """Connect to the run panel's live instrument (in a worker) and open its structural image as a layer, to
        draw seeds and objects on before Start."""
        name, params = self.run_panel.microscope()
        if self.controller.running or self.connecting is not None:
            show_error("A run is going (or a microscope is connecting): stop it first.")
            return
        if MICROSCOPES.get(name).extra.get("needs_data"):
            self.cannot_start(f"The {name} microscope replays the open dataset: it has no image of its own to "
                               "acquire. Fix: choose a live instrument (e.g. nion-usim) under microscope.")
            return
        self._connect(name, params, int(self.run_panel.random_seed.value),
                      lambda mic, live: self._show_instrument(name, params, mic, live), data=None, image=True)

    def _show_instrument(self, name, params, mic, live: LiveImage):
        """The acquired image as a layer; chosen as the dataset a turn later. napari adds an image layer in one piece
        (0.3 s at 1920 x 1080 in software OpenGL) and draws it in the next frame; the hAE layers moved onto the new
        scale add 0.15 s: the three in one pause were 0.65-0.8 s."""
        self.controller.close_idle_instrument()   # one instrument held at a time
        (image, kw, _), = dataset_layer_data(live)
        layer = self.viewer.add_image(image, **kw)
        self.controller.idle_instrument = (name, params, mic, live)
        ny, nx = live.scan_shape
        said = (f"Acquired the {name} structural image ({ny} x {nx} pixels of {live.pixel_size:.4g} "
                f"{live.pixel_units}): click seeds or draw objects on it, set the target, then Start.")
        one_per_turn([lambda: self._choose_acquired(layer, said)], self.viewer,
                     still=lambda: layer in self.viewer.layers and not self.controller.running)

    def _choose_acquired(self, layer, said: str) -> None:
        self.data_panel.layer_combo.value = layer
        self.status.value = said

    def _refresh_live_layer(self, live: LiveImage, data) -> None:
        """A new connection's image in place of the layer's (the instrument used by a run was released)."""
        layer = self.data_panel.layer_combo.value
        if layer is not None and layer.metadata.get(DATASET_KEY) is data and live.scan_shape == data.scan_shape:
            layer.metadata[DATASET_KEY] = live
            layer.data = live.structural
            self.status.value = "The structural image was acquired again for this run."

    def _connect(self, name, params, seed, then, data=..., image: bool = False):
        """Make the microscope in a worker and call ``then(mic, live)`` in the GUI thread; ``live`` is its structural
        image (:class:`LiveImage`, acquired in the worker too: 2.3-2.9 s on nion-usim's default field froze napari)
        where ``image`` is asked or the selected layer is an image acquired before, else None."""
        data = self.dataset if data is ... else data
        image = image or isinstance(data, LiveImage)

        def connect():   # (microscope, image, error): a raised error, or a returned one, napari would report itself
            try:
                mic = make_microscope(name, data, seed=seed, **params)
            except Exception as exc:
                return None, None, exc
            try:
                return mic, (LiveImage.of(mic, name) if image else None), None
            except Exception as exc:
                close_microscope(mic)
                return None, None, exc

        worker = create_worker(connect)
        self.connecting = worker
        worker.returned.connect(lambda result: self._connected(then, *result, data))
        ref = weakref.ref(worker)   # (the worker's own signal holding it would keep it alive)
        worker.finished.connect(lambda: self._connect_done(ref()))
        wait = f" (up to {params['timeout']} s)" if "timeout" in params else ""
        self.status.value = f"Connecting to the {name} microscope{wait}; napari stays usable meanwhile..."
        worker.start()
        self.on_change()

    def _connected(self, then, mic, live, error, data):
        # the worker has returned: the connection is over now (its `finished` comes in a later event, and the
        # buttons it re-enabled were still grey while the status already said "Acquired")
        self.connecting = None
        try:
            self._use_connection(then, mic, live, error, data)
        finally:
            self.on_change()

    def _use_connection(self, then, mic, live, error, data):
        if error is not None:
            self.cannot_start(error if isinstance(error, HAEInputError) else
                               f"connecting to the microscope failed ({type(error).__name__}: {error})")
            return
        try:
            if isinstance(data, LiveImage):
                self._refresh_live_layer(live, data)
            then(self.on_grid(mic, data) if data is not None else mic, live)
        except HAEInputError as exc:
            close_microscope(mic)
            self.cannot_start(exc)

    def _connect_done(self, worker):
        if self.connecting is worker:   # (a connection its result started meanwhile is not this one)
            self.connecting = None
        self.on_change()


