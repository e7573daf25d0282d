"""Target panel: the scalarizer (from the registry), its band(s) in the data's energy units, further parameters
made from the scalarizer's specs, and the multi-objective switch."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton

from ..core.errors import HAEInputError
from ..core.targets.scalarizers import ENERGY_PARAMS, SCALARIZERS, Scalarizer, default_bands
from .forms import ParamForm


def _spectral_scalarizers() -> list[str]:
    return [e.name for e in SCALARIZERS.entries() if e.extra.get("signal_ndim", 1) == 1]


class TargetPanel(Container):
    def __init__(self):
        self.scalarizer_name = ComboBox(label="scalarizer", choices=_spectral_scalarizers(), value="band_integral")
        self.band_a = FloatSpinBox(label="band start (eV)", min=-1e6, max=1e6, step=0.05)
        self.band_b = FloatSpinBox(label="band end (eV)", min=-1e6, max=1e6, step=0.05)
        self.band_a2 = FloatSpinBox(label="band 2 start (eV)", min=-1e6, max=1e6, step=0.05, visible=False)
        self.band_b2 = FloatSpinBox(label="band 2 end (eV)", min=-1e6, max=1e6, step=0.05, visible=False)
        self.extra = ParamForm()   # the scalarizer's parameters other than band limits
        self.multi_objective = CheckBox(text="also maximise band 2 (multi-objective, Pareto set)", value=False)
        self.apply_scalarizer = PushButton(text="Apply scalarizer")
        super().__init__(widgets=[self.scalarizer_name, self.band_a, self.band_b, self.multi_objective, self.band_a2,
                                  self.band_b2, self.extra, self.apply_scalarizer], label="Scalarizer")
        self.scalarizer_name.changed.connect(self._on_name)
        self.multi_objective.changed.connect(self._on_name)
        self._on_name()

    @property
    def bands(self):
        return (self.band_a, self.band_b, self.band_a2, self.band_b2)

    def set_axis(self, dataset_name: str, energy) -> None:
        """Band ranges, steps and starting bands for a dataset's energy axis."""
        if energy is None:
            return
        lo, hi = energy.limits
        for w in self.bands:
            w.min, w.max, w.step = lo, hi, max(abs(energy.scale), 1e-6)
        (a, b), (a2, b2) = default_bands(dataset_name, energy)
        self.band_a.value, self.band_b.value, self.band_a2.value, self.band_b2.value = a, b, a2, b2

    def _takes(self) -> list[str]:
        return SCALARIZERS.get(self.scalarizer_name.value).param_names()

    def _on_name(self, *_):
        entry = SCALARIZERS.get(self.scalarizer_name.value)
        takes = entry.param_names()
        self.band_a.visible = self.band_b.visible = "a" in takes
        two = "a2" in takes or (self.multi_objective.value and "a" in takes)
        self.band_a2.visible = self.band_b2.visible = two
        self.extra.show([p for p in entry.params if p.name not in ENERGY_PARAMS])

    def scalarizer(self) -> Scalarizer:
        takes = self._takes()
        params = {k: w.value for k, w in zip(ENERGY_PARAMS, self.bands) if k in takes}
        params.update(self.extra.values())
        return Scalarizer(self.scalarizer_name.value, params)

    def objectives(self) -> list | None:
        """Further objectives of the multi-objective mode: the same scalarizer on band 2."""
        if not self.multi_objective.value or "a2" in self._takes():
            return None
        return [Scalarizer(self.scalarizer_name.value, {"a": self.band_a2.value, "b": self.band_b2.value}).to_dict()]

    @staticmethod
    def bands_of(sc: Scalarizer) -> list[tuple[float, float]]:
        """The bands of ``sc`` to shade on the spectrum plot."""
        p = sc.params
        return [(p[a], p[b]) for a, b in (("a", "b"), ("a2", "b2")) if a in p and b in p]

    def current_bands(self) -> list[tuple[float, float]]:
        try:
            return self.bands_of(self.scalarizer())
        except HAEInputError:
            return []
