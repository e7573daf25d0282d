"""The microscope interface, and a simulated microscope that replays a pre-acquired spectrum image.

A live instrument plugs in by implementing :class:`Microscope` (structural image, scan shape, energy axis,
``acquire(y, x)``) and, optionally, a dwell, blanking, abort and reconnect (see :mod:`.guard`, through which the
experiment loop makes every call).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..data.dataset import EnergyAxis, SpectrumImage
from ..errors import HAEInputError


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

    replays = True   # pre-acquired data: a resume needs the very same structural image

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
