"""pycroscopy's DTMicroscope digital twin (``pip install "napari-hae[dtmicroscope]"``): a Pyro5 client of its STEM
server.

The server's calls, as DTMicroscope's ``server_stem`` defines them: ``initialize_microscope("STEM")``,
``register_data(path)``, ``get_overview_image()``, ``get_point_data(key, x, y)`` and
``get_spectrum_image_e_axis(key)``; arrays come back as ``(list, shape, dtype)``. Its ``x`` is the ROW index (it
indexes ``dataset[key][x][y]``): this adapter passes the run's row y as DTMicroscope's x, and nowhere else is that
convention known. Its energies come without units: they are taken as ``energy_units`` (eV unless told). It sends
no pixel size either: ``pixel_size`` (in ``pixel_units``) is the user's, from the dataset's calibration; without it
positions are in pixels.

A real server: ``python server_stem.py`` in DTMicroscope's ``DTMicroscope/server`` folder (port 9091), then
``napari-hae run --microscope dtmicroscope:uri=PYRO:microscope.server@HOST:9091,data_source=PATH``.
"""

from __future__ import annotations

import numpy as np

from ..data.dataset import EnergyAxis
from ..errors import HAEInputError, InstrumentDisconnected, InstrumentRefused
from ..registry import ParamSpec


def _array(reply) -> np.ndarray:
    """A DTMicroscope array: ``(list, shape, dtype)``, or a plain list."""
    if isinstance(reply, (list, tuple)) and len(reply) == 3 and isinstance(reply[2], str):
        data, shape, dtype = reply
        return np.asarray(data, dtype=dtype).reshape(tuple(shape))
    return np.asarray(reply)


