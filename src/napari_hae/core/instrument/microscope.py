"""The microscope interface, and a simulated microscope that replays a pre-acquired spectrum image.

A live instrument plugs in by implementing :class:`Microscope` (structural image, scan shape, energy axis,
``acquire(y, x)``); the experiment loop only talks to this interface.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from ..data.dataset import EnergyAxis, SpectrumImage
from ..errors import HAEInputError, MicroscopeFault

log = logging.getLogger(__name__)


@runtime_checkable
class Microscope(Protocol):
    """What the experiment needs from an instrument. Positions are scan pixels (row y, column x)."""

    @property
    def scan_shape(self) -> tuple[int, int]: ...

    @property
    def energy(self) -> EnergyAxis | None: ...

    @property
    def signal_shape(self) -> tuple[int, ...]: ...

    def structural_image(self) -> np.ndarray:
        """The dense structural image (e.g. HAADF) on the scan grid, shape ``scan_shape``."""
        ...

    def acquire(self, y: int, x: int) -> np.ndarray:
        """Move the probe to (y, x), acquire and return one spectrum (shape ``signal_shape``)."""
        ...


class SimulatedMicroscope:
    """Replays spectra of a pre-acquired :class:`SpectrumImage`.

    Parameters
    ----------
    data : the pre-acquired dataset.
    noise : ``None`` (exact replay) or ``"poisson"``: each acquisition is a fresh Poisson draw with the stored
        spectrum (times ``dose``) as its mean, as if the dwell time were ``dose`` times the original.
    dose : relative dwell time for Poisson noise.
    seed : random seed of the noise.
    """

    def __init__(self, data: SpectrumImage, noise: str | None = None, dose: float = 1.0, seed: int = 0):
        if noise not in (None, "poisson"):
            raise HAEInputError(f"Unknown noise model {noise!r}.", "use None or 'poisson'.")
        if not dose > 0:
            raise HAEInputError(f"Dose {dose} must be > 0.", "use a relative dwell time such as 1.0.")
        self.data = data
        self.noise = noise
        self.dose = float(dose)
        self._rng = np.random.default_rng(seed)
        self.n_acquisitions = 0
        self.position: tuple[int, int] | None = None

    @property
    def scan_shape(self) -> tuple[int, int]:
        return self.data.scan_shape

    @property
    def energy(self) -> EnergyAxis | None:
        return self.data.energy

    @property
    def signal_shape(self) -> tuple[int, ...]:
        return self.data.signal_shape

    def structural_image(self) -> np.ndarray:
        return self.data.structural

    def acquire(self, y: int, x: int) -> np.ndarray:
        y, x = int(y), int(x)
        ny, nx = self.scan_shape
        if not (0 <= y < ny and 0 <= x < nx):
            raise HAEInputError(f"Probe position ({y}, {x}) is outside the scan field {ny} x {nx}.",
                                f"use 0 <= y < {ny} and 0 <= x < {nx}.")
        self.position = (y, x)
        self.n_acquisitions += 1
        s = np.asarray(self.data.spectrum(y, x), dtype=np.float64)
        if self.noise == "poisson":
            return self._rng.poisson(np.clip(s, 0, None) * self.dose).astype(np.float64) / self.dose
        return s.copy()


class AcquisitionGuard:
    """Calls ``microscope.acquire`` with a timeout, checks what comes back, and retries a bounded number of times.

    A spectrum counts as failed if ``acquire`` raises (other than :class:`HAEInputError`, which is a caller's bug
    and is not retried), takes longer than ``timeout`` seconds, or returns an array of the wrong shape or with
    NaN/inf. After ``retries`` further failures :class:`MicroscopeFault` is raised; nothing is recorded for that
    position, so the run can pause and resume at the same step.

    ``timeout=None`` calls the microscope directly on the caller's thread. Otherwise calls run on one dedicated
    thread (replaced if a call hangs: the hung call is abandoned, not killed).
    """

    def __init__(self, microscope, retries: int = 2, timeout: float | None = 120.0, wait: float = 0.5,
                 on_event: Callable[[str], None] | None = None):
        if int(retries) < 0:
            raise HAEInputError(f"acquire_retries={retries} is negative.", "use 0 or more retries.")
        if timeout is not None and not timeout > 0:
            raise HAEInputError(f"acquire_timeout={timeout} s is not positive.", "use seconds > 0, or None.")
        self.microscope = microscope
        self.retries = int(retries)
        self.timeout = timeout
        self.wait = float(wait)
        self.on_event = on_event or (lambda msg: None)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _call(self, y: int, x: int):
        if self.timeout is None:
            return self.microscope.acquire(y, x)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hae-acquire")
        fut = self._pool.submit(self.microscope.acquire, y, x)
        try:
            return fut.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise TimeoutError(f"no spectrum within {self.timeout:g} s") from None

    def __call__(self, y: int, x: int, signal_shape: tuple[int, ...]) -> np.ndarray:
        last = None
        for attempt in range(self.retries + 1):
            try:
                s = np.asarray(self._call(y, x), dtype=np.float64)
                if s.shape != tuple(signal_shape):
                    raise ValueError(f"spectrum of shape {s.shape}, expected {tuple(signal_shape)}")
                if not np.all(np.isfinite(s)):
                    raise ValueError(f"spectrum with {int(np.size(s) - np.isfinite(s).sum())} NaN/inf values")
                return s
            except HAEInputError:
                raise
            except Exception as exc:  # an instrument may raise anything; it is reported, never swallowed
                last = exc
                msg = (f"acquisition at (y, x) = ({y}, {x}) failed (attempt {attempt + 1} of {self.retries + 1}): "
                       f"{type(exc).__name__}: {exc}")
                log.warning(msg)
                self.on_event(msg)
                if attempt < self.retries:
                    time.sleep(self.wait * (attempt + 1))
        raise MicroscopeFault(
            f"The microscope failed to acquire at (y, x) = ({y}, {x}) {self.retries + 1} times "
            f"(last: {type(last).__name__}: {last}). The run is paused; every spectrum measured so far is in the "
            "trace.",
            "check the instrument (beam, detector, connection), then resume the run (Resume in napari, or "
            "napari-hae run --resume OUT).",
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
