"""The run driver: one loop around an :class:`Experiment` for the command line, the napari dock and sweeps.

It measures the seeds, then steps until the budget, applying queued interventions between steps. Another thread
(the GUI) may queue interventions, pause, resume, ask for one step, or stop; the driver's thread does all the
work.

With ``pipeline_depth`` 1 (a live instrument's default) a step's spectrum is acquired on a second thread while the
driver's thread fits the model on the points recorded so far and decides the next position with this one pending
(:meth:`Experiment.decide`). The step is recorded once its spectrum is back, so the records, and crash safety, are
those of a sequential run; a decision made ahead is dropped (never measured, never recorded) when the run pauses,
an intervention is queued, the run stops, or the acquisition fails, and the next step decides afresh.

:meth:`RunDriver.events` yields what happened, for a worker to forward to the GUI; :meth:`RunDriver.run` runs to the
end for scripts and the CLI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import HAEInputError, HAERunError
from .experiment import Experiment
from .results import Decision, RunView, StepResult


@dataclass(frozen=True)
class Event:
    """Something the driver reports besides a step: ``kind`` is "seeds", "applied", "refused", "fault",
    "paused" (idle while paused) or "done". ``step`` and ``budget``: where the run stands (steps recorded, the
    budget in force); ``view``: the run as recorded (not with the frequent "paused" events)."""

    kind: str
    message: str = ""
    step: int = 0
    budget: int = 0
    view: RunView | None = field(default=None, repr=False)


class RunDriver:
    """Drives ``experiment`` to its budget. ``pause_on_fault``: an instrument or model fault pauses the run (the
    dock; a person resumes it) instead of raising (the CLI exits with the trace intact)."""

    def __init__(self, experiment: Experiment, pause_on_fault: bool = False, idle_wait: float = 0.02):
        self.experiment = experiment
        self.pause_on_fault = pause_on_fault
        self.idle_wait = idle_wait
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Callable[[Experiment], None]]] = []
        self.paused = False
        self._step_once = False
        self.stopped = False
        self.stepping = False   # a step is being measured and learned from
        self.idle = False       # the loop is waiting in a pause: what is shown is where the run stands
        self._ahead: Decision | None = None   # a pipelined run: the next step's decision, made while measuring
        self._measurer: ThreadPoolExecutor | None = None

    # -- called from any thread --------------------------------------------------------------------------
    def request(self, label: str, change: Callable[[Experiment], None]) -> None:
        """Queue ``change(experiment)`` (e.g. ``lambda e: e.set_policy("ei", xi=0.1)``) for before the next step."""
        with self._lock:
            self._pending.append((label, change))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def step_once(self) -> None:
        """One step, then pause. Pressed while a step is being measured, that step is the one."""
        with self._lock:
            self.paused = True
            self._step_once = not self.stepping

    def stop(self) -> None:
        self.stopped = True

    # -- the loop (the driver's thread) -------------------------------------------------------------------
    def _has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def _apply_pending(self) -> Iterator[Event]:
        with self._lock:
            pending, self._pending = self._pending, []
        for label, change in pending:
            try:
                change(self.experiment)
                yield self._event("applied", f"Applied before step {self.experiment.step_index}: {label}", True)
            except HAEInputError as exc:
                yield self._event("refused", str(exc))

    def _event(self, kind: str, message: str = "", view: bool = False) -> Event:
        exp = self.experiment
        return Event(kind, message, exp.step_index, exp.state.budget, exp.view() if view else None)

    def events(self) -> Iterator[StepResult | Event]:
        """Yield each :class:`StepResult`, and :class:`Event` s in between (an idle "paused" event every
        ``idle_wait`` seconds while paused, so a worker can be quit)."""
        exp = self.experiment
        if not exp.started:
            exp.start()
            yield self._event("seeds", f"Seeds measured ({exp.trace.n_points}).", True)
        try:
            yield from self._steps()
        finally:   # a decision made ahead is never measured once the loop has ended, however it ended
            self._ahead = None
            self._close_measurer()
        yield from self._apply_pending()
        yield self._event("done", view=True)

    def _steps(self) -> Iterator[StepResult | Event]:
        exp = self.experiment
        while not exp.done and not self.stopped:
            # The pause state is read first, then the queue: the GUI queues a change and then resumes, so once
            # "not paused" is seen here everything queued before Resume is in the queue, and a step starts only
            # when the queue is empty (a change queued while others were being applied waits for no step).
            if self.paused and not self._step_once:
                self._ahead = None   # decided before the pause: what happens in it is decided with
                yield from self._apply_pending()
                self.idle = True
                time.sleep(self.idle_wait)
                yield self._event("paused")
                continue
            self.idle = False
            if self._has_pending():
                self._ahead = None   # interventions apply at the next decision
                yield from self._apply_pending()
                continue
            with self._lock:
                self._step_once, self.stepping = False, True
            try:
                res = self._step()
            except HAERunError as exc:   # instrument or model fault: the trace is intact
                if not self.pause_on_fault:
                    raise
                self.paused = True
                yield self._event("fault", str(exc), True)
                continue
            finally:
                self.stepping = False
            yield res

    # -- a step: sequential, or pipelined (measure on a second thread while the next point is decided) ----------
    def _step(self) -> StepResult:
        exp = self.experiment
        if not exp.settings.pipeline_depth:
            return exp.step()
        decision, self._ahead = self._ahead, None
        if decision is None or decision.step != exp.step_index:
            decision = exp.decide()
        if self._measurer is None:
            self._measurer = ThreadPoolExecutor(1, thread_name_prefix="hae-measure")
        measuring = self._measurer.submit(exp.measure, decision)
        ahead, failed = None, None
        try:
            if decision.step + 1 < exp.state.budget and not (self.paused or self.stopped or self._has_pending()):
                ahead = exp.decide(pending=[decision.flat])
        except HAERunError:   # the fit failed: said in the trace; the next step fits again, in order
            ahead = None
        except Exception as exc:   # a bug: raised once the spectrum in flight is recorded
            failed = exc
        measurement = measuring.result()   # a fault: nothing recorded for this step; the decision ahead dropped
        res = exp.record(decision, measurement)
        if failed is not None:
            raise failed
        if ahead is not None and exp.avoid[ahead.flat]:
            ahead = None   # recording avoided it (it drifted out of the field): decided afresh
        self._ahead = ahead
        return res

    def _close_measurer(self) -> None:
        if self._measurer is not None:
            self._measurer.shutdown(wait=True)
            self._measurer = None

    def run(self, on_step: Callable[[StepResult], None] | None = None) -> None:
        """Run to the budget (or until stopped), calling ``on_step`` after each step."""
        for item in self.events():
            if isinstance(item, StepResult) and on_step is not None:
                on_step(item)