class DTMicroscope:
    """A DTMicroscope STEM server (Pyro5)."""

    replays = False   # the server may replay a file, but napari-hae cannot see it: a resume registers its image

    def __init__(self, uri: str, data_source: str = "", spectrum_key: str = "Channel_001",
                 initialize: bool = True, energy_units: str = "eV", pixel_size: float = 0.0,
                 pixel_units: str = "nm"):
        try:
            import Pyro5.api
            import Pyro5.errors
        except ImportError as exc:
            raise HAEInputError(f"Pyro5 is not installed ({exc}).",
                                'pip install "napari-hae[dtmicroscope]".') from exc
        self._api, self._errors = Pyro5.api, Pyro5.errors
        self.uri, self.key, self.name = uri, spectrum_key, f"DTMicroscope at {uri}"
        self._initialize, self._data_source = initialize, data_source
        self._pixel = {"pixel_size": float(pixel_size), "pixel_units": pixel_units} if pixel_size > 0 else {}
        self._proxy = self._connect()
        self._lost = False   # the connection failed: the next call opens a new session first
        try:
            self._structural, energies = self._open_session()
        except InstrumentDisconnected as exc:
            raise HAEInputError(f"No DTMicroscope server answers at {uri} ({exc}).",
                                "start it (python server_stem.py in DTMicroscope/server) or check the uri.") from exc
        if self._structural.ndim != 2:
            raise HAEInputError(f"DTMicroscope's overview image has shape {self._structural.shape}, not (rows, "
                                "columns).", "register a dataset whose first channel is the HAADF image.")
        self.energy = self._linear_axis(energies, energy_units)
        self.signal_shape = (energies.size,)

    @staticmethod
    def _linear_axis(e: np.ndarray, units: str) -> EnergyAxis:
        step = np.diff(e)
        if e.size < 2 or not np.allclose(step, step[0], rtol=1e-6, atol=1e-9 * max(1.0, abs(float(e[-1])))):
            raise HAEInputError(f"DTMicroscope's energy axis ({e.size} values) is not evenly spaced (steps "
                                f"{step.min() if step.size else 0:g} to {step.max() if step.size else 0:g}).",
                                "give a dataset with a linear energy axis (napari-hae's bands assume one).")
        return EnergyAxis(e.size, float(e[0]), float((e[-1] - e[0]) / (e.size - 1)), units)

    def _connect(self):
        return self._api.Proxy(self.uri)

    def _open_session(self) -> tuple[np.ndarray, np.ndarray]:
        """What DTMicroscope's server needs on every connection (it gives each one a fresh microscope object with
        no data): initialise, register the data; returns (overview image, energies)."""
        if self._initialize:
            self._call("initialize_microscope", "STEM")
        if self._data_source:
            self._call("register_data", self._data_source)
        image = np.asarray(_array(self._call("get_overview_image")), dtype=np.float64)
        energies = np.asarray(_array(self._call("get_spectrum_image_e_axis", self.key)), np.float64).ravel()
        return image, energies

    def _call(self, name: str, *args):
        self._proxy._pyroClaimOwnership()   # Pyro5 proxies belong to one thread: the caller's is now the owner
        try:
            return getattr(self._proxy, name)(*args)
        except self._errors.CommunicationError as exc:   # connection lost or refused: a reconnect may help
            self._lost = True
            raise InstrumentDisconnected(f"{type(exc).__name__}: {exc}") from exc

    @property
    def scan_shape(self) -> tuple[int, int]:
        return tuple(int(v) for v in self._structural.shape)

    def structural_image(self) -> np.ndarray:
        return self._structural

    def describe(self) -> dict:
        return {"scan_shape": list(self.scan_shape), "source_uri": self.uri, "spectrum_key": self.key, **self._pixel}

    def acquire(self, y: int, x: int) -> np.ndarray:
        ny, nx = self.scan_shape
        if not (0 <= y < ny and 0 <= x < nx):
            raise InstrumentRefused(f"({y}, {x}) is outside DTMicroscope's {ny} x {nx} field")
        if self._lost:   # every attempt after a lost connection restores the session first (a restarted server)
            self.reconnect()
        try:
            reply = self._call("get_point_data", self.key, int(y), int(x))   # its x is the row
        except (IndexError, KeyError) as exc:
            raise InstrumentRefused(f"the server refused ({y}, {x}): {type(exc).__name__}: {exc}") from exc
        return np.asarray(_array(reply), dtype=np.float64).ravel()

    def reconnect(self) -> None:
        """A new connection with the session restored (initialised, data registered); refused when the server
        now shows another overview image (other data: spectra would not be the run's)."""
        try:
            self.close()
        except Exception:   # the old connection is gone anyway
            pass
        self._proxy = self._connect()
        image, energies = self._open_session()
        if image.shape != self._structural.shape or not np.allclose(image, self._structural, equal_nan=True):
            raise InstrumentRefused("after reconnecting, DTMicroscope's overview image is not the run's: the server "
                                    "holds other data (check its data_source)")
        if energies.size != self.signal_shape[0]:
            raise InstrumentRefused(f"after reconnecting, DTMicroscope's energy axis has {energies.size} channels, "
                                    f"the run's {self.signal_shape[0]}")
        self._lost = False

    def close(self) -> None:
        self._proxy._pyroClaimOwnership()   # the run's acquisition thread may own it now
        self._proxy._pyroRelease()


def dtmicroscope(data=None, *, seed: int = 0, uri: str = "PYRO:microscope.server@localhost:9091",
                 data_source: str = "", spectrum_key: str = "Channel_001", initialize: bool = True,
                 energy_units: str = "eV", pixel_size: float = 0.0, pixel_units: str = "nm") -> DTMicroscope:
    """pycroscopy's DTMicroscope STEM digital twin, over Pyro5."""
    return DTMicroscope(uri.strip(), data_source, spectrum_key, initialize, energy_units, pixel_size, pixel_units)


dtmicroscope.params = (
    ParamSpec("uri", "PYRO:microscope.server@localhost:9091", help="the server's Pyro5 URI"),
    ParamSpec("data_source", "", help="a dataset file on the server to register (empty: the one it has)"),
    ParamSpec("spectrum_key", "Channel_001", help="the spectrum image's key in the server's dataset"),
    ParamSpec("initialize", True, help="call initialize_microscope('STEM') first"),
    ParamSpec("energy_units", "eV", help="units of the server's energies (it sends none)"),
    ParamSpec("pixel_size", 0.0, "", 0.0, 1e6, "size of a scan pixel in pixel_units, from the dataset's calibration "
              "(the server sends none; 0: unknown, positions in pixels)"),
    ParamSpec("pixel_units", "nm", help="units of pixel_size"),
)
