"""Work for the GUI thread spread over turns of Qt's event loop."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QTimer


def one_per_turn(calls: list[Callable[[], None]], viewer, still: Callable[[], bool] = lambda: True) -> None:
    """Call each of ``calls`` in order, one per turn of Qt's event loop, on a timer, while ``viewer``'s window is
    open and ``still()`` holds (e.g. the dataset they were made for is still the chosen one): Qt serves its other
    timers, input and repaints in between. (``QTimer.singleShot(0, f)`` posts an event, and Qt handles every event
    posted so far in one go: five of them were one 0.9 s pause.)"""
    if calls and viewer_open(viewer) and still():
        QTimer.singleShot(1, lambda: viewer_open(viewer) and still() and (
            calls[0](), one_per_turn(calls[1:], viewer, still)))


def viewer_open(viewer) -> bool:
    """Whether napari's window of ``viewer`` is still open (closing it deletes its Qt window; layers added to a
    closed viewer raise in napari's layer controls)."""
    return getattr(getattr(viewer, "window", None), "_qt_window", None) is not None
