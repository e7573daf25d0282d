"""Loading spectrum images and structural images with HyperSpy / RosettaSciIO (.dm3, .dm4, .emd, .hspy, .zspy,
.bcf), and plain numpy pairs (.npy / .npz)."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HAEInputError
from .dataset import EnergyAxis, SpectrumImage, row_blocks

log = logging.getLogger(__name__)

HYPERSPY_SUFFIXES = (".dm3", ".dm4", ".emd", ".hspy", ".hdf5", ".h5", ".zspy", ".bcf", ".msa", ".rpl")
NUMPY_SUFFIXES = (".npy", ".npz")


EAGER_BYTES = 256 * 2**20   # spectrum images up to this size are read into memory (fast access); larger stay lazy


def _check_memory(nbytes: int, path: Path, how: str) -> None:
    """Refuse to read ``nbytes`` into memory when they do not fit, with the estimate and what to do instead."""
    import psutil

    avail = psutil.virtual_memory().available
    if nbytes > 0.8 * avail:
        gib = 2**30
        raise HAEInputError(f"Reading {str(path)!r} {how} needs about {nbytes / gib:.1f} GiB of memory; "
                            f"{avail / gib:.1f} GiB is available.",
                            "save the spectrum image as .npy (memory-mapped) or .hspy/.zspy (read lazily in "
                            "blocks), or crop/bin it first.")


TOTAL_INTENSITY_NOTE = ("No structural image given: using the total spectrum intensity per position instead. "
                        "Pass the HAADF image for meaningful patches.")


def _hs_load(path: Path):
    if not path.exists():
        raise HAEInputError(f"File {str(path)!r} does not exist.", "check the path and the file name.")
    if path.is_dir() and path.suffix.lower() != ".zspy":
        raise HAEInputError(f"{str(path)!r} is a folder, not a data file.",
                            "give the spectrum image file itself (e.g. map.hspy, map.emd, map.npy).")
    if not path.is_dir() and not os.access(path, os.R_OK):
        raise HAEInputError(f"{str(path)!r} cannot be read: permission denied.", "check the file's permissions.")
    if path.is_file() and path.stat().st_size == 0:   # HyperSpy said "multiple file readers" for an empty .h5
        raise HAEInputError(f"{str(path)!r} is empty (0 bytes): it holds no data.",
                            "copy or export the file again (a transfer or a save may have been interrupted).")
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        try:
            if suffix == ".npy":   # memory-mapped: read as needed, never all at once
                return np.load(path, mmap_mode="r", allow_pickle=False)
            obj = np.load(path, allow_pickle=False)
            _check_memory(sum(zi.file_size for zi in obj.zip.infolist()), path, "(.npz members are read whole)")
            return obj
        except HAEInputError:
            raise
        except Exception as exc:
            raise HAEInputError(f"{str(path)!r} could not be read as a numpy file ({exc}).",
                                "re-save it with numpy.save / numpy.savez.") from exc
    if suffix not in HYPERSPY_SUFFIXES:
        raise HAEInputError(f"Unknown file format {suffix!r} for {str(path)!r}.",
                            f"use one of {', '.join(HYPERSPY_SUFFIXES + NUMPY_SUFFIXES)}.")
    if suffix == ".zspy":
        try:
            import zarr
        except ImportError:
            zarr = None
        if zarr is None or not str(getattr(zarr, "__version__", "2")).startswith("2."):
            found = "is not installed" if zarr is None else f"is version {zarr.__version__}, and it needs zarr 2"
            raise HAEInputError(f"{str(path)!r} is a .zspy (zarr) file and the 'zarr' package {found}.",
                                "pip install \"napari-hae[zspy]\" (zarr 2, what RosettaSciIO's .zspy needs), or "
                                "save the data as .hspy.") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _read_signals(path)
        except Exception as exc:
            raise HAEInputError(f"HyperSpy could not read {str(path)!r} ({type(exc).__name__}: {exc}).",
                                "check that the file is complete (not truncated) and of a format HyperSpy reads.") \
                from exc


def _read_signals(path: Path):
    """The file's signals: ``hs.load`` without its imports of what napari-hae does not use, so that a file opened
    in napari (on its GUI thread, mid-run too) takes a frame or two, not seconds:

    - HyperSpy makes each signal as its signal type's class (exspy's for EELS/EDS) and imports that package (~2 s
      the first time). Here RosettaSciIO's reader (chosen as HyperSpy chooses it) gives the signals' dicts,
      HyperSpy makes them generic signals, and the signal type goes back into their metadata.
    - Files up to ``EAGER_BYTES / 8`` on disk are read into memory: a lazy read imports dask.array and, to compute,
      dask.distributed (~0.6 s the first time). Larger ones (and .zspy folders) are read lazily and stay on disk
      when their data exceed ``EAGER_BYTES`` (see :func:`load_spectrum_image`).
    """
    import importlib

    from hyperspy.io import _infer_file_reader, dict2signal

    reader = _infer_file_reader(path.suffix[1:])
    lazy = path.is_dir() or path.stat().st_size > EAGER_BYTES // 8
    signals = []
    for d in importlib.import_module(reader["api"]).file_reader(str(path), lazy=lazy):
        d.pop("package", None)   # the package whose class saved it (exspy), imported by dict2signal
        meta = d.setdefault("metadata", {}).setdefault("Signal", {})
        signal_type, meta["signal_type"] = meta.get("signal_type", ""), ""
        s = dict2signal(d, lazy=lazy)
        s.metadata.set_item("Signal.signal_type", signal_type)
        signals.append(s)
    return signals[0] if len(signals) == 1 else signals


def prepare_reading() -> None:
    """Import what :func:`read_data_file` needs (HyperSpy's generic signals, h5py and the .hspy reader: ~0.25 s the
    first time), for a caller that can spend that time now rather than when a file is opened (the dock, when it is
    made)."""
    import hyperspy.io  # noqa: F401
    import rsciio.hspy  # noqa: F401
    from hyperspy._signals import signal1d, signal2d  # noqa: F401


def _in_memory_or_lazy(a, path: Path):
    """A lazily read array: into memory if small (fast per-spectrum access), else kept lazy (dask, row blocks)."""
    if not hasattr(a, "compute"):
        return np.asarray(a)
    if a.nbytes <= EAGER_BYTES:
        _check_memory(a.nbytes, path, "")
        return _in_memory(a)
    return a


def _in_memory(a) -> np.ndarray:
    """A (lazily read) array in memory, read in this thread: dask's default scheduler would first import
    dask.distributed to look for a client (0.3 s, the first time)."""
    if hasattr(a, "compute"):
        from dask.local import get_sync

        a = a.compute(scheduler=get_sync)
    return np.asarray(a)


def _energy_axis(sig) -> EnergyAxis:
    ax = sig.axes_manager.signal_axes[0]
    units = str(ax.units) if ax.units not in (None, "<undefined>") else "channel"
    offset, scale = float(ax.offset), float(ax.scale)
    if units == "keV":
        offset, scale, units = offset * 1000.0, scale * 1000.0, "eV"
    if not getattr(ax, "is_uniform", True):
        raise HAEInputError("The energy axis is non-uniform.", "resample the spectra onto a linear energy axis.")
    if units == "channel" or (offset == 0.0 and scale == 1.0 and units in ("", "<undefined>")):
        return EnergyAxis.uncalibrated(ax.size)
    return EnergyAxis(size=ax.size, offset=offset, scale=scale, units=units)


def _split(objs):
    """From HyperSpy signals, pick the spectrum image (2 nav dims, 1-2 signal dims) and a 2-D structural image."""
    objs = objs if isinstance(objs, list) else [objs]
    spectrum, image = None, None
    for s in objs:
        nav, sig = s.axes_manager.navigation_dimension, s.axes_manager.signal_dimension
        if nav == 2 and sig in (1, 2) and spectrum is None:
            spectrum = s
        elif nav == 0 and sig == 2 and image is None:
            image = s
    return spectrum, image


@dataclass(frozen=True)
class StructuralImage:
    """A 2-D image file on its own (a HAADF acquired with a map), with its scan calibration."""

    data: np.ndarray
    pixel_size: float
    pixel_units: str
    name: str


def _calibration(axes) -> tuple[float, str]:
    ax = axes[0]
    units = str(ax.units) if str(ax.units) not in ("None", "<undefined>", "") else "px"
    return (float(ax.scale) if ax.scale > 0 else 1.0), units


def read_data_file(path) -> SpectrumImage | StructuralImage:
    """What a file holds, for a viewer: its spectrum image (with the structural image beside it, see
    :func:`pair_image`) or, for a file with only a 2-D image (a HAADF opened alone), that image."""
    path = Path(path)
    obj = _hs_load(path)
    if not isinstance(obj, (np.ndarray, np.lib.npyio.NpzFile)):
        spectrum, image = _split(obj)
        if spectrum is None and image is not None:
            size, units = _calibration(image.axes_manager.signal_axes)
            return StructuralImage(_in_memory(image.data).astype(np.float64), size, units, path.stem)
    return _spectrum_image(obj, path, pair_image(path), path.stem)


def pair_image(path) -> Path | None:
    """The structural image stored beside a spectrum image: the one file of the same format in its folder whose
    name says HAADF (or ADF/DF), e.g. SiO2_HAADF_Image.hspy beside SiO2_EDS_Spectrum_Image.hspy."""
    path = Path(path)
    words = ("haadf", "adf", "_df", "structural")
    cands = [p for p in sorted(path.parent.glob(f"*{path.suffix}"))
             if p != path and any(w in p.stem.lower() for w in words)]
    if len(cands) > 1:   # several: the one sharing the longest name prefix with the spectrum image
        def shared(p):
            return len(os.path.commonprefix([p.stem.lower(), path.stem.lower()]))
        best = max(map(shared, cands))
        cands = [p for p in cands if shared(p) == best]
    return cands[0] if len(cands) == 1 else None


def load_spectrum_image(spectrum_path, image_path=None, name: str | None = None) -> SpectrumImage:
    """Load a spectrum image (and optionally its structural image) into a :class:`SpectrumImage`.

    Files holding several signals (.emd, .bcf) may provide both. Without a structural image, the total spectrum
    intensity per position is used instead (with a warning): a poor stand-in for HAADF.
    """
    spectrum_path = Path(spectrum_path)
    return _spectrum_image(_hs_load(spectrum_path), spectrum_path, image_path, name or spectrum_path.stem)


def _spectrum_image(obj, spectrum_path: Path, image_path, name: str) -> SpectrumImage:
    """The :class:`SpectrumImage` in ``obj``, what :func:`_hs_load` read from ``spectrum_path``."""
    if isinstance(obj, (np.ndarray, np.lib.npyio.NpzFile)):
        return _from_numpy(obj, image_path, name)
    spectrum, image = _split(obj)
    if spectrum is None:
        shapes = [getattr(s, "data", np.zeros(0)).shape for s in (obj if isinstance(obj, list) else [obj])]
        raise HAEInputError(
            f"{str(spectrum_path)!r} holds no spectrum image (2 scan axes + spectrum axis); found shapes {shapes}.",
            "pass a spectrum image (e.g. an EELS/EDS map); a single image goes in as the structural image.",
        )
    if image_path is not None:
        if image is not None:
            warnings.warn(f"Using the structural image {str(image_path)!r} instead of the one inside "
                          f"{spectrum_path.name!r}.", UserWarning, stacklevel=3)
        img_obj = _hs_load(Path(image_path))
        if isinstance(img_obj, np.ndarray):
            structural = img_obj
        else:
            _, image = _split(img_obj)
            if image is None:
                raise HAEInputError(f"{str(image_path)!r} holds no 2-D structural image.",
                                    "pass a single HAADF/ADF image file.")
            structural = _in_memory(image.data)
    elif image is not None:
        structural = _in_memory(image.data)
    else:
        warnings.warn(TOTAL_INTENSITY_NOTE, UserWarning, stacklevel=3)
        structural = None
    data = _in_memory_or_lazy(spectrum.data, spectrum_path)
    if structural is None:
        structural = np.zeros(data.shape[:2])
        for i0, i1, block in row_blocks(data):
            structural[i0:i1] = block.sum(axis=tuple(range(2, block.ndim)), dtype=np.float64)
    structural = np.asarray(structural, dtype=np.float64)
    nav = spectrum.axes_manager.navigation_axes  # x first in HyperSpy
    pixel_size = float(nav[0].scale) if nav[0].scale > 0 else 1.0
    pixel_units = str(nav[0].units) if str(nav[0].units) not in ("None", "<undefined>", "") else "px"
    energy = _energy_axis(spectrum) if spectrum.axes_manager.signal_dimension == 1 else None
    if structural.shape != data.shape[:2]:
        raise HAEInputError(
            f"The structural image {structural.shape} and the spectrum image scan grid {data.shape[:2]} have "
            f"different shapes.",
            f"use the HAADF acquired with the spectrum image, or bin/resample it to {data.shape[:2]}.",
        )
    return SpectrumImage(structural=structural, spectra=data, energy=energy, pixel_size=pixel_size,
                         pixel_units=pixel_units, name=name,
                         signal_type=str(spectrum.metadata.get_item("Signal.signal_type", "") or ""),
                         notes=[] if image is not None or image_path is not None else [TOTAL_INTENSITY_NOTE])


def _from_numpy(obj, image_path, name) -> SpectrumImage:
    if isinstance(obj, np.ndarray):
        spectra = obj
        if image_path is None:
            raise HAEInputError("A .npy spectrum image needs its structural image.",
                                "pass --image IMAGE.npy, or save both in one .npz with keys 'spectra' and "
                                "'structural'.")
        structural = _hs_load(Path(image_path))
        if isinstance(structural, np.ndarray):
            structural = np.asarray(structural)
        else:
            raise HAEInputError(f"{str(image_path)!r} is not a single .npy array.",
                                "save the structural image with numpy.save(path, image).")
        energy = None
    else:
        keys = set(obj.files)
        if "spectra" not in keys or "structural" not in keys:
            raise HAEInputError(f"The .npz file has keys {sorted(keys)}, not 'spectra' and 'structural'.",
                                "save with np.savez(path, spectra=A, structural=S, energy_offset=..., "
                                "energy_scale=...).")
        spectra, structural = obj["spectra"], obj["structural"]
        if image_path is not None:   # the image given explicitly wins over the one in the file, and it is said
            img = _hs_load(Path(image_path))
            if not isinstance(img, np.ndarray):
                raise HAEInputError(f"{str(image_path)!r} is not a single .npy array.",
                                    "save the structural image with numpy.save(path, image), or drop --image to "
                                    "use the 'structural' array inside the .npz.")
            warnings.warn(f"Using the structural image {str(image_path)!r} instead of the 'structural' array inside "
                          f"the .npz.", UserWarning, stacklevel=4)
            structural = img
        energy = None
        if "energy_offset" in keys and "energy_scale" in keys and np.ndim(spectra) == 3:
            energy = EnergyAxis(size=spectra.shape[-1], offset=float(obj["energy_offset"]),
                                scale=float(obj["energy_scale"]), units="eV")
    return SpectrumImage(structural=structural, spectra=spectra, energy=energy, name=name)


def save_spectrum_image_hspy(data: SpectrumImage, spectrum_path, image_path=None) -> None:
    """Write a :class:`SpectrumImage` as HyperSpy .hspy file(s) (spectra with calibrated axes; HAADF separately)."""
    import hyperspy.api as hs

    s = hs.signals.Signal1D(np.asarray(data.spectra))
    for ax, units in zip(s.axes_manager.navigation_axes, (data.pixel_units, data.pixel_units)):
        ax.scale, ax.units = data.pixel_size, units
    if data.energy is not None:
        e = s.axes_manager.signal_axes[0]
        e.offset, e.scale, e.units, e.name = data.energy.offset, data.energy.scale, data.energy.units, "Energy loss"
    s.metadata.General.title = data.name
    s.save(str(spectrum_path), overwrite=True)
    if image_path is not None:
        im = hs.signals.Signal2D(np.asarray(data.structural))
        for ax in im.axes_manager.signal_axes:
            ax.scale, ax.units = data.pixel_size, data.pixel_units
        im.save(str(image_path), overwrite=True)


def load_source(source: dict) -> SpectrumImage:
    """The dataset a run records as its source: ``{"sample": name}`` (bundled sample) or
    ``{"spectrum": path, "image": path or None}`` (files)."""
    if source.get("sample"):
        from .samples import load_sample

        return load_sample(source["sample"])
    if source.get("spectrum"):
        return load_spectrum_image(source["spectrum"], source.get("image"))
    raise HAEInputError("The run does not record where its data came from (it was not started by 'napari-hae run' "
                        "or a sweep).", "give the data again with --sample or --spectrum/--image.")
