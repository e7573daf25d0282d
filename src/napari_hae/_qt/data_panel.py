"""Data panel: which dataset layer, and the patch size (pixels) the model sees."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, SpinBox

from .._layers import dataset_of
from ..core.run.settings import ExperimentSettings
from .forms import commit_on_enter


class DataPanel(Container):
    def __init__(self, viewer):
        self.viewer = viewer
        self.layer_combo = ComboBox(label="dataset", choices=self._dataset_layers)
        self.patch_size = commit_on_enter(SpinBox(label="patch size (px)", value=ExperimentSettings().patch_size,
                                                  min=3, max=256))
        super().__init__(widgets=[self.layer_combo, self.patch_size], label="Data")
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)

    def _dataset_layers(self, *_):
        return [layer for layer in self.viewer.layers if dataset_of(layer) is not None]

    def _refresh(self, *_):
        self.layer_combo.reset_choices()

    @property
    def dataset(self):
        return dataset_of(self.layer_combo.value)

    def fit_to(self, data) -> None:
        self.patch_size.max = min(data.scan_shape)
        self.patch_size.value = min(self.patch_size.value, min(data.scan_shape))
