"""Form widgets made from the registries' parameter specs: a registered plug-in's parameters appear in the dock
without editing it."""

from __future__ import annotations

import json
import math
import re

from magicgui.backends._qtpy import widgets as _backend
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox
from magicgui.widgets.bases import RangedWidget
from qtpy.QtGui import QValidator
from qtpy.QtWidgets import QDoubleSpinBox
from superqt import QLargeIntSpinBox

from ..core.registry import ParamSpec

_NUMBER_SO_FAR = re.compile(r"[+-]?(\d+\.?\d*|\.\d*)?([eE][+-]?\d*)?")


def _number_state(text: str, low: float, high: float, whole: bool) -> QValidator.State:
    """Acceptable: a number in [low, high] (exponent notation too: 1e6, 2.5e-3); Intermediate: one being typed
    (1e, -, 1.5 in a whole-number field, out of range); Invalid: anything else (the key is refused)."""
    t = text.strip()
    if not _NUMBER_SO_FAR.fullmatch(t):
        return QValidator.State.Invalid
    try:
        v = float(t)
    except ValueError:
        return QValidator.State.Intermediate
    if (whole and not v.is_integer()) or not low <= v <= high:
        return QValidator.State.Intermediate
    return QValidator.State.Acceptable


class _ExponentDoubleSpinBox(QDoubleSpinBox):
    """Qt's spin box refused the "e" key: "1e6" typed as xi became 16. This one reads exponent notation, keeps
    what was typed to 12 decimals (1e-5 is not rounded to 0.00) and shows the shortest exact form."""

    def validate(self, text, pos):
        return _number_state(text, self.minimum(), self.maximum(), False), text, pos

    def fixup(self, text: str) -> str:
        """A number out of range becomes the nearest bound (shown); anything else the value the field had."""
        try:
            v = float(text)
        except ValueError:
            return self.textFromValue(self.value())
        return self.textFromValue(min(max(v, self.minimum()), self.maximum()))

    def valueFromText(self, text: str) -> float:
        return float(text)

    def textFromValue(self, value: float) -> str:
        return format(value, ".10g")


class _ExponentIntSpinBox(QLargeIntSpinBox):
    """superqt's whole-number box, reading exponent notation ("1e9" typed as a budget became 19). A number that is
    not whole is refused: the field shows its value again. Out of range: clamped to the nearest bound, shown."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.lineEdit().setValidator(_IntValidator(self))

    # When napari closes, Python may collect this box's wrapper (its attributes cleared) while Qt still sends the
    # focused box its focus-out and close events: superqt's handlers then raised AttributeError ('_pending_emit')
    # into Qt's event loop. With no attributes left there is nothing to commit.
    def focusOutEvent(self, e) -> None:
        if "_pending_emit" in self.__dict__:
            super().focusOutEvent(e)

    def closeEvent(self, e) -> None:
        if "_pending_emit" in self.__dict__:
            super().closeEvent(e)

    def _interpret(self, policy):
        text = self.lineEdit().displayText() or str(self._value)
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not v.is_integer():   # also NaN: the field shows its value again
            self.lineEdit().setText(str(self._value))
            return
        self._setValue(int(v), policy)


class _IntValidator(QValidator):
    def validate(self, text, pos):
        box = self.parent()
        return _number_state(text, box.minimum(), box.maximum(), True), text, pos


class _FloatBackend(_backend.FloatSpinBox):
    def __init__(self, **kwargs):
        _backend.QBaseRangedWidget.__init__(self, _ExponentDoubleSpinBox, **kwargs)
        self._qwidget.setDecimals(12)

    def _mgui_set_step(self, value: float) -> None:   # the decimals stay 12 (magicgui sets them from the step)
        self._qwidget.setSingleStep(value)


class _IntBackend(_backend.SpinBox):
    def __init__(self, **kwargs):
        _backend.QBaseRangedWidget.__init__(self, _ExponentIntSpinBox, **kwargs)


class FloatField(FloatSpinBox):
    """magicgui's FloatSpinBox that reads exponent notation (see :class:`_ExponentDoubleSpinBox`)."""

    def __init__(self, **kwargs):
        RangedWidget.__init__(self, widget_type=_FloatBackend, **kwargs)


class IntField(SpinBox):
    """magicgui's SpinBox that reads exponent notation (see :class:`_ExponentIntSpinBox`)."""

    def __init__(self, **kwargs):
        RangedWidget.__init__(self, widget_type=_IntBackend, **kwargs)


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
            w = IntField(name=spec.name, label=label, value=spec.default, min=int(lo), max=int(min(hi, 2**31 - 1)))
        else:
            w = FloatField(name=spec.name, label=label, value=spec.default, min=lo, max=hi,
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
