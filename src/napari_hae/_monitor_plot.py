"""Live monitors in a dock: a QLabel showing the monitor figure, drawn by a renderer process.

matplotlib needs 60-300 ms of pure Python per redraw of four axes; on a thread of napari's process that holds
the GIL and stalls the event loop (measured: 300+ ms gaps). So the figure lives in a small child process
(``_monitor_renderer``, a subprocess started on first use, lowered priority); the GUI thread only takes a
snapshot of the numbers (~5 ms) and a helper thread waits for the image without holding the GIL. Requests are
coalesced: while one image is being drawn, only the newest request waits. If the process cannot start, drawing
falls back to the helper thread.
"""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel

from ._monitor_figure import MonitorFigure, snapshot
from ._monitor_renderer import start as start_renderer_process

IDLE_S = 1.0   # the helper thread ends after this long without a request


class _Renderer:
    """The child process and its pipes; or, if it cannot start, an in-process figure."""

    def __init__(self, local: bool = False):
        self.local: MonitorFigure | None = None
        self.proc = None
        try:
            if local:
                raise RuntimeError("in-process drawing asked for")
            self.proc, self.conn = start_renderer_process()
        except Exception:  # e.g. a frozen app without a Python executable: draw in-process instead
            self.proc = None
            self.local = MonitorFigure()

    def call(self, *msg):
        if self.local is not None:
            kind = msg[0]
            if kind == "render":
                return self.local.render(msg[1])
            if kind == "latent":
                return self.local.set_latent(msg[1])
            if kind == "theme":
                return self.local.set_theme(msg[1], msg[2])
            return self.local.save(msg[1], msg[2])
        self.conn.send(msg)
        status, payload = self.conn.recv()      # blocks in the OS, GIL released
        if status != "ok":
            raise RuntimeError(f"monitor renderer: {payload}")
        return payload

    def close(self):
        if self.proc is not None:
            try:
                self.conn.send(("stop",))
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=2)
            except Exception:
                self.proc.kill()
            self.conn.close()
            self.proc = None


