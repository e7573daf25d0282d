"""The dock's run control: build the experiment from the panels, start / pause / step / resume / stop through the
run controller, and draw what the worker yields."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from ..core.errors import HAEInputError, sentence
from ..core.instrument.adapters import close_microscope
from ..core.record.trace import JOURNAL_NAME
from ..core.run.diagnostics import calibration_verdict, window_verdict
from ..core.run.driver import Event
from ..core.run.experiment import Experiment, ExperimentSettings
from ..core.run.picking import seed_indices
from ..core.targets.scalarizers import Scalarizer
from .layer_view import MAPS
from .microscope_actions import MicroscopeActions


class RunActions(MicroscopeActions):
    """Mixed into :class:`~napari_hae._widget.HAEWidget` (uses its panels, layer view and controller)."""

    _say_paused = False   # Pause or Step once pressed: say "Paused after step N" once the step in flight ends
    run_phase = "idle"    # "running", "paused", "finished", "stopped": what the status line may say over
    run_progress = None   # the run in napari's activity dock
    last_view = None      # the newest RunView the worker delivered

    def build_experiment(self, mic=None) -> Experiment:
        """The experiment the panels describe, on ``mic`` (default: the run panel's microscope, made here)."""
        data = self.dataset
        if data is None:
            raise HAEInputError("No dataset is selected.",
                                "open one (File > Open File(s)..., or File > Open Sample) and pick it.")
        seeds = self.view.seed_positions()
        settings = ExperimentSettings(
            patch_size=int(self.patch_size.value), scalarizer=self.target.scalarizer().to_dict(),
            objectives=self.target.objectives(), policy=self.policy.policy(),
            model=self.policy.model(self.model_params), n_seeds=int(self.n_seeds.value),
            seed_mode="given" if seeds else "random", seed_positions=seeds, budget=int(self.budget.value),
            random_seed=int(self.random_seed.value), fit_iterations=self.fit_iterations,
            fit_iterations_first=self.fit_iterations_first)
        objects = [o for o in self.view.objects_drawn(data.scan_shape) if o[0].any()]   # what the layer shows
        avoid = np.zeros(data.n_positions, dtype=bool)
        for mask, mode, _ in objects:
            if mode == "avoid":
                avoid |= np.asarray(mask, dtype=bool).ravel()
        seed_indices(settings, data.scan_shape, np.random.default_rng(0), avoid)   # refused before a folder exists
        mic = self._microscope(data, int(self.random_seed.value)) if mic is None else self._on_grid(mic, data)
        folder = self._new_run_dir()
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

    def _new_run_dir(self) -> Path:
        """A fresh folder for this run's crash-safe journal (under ``runs_dir``)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d, i = Path(self.runs_dir) / stamp, 1
        while d.exists():
            d, i = Path(self.runs_dir) / f"{stamp}-{i}", i + 1
        d.mkdir(parents=True)
        return d

    def start(self, *_):
        if self.controller.running or self._connecting is not None:
            show_warning("A run is already going (or its microscope is connecting): stop it first.")
            return
        data = self.dataset
        problem = None if data is None else self.target.problem(data.energies, data.signal_shape)
        if problem is not None:
            show_error(problem)
            self.status.value = f"Cannot start: {problem}"
            return
        self.with_microscope(int(self.random_seed.value), self._start_on)

    def _start_on(self, mic):
        try:
            self.experiment = self.build_experiment(mic)
        except HAEInputError as exc:
            self._cannot_start(exc)
            return
        self._overconfidence_warned = False
        self._launch()

    def _launch(self):
        self.monitor_plot.start_renderer()
        self.replay_trace = None   # the slider replays this run from now on, not a trace loaded before
        # the layers a run draws into: added one per event-loop turn (each costs a canvas repaint, 0.2 s in
        # software OpenGL; all at once held napari for 1.1 s at Start), long before the first step arrives
        geo, shape = self.view.geometry(self.layer_combo.value), self.dataset.scan_shape
        first, ref = self.experiment.view(), self.layer_combo.value   # taken before the worker starts
        self.last_view = first
        for add in [*self.view.output_layer_steps(geo, shape), lambda: self.view.show_run(first, ref)]:
            QTimer.singleShot(0, add)
        self._show_progress(first)
        said = ("Running: measuring seeds and training the first model..." if not first.n_steps and not
                self.experiment.started else f"Running: training on the {first.n_points} recorded points...")
        self.controller.start(self.experiment)   # the experiment is the worker's from here until it ends
        self.run_phase = "running"
        self.status.value = said
        self._update_buttons()

    def pause(self, *_):
        self.controller.pause()
        self.status.value = "Pausing after the current step."
        self._say_paused = True
        self._update_buttons()

    def resume(self, *_):
        self.controller.resume()
        self._say_paused = False
        self.run_phase = "running"
        self.status.value = "Running."
        self._update_buttons()

    def step_once(self, *_):
        self.controller.step_once()
        self._say_paused = True
        self.status.value = "One step, then a pause."
        self._update_buttons()

    def stop(self, *_):
        self.controller.stop()

    def _update_buttons(self):
        self.run_panel.update_buttons(self.controller.running, self.controller.paused)
        if self._connecting is not None:
            self.start_btn.enabled = self.resume_trace_btn.enabled = self.acquire_btn.enabled = False

    # -- what the worker yields (GUI thread): drawn from the immutable results and events alone -----------------
    def _on_item(self, item):
        if isinstance(item, Event):
            self._on_event(item)
            return
        # Each piece of drawing is its own event-loop task, so timers and input are served in between. They draw
        # the result the worker delivered (read-only): the run goes on meanwhile, a new one may even have started.
        view, ref = item.view, self.layer_combo.value
        if not self.view.has_output_layers():   # the user deleted one mid-run: it comes back
            self.view.prepare_output_layers(self.view.geometry(ref), view.scan_shape)
        self.view.show_maps({key: getattr(item, key) for key in MAPS})
        self._show_progress(view)
        QTimer.singleShot(0, lambda: self.view.show_run(view, ref))
        QTimer.singleShot(0, lambda: self._draw_step_info(item, view))
        QTimer.singleShot(0, lambda: self.monitor_plot.update_from(view))
        QTimer.singleShot(0, lambda: self._check_stuck(item, view))

    def _on_event(self, item: Event) -> None:
        if item.view is not None:
            self.last_view = item.view
        if item.kind == "seeds":
            self.view.show_run(item.view, self.layer_combo.value)
            self.status.value = f"{item.message} Training..."
        elif item.kind in ("applied", "refused", "fault"):
            (show_info if item.kind == "applied" else show_error)(item.message)
            if item.kind == "fault":
                self.run_phase = "paused"
            self.status.value = f"Paused: {item.message}" if item.kind == "fault" else item.message
            if item.view is not None:
                self.view.show_run(item.view, self.layer_combo.value)
            self._update_buttons()
        elif item.kind == "done":   # said now; the journal and the instrument are closed once the worker ends
            self._say_finished(item.view)
        elif item.kind == "paused" and self._say_paused:   # the step in flight has ended
            self._say_paused = False
            self.run_phase = "paused"
            self.status.value = (f"Paused after step {item.step} of {item.budget}: Resume (F6), Step once (F7) "
                                 "or Stop (F8).")

    def _show_progress(self, view) -> None:
        """The dock's own progress bar, and the run in napari's activity dock (``napari.utils.progress``)."""
        self._activity(view)
        bar = self.run_panel.progress.native
        top = max(1, int(view.budget))
        bar.setUpdatesEnabled(False)   # QProgressBar repaints at once on a new value: 50 ms of window composition
        if bar.maximum() != top:       # beside napari's OpenGL canvas; this way it is one update with the rest
            bar.setMaximum(top)
        bar.setValue(min(int(view.n_steps), top))
        bar.setUpdatesEnabled(True)

    def _activity(self, view) -> None:
        """The run's steps in napari's activity dock (opened from the status bar), beside other plugins' tasks."""
        from napari.utils import progress

        if self.run_progress is None:
            self.run_progress = progress(total=max(1, int(view.budget)), desc="hAE run")
        pbar = self.run_progress
        if pbar.total != max(1, int(view.budget)):
            pbar.total = max(1, int(view.budget))
        pbar.n = min(int(view.n_steps), pbar.total)
        pbar.refresh()

    def _end_activity(self) -> None:
        if self.run_progress is not None:
            self.run_progress.close()
            self.run_progress = None

    def _draw_step_info(self, res, view):
        self.last_view = view
        if self.run_phase == "running":   # a run's end and a pause stay said
            rec = res.record
            self.status.value = (f"step {res.step + 1}/{view.budget} ({res.kind}) at (y, x) = "
                                 f"{res.position}: {view.scalarizer_name} = {res.value:.4g}; best "
                                 f"{rec['best_so_far']:.4g}; mean uncertainty {rec['std_mean']:.3g}"
                                 + ("  [paused]" if self._paused else ""))
        if view.last_spectrum is None or view.index_of(res.position) is None:
            return
        self.show_spectrum(view.last_spectrum, f"step {res.step + 1} at {res.position}: {res.value:.4g}",
                           Scalarizer.from_dict(dict(view.scalarizer_spec)))
        self._update_buttons()

    def _check_stuck(self, res, view):
        """Warn (once per window) when the run is stuck; with a feature space, latent clustering counts too."""
        K = view.stuck_window
        latent = None if self.feature_space is None else self.feature_space.latent
        verdict = window_verdict(view.steps, view.scan_shape, K, latent=latent)   # the loop's rule, this step too
        if verdict is not None and verdict.stuck and res.step - self._stuck_warned_at >= K:
            self._stuck_warned_at = res.step
            msg = (f"The run looks stuck at step {res.step + 1}: {verdict.reason}. Consider: "
                   + "; ".join(verdict.suggestions) + ".")
            show_warning(msg)
            self.status.value = msg
            return
        cal = calibration_verdict(view.steps["z_score"], view.steps["log_score"])
        if cal is not None and cal.overconfident and not self._overconfidence_warned:   # once a run: then monitors
            self._overconfidence_warned = True
            msg = (f"The model is overconfident at step {res.step + 1}: {cal.reason}. Consider: "
                   + "; ".join(cal.suggestions) + ". (Orange ticks in the monitors mark further such steps.)")
            show_warning(msg)
            self.status.value = msg

    def _on_error(self, exc):
        self.experiment.close()   # the journal holds everything measured; close it cleanly
        self.run_phase = "stopped"
        show_error(f"The run stopped with an error: {sentence(exc)} The trace measured so far is kept: Save trace.")
        self.status.value = f"Stopped by an error at step {self.experiment.step_index}: {exc}"

    def _on_finished(self):
        # the worker has ended: the experiment is this thread's alone from here
        exp = self.experiment
        if exp is not None:
            view = self.last_view if self.last_view is not None else exp.view()
            self.view.show_run(view, self.layer_combo.value)   # the final state, drawn now
            exp.close()
            close_microscope(exp.microscope)   # a live instrument: the beam blanked, its cameras stopped
            self._activity(view)
            self._end_activity()
            if self.run_phase != "finished":
                self._say_finished(view)
            said = self.status.value
            self._enable_replay(exp.trace)   # the slider shows the last step (and says so) ...
            self.status.value = said         # ... but how the run ended is what stays said
        self._update_buttons()

    def _say_finished(self, view) -> None:
        self.run_phase = "finished"
        where = f" Journal: {view.journal}." if view.journal else ""
        self.status.value = (f"Run {'finished' if view.done else 'stopped'}: {view.n_steps} steps, "
                             f"{view.n_points} spectra.{where} Save the trace to keep it as HDF5.")
