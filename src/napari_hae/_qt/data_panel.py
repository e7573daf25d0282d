"""Data panel: which dataset layer, which structural image the model sees (the file's, or any open 2-D image on
the same scan grid: a HAADF opened on its own), and the patch size (pixels)."""

from __future__ import annotations

import dataclasses

import numpy as np
from magicgui.widgets import ComboBox, Container

from .._layers import dataset_of
from ..core.data.io import TOTAL_INTENSITY_NOTE
from ..core.errors import HAEInputError
from ..core.run.settings import ExperimentSettings
from .forms import IntField, commit_on_enter

FROM_FILE = "from the dataset file"


class DataPanel(Container):
    def __init__(self, viewer):
        self.viewer = viewer
        self.layer_combo = ComboBox(label="dataset", choices=self._dataset_layers)
        self.structural_combo = ComboBox(label="structural image", choices=self._image_layers,
                                         tooltip="the image the model learns from (HAADF): the dataset file's, or "
                                                 "an open image layer acquired on the same scan grid")
        self.patch_size = commit_on_enter(IntField(label="patch size (px)", value=ExperimentSettings().patch_size,
                                                  min=3, max=256))
        for combo in (self.layer_combo, self.structural_combo):   # file names are long: elide, not widen the dock
            combo.native.setSizeAdjustPolicy(combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(16)
        super().__init__(widgets=[self.layer_combo, self.structural_combo, self.patch_size], label="Data")
        self._chosen: tuple | None = None     # (dataset, layer, SpectrumImage with that layer's image)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)

    def _dataset_layers(self, *_):
        return [layer for layer in self.viewer.layers if dataset_of(layer) is not None]

    def _image_layers(self, *_):
        images = [layer.name for layer in self.viewer.layers
                  if getattr(layer, "ndim", 0) == 2 and not getattr(layer, "rgb", False)
                  and dataset_of(layer) is None and not layer.name.startswith("hAE ")
                  and layer.__class__.__name__ == "Image"]
        return [FROM_FILE, *images]

    def _refresh(self, *_):
        self.layer_combo.reset_choices()
        self.structural_combo.reset_choices()

    @property
    def dataset(self):
        """The selected dataset, with the chosen structural image in place of the file's."""
        base = dataset_of(self.layer_combo.value)
        name = self.structural_combo.value
        if base is None or name in (None, FROM_FILE) or name not in self.viewer.layers:
            return base
        layer = self.viewer.layers[name]
        if np.shape(layer.data) != tuple(base.scan_shape):
            return base   # not on this grid: the dock resets the choice and says so (HAEWidget._on_structural)
        if self._chosen is None or self._chosen[0] is not base or self._chosen[1] is not layer:
            self._chosen = (base, layer, self.with_structural(base, layer))
        return self._chosen[2]

    @staticmethod
    def with_structural(base, layer):
        """``base`` with ``layer``'s image as its structural image (refused unless on the same scan grid)."""
        image = np.asarray(layer.data, dtype=np.float64)
        if image.shape != tuple(base.scan_shape):
            raise HAEInputError(f"The image {layer.name!r} is {image.shape[0]} x {image.shape[1]} pixels, the "
                                f"dataset's scan grid {base.scan_shape[0]} x {base.scan_shape[1]}: it was not "
                                f"acquired with this map.",
                                "choose the HAADF acquired with the spectrum image (same scan grid), or keep "
                                f"'{FROM_FILE}'.")
        notes = [n for n in base.notes if n != TOTAL_INTENSITY_NOTE]
        return dataclasses.replace(base, structural=image, notes=[*notes, f"structural image: layer {layer.name!r}"])

    def fit_to(self, data) -> None:
        self.patch_size.max = min(data.scan_shape)
        self.patch_size.value = min(self.patch_size.value, min(data.scan_shape))
