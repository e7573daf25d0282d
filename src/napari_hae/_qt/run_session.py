"""The dock's run: build the experiment from the panels, start / pause / step / resume / stop it through the run
controller, and draw what the worker yields (immutable results and events only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from ..core.analysis.summary import dose_ledger
from ..core.errors import HAEInputError, sentence
from ..core.instrument.adapters import close_microscope
from ..core.record.trace import JOURNAL_NAME
from ..core.run.diagnostics import calibration_verdict, model_z_scores, spread_event, window_verdict
from ..core.run.driver import Event
from ..core.run.experiment import Experiment, ExperimentSettings
from ..core.run.picking import seed_indices
from ..core.targets.scalarizers import Scalarizer
from .keys import key_text
from .layer_view import MAPS
from .turns import DrawPace, layer_list_now, one_per_turn


class RunProgress:
    """The run's steps on the dock's progress bar. Not in napari's activity dock: while a ``napari.utils.progress``
    is open, napari animates a spinner in its status bar, and each frame recomposes the window around the OpenGL
    canvas: with Mesa's software OpenGL a 30-step run took 33-40 s instead of 17-18 s and napari's median event-loop
    tick went from 10 to 31-35 ms (benchmarks/gui_responsiveness.py, alternated runs; docs/performance.md)."""

    def __init__(self, bar):
        self.bar = bar            # the run panel's QProgressBar

    def show(self, view) -> None:
        top = max(1, int(view.budget))
        self.bar.setUpdatesEnabled(False)   # QProgressBar repaints at once on a new value: 50 ms of window
        if self.bar.maximum() != top:       # composition beside napari's OpenGL canvas; this way it is one update
            self.bar.setMaximum(top)
        self.bar.setValue(min(int(view.n_steps), top))
        self.bar.setUpdatesEnabled(True)



class RunWarnings:
    """Says (once per window) that a run looks stuck, (once a run) that its model is overconfident, both also as
    napari notifications (they suggest what to do), and, on the status line alone, when the run starts or stops
    drawing its intervals wider than the model's (the uncertainty map grows or shrinks by that factor at once);
    with a feature space (``latent()``), latent clustering counts too."""

    def __init__(self, latent: Callable):
        self._latent = latent
        self.reset()

    def reset(self) -> None:
        self._stuck_at, self._overconfident = -10**9, False

    def check(self, res, view) -> str | None:
        """The warning this step deserves (shown as a notification too), or None."""
        K = view.stuck_window
        verdict = window_verdict(view.steps, view.scan_shape, K, latent=self._latent())   # the loop's rule
        if verdict is not None and verdict.stuck and res.step - self._stuck_at >= K:
            self._stuck_at = res.step
            msg = (f"The run looks stuck at step {res.step + 1}: {verdict.reason}. Consider: "
                   + "; ".join(verdict.suggestions) + ".")
            show_warning(msg)
            return msg
        cal = calibration_verdict(model_z_scores(view.steps), view.steps["log_score"])   # the model's own
        if cal is not None and cal.overconfident and not self._overconfident:   # once a run: then the monitors
            self._overconfident = True
            msg = (f"The model is overconfident at step {res.step + 1}: {cal.reason}. Consider: "
                   + "; ".join(cal.suggestions) + ". (Orange ticks in the monitors mark further such steps.)")
            show_warning(msg)
            return msg
        # said on the status line only: it asks nothing of the user, and napari's toast (fade in, fade out) made
        # the window composed ~8 times in 0.3 s, a 0.2-0.33 s pause at 1920 x 1080 in software OpenGL
        factors = list(view.steps.get("spread_factor") or [])
        said = spread_event(factors[-2] if len(factors) > 1 else float("nan"), factors[-1]) if factors else ""
        return f"Step {res.step + 1}: {said}." if said else None


class RunSession:
    """Owns the dock's run: its experiment (the worker's while it runs), its phase, what it last delivered.

    ``launched`` and ``ended`` are lists of callables told when a run starts drawing and when its worker has ended
    (with the run's trace); the trace browser listens to both. ``panels``: the dock's "data", "target", "policy" and
    "run" panels, read at Start.
    """

    def __init__(self, panels: dict, view, controller, link, status, spectra, monitor_plot,
                 latent: Callable = lambda: None):
        self.data, self.target, self.policy = panels["data"], panels["target"], panels["policy"]
        self.run_panel = panels["run"]
        self.view, self.controller, self.link, self.status = view, controller, link, status
        self.spectra, self.monitor_plot = spectra, monitor_plot
        self.progress = RunProgress(self.run_panel.progress.native)
        self.warnings = RunWarnings(latent)   # latent(): the feature space's latent positions, if any
        self.launched: list[Callable[[], None]] = []
        self.ended: list[Callable] = []
        self.experiment: Experiment | None = None
        self.run_phase = "idle"    # "running", "paused", "finished", "stopped": what the status line may say over
        self.last_view = None      # the newest RunView the worker delivered
        self._newest = None        # the newest step result not drawn yet
        self.pace = DrawPace()     # when the next step may be drawn
        self._measuring = False    # a drawing's cost is being measured (the pace is not known yet)
        self._warning = None       # what a step delivered since the last drawing deserves saying
        self._say_paused = False   # Pause or Step once pressed: say "Paused after step N" once the step ends
        # advanced, not shown: tests and power users may change them before Start
        d = ExperimentSettings()
        self.fit_iterations, self.fit_iterations_first = d.fit_iterations, d.fit_iterations_first
        self.model_params: dict = {}
        self.runs_dir: Path | None = None   # where each run's journal folder is made

    @property
    def paused(self) -> bool:
        return self.controller.paused

    def settings(self, data) -> ExperimentSettings:
        """The settings the panels describe for ``data`` (seeds from the Seeds layer, else random)."""
        seeds = self.view.seed_positions()
        rp = self.run_panel
        return ExperimentSettings(
            patch_size=int(self.data.patch_size.value), scalarizer=self.target.scalarizer().to_dict(),
            objectives=self.target.objectives(), policy=self.policy.policy(),
            model=self.policy.model(self.model_params), n_seeds=int(rp.n_seeds.value),
            seed_mode="given" if seeds else rp.seed_mode.value, seed_positions=seeds, budget=int(rp.budget.value),
            random_seed=int(rp.random_seed.value), fit_iterations=self.fit_iterations,
            fit_iterations_first=self.fit_iterations_first, drift_every=rp.drift())

    def build_experiment(self, mic=None) -> Experiment:
        """The experiment the panels describe, on ``mic`` (default: the run panel's microscope, made here)."""
        data = self.data.dataset
        if data is None:
            raise HAEInputError("No dataset is selected.",
                                "open one (File > Open File(s)..., or File > Open Sample) and pick it.")
        settings = self.settings(data)
        objects = [o for o in self.view.objects_drawn(data.scan_shape) if o[0].any()]   # what the layer shows
        avoid = np.zeros(data.n_positions, dtype=bool)
        for mask, mode, _ in objects:
            if mode == "avoid":
                avoid |= np.asarray(mask, dtype=bool).ravel()
        seed_indices(settings, data.scan_shape, np.random.default_rng(0), avoid,   # refused before a folder exists
                     data.structural)
        seed = int(self.run_panel.random_seed.value)
        mic = self.link.microscope(data, seed) if mic is None else self.link.on_grid(mic, data)
        folder = self.new_run_dir()
        try:
            exp = Experiment(mic, settings, dataset_info={**data.describe(), "fingerprint": data.fingerprint()},
                             journal=folder / JOURNAL_NAME)
            for mask, mode, label in objects:
                exp.add_object(mask, mode, label)
        except HAEInputError:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()   # the empty folder made a moment ago for this run, which did not start
            raise
        return exp

    def new_run_dir(self) -> Path:
        """A fresh folder for a run's crash-safe journal (under ``runs_dir``)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d, i = Path(self.runs_dir) / stamp, 1
        while d.exists():
            d, i = Path(self.runs_dir) / f"{stamp}-{i}", i + 1
        d.mkdir(parents=True)
        return d

    # -- commands ------------------------------------------------------------------------------------------
    def start(self, *_):
        if self.controller.running or self.link.connecting is not None:
            show_warning("A run is already going (or its microscope is connecting): stop it first.")
            return
        problem = self.target.problem_for(self.data.dataset)
        if problem is not None:
            show_error(problem)
            self.status.value = f"Cannot start: {problem}"
            return
        self.link.with_microscope(int(self.run_panel.random_seed.value), self._start_on)

    def _start_on(self, mic):
        try:
            experiment = self.build_experiment(mic)
        except HAEInputError as exc:
            self.link.cannot_start(exc)
            return
        self.launch(experiment)

    def launch(self, experiment: Experiment | None = None):
        """Run ``experiment`` (default: the one the session holds) in the controller's worker."""
        if experiment is not None:
            self.experiment = experiment
        self.warnings.reset()
        self.monitor_plot.start_renderer()
        for hook in self.launched:
            hook()
        # the layers a run draws into: added one per event-loop turn (each costs 0.1-0.3 s in napari, its layer
        # controls and a repaint; all at once held napari for 1.1 s at Start), long before the first step arrives
        ref = self.data.layer_combo.value
        geo, shape = self.view.geometry(ref), self.data.dataset.scan_shape
        first = self.experiment.view()   # taken before the worker starts
        self.last_view = first
        self.view.new_run()
        self.pace.reset()
        # the newest view when that turn comes, not `first`: a short run on a loaded machine can end before it
        one_per_turn([*self.view.output_layer_steps(geo, shape), lambda: self.view.show_run(self.last_view, ref)],
                     self.view.viewer)
        self.progress.show(first)
        said = ("Running: measuring seeds and training the first model..." if not first.n_steps and not
                self.experiment.started else f"Running: training on the {first.n_points} recorded points...")
        self.controller.start(self.experiment, self.on_item, self.on_error, self.on_finished)   # the worker's from here
        self.run_phase = "running"
        self.status.value = said
        self.update_buttons()

    def pause(self, *_):
        self.controller.pause()
        self.status.value = "Pausing after the current step."
        self._say_paused = True
        self.update_buttons()

    def resume(self, *_):
        self.controller.resume()
        self._say_paused = False
        self.run_phase = "running"
        self.status.value = "Running."
        self.update_buttons()

    def pause_or_resume(self, *_):
        if self.controller.paused:
            self.resume()
        elif self.controller.running:
            self.pause()

    def step_once(self, *_):
        self.controller.step_once()
        self._say_paused = True
        self.status.value = "One step, then a pause."
        self.update_buttons()

    def stop(self, *_):
        self.controller.stop()

    def update_buttons(self):
        self.run_panel.update_buttons(self.controller.running, self.controller.paused)
        if self.link.connecting is not None:
            rp = self.run_panel
            rp.start_btn.enabled = rp.resume_trace_btn.enabled = rp.acquire_btn.enabled = False

    # -- what the worker yields (GUI thread): drawn from the immutable results and events alone -----------------
    def on_item(self, item):
        if isinstance(item, Event):
            self._on_event(item)
            return
        # Drawn from the immutable result the worker delivered (read-only: the run goes on meanwhile, a new one may
        # even have started), on a timer of its own: Qt then serves its other timers before the repaint this
        # drawing asks for, so the drawing (~50 ms) and the repaint (~90 ms in software OpenGL at 1920 x 1080) are
        # two short pauses of the event loop, not one long one. Steps that arrive faster than they are drawn (or
        # than ``pace`` allows) are drawn once, the newest (what each step says is checked for every step).
        self.last_view = item.view
        self._warning = self.warnings.check(item, item.view) or self._warning
        first = self._newest is None
        self._newest = item
        if first and not self._measuring:   # (else the measurement schedules it, once the pace is known)
            self._draw_at_pace()

    def _draw_at_pace(self) -> None:
        QTimer.singleShot(self.pace.wait_ms(), self._draw_newest)

    def _draw_newest(self) -> None:
        item, self._newest = self._newest, None
        if item is None:
            return
        # the drawing's cost with its repaint, measured by a timer (Qt sends the repaint, a posted event of low
        # priority, before it serves timers; a zero timer is a posted event of normal priority: sent before it)
        self._measuring = True
        QTimer.singleShot(1, lambda started=time.perf_counter(): self._measured(time.perf_counter() - started))
        view, ref = item.view, self.data.layer_combo.value
        if not self.view.has_output_layers():   # the user deleted one mid-run: it comes back
            self.view.prepare_output_layers(self.view.geometry(ref), view.scan_shape)
        self.view.show_maps({key: getattr(item, key) for key in MAPS})
        self.progress.show(view)
        self.view.show_run(view, ref)
        self._draw_step_info(item, view)
        self.monitor_plot.update_from(view)
        if self._warning is not None:   # said over the step's line until the next warning
            self.status.value, self._warning = self._warning, None
        layer_list_now(self.view.viewer)

    def _measured(self, cost: float) -> None:
        self._measuring = False
        self.pace.drawn(cost)
        if self._newest is not None:   # a step that came while the drawing was measured
            self._draw_at_pace()

    def _on_event(self, item: Event) -> None:
        self._draw_newest()   # a step not drawn yet (paced) is drawn before what follows it: a pause, the end
        if item.view is not None:
            self.last_view = item.view
        if item.kind == "seeds":
            self.view.show_run(item.view, self.data.layer_combo.value)
            self.status.value = f"{item.message} Training..."
        elif item.kind in ("applied", "refused", "fault"):
            (show_info if item.kind == "applied" else show_error)(item.message)
            if item.kind == "fault":
                self.run_phase = "paused"
            self.status.value = f"Paused: {item.message}" if item.kind == "fault" else item.message
            if item.view is not None:
                self.view.show_run(item.view, self.data.layer_combo.value)
            self.update_buttons()
        elif item.kind == "done":   # said now; the journal and the instrument are closed once the worker ends
            self._say_finished(item.view)
        elif item.kind == "paused" and self._say_paused:   # the step in flight has ended
            self._say_paused = False
            self.run_phase = "paused"
            self.status.value = (f"Paused after step {item.step} of {item.budget}: Resume "
                                 f"({key_text('pause_or_resume')}), Step once ({key_text('step_once')}) or Stop "
                                 f"({key_text('stop')}).")

    def _draw_step_info(self, res, view):
        if self.run_phase == "running":   # a run's end and a pause stay said
            rec = res.record
            self.status.value = (f"step {res.step + 1}/{view.budget} ({res.kind}) at (y, x) = "
                                 f"{res.position}: {view.scalarizer_name} = {res.value:.4g}; best "
                                 f"{rec['best_so_far']:.4g}; mean uncertainty {rec['std_mean']:.3g}"
                                 + ("  [paused]" if self.paused else ""))
        if view.last_spectrum is None or view.index_of(res.position) is None:
            return
        self.spectra.show(view.last_spectrum, f"step {res.step + 1} at {res.position}: {res.value:.4g}",
                          Scalarizer.from_dict(dict(view.scalarizer_spec)), hold=True)
        self.update_buttons()

    def on_error(self, exc):
        self.experiment.close()   # the journal holds everything measured; close it cleanly
        self.run_phase = "stopped"
        show_error(f"The run stopped with an error: {sentence(exc)} The trace measured so far is kept: Save trace.")
        self.status.value = f"Stopped by an error at step {self.experiment.step_index}: {exc}"

    def on_finished(self):
        # the worker has ended: the experiment is this thread's alone from here
        exp = self.experiment
        self._draw_newest()
        if exp is not None:
            view = self.last_view if self.last_view is not None else exp.view()
            self.view.show_run(view, self.data.layer_combo.value)   # the final state, drawn now
            exp.close()
            close_microscope(exp.microscope)   # a live instrument: the beam blanked, its cameras stopped
            self.progress.show(view)
            if self.run_phase != "finished":
                self._say_finished(view)
            said = self.status.value
            for hook in self.ended:   # the replay slider shows the last step (and says so) ...
                hook(exp.trace)
            self.status.value = said  # ... but how the run ended is what stays said
        self.update_buttons()

    def _say_finished(self, view) -> None:
        self.run_phase = "finished"
        where = f" Journal: {view.journal}." if view.journal else ""
        dose = dose_ledger(view)
        beam = "" if dose["beam_on_s"] is None else (
            f" Beam on {dose['beam_on_s']:.3g} s, {100 * dose['fraction_of_full_grid']:.2g}% of a full scan.")
        self.status.value = (f"Run {'finished' if view.done else 'stopped'}: {view.n_steps} steps, "
                             f"{view.n_points} spectra.{beam}{where} Save the trace to keep it as HDF5.")

    def closed(self) -> None:
        """The dock was taken out of napari's window: stop a run after the step in flight (once its worker has
        ended, the journal is closed and the instrument released: ``on_finished``)."""
        if self.controller.running:
            self.controller.stop()
            self.run_phase = "stopped"
            show_info("The hAE dock was closed: the run stops after the step in flight, its journal is closed and "
                      "the instrument released. Reopen the dock to see it; Load trace and Resume to go on.")
