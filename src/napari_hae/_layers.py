"""Translating between the core's SpectrumImage and napari layer data tuples."""

from __future__ import annotations

from ._constants import DATASET_KEY
from .core.data.dataset import SpectrumImage

# lengths napari-hae puts in nm, so datasets in um and nm open side by side on one canvas (napari does not convert
# units between layers: a 0.0086 um-pixel map beside a 0.92 nm-pixel one was a black canvas)
NM_PER = {"nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "A": 0.1, "Å": 0.1, "angstrom": 0.1,
          "pm": 1e-3, "mm": 1e6, "m": 1e9}


def layer_scale(pixel_size: float, pixel_units: str) -> tuple[tuple[float, float], str]:
    """(scale, units) of a scan's layers: nm where the pixel unit is a length, else pixels."""
    if pixel_units in ("px", "", None):
        return (1.0, 1.0), "pixel"
    per = NM_PER.get(str(pixel_units).strip())
    if per is None:   # not a length napari (pint) is sure to know: pixels, rather than a layer that fails to open
        return (1.0, 1.0), "pixel"
    return (pixel_size * per, pixel_size * per), "nm"


def dataset_layer_data(data: SpectrumImage) -> list[tuple]:
    """Layer data for a dataset: the structural image, carrying the dataset in its metadata for the docks."""
    scale, units = layer_scale(data.pixel_size, data.pixel_units)
    meta = {DATASET_KEY: data, "energy": None if data.energy is None else data.energy.to_dict()}
    return [(data.structural, {"name": f"{data.name} (structural)", "metadata": meta, "colormap": "gray",
                               "scale": scale, "units": units}, "image")]


def dataset_of(layer) -> SpectrumImage | None:
    """The SpectrumImage behind an image layer opened by napari-hae, or None."""
    return getattr(layer, "metadata", {}).get(DATASET_KEY) if layer is not None else None
