"""Monitors panel: the replay slider, the rVAE feature space (trained in a worker with progress), export."""

from __future__ import annotations

from magicgui.widgets import Container, PushButton, Slider
from napari.qt.threading import create_worker
from napari.utils import progress


class MonitorPanel(Container):
    def __init__(self):
        self.replay = Slider(label="replay step", min=1, max=1, value=1, enabled=False, tracking=True)
        self.feature_btn = PushButton(text="Feature space (rVAE)")
        self.export_btn = PushButton(text="Export monitors...")
        super().__init__(widgets=[self.replay, Container(widgets=[self.feature_btn, self.export_btn],
                                                         layout="horizontal", labels=False)], label="Monitors")

    def enable_replay(self, n_steps: int) -> None:
        """Steps 1..n, as the status line and the monitors count them; at the last step."""
        self.replay.enabled = n_steps > 0
        self.replay.max = max(1, n_steps)
        self.replay.value = max(1, n_steps)


def feature_space_worker(structural, patch_size: int, epochs: int, on_epoch, on_ready, on_error, on_done):
    """Train the rVAE feature space in a napari worker, reporting each epoch (AtomAI's per-epoch callback runs in
    a helper thread; its progress is forwarded as the worker's yields)."""
    from ..core.analysis.feature_space import fit_feature_space

    pbar = progress(total=epochs, desc=f"rVAE feature space (patch {patch_size})")

    def job():
        import queue
        import threading

        q: queue.Queue = queue.Queue()
        out = {}

        def run():
            try:
                out["fs"] = fit_feature_space(structural, patch_size, epochs=epochs,
                                              progress=lambda e, k, loss: q.put((e, loss)))
            except Exception as exc:  # reported in the GUI
                out["error"] = exc
            q.put(None)

        threading.Thread(target=run, daemon=True).start()
        while (item := q.get()) is not None:
            yield item
        if "error" in out:
            raise out["error"]
        return out["fs"]

    def epoch(item):
        pbar.update(1)
        on_epoch(*item)

    def done():
        pbar.close()
        on_done()

    w = create_worker(job)
    w.yielded.connect(epoch)
    w.returned.connect(on_ready)
    w.errored.connect(on_error)
    w.finished.connect(done)
    w.start()
    return w
