"""Translating between the core's SpectrumImage and napari layer data tuples."""

from __future__ import annotations

from ._constants import DATASET_KEY
from .core.data.dataset import SpectrumImage


def dataset_layer_data(data: SpectrumImage) -> list[tuple]:
    """Layer data for a dataset: the structural image, carrying the dataset in its metadata for the docks."""
    scale = (data.pixel_size, data.pixel_size) if data.pixel_units not in ("px", "") else (1.0, 1.0)
    meta = {DATASET_KEY: data, "energy": None if data.energy is None else data.energy.to_dict()}
    return [(data.structural, {"name": f"{data.name} (structural)", "metadata": meta, "colormap": "gray",
                               "scale": scale, "units": data.pixel_units if scale != (1.0, 1.0) else "pixel"},
             "image")]


def dataset_of(layer) -> SpectrumImage | None:
    """The SpectrumImage behind an image layer opened by napari-hae, or None."""
    return getattr(layer, "metadata", {}).get(DATASET_KEY) if layer is not None else None
