"""Data model: a structural image S(y, x) on the same scan grid as a spectrum image A(y, x, E).

Units: scan positions in pixels (row y, column x), energies in eV.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import HAEInputError


@dataclass(frozen=True)
class EnergyAxis:
    """A linear, calibrated energy axis: ``E_i = offset + i * scale`` (eV)."""

    size: int
    offset: float = 0.0
    scale: float = 1.0
    units: str = "eV"

    def __post_init__(self):
        if int(self.size) < 1:
            raise HAEInputError(
                "The energy axis is empty (0 channels).",
                "load a spectrum image whose last axis holds the spectrum channels.",
            )
        if not np.isfinite(self.scale) or self.scale == 0 or not np.isfinite(self.offset):
            raise HAEInputError(
                f"The energy axis calibration is invalid (offset={self.offset}, scale={self.scale}).",
                "give a finite offset and a non-zero dispersion (eV per channel).",
            )

    @property
    def values(self) -> np.ndarray:
        """Channel energies (eV), shape (size,)."""
        return self.offset + self.scale * np.arange(self.size, dtype=np.float64)

    @property
    def calibrated(self) -> bool:
        return self.units not in ("channel", "channels", "", "<undefined>")

    @property
    def limits(self) -> tuple[float, float]:
        v = self.values
        return float(v.min()), float(v.max())

    def to_dict(self) -> dict:
        return {"size": int(self.size), "offset": float(self.offset),
                "scale": float(self.scale), "units": str(self.units)}

    @classmethod
    def uncalibrated(cls, size: int) -> EnergyAxis:
        return cls(size=size, offset=0.0, scale=1.0, units="channel")


@dataclass
class SpectrumImage:
    """A structural image and a spectrum image on the same scan grid.

    Parameters
    ----------
    structural : (ny, nx) array, e.g. HAADF intensity.
    spectra : (ny, nx, n_channels) array (EELS/EDX), or (ny, nx, ky, kx) for 4D-STEM.
    energy : EnergyAxis of the last axis (1-D signals); ``None`` builds an uncalibrated axis.
    pixel_size : scan step in ``pixel_units`` (default 1 pixel).
    ground_truth : optional named (ny, nx) maps known for simulated data.
    """

    structural: np.ndarray
    spectra: np.ndarray
    energy: EnergyAxis | None = None
    pixel_size: float = 1.0
    pixel_units: str = "px"
    name: str = "dataset"
    signal_type: str = ""     # HyperSpy's metadata.Signal.signal_type ("EELS", "EDS_TEM", ...) where the file says
    ground_truth: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)     # what was done to the data on loading (recorded in runs)
    # the last fingerprint and what it was of (the arrays themselves, not their ids, which a new array may reuse;
    # the calibration): see fingerprint()
    _fingerprint: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.structural = _as_float_array(self.structural, "structural image")
        if not is_lazy(self.spectra):   # memory-mapped and dask arrays stay on disk; they are read in row blocks
            self.spectra = np.asarray(self.spectra)
        if self.structural.ndim != 2:
            raise HAEInputError(
                f"The structural image must be 2-D (y, x); got {self.structural.ndim}-D with shape "
                f"{self.structural.shape}.",
                "pass a single HAADF/ADF image; for a stack, pick one frame or sum the frames first.",
            )
        if self.spectra.ndim not in (3, 4):
            raise HAEInputError(
                f"The spectrum image must be 3-D (y, x, energy) or 4-D (y, x, ky, kx); got "
                f"{self.spectra.ndim}-D with shape {self.spectra.shape}.",
                "for a single spectrum there is nothing to scan; for a line scan add a scan axis of length 1 "
                "is not supported: acquire a 2-D map.",
            )
        if not np.issubdtype(self.spectra.dtype, np.number) or np.issubdtype(self.spectra.dtype, np.complexfloating):
            raise HAEInputError(
                f"The spectrum image has a non-real dtype {self.spectra.dtype}.",
                "convert it to real counts (e.g. take the modulus) before loading.",
            )
        if self.spectra.shape[:2] != self.structural.shape:
            raise HAEInputError(
                f"The structural image {self.structural.shape} and the spectrum image scan grid "
                f"{self.spectra.shape[:2]} have different shapes.",
                "use a structural image acquired on the same scan grid as the spectra, or bin/resample it to "
                f"{self.spectra.shape[:2]} first.",
            )
        if min(self.structural.shape) < 3:
            raise HAEInputError(
                f"The scan grid {self.structural.shape} is too small (needs at least 3 x 3 positions).",
                "load a 2-D spectrum image map.",
            )
        if any(s == 0 for s in self.spectra.shape[2:]):
            raise HAEInputError("The spectrum image has an empty signal axis.",
                                "load data whose spectra have at least one channel.")
        if not np.all(np.isfinite(self.structural)):
            n = int(np.size(self.structural) - np.isfinite(self.structural).sum())
            raise HAEInputError(
                f"The structural image has {n} non-finite (NaN or inf) pixels; they would corrupt every patch.",
                "replace them (e.g. np.nan_to_num or inpainting) before loading.",
            )
        n = sum(int(b.size - np.count_nonzero(np.isfinite(b))) for _, _, b in row_blocks(self.spectra))
        if n:
            raise HAEInputError(
                f"The spectrum image has {n} non-finite (NaN or inf) values; scalarizers would return NaN.",
                "replace them (e.g. np.nan_to_num) or crop the affected channels before loading.",
            )
        if self.spectra.ndim == 3:
            if self.energy is None:
                self.energy = EnergyAxis.uncalibrated(self.spectra.shape[2])
            if self.energy.scale < 0:   # a descending axis: reverse the channels (a view), say so
                e = self.energy
                self.energy = EnergyAxis(e.size, e.offset + e.scale * (e.size - 1), -e.scale, e.units)
                self.spectra = self.spectra[..., ::-1]
                self.notes.append(f"the energy axis descended (dispersion {e.scale:g} {e.units}/channel); its "
                                  "channels were reversed so that energies increase")
                warnings.warn(f"{self.name}: {self.notes[-1]}.", UserWarning, stacklevel=2)
            if self.energy.size != self.spectra.shape[2]:
                raise HAEInputError(
                    f"The energy axis has {self.energy.size} channels but the spectra have "
                    f"{self.spectra.shape[2]}.",
                    "give an energy axis with one value per channel.",
                )
            if not self.energy.calibrated:
                warnings.warn(
                    "The energy axis is uncalibrated: energies are channel indices, so scalarizer bands are in "
                    "channels, not eV. Calibrate it (offset and dispersion) to use bands in eV.",
                    UserWarning, stacklevel=2,
                )
        if not (np.isfinite(self.pixel_size) and self.pixel_size > 0):
            raise HAEInputError(f"The pixel size {self.pixel_size} is not a positive number.",
                                "give the scan step (e.g. 0.5 with units 'nm'), or leave the default 1 px.")
        for key, m in self.ground_truth.items():
            if np.shape(m) != self.scan_shape:
                raise HAEInputError(f"Ground-truth map {key!r} has shape {np.shape(m)}, not {self.scan_shape}.",
                                    "give maps on the scan grid.")

    @property
    def scan_shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.structural.shape)

    @property
    def n_positions(self) -> int:
        return self.scan_shape[0] * self.scan_shape[1]

    @property
    def signal_shape(self) -> tuple[int, ...]:
        return tuple(self.spectra.shape[2:])

    @property
    def energies(self) -> np.ndarray | None:
        return None if self.energy is None else self.energy.values

    def fingerprint(self) -> dict:
        """Digests of the whole data source (spectra, structural image) and its energy calibration, so that a resume
        or a report can tell whether it replays the data the run measured (read in row blocks: bounded memory).

        Read once for the same arrays and calibration (0.23 s for a 128 x 128 x 2048 map, more from disk): the
        dock computes it off the GUI thread when the data is chosen, and Start takes that one; threads asking at
        once wait for the one reading. Arrays replaced are read again (arrays are not changed in place here)."""
        energy = None if self.energy is None else self.energy.to_dict()
        with _FINGERPRINTING:
            known = self._fingerprint
            if known is None or known[0] is not self.spectra or known[1] is not self.structural or known[2] != energy:
                self._fingerprint = known = (self.spectra, self.structural, energy, self._digests())
            return dict(known[3])

    def _digests(self) -> dict:
        import hashlib

        def digest(a) -> str:
            h = hashlib.blake2b(digest_size=16)
            h.update(str((tuple(a.shape), np.dtype(a.dtype).str)).encode())
            for _, _, block in row_blocks(a):
                h.update(np.ascontiguousarray(block).tobytes())
            return h.hexdigest()

        return {"spectra": digest(self.spectra), "structural": digest(self.structural),
                "energy": None if self.energy is None else self.energy.to_dict()}

    def check_same_source(self, recorded: dict | None, what: str = "The run") -> None:
        """Raise if this data is not the source ``recorded`` (a :meth:`fingerprint`) describes: a resume or report
        on changed data would mix values or report wrong ones."""
        if not recorded:
            return
        now = self.fingerprint()
        diffs = []
        if recorded.get("energy") != now["energy"]:
            diffs.append(f"energy calibration {recorded.get('energy')} -> {now['energy']}")
        for key, label in (("spectra", "spectra"), ("structural", "structural image")):
            if recorded.get(key) and recorded[key] != now[key]:
                diffs.append(f"{label} (content differs)")
        if diffs:
            raise HAEInputError(f"{what} was measured on data that differs from {self.name!r} as it is now: "
                                f"{'; '.join(diffs)}.",
                                "point it at the data the run was started on (the same files, unchanged); for a new "
                                "analysis of changed data start a new run.")

    def spectrum(self, y: int, x: int) -> np.ndarray:
        """The spectrum at scan position (y, x), in memory (read from disk for a lazy spectrum image)."""
        return np.asarray(self.spectra[y, x])

    def scalarize(self, scalarizer) -> np.ndarray:
        """``scalarizer`` at every scan position, (ny, nx), computed in row blocks (bounded memory)."""
        out = np.empty(self.scan_shape)
        for i0, i1, block in row_blocks(self.spectra):
            out[i0:i1] = scalarizer(block, self.energies)
        return out

    def total_intensity(self) -> np.ndarray:
        """Sum over the signal axes at every position, (ny, nx) float64 (row blocks)."""
        out = np.empty(self.spectra.shape[:2])
        for i0, i1, block in row_blocks(self.spectra):
            out[i0:i1] = block.sum(axis=tuple(range(2, block.ndim)), dtype=np.float64)
        return out

    def mean_spectrum(self) -> np.ndarray:
        """The mean spectrum over all positions (row blocks)."""
        total = np.zeros(self.signal_shape)
        for _, _, block in row_blocks(self.spectra):
            total += block.reshape(-1, *self.signal_shape).sum(0, dtype=np.float64)
        return total / self.n_positions

    def describe(self) -> dict:
        return {
            "name": self.name,
            "scan_shape": list(self.scan_shape),
            "signal_shape": list(self.signal_shape),
            "energy": None if self.energy is None else self.energy.to_dict(),
            "pixel_size": float(self.pixel_size),
            "pixel_units": self.pixel_units,
            **({"signal_type": self.signal_type} if self.signal_type else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
        }


BLOCK_BYTES = 16 * 2**20     # whole-array passes read this much at a time


def is_lazy(a) -> bool:
    """A spectrum image that is not held in memory: memory-mapped (.npy) or a dask array (HyperSpy lazy)."""
    return isinstance(a, np.memmap) or hasattr(a, "compute")


def _release(a) -> None:
    """Let the OS drop the pages of a memory-mapped array that a whole-array pass touched (they stay in the page
    cache, not in this process' resident memory). A no-op for other arrays and where madvise is missing."""
    import mmap

    mm = getattr(a, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


_FINGERPRINTING = threading.Lock()   # one fingerprint read at a time, process-wide (a lock is not copied with data)


def row_blocks(a, block_bytes: int = BLOCK_BYTES):
    """``(i0, i1, block)`` over the first axis of ``a`` in blocks of about ``block_bytes``, each block an
    in-memory numpy array in ``a``'s own dtype: bounded memory for arrays of any size, lazy or not."""
    row = int(np.prod(a.shape[1:], dtype=np.int64)) * np.dtype(a.dtype).itemsize
    rows = max(1, int(block_bytes // max(1, row)))
    for i in range(0, a.shape[0], rows):
        block = np.asarray(a[i:i + rows])
        yield i, min(i + rows, a.shape[0]), block
        _release(a)


def _as_float_array(a, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise HAEInputError(f"The {what} has dtype {arr.dtype}, not real numbers.",
                            "pass a real-valued numeric array.")
    return arr.astype(np.float64, copy=False)
