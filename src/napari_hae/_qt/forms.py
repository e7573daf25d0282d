"""Form widgets made from the registries' parameter specs: a registered plug-in's parameters appear in the dock
without editing it."""

from __future__ import annotations

import json
import math

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox

from ..core.registry import ParamSpec


def commit_on_enter(w):
    """A number field that reports its value when typed in full (Enter, or leaving the field), not per keystroke:
    typing "14" must not apply a patch size of 1 and then 14 (each a retrain of a running model)."""
    native = getattr(w, "native", None)
    if native is not None and hasattr(native, "setKeyboardTracking"):
        native.setKeyboardTracking(False)
    return w


def param_widget(spec: ParamSpec):
    """One widget for ``spec``: a spin box for numbers (its range and unit in the label), else a text field."""
    label = f"{spec.name} ({spec.unit})" if spec.unit else spec.name
    tip = spec.help or spec.describe()
    if spec.choices:
        w = ComboBox(name=spec.name, label=label, choices=list(spec.choices), value=spec.default)
    elif spec.kind is bool:
        w = CheckBox(name=spec.name, text=label, value=bool(spec.default))
    elif spec.kind in (int, float):
        lo = -1e9 if spec.low is None else spec.low
        hi = 1e9 if spec.high is None else spec.high
        if spec.kind is int:
            w = SpinBox(name=spec.name, label=label, value=spec.default, min=int(lo), max=int(min(hi, 2**31 - 1)))
        else:
            w = FloatSpinBox(name=spec.name, label=label, value=spec.default, min=lo, max=hi,
                             step=_step(spec.default))
    elif isinstance(spec.default, str) or spec.secret:
        w = LineEdit(name=spec.name, label=label, value=spec.default or "")
        if spec.secret:
            w.native.setEchoMode(w.native.EchoMode.Password)
    else:   # lists and other structured values, edited as JSON
        w = LineEdit(name=spec.name, label=label, value="" if spec.default is None else json.dumps(spec.default))
        w.native.setProperty("hae_json", True)
    w.tooltip = tip
    return commit_on_enter(w)


def _step(default) -> float:
    """A tenth of the default's decade: 0.001 for 0.01, 0.1 for 4."""
    d = abs(float(default or 0.0))
    return 10.0 ** (math.floor(math.log10(d)) - 1) if d > 0 else 0.01


def read_value(w):
    if isinstance(w, LineEdit) and w.native.property("hae_json"):
        try:
            return json.loads(w.value)
        except json.JSONDecodeError:
            return w.value
    return w.value


class ParamForm(Container):
    """The parameters of one registered entry; :meth:`show` rebuilds the form for another entry."""

    def __init__(self, **kw):
        super().__init__(labels=True, **kw)
        self.margins = (0, 0, 0, 0)

    def show(self, specs) -> None:
        self.clear()
        for spec in specs:
            self.append(param_widget(spec))

    def values(self) -> dict:
        return {w.name: read_value(w) for w in self}

    def first(self):
        return self[0] if len(self) else None
