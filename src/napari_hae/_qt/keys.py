"""The run's keys (F5 Start, F6 Pause/Resume, F7 Step once, F8 Stop) as napari actions: listed under "Viewer key
bindings" in napari's Preferences > Shortcuts, rebindable there (napari keeps the user's choice in its settings),
active while the canvas has the focus, and (through the dock's own key handler) while a field of the dock has it.

napari does not read the ``keybindings`` of a plug-in's manifest (0.9: ``keybindings=[]``), so the actions are
registered with napari's action manager when the first dock opens; each action drives the dock of the viewer
whose canvas the key was pressed on.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

from napari.components import ViewerModel
from napari.utils.action_manager import action_manager
from napari.viewer import Viewer
from qtpy.QtGui import QKeySequence

# action -> (what it does, the key it has until the user binds another)
RUN_KEYS = {"start": ("Start an hAE run", "F5"),
            "pause_or_resume": ("Pause the hAE run after its step, or resume it", "F6"),
            "step_once": ("One hAE step while the run is paused", "F7"),
            "stop": ("Stop the hAE run after its step", "F8")}
_sessions: weakref.WeakValueDictionary[int, object] = weakref.WeakValueDictionary()   # id(viewer) -> RunSession


def action_name(name: str) -> str:
    return f"napari-hae:{name}"


def install(viewer, session, show: Callable[[Callable[[str], str]], None]) -> Callable[[], None]:
    """Let the run keys drive ``session`` (the dock's run) when pressed on ``viewer``'s canvas; ``show(key_text)``
    now and whenever a key is rebound. Returns what stops the latter (the dock closing)."""
    from napari.settings import get_settings

    _sessions[id(viewer)] = session
    chosen = get_settings().shortcuts.shortcuts   # what the user bound in Preferences (napari binds those)
    for name, (description, key) in RUN_KEYS.items():
        full = action_name(name)
        if full not in action_manager._actions:
            action_manager.register_action(full, _command(name), description, ViewerModel)
            if full not in chosen:
                with warnings.catch_warnings():   # napari's tooltip formatter knows no F keys (it binds them)
                    warnings.filterwarnings("ignore", message=r"`F\d+` does not seem to be a valid shortcut")
                    action_manager.bind_shortcut(full, key)

    def rebound(*_):
        show(key_text)

    rebound()
    action_manager.events.shortcut_changed.connect(rebound)
    return lambda: action_manager.events.shortcut_changed.disconnect(rebound)


def _command(name: str):
    def command(viewer: Viewer):   # the viewer whose canvas has the key (else napari injects the current one)
        session = _sessions.get(id(viewer))
        if session is not None:
            getattr(session, name)()

    return command


def key_text(name: str) -> str:
    """The key bound to the action now ("F5"; "no key" when the user removed it), for tooltips and messages."""
    bound = action_manager._shortcuts.get(action_name(name)) or []
    return _sequence(bound[0]).toString() if bound else "no key"


def _sequence(binding) -> QKeySequence:
    from app_model.backends.qt import QKeyBindingSequence
    from napari.utils.key_bindings import coerce_keybinding

    return QKeyBindingSequence(coerce_keybinding(binding))


def action_for(event) -> str | None:
    """The run action whose key ``event`` (a Qt key press) is, if any."""
    pressed = QKeySequence(event.keyCombination())
    for name in RUN_KEYS:
        for binding in action_manager._shortcuts.get(action_name(name)) or []:
            if _sequence(binding).matches(pressed) == QKeySequence.SequenceMatch.ExactMatch:
                return name
    return None
