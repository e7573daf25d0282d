"""A live instrument's structural image as a dataset: what napari shows, and the user draws seeds and objects on,
before a run on the instrument. It has no pre-acquired spectra: a spectrum exists once the run measures it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..data.dataset import EnergyAxis


@dataclass
class LiveImage:
    structural: np.ndarray
    energy: EnergyAxis | None
    signal_shape: tuple
    pixel_size: float = 1.0
    pixel_units: str = "px"
    name: str = "instrument"
    signal_type: str = ""
    notes: list = field(default_factory=list)
    acquisition: dict = field(default_factory=dict)   # the instrument's describe(): how the image was acquired

    live = True   # no pre-acquired spectra

    @classmethod
    def of(cls, mic, adapter: str) -> LiveImage:
        """The structural image of the instrument ``mic`` (made by the adapter ``adapter``)."""
        info = mic.describe() if callable(getattr(mic, "describe", None)) else {}
        return cls(np.asarray(mic.structural_image(), dtype=np.float64), mic.energy, tuple(mic.signal_shape),
                   float(info.get("pixel_size", 1.0)), str(info.get("pixel_units", "px")),
                   f"{adapter} live", str(getattr(mic, "signal_type", "")),
                   acquisition=info)

    @property
    def scan_shape(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.structural.shape)

    @property
    def n_positions(self) -> int:
        return int(np.prod(self.scan_shape))

    @property
    def energies(self) -> np.ndarray | None:
        return None if self.energy is None else self.energy.values

    def spectrum(self, y: int, x: int) -> None:
        """None: nothing is measured before the run measures it."""
        return None

    def mean_spectrum(self) -> None:
        return None

    def describe(self) -> dict:
        return {**self.acquisition, "name": self.name, "scan_shape": list(self.scan_shape),
                "signal_shape": list(self.signal_shape),
                "energy": None if self.energy is None else self.energy.to_dict(),
                "pixel_size": self.pixel_size, "pixel_units": self.pixel_units, "live": True}

    def fingerprint(self) -> dict:
        h = hashlib.blake2b(np.ascontiguousarray(self.structural).tobytes(), digest_size=16).hexdigest()
        return {"structural": h, "energy": None if self.energy is None else self.energy.to_dict()}

    def check_same_source(self, recorded: dict | None, what: str = "The run") -> None:
        """A live instrument's image is acquired again on every connection: a resume registers it instead."""
