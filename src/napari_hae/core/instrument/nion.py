"""Nion Swift instruments (``pip install "napari-hae[nion]"``): the HAADF from the scan hardware source, a spectrum
from the EELS camera with the probe parked at a pixel's centre.

Two adapters, one class: ``nion`` uses the hardware sources of a running Nion Swift (on the microscope PC, by
their ids), ``nion-usim`` starts Nion's simulated STEM (``nionswift-usim``) headless in this process: the same
code path, driven as the real instrument is.

Geometry: the structural image is recorded with the stated frame parameters (pixels, field of view, pixel time),
and that frame is made the current scan context, so that probe positions, which Nion takes as fractions of the
current scan frame, refer to the recorded image (recording alone does not make its frame current). The scan
context is checked before every spectrum: a frame changed on the instrument mid-run is refused, not followed.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from ..data.dataset import EnergyAxis
from ..errors import HAEInputError, InstrumentRefused
from ..registry import ParamSpec
from .geometry import ScanGeometry

FRAME_PARAMS = (
    ParamSpec("size", 64, "px", 8, 4096, "scan pixels per side of the structural image (and of the run)"),
    ParamSpec("fov_nm", 100.0, "nm", 0.1, 1e5, "field of view of the scan"),
    ParamSpec("pixel_time_us", 10.0, "us", 0.1, 1e4, "dwell per pixel of the structural image"),
    ParamSpec("channel", "HAADF", help="scan channel of the structural image"),
    ParamSpec("exposure_ms", 10.0, "ms", 0.01, 1e5, "EELS exposure when the run gives no dwell"),
)


def _need_nion():
    try:
        from nion.instrumentation import HardwareSource  # noqa: F401
        from nion.utils import Geometry  # noqa: F401
    except ImportError as exc:
        raise HAEInputError(f"Nion Swift's instrumentation is not installed ({exc}).",
                            'pip install "napari-hae[nion]" (nionswift-instrumentation; nionswift-usim for the '
                            "simulated STEM).") from exc


class NionMicroscope:
    """A STEM driven through Nion Swift's hardware sources (scan, EELS camera, instrument controller).

    Exposure-exact: the EELS camera is idle between spectra, and a spectrum is the camera's one-frame sequence
    (it exposes once and stops), so the beam is on for one exposure and its readout, not for the rest of a frame
    in progress plus a whole frame (1.5-2x the dwell before). A camera left playing (by Swift's UI) is stopped with
    the beam blanked first. A frame whose exposure is not the one asked is never returned. ``last_beam_on_s``: the
    seconds the beam was on for the latest spectrum, from this adapter's own blank and unblank times.
    """

    dwell_range = (1e-5, 100.0)   # s: the exposures the EELS camera takes (exposure_ms 0.01 to 1e5)
    subpixel = True               # the probe is parked at a frame fraction: between pixel centres too

    def __init__(self, scan, eels, instrument, *, size: int = 64, fov_nm: float = 100.0,
                 pixel_time_us: float = 10.0, channel: str = "HAADF", exposure_ms: float = 10.0, on_close=None):
        from nion.utils import Geometry

        self._G = Geometry
        self.scan, self.eels, self.instrument = scan, eels, instrument
        self._on_close = on_close
        self._lock = threading.Lock()
        self.name = f"Nion {scan.hardware_source_id} + {eels.hardware_source_id}"
        self.signal_type = "EELS"
        fp = scan.get_current_frame_parameters()
        fp.size = Geometry.IntSize(int(size), int(size))
        fp.fov_nm = float(fov_nm)
        fp.pixel_time_us = float(pixel_time_us)
        scan.set_current_frame_parameters(fp)   # the recorded frame is the current scan context
        self._frame, self._channel = fp, channel
        image = self._record_image()
        self._structural = np.asarray(image.data, dtype=np.float64)
        cal = image.dimensional_calibrations[-1]
        rotation = math.degrees(float(getattr(fp, "rotation_rad", 0.0) or 0.0))
        self.geometry = ScanGeometry(tuple(self._structural.shape), float(cal.scale) or fov_nm / size,
                                     cal.units or "nm", rotation)
        self.structural_params = {"size": int(size), "fov_nm": float(fov_nm), "pixel_time_us": float(pixel_time_us),
                                  "detector": channel}
        self._context = self._scan_context()
        self._exposure_ms = None
        self._set_exposure(float(exposure_ms))
        self._on_since: float | None = None   # when the beam was last unblanked (None: blanked)
        self._on_s = 0.0                      # beam seconds of the spectrum being acquired
        self._aborted = False                 # abort() was called during the frame: it is not returned
        self.last_beam_on_s = math.nan
        self.last_image_beam_on_s = math.nan
        self.blank()
        spectrum, self.energy = self._grab()   # with the beam blanked: the axis, no dose
        self.last_energy = self.energy
        self.signal_shape = spectrum.shape

    # -- the interface ------------------------------------------------------------------------------------
    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.geometry.shape

    def structural_image(self) -> np.ndarray:
        return self._structural

    def describe(self) -> dict:
        """Geometry and the structural image's acquisition, for the trace."""
        return {**self.geometry.describe(), "structural_acquisition": dict(self.structural_params)}

    def acquire(self, y: int, x: int, dwell: float | None = None) -> np.ndarray:
        fy, fx = self.geometry.to_fraction(y, x)   # fractional pixels too (a registered resume's sub-pixel drift)
        self._same_frame("positions would land elsewhere")
        self._on_s = 0.0
        self._wait_idle()   # the previous spectrum's camera stopping, with the beam blanked meanwhile
        self._set_exposure(self._exposure_ms if dwell is None else float(dwell) * 1000.0)
        self.instrument.set_probe_position(self._G.FloatPoint(y=fy, x=fx))
        spectrum, self.last_energy = self._grab()
        return spectrum

    def acquire_structural_image(self) -> np.ndarray:
        """The structural image again, in the run's frame, as the specimen lies now (drift tracking); the beam is
        on for the scan only (``last_image_beam_on_s``)."""
        self._same_frame("the image would not be the run's field")
        t0 = time.perf_counter()
        self.instrument.SetVal("C_Blank", 0.0)
        try:
            image = self._record_image()
        finally:
            self.instrument.SetVal("C_Blank", 1.0)
            self.last_image_beam_on_s = time.perf_counter() - t0
        return np.asarray(image.data, dtype=np.float64)

    def _record_image(self):
        frames = self.scan.record_immediate(self._frame)
        names = [(x.metadata or {}).get("hardware_source", {}).get("channel_name") for x in frames]
        if self._channel not in names:
            raise HAEInputError(f"The scan has no channel {self._channel!r} (it recorded {names}).",
                                f"choose one of {names} (channel=NAME).")
        return frames[names.index(self._channel)]

    def blank(self) -> None:
        self.instrument.SetVal("C_Blank", 1.0)
        if self._on_since is not None:
            self._on_s += time.perf_counter() - self._on_since
            self._on_since = None
        self.last_beam_on_s = self._on_s

    def unblank(self) -> None:
        self._on_since = time.perf_counter()   # from the command: the figure may overstate, never understate
        self.instrument.SetVal("C_Blank", 0.0)

    def abort(self) -> None:
        self._aborted = True
        self.eels.acquire_sequence_cancel()          # the frame being exposed ends now, and is not returned
        self.eels.abort_playing(sync_timeout=5.0)   # a camera someone left playing: stopped when this returns

    def close(self) -> None:
        try:
            if self.eels.is_playing:
                self.eels.stop_playing(sync_timeout=5.0)
            self.blank()
            self.instrument.set_probe_position(None)
        finally:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None

    # -- helpers ------------------------------------------------------------------------------------------
    def _same_frame(self, otherwise: str) -> None:
        """Refuse when the scan frame on the instrument is no longer the run's (``otherwise``: what would follow)."""
        if self._scan_context() != self._context:
            raise InstrumentRefused(f"the scan frame changed on the instrument (now {self._scan_context()}, the run's "
                                    f"is {self._context}): {otherwise}")

    def _scan_context(self) -> str:
        c = self.instrument.scan_context
        return f"{c.size} {c.fov_nm} nm {getattr(c, 'rotation_rad', 0.0)} rad"

    def _set_exposure(self, ms: float) -> None:
        if ms == self._exposure_ms:
            return
        fp = self.eels.get_current_frame_parameters()
        fp.exposure_ms = float(ms)
        self.eels.set_current_frame_parameters(fp)
        self._exposure_ms = float(ms)

    def _wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until the camera has stopped; a beam the run unblanked is blanked while it waits."""
        if not self.eels.is_playing:
            return
        was_on = self._on_since is not None
        if was_on:
            self.blank()
        self.eels.abort_playing(sync_timeout=timeout)
        if was_on:
            self.unblank()

    def _grab(self) -> tuple[np.ndarray, EnergyAxis]:
        """One frame acquired now (the probe is where it was sent), summed to a spectrum: the camera's own
        one-frame sequence, which exposes once and stops (about 1.01x the exposure on nion-usim; a frame grabbed
        from a playing camera cost the rest of the frame in progress plus a whole one)."""
        self._aborted = False
        t0 = time.perf_counter()
        elements = self.eels.acquire_sequence(1)
        took = time.perf_counter() - t0
        if self._aborted or took < 0.95 * self._exposure_ms / 1000.0:   # a cancelled sequence says "complete"
            raise RuntimeError(f"the EELS frame was cut short after {took:.3g} s of {self._exposure_ms / 1000:g} s "
                               "(aborted): not recorded")
        if not elements or elements[0] is None or elements[0].get("data") is None:
            raise RuntimeError("the EELS camera returned no frame (acquisition aborted)")
        element = elements[0]
        exposure = (element.get("metadata") or {}).get("hardware_source", {}).get("exposure")
        if exposure is not None and not math.isclose(float(exposure), self._exposure_ms / 1000.0, rel_tol=1e-3):
            raise RuntimeError(f"the EELS frame was exposed {float(exposure):g} s, {self._exposure_ms / 1000:g} s "
                               "was asked: not recorded")
        data = np.asarray(element["data"], dtype=np.float64)
        spectrum = data.reshape(-1, data.shape[-1]).sum(0)
        cal = (element.get("spatial_calibrations") or [{}])[-1] or {}
        return spectrum, EnergyAxis(spectrum.size, float(cal.get("offset", 0.0)), float(cal.get("scale", 1.0)),
                                    cal.get("units") or "eV")

# -- Nion's simulated STEM, headless ---------------------------------------------------------------------------
_USIM = {"config": None, "dir": None}


def _start_usim(sample_index: int):
    import asyncio
    import tempfile

    from nion.instrumentation import HardwareSource, camera_base, scan_base
    from nion.usim_device import DeviceConfiguration

    _stop_usim()
    try:   # Nion's registration listeners want an asyncio loop in this thread (a worker thread has none)
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    folder = tempfile.TemporaryDirectory(prefix="napari-hae-usim-")
    HardwareSource.run()
    camera_base.run(folder.name)
    scan_base.run(folder.name)
    # set_configuration_location=False: the default would delete and re-create ./test_data
    cfg = DeviceConfiguration.AcquisitionContextConfiguration(sample_index=sample_index,
                                                              set_configuration_location=False)
    cfg.run()
    _USIM.update(config=cfg, dir=folder)
    hsm = HardwareSource.HardwareSourceManager()
    scan = hsm.get_hardware_source_for_hardware_source_id(cfg.scan_module.device.scan_device_id)
    eels = hsm.get_hardware_source_for_hardware_source_id(cfg.eels_camera_device_id)
    if scan is None or eels is None:
        _stop_usim()
        raise HAEInputError("Nion's simulated STEM started without its scan or EELS hardware source.",
                            "check the nionswift-instrumentation and nionswift-usim versions (pip install "
                            '"napari-hae[nion]" --upgrade).')
    return scan, eels, cfg.instrument


def _stop_usim():
    cfg = _USIM["config"]
    if cfg is None:
        return
    from nion.instrumentation import HardwareSource, camera_base, scan_base

    cfg.stop()
    camera_base.stop()
    scan_base.stop()
    HardwareSource.stop()
    _USIM["dir"].cleanup()
    _USIM.update(config=None, dir=None)


def usim(data=None, *, seed: int = 0, sample_index: int = 0, **frame) -> NionMicroscope:
    """Nion Swift's simulated STEM (nionswift-usim), started headless in this process."""
    _need_nion()
    try:
        from nion.usim_device import DeviceConfiguration  # noqa: F401
    except ImportError as exc:
        raise HAEInputError(f"Nion's simulated STEM is not installed ({exc}).",
                            'pip install "napari-hae[nion]" (it brings nionswift-usim).') from exc
    scan, eels, instrument = _start_usim(int(sample_index))
    try:
        return NionMicroscope(scan, eels, instrument, on_close=_stop_usim, **frame)
    except BaseException:
        _stop_usim()
        raise


usim.params = (ParamSpec("sample_index", 0, "", 0, 10, "which of usim's simulated samples"), *FRAME_PARAMS)


def swift(data=None, *, seed: int = 0, scan_id: str = "", eels_id: str = "", **frame) -> NionMicroscope:
    """The hardware sources of a running Nion Swift (on the microscope PC)."""
    _need_nion()
    from nion.instrumentation import HardwareSource
    from nion.utils import Registry

    hsm = HardwareSource.HardwareSourceManager()
    sources = {h.hardware_source_id: h for h in hsm.hardware_sources}
    for name, hid in (("scan_id", scan_id), ("eels_id", eels_id)):
        if hid not in sources:
            raise HAEInputError(f"No Nion hardware source {hid!r} ({name}).", f"choose one of {sorted(sources)}.")
    instrument = Registry.get_component("stem_controller")
    if instrument is None:
        raise HAEInputError("Nion Swift has no STEM controller registered.",
                            "start napari-hae inside Nion Swift's Python (where the instrument is registered).")
    return NionMicroscope(sources[scan_id], sources[eels_id], instrument, **frame)


swift.params = (ParamSpec("scan_id", "", help="the scan hardware source id (as in Nion Swift)"),
                ParamSpec("eels_id", "", help="the EELS camera hardware source id"), *FRAME_PARAMS)