class MonitorPlot(QLabel):
    rendered = Signal(object)    # (QImage, steps drawn), emitted from the helper thread
    failed = Signal(str)         # why the monitors could not be drawn as asked, emitted from the helper thread

    def __init__(self, parent=None, min_interval: float = 0.5):
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
        self.setMinimumSize(340, 560)
        self.setText("Monitors appear here during a run.")
        self.min_interval = float(min_interval)
        self._last_request = 0.0
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()      # one conversation with the renderer at a time
        self._start_lock = threading.Lock()
        self._pending = None
        self._latent = None                     # latent coordinates not yet sent to the renderer
        self._theme = None                      # napari's theme colours not yet sent to the renderer
        self._busy = False
        self._wake = threading.Condition(self._lock)   # a request for the helper thread
        self._helper: threading.Thread | None = None
        self._sent = (None, None)                # the latent and theme the renderer holds (to give a new one)
        self._renderer: _Renderer | None = None
        self.last_snapshot: dict | None = None  # what the figure shows now
        self.n_steps_drawn = 0
        self.n_renders = 0
        self.errors: list[str] = []
        self.rendered.connect(self._show)
        self.failed.connect(self._say_failed)
        # set when Qt deletes the widget (dock closed): the helper thread then stops instead of emitting into it
        self._alive = alive = [True]
        self.destroyed.connect(lambda *_: alive.__setitem__(0, False))

    def start_renderer(self) -> None:
        """Start the renderer process now (it takes ~1 s of low-priority CPU), e.g. when a run starts."""
        threading.Thread(target=self._ensure_renderer, daemon=True).start()

    def _ensure_renderer(self) -> _Renderer:
        with self._start_lock:
            if self._renderer is None:
                self._renderer = _Renderer()
                weakref.finalize(self, self._renderer.close)
        return self._renderer

    # -- requests (GUI thread) ----------------------------------------------------------------------------------
    def set_latent(self, latent: np.ndarray | None) -> None:
        """All patches' latent coordinates (n_positions, 2); drawn from the next update on."""
        with self._lock:
            self._latent = ("set", None if latent is None else np.asarray(latent, dtype=np.float32))

    def set_theme(self, background: str, text: str) -> None:
        """napari's theme colours (hex); what is drawn now is redrawn in them."""
        with self._lock:
            self._theme = (background, text)
        if self.last_snapshot is not None:
            self._request(self.last_snapshot)

    def update_from(self, trace, upto: int | None = None, force: bool = False) -> bool:
        """Request a redraw from ``trace`` (up to step ``upto``; default all). Requests within ``min_interval`` of
        the previous one are dropped unless ``force``. Returns whether a redraw was requested."""
        now = time.perf_counter()
        if not force and now - self._last_request < self.min_interval:
            return False
        self._last_request = now
        self._request(snapshot(trace, upto))
        return True

    def _request(self, snap: dict) -> None:
        """Hand ``snap`` to the helper thread, started once: starting a thread per request made the GUI thread
        wait until the new thread held the GIL, which the training worker holds (10-30 ms a step, measured)."""
        with self._lock:
            self._pending = snap
            self._busy = True
            self._wake.notify()
            start, self._helper = self._helper is None, self._helper or threading.Thread(
                target=self._render_loop, name="hae-monitor-render", daemon=True)
        if start:
            self._helper.start()

    # -- helper thread ------------------------------------------------------------------------------------------
    def _render_loop(self):
        renderer = self._ensure_renderer()
        alive = self._alive
        while alive[0]:
            with self._lock:
                idle_until = time.perf_counter() + IDLE_S
                while self._pending is None:   # what else arrives meanwhile goes with the next drawing
                    self._busy = False
                    self._wake.wait(0.2)
                    if not alive[0] or (self._pending is None and time.perf_counter() > idle_until):
                        self._helper = None   # a run's steps come more often: between runs, no thread
                        return
                snap, self._pending = self._pending, None
                latent, self._latent = self._latent, None
                theme, self._theme = self._theme, None
            try:
                with self._call_lock:
                    if latent is not None:
                        renderer.call("latent", latent[1])
                    if theme is not None:
                        renderer.call("theme", *theme)
                    rgba = renderer.call("render", snap)
            except Exception as exc:  # keep the GUI alive; say it, and draw in this process from now on
                self.errors.append(str(exc))
                if not alive[0]:   # the dock is gone (its teardown closed the renderer): nobody to tell
                    break
                if renderer.local is None:   # the same drawing again, in-process, with what the process had
                    with self._lock:
                        self._pending = self._pending or snap
                        self._latent = self._latent or self._sent[0] or latent
                        self._theme = self._theme or self._sent[1] or theme
                renderer = self._fall_back(renderer, exc)
                continue
            self._sent = (latent or self._sent[0], theme or self._sent[1])
            h, w = rgba.shape[:2]
            img = QImage(rgba.tobytes(), w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
            self.last_snapshot = snap
            self.n_renders += 1
            if not alive[0]:
                break
            try:
                self.rendered.emit((img, snap["n"] if snap["upto"] is None else snap["upto"] + 1))
            except RuntimeError:   # deleted between the check and the emit: the dock is gone
                break
        with self._lock:
            self._busy = False
            self._helper = None

    def _fall_back(self, renderer: _Renderer, exc: Exception) -> _Renderer:
        """The renderer process failed (a broken pipe, a crash): the monitors are drawn in this process instead
        (slower, on this helper thread), and the dock says why."""
        if renderer.local is not None:   # already in-process: the drawing itself failed
            self._tell(f"Monitors could not be drawn: {exc}")
            return renderer
        renderer.close()
        local = _Renderer(local=True)
        with self._call_lock:
            self._renderer = local
        self._tell(f"The monitor renderer process failed ({exc}); drawing in napari's process instead.")
        return local

    def _tell(self, message: str) -> None:
        try:
            self.failed.emit(message)
        except RuntimeError:   # deleted between the loop's check and the emit: the dock is gone
            pass

    def _say_failed(self, message: str) -> None:
        self.setToolTip(message)
        if self.pixmap() is None or self.pixmap().isNull():
            self.setText(message)
        show_warning(message)

    def _show(self, item):
        img, n = item
        self.setPixmap(QPixmap.fromImage(img))
        self.n_steps_drawn = n

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until no redraw is pending (tests, export). Returns False on timeout."""
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            with self._lock:
                if not self._busy:
                    return True
            time.sleep(0.01)
        return False

    def save(self, path) -> None:
        """Export the monitors as last drawn (.png or .svg, from the file name)."""
        self.wait()
        if self.last_snapshot is None:
            raise RuntimeError("Nothing drawn yet: run or load a trace first.")
        with self._call_lock:
            self._ensure_renderer().call("save", str(path), self.last_snapshot)

    def close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
