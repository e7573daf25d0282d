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
    a helper thread; its progress is forwarded as the worker's yields). ``worker.cancel()`` stops the training
    within one batch and waits for its thread: napari may then close without killing torch mid-batch (the
    'terminate called' crash)."""
    import threading

    from ..core.analysis.feature_space import fit_feature_space

    pbar = progress(total=epochs, desc=f"rVAE feature space (patch {patch_size})")
    stop = threading.Event()
    trainer: list[threading.Thread] = []

    def job():
        import queue

        q: queue.Queue = queue.Queue()
        out = {}

        def run():
            try:
                out["fs"] = fit_feature_space(structural, patch_size, epochs=epochs, cancel=stop.is_set,
                                              progress=lambda e, k, loss: q.put((e, loss)))
            except Exception as exc:  # reported in the GUI (a cancellation too)
                out["error"] = exc
            q.put(None)

        trainer.append(threading.Thread(target=run, daemon=True, name="hae-rvae"))
        trainer[0].start()
        while (item := q.get()) is not None:
            yield item
        return out.get("fs"), out.get("error")   # napari would report an error raised (or returned) itself

    def epoch(item):
        pbar.update(1)
        on_epoch(*item)

    def done():
        pbar.close()
        on_done()

    w = create_worker(job)

    def cancel(wait: float = 30.0) -> None:
        stop.set()
        if trainer:
            trainer[0].join(wait)

    w.cancel = cancel
    w.yielded.connect(epoch)
    w.returned.connect(lambda result: on_ready(result[0]) if result[1] is None else on_error(result[1]))
    w.errored.connect(on_error)
    w.finished.connect(done)
    w.start()
    return w
