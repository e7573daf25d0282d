"""Target panel: the scalarizer (from the registry), its band(s) and the power-law background window in the unit
the user thinks in (keV for EDS, eV for EELS; the core gets eV), further parameters made from the scalarizer's
specs, and the multi-objective switch.

Numbers take effect when typed in full (Enter or leaving the field), not per keystroke; a band outside the axis
is said at once (:meth:`TargetPanel.problem`), not clamped into it."""

from __future__ import annotations

import math

from magicgui.widgets import CheckBox, ComboBox, Container, PushButton

from ..core.errors import HAEInputError
from ..core.targets.scalarizers import ENERGY_PARAMS, SCALARIZERS, Scalarizer, check_band
from ..core.targets.suggest import TargetSuggestion
from .forms import FloatField, ParamForm, commit_on_enter

_BAND_LABELS = ("band start", "band end", "band 2 start", "band 2 end", "background from", "background to")


def _spin(label: str, visible: bool = True) -> FloatField:
    return commit_on_enter(FloatField(label=label, min=-1e7, max=1e7, step=0.05, visible=visible))


def _spectral_scalarizers() -> list[str]:
    return [e.name for e in SCALARIZERS.entries() if e.extra.get("signal_ndim", 1) == 1]


class TargetPanel(Container):
    def __init__(self):
        self.scalarizer_name = ComboBox(label="scalarizer", choices=_spectral_scalarizers(), value="band_integral")
        self.band_a, self.band_b = _spin("band start (eV)"), _spin("band end (eV)")
        self.band_a2, self.band_b2 = _spin("band 2 start (eV)", False), _spin("band 2 end (eV)", False)
        self.background = CheckBox(text="subtract power-law background (core-loss EELS)", value=False)
        self.bg_c, self.bg_d = _spin("background from (eV)", False), _spin("background to (eV)", False)
        self.extra = ParamForm()   # the scalarizer's parameters other than band limits
        self.multi_objective = CheckBox(text="also maximise band 2 (multi-objective, Pareto set)", value=False)
        self.apply_scalarizer = PushButton(text="Apply scalarizer")
        self.units, self.per_unit = "eV", 1.0    # what the fields show; the core works in eV
        super().__init__(widgets=[self.scalarizer_name, self.band_a, self.band_b, self.background, self.bg_c,
                                  self.bg_d, self.multi_objective, self.band_a2, self.band_b2, self.extra,
                                  self.apply_scalarizer], label="Scalarizer")
        self.scalarizer_name.changed.connect(self._on_name)
        self.multi_objective.changed.connect(self._on_name)
        self.background.changed.connect(self._on_name)
        self._on_name()

    @property
    def bands(self):
        """The energy fields: band, band 2, background window (in :attr:`units`)."""
        return (self.band_a, self.band_b, self.band_a2, self.band_b2, self.bg_c, self.bg_d)

    def set_target(self, energy, units: str, per_unit: float, suggestion: TargetSuggestion) -> None:
        """Units, steps and the starting target for a dataset's energy axis (the suggestion is in eV)."""
        if energy is None:
            return
        self.units, self.per_unit = units, float(per_unit)
        step = max(abs(energy.scale) / self.per_unit, 1e-6)
        decimals = max(2, min(6, int(round(-math.log10(step))) + 2))
        windows = (*suggestion.band, *suggestion.band2, *(suggestion.background or (0.0, 0.0)))
        for w, label, value in zip(self.bands, _BAND_LABELS, windows):
            w.label = f"{label} ({units})"
            w.native.setDecimals(decimals)
            w.step = step
            w.value = round(value / self.per_unit, decimals)
        if suggestion.background:
            self.background.value = True
        else:
            self.background.value = False
            lo = energy.limits[0]   # a window below the band, for a user who ticks the box
            a = suggestion.band[0]
            self.bg_c.value = round(max(lo, a - 10 * abs(energy.scale)) / self.per_unit, decimals)
            self.bg_d.value = round(max(lo, a - 2 * abs(energy.scale)) / self.per_unit, decimals)

    def set_band(self, a_ev: float, b_ev: float) -> None:
        """Band 1 from eV (dragged on the spectrum plot)."""
        self.band_a.value, self.band_b.value = a_ev / self.per_unit, b_ev / self.per_unit

    def _takes(self) -> list[str]:
        return SCALARIZERS.get(self.scalarizer_name.value).param_names()

    def _on_name(self, *_):
        entry = SCALARIZERS.get(self.scalarizer_name.value)
        takes = entry.param_names()
        self.band_a.visible = self.band_b.visible = "a" in takes
        two = "a2" in takes or (self.multi_objective.value and "a" in takes)
        self.band_a2.visible = self.band_b2.visible = two
        self.bg_c.visible = self.bg_d.visible = bool(self.background.value)
        self.extra.show([p for p in entry.params if p.name not in ENERGY_PARAMS])

    def _ev(self, w) -> float:
        return float(w.value) * self.per_unit

    def window(self) -> tuple[float, float] | None:
        """The background fit window (eV), or None when no background is subtracted."""
        return (self._ev(self.bg_c), self._ev(self.bg_d)) if self.background.value else None

    def scalarizer(self) -> Scalarizer:
        takes = self._takes()
        params = {k: self._ev(w) for k, w in zip(ENERGY_PARAMS, self.bands) if k in takes}
        params.update(self.extra.values())
        return Scalarizer(self.scalarizer_name.value, params, self.window())

    def objectives(self) -> list | None:
        """Further objectives of the multi-objective mode: the same scalarizer on band 2."""
        if not self.multi_objective.value or "a2" in self._takes():
            return None
        return [Scalarizer(self.scalarizer_name.value, {"a": self._ev(self.band_a2), "b": self._ev(self.band_b2)},
                           self.window()).to_dict()]

    def problem_for(self, data) -> str | None:
        """:meth:`problem` for a dataset (None when no dataset is selected: nothing to check against)."""
        return None if data is None else self.problem(data.energies, data.signal_shape)

    def problem(self, energies, signal_shape) -> str | None:
        """Why the fields do not make a scalarizer for this data (the error with its Fix, energies in the fields'
        unit), or None."""
        fields = [("band", self.band_a, self.band_b), ("band 2", self.band_a2, self.band_b2),
                  ("background fit window", self.bg_c, self.bg_d)]
        shown = [("a" in self._takes()), "a2" in self._takes() or self.multi_objective.value, self.background.value]
        try:
            for (what, a, b), on in zip(fields, shown):
                if on and energies is not None:
                    check_band(energies, self._ev(a), self._ev(b), what, self.units, self.per_unit)
            self.scalarizer().validate(energies, signal_shape)
            for o in self.objectives() or ():
                Scalarizer.from_dict(o).validate(energies, signal_shape)
        except HAEInputError as exc:
            return str(exc)
        return None

    @staticmethod
    def bands_of(sc: Scalarizer) -> list[tuple[float, float]]:
        """The bands of ``sc`` to shade on the spectrum plot (eV)."""
        p = sc.params
        return [(p[a], p[b]) for a, b in (("a", "b"), ("a2", "b2")) if a in p and b in p]

    def current_bands(self) -> list[tuple[float, float]]:
        try:
            return self.bands_of(self.scalarizer())
        except HAEInputError:
            return []
