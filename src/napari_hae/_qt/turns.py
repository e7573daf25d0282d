"""Work for the GUI thread spread over turns of Qt's event loop."""

from __future__ import annotations

import time
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


def layer_list_now(viewer) -> None:
    """Lay napari's layer list out now, so that it is painted in the frame a drawing asks for.

    napari answers the layers' events (data, colours, thumbnails) with its layer list's ``dataChanged``, and Qt's
    item view lays the list out on a zero timer, which fires after that frame: a second composition of the whole
    window per drawn step (30-80 ms at 1920 x 1080 in software OpenGL). Nothing happens where napari's Qt viewer
    is not there (closed, or laid out differently in another napari)."""
    view = getattr(getattr(getattr(viewer, "window", None), "_qt_viewer", None), "layers", None)
    layout = getattr(view, "executeDelayedItemsLayout", None)
    if layout is not None:
        layout()


def viewer_open(viewer) -> bool:
    """Whether napari's window of ``viewer`` is still open (closing it deletes its Qt window; layers added to a
    closed viewer raise in napari's layer controls)."""
    return getattr(getattr(viewer, "window", None), "_qt_window", None) is not None


class DrawPace:
    """When the next run step may be drawn, so that drawing steps takes at most ``share`` of the GUI thread.

    A step's drawing (layers, plots) and the repaint it asks for cost ~10-30 ms with a GPU, but 100-150 ms in
    software OpenGL at 1920 x 1080 (a repaint alone ~90 ms), and a run's steps come every 0.3-0.5 s: drawing each
    made every step a pause of napari over 100 ms. After a drawing that cost ``c`` seconds the next waits until
    ``c * (1 / share - 1)`` has passed (the steps in between are drawn once, the newest): with a GPU every step is
    drawn; in software OpenGL one every 1.2-1.7 s (benchmarks/gui_responsiveness.py: p99 event-loop gap 63-96 ms
    against 105-145 ms). Pauses and the run's end are drawn at once (the caller's flush). The wait is at most
    ``longest`` seconds: one slow drawing (shaders built, a busy machine) does not hide the run for long.
    """

    def __init__(self, share: float = 0.08, longest: float = 2.0, clock: Callable[[], float] = time.perf_counter):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share, self.longest, self.clock = share, longest, clock
        self.reset()

    def wait_ms(self) -> int:
        """Milliseconds until the next drawing may start (at least 1: a timer of its own, not a posted event)."""
        return max(1, round(1000 * (self._not_before - self.clock())))

    def drawn(self, cost: float) -> None:
        """A drawing has just ended that took ``cost`` seconds of the GUI thread (its repaint included)."""
        self._not_before = self.clock() + min(self.longest, cost * (1 / self.share - 1))

    def reset(self) -> None:
        self._not_before = 0.0   # nothing drawn yet: at once (the clocks used count up from 0 or more)
