"""The run controller: the core's :class:`RunDriver` in a napari worker thread. The GUI thread queues
interventions and presses pause / step / resume / stop; the worker trains, predicts and acquires, and yields
what happened. The same driver runs the command line and sweeps."""

from __future__ import annotations

import os
from collections.abc import Callable

from napari.qt.threading import create_worker

from ..core.instrument.adapters import close_microscope
from ..core.run.driver import RunDriver


class RunController:
    """Owns the worker threads (the run's, the feature space's) and an instrument connected while no run goes."""

    def __init__(self):
        self._on_finished: Callable = lambda: None
        self.driver: RunDriver | None = None
        self.experiment = None   # the run's, given at start
        self.worker = None
        self.feature_worker = None   # the rVAE feature space training, when one runs
        # (adapter, params, microscope, LiveImage): a live instrument connected by Acquire image, not yet in a run
        self.idle_instrument = None
        # what drives a run: the core's driver; anything with its commands whose events() yields StepResults and
        # Events will do (the dock only draws what it yields)
        self.driver_factory = lambda experiment: RunDriver(experiment, pause_on_fault=True)

    def close_idle_instrument(self) -> None:
        if self.idle_instrument is not None:
            mic, self.idle_instrument = self.idle_instrument[2], None
            close_microscope(mic)

    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def paused(self) -> bool:
        return self.driver is not None and self.driver.paused

    def start(self, experiment, on_item: Callable, on_error: Callable, on_finished: Callable) -> None:
        """Run ``experiment`` in a worker: ``on_item`` gets each StepResult / Event it yields (GUI thread),
        ``on_error`` an exception that ended it, ``on_finished()`` is called once the worker has ended."""
        self.experiment, self._on_finished = experiment, on_finished
        self.driver = self.driver_factory(experiment)
        self.worker = create_worker(self._loop)
        self.worker.yielded.connect(on_item)
        self.worker.errored.connect(on_error)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def _finished(self):
        self.worker = None
        self._on_finished()

    def _loop(self):
        import torch

        # leave one core to napari's GUI thread so drawing never waits for the CPU behind training
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        try:
            yield from self.driver.events()
        finally:
            torch.set_num_threads(threads)

    def request(self, label: str, change) -> bool:
        """Queue an intervention for the live run; False when no run is going."""
        if not self.running:
            return False
        self.driver.request(label, change)
        return True

    def pause(self):
        if self.driver is not None:
            self.driver.pause()

    def resume(self):
        if self.driver is not None:
            self.driver.resume()

    def step_once(self):
        if self.driver is not None:
            self.driver.step_once()

    def shutdown(self, wait: float = 30.0) -> None:
        """napari is closing: stop the run after its step (its journal holds every measurement) and the rVAE
        within a batch, and wait for their threads, so that none is killed inside torch ('terminate called')."""
        from qtpy.QtCore import QThreadPool

        for worker in (self.worker, self.feature_worker):   # the dock they would draw into is going away
            for name in ("yielded", "returned", "errored", "finished"):
                try:
                    getattr(worker, name).disconnect()
                except (AttributeError, RuntimeError, TypeError):
                    pass
        if self.feature_worker is not None:
            self.feature_worker.cancel(wait=wait)
        if self.driver is not None:
            self.driver.stop()
        QThreadPool.globalInstance().waitForDone(int(wait * 1000))
        if self.experiment is not None:
            self.experiment.close()   # the journal, closed cleanly (it already holds every measurement)
            close_microscope(self.experiment.microscope)
        self.close_idle_instrument()

    def stop(self):
        if self.driver is not None:
            self.driver.stop()
        if self.worker is not None:
            self.worker.quit()
