"""npe2 reader: spectrum images (+ structural images) through HyperSpy / RosettaSciIO."""

from __future__ import annotations

from pathlib import Path

from ._layers import dataset_layer_data
from .core.data.io import HYPERSPY_SUFFIXES

_SUFFIXES = tuple(s for s in HYPERSPY_SUFFIXES if s not in (".h5", ".hdf5", ".msa", ".rpl")) + (".npz",)


def _pair_image(path: Path) -> Path | None:
    """A structural image stored beside the spectrum image: NAME_haadf.hspy for NAME_eels.hspy / NAME.hspy."""
    stem = path.stem
    for cand in (stem.replace("_eels", "_haadf"), stem.replace("_eds", "_haadf"), stem + "_haadf",
                 stem.replace("EELS_mapping_tutorial", "HAADF")):
        p = path.with_name(cand + path.suffix)
        if cand != stem and p.exists():
            return p
    return None


def get_reader(path):
    """Return a reader for a single spectrum-image file napari-hae understands, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.suffix.lower() not in _SUFFIXES or "_haadf" in p.stem.lower():
        return None
    return read_spectrum_image


def read_spectrum_image(path):
    from .core.data.io import load_spectrum_image

    if isinstance(path, list):
        path = path[0]
    p = Path(path)
    return dataset_layer_data(load_spectrum_image(p, _pair_image(p)))
