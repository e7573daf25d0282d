"""The dock's trace actions: save, load and show, resume, replay, feature space, export (and their dialogs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from .._layers import layer_scale
from ..core.analysis.feature_space import TrainingCancelled
from ..core.analysis.replay import replay_state
from ..core.errors import HAEInputError
from ..core.model import compute
from ..core.record.trace import JOURNAL_NAME, Trace
from ..core.run.experiment import Experiment
from .monitor_panel import feature_space_worker

# a run in progress or killed lives in its journal: the open dialogs show it beside trace.h5
TRACE_FILTER = "hAE traces (*.h5 *.journal);;All files (*)"


class TraceBrowser:
    """Owns the trace shown by the replay slider (a loaded one, or the dock's run) and the feature space.

    It saves and resumes the run session's run (``run``), shows traces in the layer view and the monitors, and
    trains the rVAE in a worker the controller holds (so that closing napari stops it).
    """

    def __init__(self, parent, viewer, panels: dict, run, link, monitor_plot, tabs, status):
        self.parent, self.viewer, self.run, self.link = parent, viewer, run, link
        self.data, self.monitors = panels["data"], panels["monitors"]
        self.view, self.controller = run.view, run.controller
        self.monitor_plot, self.tabs, self.status = monitor_plot, tabs, status
        self.replay_trace = None    # a loaded trace shown by the replay slider
        self.feature_space = None   # core FeatureSpace of the dataset, when computed
        self.feature_epochs = 15

    @property
    def dataset(self):
        return self.data.dataset

    @property
    def experiment(self):
        return self.run.experiment

    @property
    def feature_worker(self):
        return self.controller.feature_worker

    def latent(self):
        """The feature space's latent positions (None before one is computed)."""
        return None if self.feature_space is None else self.feature_space.latent

    def _patch_size(self) -> int:
        """The patch size of the run shown (its newest recorded step's), else the data panel's."""
        view = self.run.last_view
        recorded = view.steps.get("patch_size", ()) if view is not None else ()
        if len(recorded) and np.isfinite(recorded[-1]):
            return int(recorded[-1])
        return int(self.data.patch_size.value)

    def forget_loaded(self) -> None:
        """A run starts: the slider replays it from now on, not a trace loaded before."""
        self.replay_trace = None

    def save_trace(self, path) -> Path:
        if self.experiment is None:
            raise HAEInputError("There is no run to save.", "start a run first.")
        return self.experiment.trace.save(path)

    def load_trace(self, path) -> Trace:
        """Show a saved trace in the hAE layers, at its last step; the replay slider then walks through it."""
        if self.controller.running:
            raise HAEInputError("A run is going: its layers are in use.", "stop or finish it, then load the trace.")
        tr = Trace.load(path)
        scan_shape = tuple(tr.dataset.get("scan_shape") or tr.structural.shape)
        layer = self.data.layer_combo.value
        if layer is not None and tuple(self.dataset.scan_shape) == scan_shape:
            geo = self.view.geometry(layer)
        else:   # another dataset (or none open): the trace's own calibration, and its structural image shown
            scale, units = layer_scale(float(tr.dataset.get("pixel_size", 1.0)), tr.dataset.get("pixel_units", "px"))
            geo = {"scale": scale, "units": (units, units)}
            name = f"{tr.dataset.get('name', Path(path).stem)} (structural, from the trace)"
            if name not in self.viewer.layers:
                self.viewer.add_image(tr.structural, name=name, colormap="gray", **geo)
        self.view.new_run()
        self.view.prepare_output_layers(geo, scan_shape)
        self.replay_trace = tr
        self.enable_replay(tr)
        self.show_replay()
        self.status.value = (f"Loaded {path}: {tr.n_points} points, {tr.n_steps} steps, "
                             f"{len(tr.interventions)} interventions. Move the replay slider to walk through it.")
        return tr

    def resume_trace(self, path) -> Experiment | None:
        """Continue a saved or crashed run (trace.h5, trace.journal or its folder) on the selected dataset (the
        resumed experiment; None while a connecting microscope connects: it starts when connected)."""
        if self.controller.running:
            raise HAEInputError("A run is already going.", "stop it before resuming another one.")
        data = self.dataset
        if data is None:
            raise HAEInputError("No dataset is selected.", "open the dataset the run was started on, then resume.")
        tr = Trace.load(path)
        data.check_same_source(tr.dataset.get("fingerprint"), "The run being resumed")

        started = []

        def resume_on(mic):
            device = compute.usable(tr.settings["model"])   # "auto" where the run's GPU is not on this PC
            experiment = Experiment.resume(tr, mic, journal=self.run.new_run_dir() / JOURNAL_NAME, device=device)
            started.append(experiment)
            self.run.launch(experiment)

        self.link.with_microscope(int(tr.settings.get("random_seed", 0)) + tr.n_points, resume_on)
        return started[0] if started else None

    def _shown_trace(self):
        return self.replay_trace or (self.experiment.trace if self.experiment is not None else None)

    def enable_replay(self, trace: Trace):
        self.monitors.enable_replay(trace.n_steps)
        self.monitor_plot.update_from(trace, force=True)
        self.tabs.setCurrentWidget(self.monitor_plot)

    def show_replay(self, step=None):
        """Show the run as it stood after ``step`` (slider): stored maps, trajectory so far, monitors."""
        trace = self._shown_trace()
        if self.controller.running or trace is None or trace.n_steps == 0:
            return
        step = int(self.monitors.replay.value if step is None else step) - 1   # the slider counts steps from 1
        st = replay_state(trace, step)
        self.view.show_maps(st.maps)
        self.view.show_points(st.positions, st.point_steps, st.values, trace.kinds[:len(st.values)],
                              int(trace.settings.get("budget", trace.n_steps)))
        self.monitor_plot.update_from(trace, upto=step, force=True)
        rec = st.record
        self.status.value = (f"Replay: step {step + 1}/{trace.n_steps} at {tuple(rec['position'])}, policy "
                             f"{rec['policy']}, mean uncertainty {rec['std_mean']:.3g}"
                             + ("" if st.maps_step in (step, None) else f"; maps of step {st.maps_step + 1}"))

    def compute_feature_space(self, *_, epochs: int | None = None):
        """Train AtomAI's rVAE on all patches in a worker (progress bar), then draw the latent trajectory."""
        data = self.dataset
        if self.controller.feature_worker is not None:   # the button reads "Cancel feature space" while it trains
            self.status.value = "Cancelling the feature space (within one batch)..."
            self.controller.feature_worker.cancel(wait=0)
            return None
        if data is None:
            return None
        n = self._patch_size()
        epochs = int(epochs or self.feature_epochs)

        def on_epoch(e, loss):
            self.status.value = f"rVAE epoch {e}/{epochs}: -ELBO {loss:.4g}"

        def on_ready(fs):
            self.feature_space = fs
            self.monitor_plot.set_latent(fs.latent)
            if (trace := self._shown_trace()) is not None:
                self.monitor_plot.update_from(trace, force=True)
            ref = self.data.layer_combo.value
            self.view.show_manifold(fs.manifold, *([self.view.geometry(ref)["units"]] if ref is not None else []))
            self.tabs.setCurrentWidget(self.monitor_plot)
            self.status.value = f"Feature space ready (patch {n}, {len(fs.losses)} epochs)."

        def on_done():
            self.controller.feature_worker = None
            self.monitors.feature_btn.text = "Feature space (rVAE)"

        def on_error(exc):
            if isinstance(exc, TrainingCancelled):
                self.status.value = "Feature space cancelled: nothing was kept. Press Feature space to train again."
            else:
                show_error(f"rVAE training failed: {exc}")

        self.controller.feature_worker = feature_space_worker(data.structural, n, epochs, on_epoch, on_ready, on_error,
                                                    on_done)
        self.monitors.feature_btn.text = "Cancel feature space"
        return self.controller.feature_worker

    def export_monitors(self, path) -> Path:
        path = Path(path)
        self.monitor_plot.save(path)
        return path

    # -- dialogs -------------------------------------------------------------------------------------------
    def _dialog(self, save: bool, title: str, start: str, filt: str, action, done: str | None = None):
        ask = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = ask(self.parent, title, start, filt)
        if not path:
            return
        try:
            action(path)
            if done:
                show_info(done.format(path=path))
        except HAEInputError as exc:
            show_error(str(exc))
        except Exception as exc:   # never a red toast without text: say what failed and what was kept
            show_error(f"{title} failed ({type(exc).__name__}: {exc}). The run and its journal are unchanged.")

    def export_dialog(self, *_):
        self._dialog(True, "Export monitors", "monitors.png", "Images (*.png *.svg)", self.export_monitors,
                     "Monitors written to {path}")

    def save_dialog(self, *_):
        self._dialog(True, "Save hAE trace", "trace.h5", "HDF5 (*.h5)", self.save_trace, "Trace saved to {path}")

    def resume_dialog(self, *_):
        self._dialog(False, "Resume hAE run", str(self.run.runs_dir), TRACE_FILTER, self.resume_trace)

    def load_dialog(self, *_):
        self._dialog(False, "Load hAE trace", str(self.run.runs_dir), TRACE_FILTER, self.load_trace)
