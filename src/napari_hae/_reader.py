"""npe2 reader: spectrum images (with the structural image beside them) and structural images opened alone,
through HyperSpy / RosettaSciIO.

napari replaces a reader's error with its own generic "gave an error" line, so the reader's message (what is
wrong with the file, and the Fix) is shown as a notification first and then raised for napari.
"""

from __future__ import annotations

from pathlib import Path

from ._layers import dataset_layer_data, layer_scale
from .core.data.io import HYPERSPY_SUFFIXES
from .core.errors import HAEInputError

# the manifest's patterns: a .zspy is a folder, which napari offers no file reader for (the CLI reads it)
_SUFFIXES = tuple(s for s in HYPERSPY_SUFFIXES if s not in (".h5", ".hdf5", ".msa", ".rpl", ".zspy")) + (".npz",)
STRUCTURAL_KEY = "napari_hae_structural"   # metadata flag of an image layer opened alone (a HAADF)


def get_reader(path):
    """Return a reader for a single file napari-hae understands, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES or (suffix == ".npz" and not _is_spectrum_npz(path)):
        return None
    return read_spectrum_image


NPZ_KEYS = {"spectra", "structural"}


def _is_spectrum_npz(path) -> bool:
    """Whether an .npz holds a spectrum image (keys 'spectra' and 'structural'): any other .npz is left to the
    other readers, so napari does not ask which reader to use. Only the archive's index is read."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = {Path(n).stem for n in z.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False
    return NPZ_KEYS <= names


def read_spectrum_image(path):
    from napari.utils.notifications import show_error

    from .core.data.io import StructuralImage, read_data_file

    if isinstance(path, list):
        path = path[0]
    try:
        obj = read_data_file(Path(path))
    except HAEInputError as exc:
        show_error(f"napari-hae could not open {Path(path).name}: {exc}")
        raise
    if isinstance(obj, StructuralImage):
        scale, units = layer_scale(obj.pixel_size, obj.pixel_units)
        return [(obj.data, {"name": obj.name, "colormap": "gray", "scale": scale, "units": units,
                            "metadata": {STRUCTURAL_KEY: True}}, "image")]
    return dataset_layer_data(obj)
