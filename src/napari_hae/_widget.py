"""The hAE dock: data and patch size, scalarizer, policy and run control, driving the core in a worker thread.

The GUI thread only translates: it reads widget values into core objects, queues interventions, and draws what
the worker yields. Training, prediction and acquisition run in a ``napari.qt.threading`` worker; interventions are
applied by the worker between two steps, so they are recorded before the step they affect.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, Slider,
                              SpinBox)
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from platformdirs import user_data_dir
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QTabWidget, QVBoxLayout, QWidget

from ._layers import dataset_of
from ._torch_preload import preload_torch_compiler
from ._monitor_plot import MonitorPlot
from ._spectrum_plot import SpectrumPlot
from .core.policy import POLICIES
from .core.errors import HAEInputError, HAERunError
from .core.run.experiment import Experiment, ExperimentSettings
from .core.analysis.monitors import stuck_verdict
from .core.analysis.replay import replay_state
from .core.instrument.microscope import SimulatedMicroscope
from .core.targets.scalarizers import SCALARIZERS, Scalarizer
from .core.record.trace import JOURNAL_NAME, Trace

SEEDS = "hAE seeds"
TRAJECTORY = "hAE trajectory"
VALUES = "hAE measured values"
OBJECTS = "hAE objects"
MAPS = {"mean": ("hAE predicted mean", "viridis"), "std": ("hAE uncertainty", "magma"),
        "acq": ("hAE acquisition", "cividis")}
POLICY_PARAM = {"ei": "xi", "pi": "xi", "ucb": "beta", "ei_penalized": "xi", "ucb_travel": "beta",
                "ucb_scheduled": "beta_start"}   # the parameter the dock edits (others keep their defaults)
PARAM_DEFAULT = {"xi": 0.01, "beta": 4.0, "beta_start": 16.0}
PARETO = "hAE Pareto set"
OBJECT_COLORS = {"visit": "lime", "avoid": "red"}
TWO_BAND = ("band_ratio",)

preload_torch_compiler()   # before any worker trains: see _torch_preload


class HAEWidget(QWidget):
    """Dock widget running a human-in-the-loop automated experiment on the selected dataset."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.experiment: Experiment | None = None
        self.worker = None
        self._pbar = None
        self._lock = threading.Lock()
        self._pending: list = []           # interventions queued for the worker: (label, fn(exp))
        self._paused = False
        self._step_once = False
        self._stop = False
        self._n_objects_seen = 0
        self._objects_at_start: list = []   # objects drawn before Start: (mask, mode, label)
        self._mean_spectrum = None          # of the selected dataset, computed once when it is selected

        # -- data & patch size ------------------------------------------------------------------------
        self.layer_combo = ComboBox(label="dataset", choices=self._dataset_layers)
        self.patch_size = SpinBox(label="patch size (px)", value=16, min=3, max=256)
        self.data_box = Container(widgets=[self.layer_combo, self.patch_size], label="Data")
        # -- scalarizer -------------------------------------------------------------------------------
        one_d = [k for k, v in SCALARIZERS.items() if v.signal_ndim == 1]
        self.scalarizer_name = ComboBox(label="scalarizer", choices=one_d, value="band_integral")
        self.band_a = FloatSpinBox(label="band start (eV)", min=-1e6, max=1e6, step=0.05)
        self.band_b = FloatSpinBox(label="band end (eV)", min=-1e6, max=1e6, step=0.05)
        self.band_a2 = FloatSpinBox(label="band 2 start (eV)", min=-1e6, max=1e6, step=0.05, visible=False)
        self.band_b2 = FloatSpinBox(label="band 2 end (eV)", min=-1e6, max=1e6, step=0.05, visible=False)
        self.multi_objective = CheckBox(text="also maximise band 2 (multi-objective, Pareto set)", value=False)
        self.apply_scalarizer = PushButton(text="Apply scalarizer")
        self.scalarizer_box = Container(widgets=[self.scalarizer_name, self.band_a, self.band_b, self.multi_objective,
                                                 self.band_a2, self.band_b2, self.apply_scalarizer],
                                        label="Scalarizer")
        # -- policy -----------------------------------------------------------------------------------
        self.policy_name = ComboBox(label="policy", choices=list(POLICIES), value="ucb")
        self.policy_param = FloatSpinBox(label="beta", value=4.0, min=0.0, max=1e4, step=0.01)
        self.apply_policy = PushButton(text="Apply policy")
        self.policy_box = Container(widgets=[self.policy_name, self.policy_param, self.apply_policy],
                                    label="Policy")
        # -- run control ------------------------------------------------------------------------------
        self.n_seeds = SpinBox(label="random seeds (if no points)", value=10, min=1, max=10000)
        self.budget = SpinBox(label="budget (steps)", value=60, min=1, max=1_000_000)
        self.random_seed = SpinBox(label="random seed", value=0, min=0, max=2**31 - 1)
        self.object_mode = ComboBox(label="new objects", choices=["avoid", "visit"], value="avoid")
        self.start_btn = PushButton(text="Start")
        self.pause_btn = PushButton(text="Pause")
        self.step_btn = PushButton(text="Step once")
        self.resume_btn = PushButton(text="Resume")
        self.stop_btn = PushButton(text="Stop")
        self.save_btn = PushButton(text="Save trace")
        self.load_btn = PushButton(text="Load trace")
        self.resume_trace_btn = PushButton(text="Resume trace...")
        buttons1 = Container(widgets=[self.start_btn, self.pause_btn, self.step_btn], layout="horizontal", labels=False)
        buttons2 = Container(widgets=[self.resume_btn, self.stop_btn], layout="horizontal", labels=False)
        buttons3 = Container(widgets=[self.save_btn, self.load_btn, self.resume_trace_btn], layout="horizontal",
                             labels=False)
        self.noise = CheckBox(text="re-draw Poisson noise per acquisition", value=False)
        self.microscope_kind = ComboBox(label="microscope", choices=["simulator", "remote"], value="simulator")
        self.microscope_address = LineEdit(label="address", value="tcp://127.0.0.1:5555", visible=False)
        self.microscope_token = LineEdit(label="token", value=os.environ.get("NAPARI_HAE_TOKEN", ""),
                                         visible=False)
        self.microscope_token.native.setEchoMode(self.microscope_token.native.EchoMode.Password)
        self.run_box = Container(widgets=[self.n_seeds, self.budget, self.random_seed, self.microscope_kind,
                                          self.microscope_address, self.microscope_token, self.noise,
                                          self.object_mode, buttons1, buttons2, buttons3], label="Run")
        self.status = Label(value="Open a dataset (File > Open Sample > napari hAE), then Start.")
        self.plot = SpectrumPlot(self)
        self.monitor_plot = MonitorPlot(self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.plot, "Spectrum")
        self.tabs.addTab(self.monitor_plot, "Monitors")
        self.replay = Slider(label="replay step", min=-1, max=0, value=0, enabled=False, tracking=True)
        self.feature_btn = PushButton(text="Feature space (rVAE)")
        self.export_btn = PushButton(text="Export monitors...")
        self.monitor_box = Container(widgets=[self.replay, Container(widgets=[self.feature_btn, self.export_btn],
                                                                     layout="horizontal", labels=False)],
                                     label="Monitors")
        self.replay_trace: Trace | None = None   # a loaded trace shown by the replay slider
        self.feature_space = None               # core.feature_space.FeatureSpace of the dataset, when computed
        self._feature_worker = None
        self._stuck_warned_at = -10**9
        # advanced, not shown: tests and power users may change them before Start
        self.fit_iterations = 30
        self.fit_iterations_first = 150
        self.hidden = (64, 32)
        self.feature_epochs = 15
        # every run journals each measurement here before the next step (crash-safe); NAPARI_HAE_RUNS_DIR overrides
        env = os.environ.get("NAPARI_HAE_RUNS_DIR")
        self.runs_dir = Path(env) if env else Path(user_data_dir("napari-hae")) / "runs"

        self.setMaximumWidth(460)
        layout = QVBoxLayout(self)
        for box in (self.data_box, self.scalarizer_box, self.policy_box, self.run_box):
            layout.addWidget(box.native)
        layout.addWidget(self.status.native)
        layout.addWidget(self.tabs)
        layout.addWidget(self.monitor_box.native)
        layout.addStretch(1)

        for band in (self.band_a, self.band_b, self.band_a2, self.band_b2):
            band.changed.connect(self._on_band_edited)
        self.layer_combo.changed.connect(self._on_dataset_changed)
        self.scalarizer_name.changed.connect(self._on_scalarizer_name)
        self.policy_name.changed.connect(self._on_policy_name)
        self.apply_scalarizer.clicked.connect(self.request_scalarizer)
        self.apply_policy.clicked.connect(self.request_policy)
        self.patch_size.changed.connect(self._on_patch_size)
        self.start_btn.clicked.connect(self.start)
        self.pause_btn.clicked.connect(self.pause)
        self.step_btn.clicked.connect(self.step_once)
        self.resume_btn.clicked.connect(self.resume)
        self.stop_btn.clicked.connect(self.stop)
        self.save_btn.clicked.connect(self._save_dialog)
        self.load_btn.clicked.connect(self._load_dialog)
        self.resume_trace_btn.clicked.connect(self._resume_dialog)
        self.object_mode.changed.connect(self._on_object_mode)
        self.microscope_kind.changed.connect(self._on_microscope_kind)
        self.multi_objective.changed.connect(self._on_scalarizer_name)
        self.replay.changed.connect(self.show_replay)
        self.feature_btn.clicked.connect(self.compute_feature_space)
        self.export_btn.clicked.connect(self._export_dialog)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._on_dataset_changed()
        self._update_buttons()

    # ------------------------------------------------------------------------------------------------------
    # data
    def _dataset_layers(self, *_):
        return [layer for layer in self.viewer.layers if dataset_of(layer) is not None]

    def _refresh_layers(self, *_):
        self.layer_combo.reset_choices()

    @property
    def dataset(self):
        return dataset_of(self.layer_combo.value)

    def _on_dataset_changed(self, *_):
        data = self.dataset
        if data is None:
            return
        if data.energy is not None:
            lo, hi = data.energy.limits
            for w in (self.band_a, self.band_b, self.band_a2, self.band_b2):
                w.min, w.max, w.step = lo, hi, max(abs(data.energy.scale), 1e-6)
            if data.name == "nanoparticles":
                from .core.data.samples.nanoparticles import BANDS

                (a, b), (a2, b2) = BANDS["dipole"], BANDS["bulk"]
            else:
                a, b = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
                a2, b2 = lo, a
            self.band_a.value, self.band_b.value, self.band_a2.value, self.band_b2.value = a, b, a2, b2
        self._mean_spectrum = data.spectra.reshape(-1, *data.signal_shape).mean(0)
        self.patch_size.max = min(data.scan_shape)
        self.patch_size.value = min(self.patch_size.value, min(data.scan_shape))
        self._ensure_input_layers()
        self._show_mean_spectrum()
        layer = self.layer_combo.value
        if self._on_click not in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.append(self._on_click)

    def _ensure_input_layers(self):
        data, layer = self.dataset, self.layer_combo.value
        if SEEDS not in self.viewer.layers:
            self.viewer.add_points(np.zeros((0, 2)), name=SEEDS, scale=layer.scale, size=max(data.scan_shape) / 50,
                                   face_color="cyan", border_color="white", symbol="square")
        if OBJECTS not in self.viewer.layers:
            shapes = self.viewer.add_shapes(name=OBJECTS, scale=layer.scale, face_color=[0, 0, 0, 0], edge_width=1,
                                            edge_color=OBJECT_COLORS[self.object_mode.value])
            shapes.events.data.connect(self._on_objects_changed)
            self._n_objects_seen = 0

    def _on_object_mode(self, *_):
        if OBJECTS in self.viewer.layers:
            self.viewer.layers[OBJECTS].current_edge_color = OBJECT_COLORS[self.object_mode.value]

    # ------------------------------------------------------------------------------------------------------
    # reading the docks into core objects
    def current_scalarizer(self) -> Scalarizer:
        name = self.scalarizer_name.value
        params = {"a": self.band_a.value, "b": self.band_b.value}
        if name in TWO_BAND:
            params.update(a2=self.band_a2.value, b2=self.band_b2.value)
        return Scalarizer(name, params)

    def _on_band_edited(self, *_):
        """Shade the edited band on the plot at once; the run uses it after 'Apply scalarizer'."""
        self.plot.set_bands(self._bands(self.current_scalarizer()))

    def current_policy(self) -> dict:
        name = self.policy_name.value
        params = {POLICY_PARAM[name]: self.policy_param.value} if name in POLICY_PARAM else {}
        return {"name": name, "params": params}

    def _on_scalarizer_name(self, *_):
        two = self.scalarizer_name.value in TWO_BAND or self.multi_objective.value
        self.band_a2.visible = self.band_b2.visible = two

    def current_objectives(self) -> list | None:
        """Further objectives of the multi-objective mode: the same scalarizer on band 2."""
        if not self.multi_objective.value or self.scalarizer_name.value in TWO_BAND:
            return None
        return [Scalarizer(self.scalarizer_name.value, {"a": self.band_a2.value, "b": self.band_b2.value}).to_dict()]

    def _on_policy_name(self, *_):
        name = self.policy_name.value
        self.policy_param.visible = name in POLICY_PARAM
        if name in POLICY_PARAM:
            self.policy_param.label = POLICY_PARAM[name]
            self.policy_param.value = PARAM_DEFAULT[POLICY_PARAM[name]]

    # ------------------------------------------------------------------------------------------------------
    # interventions (queued; the worker applies them before its next step)
    def _queue(self, label: str, fn) -> bool:
        """Queue an intervention for a live run; False when no run is going (dock values are used at Start)."""
        if self.experiment is None or self.worker is None:
            return False
        with self._lock:
            self._pending.append((label, fn))
        self.status.value = f"Queued: {label} (applied before the next step)"
        return True

    def request_scalarizer(self, *_):
        try:
            sc = self.current_scalarizer()
            if self.dataset is not None:
                sc.validate(self.dataset.energies, self.dataset.signal_shape)
        except HAEInputError as exc:
            show_error(str(exc))
            return
        self._queue(f"scalarizer {sc.label()}", lambda exp: exp.set_scalarizer(sc))
        self._show_mean_spectrum()

    def request_policy(self, *_):
        pol = self.current_policy()
        self._queue(f"policy {pol['name']} {pol['params']}", lambda exp: exp.set_policy(pol["name"], **pol["params"]))

    def _on_patch_size(self, *_):
        n = int(self.patch_size.value)
        self._queue(f"patch size {n}", lambda exp: exp.set_patch_size(n))

    def _on_objects_changed(self, event=None):
        layer = self.viewer.layers[OBJECTS]
        n = len(layer.data)
        if n <= self._n_objects_seen:
            self._n_objects_seen = n
            return
        mode = self.object_mode.value
        masks = layer.to_masks(mask_shape=self.dataset.scan_shape)
        for i in range(self._n_objects_seen, n):
            mask = np.asarray(masks[i], dtype=bool)
            label = f"{mode} #{i}"
            if not self._queue(f"object {label}", lambda exp, m=mask, mo=mode, la=label: exp.add_object(m, mo, la)):
                self._objects_at_start.append((mask, mode, label))
        self._n_objects_seen = n

    # ------------------------------------------------------------------------------------------------------
    # run control
    def _seed_positions(self):
        if SEEDS not in self.viewer.layers or len(self.viewer.layers[SEEDS].data) == 0:
            return None
        pts = np.round(np.asarray(self.viewer.layers[SEEDS].data)).astype(int)
        return [tuple(p) for p in dict.fromkeys(map(tuple, pts))]

    def build_experiment(self) -> Experiment:
        data = self.dataset
        if data is None:
            raise HAEInputError("No dataset is selected.", "open one (File > Open / Open Sample) and pick it.")
        seeds = self._seed_positions()
        settings = ExperimentSettings(
            patch_size=int(self.patch_size.value), scalarizer=self.current_scalarizer().to_dict(),
            policy=self.current_policy(), n_seeds=int(self.n_seeds.value),
            seed_mode="given" if seeds else "random", seed_positions=seeds, budget=int(self.budget.value),
            random_seed=int(self.random_seed.value), fit_iterations=self.fit_iterations,
            fit_iterations_first=self.fit_iterations_first, hidden=tuple(self.hidden),
            objectives=self.current_objectives())
        mic = self._microscope(data, int(self.random_seed.value))
        exp = Experiment(mic, settings, dataset_info=data.describe(), journal=self._new_run_dir() / JOURNAL_NAME)
        for mask, mode, label in self._objects_at_start:
            exp.add_object(mask, mode, label)
        return exp

    def _on_microscope_kind(self, *_):
        remote = self.microscope_kind.value == "remote"
        self.microscope_address.visible = self.microscope_token.visible = remote
        self.noise.visible = not remote

    def _microscope(self, data, seed: int):
        """The simulator on the selected dataset, or the networked microscope (its scan must match the layer)."""
        if self.microscope_kind.value == "simulator":
            return SimulatedMicroscope(data, noise="poisson" if self.noise.value else None, seed=seed)
        from .core.instrument.remote import MicroscopeUnavailable, RemoteMicroscope

        try:
            mic = RemoteMicroscope(self.microscope_address.value.strip(), token=self.microscope_token.value or None)
        except MicroscopeUnavailable as exc:
            raise HAEInputError(f"No microscope answers at {self.microscope_address.value} ({exc}).",
                                "start the server (napari-hae serve ...) or check the address.") from exc
        if tuple(mic.scan_shape) != tuple(data.scan_shape):
            raise HAEInputError(f"The remote microscope scans {mic.scan_shape}, the selected layer is "
                                f"{data.scan_shape}.", "select the layer of the region the microscope scans.")
        return mic

    def _new_run_dir(self) -> Path:
        """A fresh folder for this run's crash-safe journal (under ``runs_dir``)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        d = Path(self.runs_dir) / stamp
        i = 1
        while d.exists():
            d = Path(self.runs_dir) / f"{stamp}-{i}"
            i += 1
        d.mkdir(parents=True)
        return d

    def start(self, *_):
        if self.worker is not None:
            show_warning("A run is already going: stop it first.")
            return
        try:
            self.experiment = self.build_experiment()
        except HAEInputError as exc:
            show_error(str(exc))
            self.status.value = f"Cannot start: {exc}"
            return
        self._objects_at_start = []
        self._launch()

    def resume_trace(self, path) -> Experiment:
        """Continue a saved or crashed run (trace.h5, trace.journal or its folder) on the selected dataset."""
        if self.worker is not None:
            raise HAEInputError("A run is already going.", "stop it before resuming another one.")
        data = self.dataset
        if data is None:
            raise HAEInputError("No dataset is selected.", "open the dataset the run was started on, then resume.")
        tr = Trace.load(path)
        mic = self._microscope(data, int(tr.settings.get("random_seed", 0)) + tr.n_points)
        self.experiment = Experiment.resume(tr, mic, journal=self._new_run_dir() / JOURNAL_NAME)
        self._launch()
        return self.experiment

    def _launch(self):
        self.monitor_plot.start_renderer()
        self._paused = self._step_once = self._stop = False
        self._pending = []
        self._prepare_output_layers()
        self._pbar = progress(total=self.experiment.settings.budget, desc="hAE run")
        self._pbar.update(self.experiment.step_index)
        self.worker = create_worker(self._loop)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()
        self.status.value = "Running: measuring seeds and training the first model..."
        self._update_buttons()

    def pause(self, *_):
        self._paused = True
        self.status.value = "Pausing after the current step."
        self._update_buttons()

    def resume(self, *_):
        self._paused = False
        self._update_buttons()

    def step_once(self, *_):
        self._paused = True
        self._step_once = True
        self._update_buttons()

    def stop(self, *_):
        self._stop = True
        if self.worker is not None:
            self.worker.quit()

    def _loop(self):
        """Generator run in the worker thread. Yields StepResults, messages, or None while paused."""
        import torch

        # leave one core to napari's GUI thread so drawing never waits for the CPU behind training
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        try:
            yield from self._steps()
        finally:
            torch.set_num_threads(threads)

    def _steps(self):
        exp = self.experiment
        exp.start()
        yield ("seeds", None)
        while not exp.done and not self._stop:
            with self._lock:
                pending, self._pending = self._pending, []
            for label, fn in pending:
                try:
                    fn(exp)
                    yield ("message", f"Applied before step {exp.step_index}: {label}")
                except HAEInputError as exc:
                    yield ("error", str(exc))
            if self._paused and not self._step_once:
                time.sleep(0.02)
                yield None
                continue
            self._step_once = False
            try:
                res = exp.step()
            except HAERunError as exc:   # instrument or model fault: pause; the trace is intact
                self._paused = True
                yield ("fault", str(exc))
                continue
            yield res
        yield ("done", None)

    # ------------------------------------------------------------------------------------------------------
    # drawing what the worker yields (GUI thread)
    def _prepare_output_layers(self):
        layer = self.layer_combo.value
        ny, nx = self.dataset.scan_shape
        for key, (name, cmap) in MAPS.items():
            if name not in self.viewer.layers:
                self.viewer.add_image(np.zeros((ny, nx), np.float32), name=name, colormap=cmap, scale=layer.scale,
                                      opacity=0.7, blending="translucent", visible=(key == "mean"))
        if VALUES not in self.viewer.layers:
            self.viewer.add_points(np.zeros((0, 2)), name=VALUES, scale=layer.scale, size=max(ny, nx) / 40,
                                   symbol="square", border_width=0, visible=False,
                                   features={"value": np.zeros(0)})
        if TRAJECTORY not in self.viewer.layers:
            self.viewer.add_points(np.zeros((0, 2)), name=TRAJECTORY, scale=layer.scale,
                                   size=max(ny, nx) / 60, border_color="white",
                                   features={"step": np.zeros(0, int), "value": np.zeros(0), "kind": []})
        self._draw_trajectory()

    def _draw_trajectory(self):
        exp = self.experiment
        if exp is None or TRAJECTORY not in self.viewer.layers:
            return
        import matplotlib

        tr = exp.trace
        n = tr.n_points
        layer = self.viewer.layers[TRAJECTORY]
        pos = tr.positions_array().astype(float)
        steps = np.asarray(tr.point_steps)
        layer.data = pos
        layer.features = {"step": steps, "value": np.asarray(tr.values[:n]), "kind": list(tr.kinds[:n])}
        if n:
            cmap = matplotlib.colormaps["plasma"]
            frac = (steps + 1) / max(1, exp.settings.budget)
            colors = np.where((steps < 0)[:, None], np.array([[0, 1, 1, 1.0]]), cmap(np.clip(frac, 0, 1)))
            layer.face_color = colors
        if exp.objectives and n:
            pos_p, vals_p = exp.pareto_set()
            if PARETO not in self.viewer.layers:
                layer0 = self.layer_combo.value
                self.viewer.add_points(np.zeros((0, 2)), name=PARETO, scale=layer0.scale, symbol="star",
                                       size=max(exp.scan_shape) / 30, face_color="gold", border_color="black",
                                       features={"objective_1": np.zeros(0), "objective_2": np.zeros(0)})
            pl = self.viewer.layers[PARETO]
            pl.data = pos_p.astype(float)
            pl.features = {f"objective_{i + 1}": vals_p[:, i] for i in range(vals_p.shape[1])}
        if VALUES in self.viewer.layers and n:
            # the scalarizer map of measured points, under the *current* scalarizer (re-computed after a change)
            vals = exp.scalarizer(tr.spectra_array()[:n], exp.energies)
            vl = self.viewer.layers[VALUES]
            vl.data = pos
            vl.features = {"value": vals}
            lo, hi = float(vals.min()), float(vals.max())
            vl.face_color = matplotlib.colormaps["viridis"]((vals - lo) / (hi - lo if hi > lo else 1.0))

    def _on_yielded(self, item):
        if item is None:
            return
        if isinstance(item, tuple):
            kind, payload = item
            if kind == "seeds":
                self._draw_trajectory()
                self.status.value = f"Seeds measured ({self.experiment.trace.n_points}); training..."
            elif kind == "message":
                self.status.value = payload
                show_info(payload)
            elif kind == "error":
                show_error(payload)
                self.status.value = payload
            elif kind == "fault":
                show_error(payload)
                self.status.value = f"Paused: {payload}"
                self._update_buttons()
            elif kind == "done":
                self._finished_status()
            return
        # Each piece of drawing is its own event-loop task, so timers and input are served in between.
        self._draw_maps(item)
        QTimer.singleShot(0, self._draw_trajectory)
        QTimer.singleShot(0, lambda: self._draw_step_info(item))
        QTimer.singleShot(0, lambda: self.monitor_plot.update_from(self.experiment.trace))
        QTimer.singleShot(0, lambda: self._check_stuck(item))

    def _draw_maps(self, res):
        self._show_maps({key: getattr(res, key) for key in MAPS})
        if self._pbar is not None:
            self._pbar.update(1)

    def _show_maps(self, maps: dict):
        """Put the mean / std / acquisition maps into their layers (-inf acquisition: not available)."""
        for key, (name, _) in MAPS.items():
            m = maps.get(key)
            if m is None or name not in self.viewer.layers:
                continue
            m = np.asarray(m, dtype=np.float32)
            finite = np.isfinite(m)
            if key == "acq":
                m = np.where(finite, m, m[finite].min() if finite.any() else 0.0)
            layer = self.viewer.layers[name]
            layer.data = m
            lo, hi = float(m.min()), float(m.max())
            layer.contrast_limits = (lo, hi if hi > lo else lo + 1e-12)

    def _draw_step_info(self, res):
        exp = self.experiment
        if exp is None:
            return
        sc = exp.scalarizer
        if not self.status.value.startswith("Run "):
            self.status.value = (f"step {res.step + 1}/{exp.settings.budget} ({res.kind}) at (y, x) = "
                                 f"{res.position}: {sc.name} = {res.value:.4g}; best {res.record['best_so_far']:.4g}; "
                                 f"mean uncertainty {res.record['std_mean']:.3g}" + ("  [paused]" if self._paused else ""))
        i = exp.trace.positions.index(tuple(res.position))
        self.plot.show_spectrum(exp.energies, exp.trace.spectra[i], self._bands(sc),
                                f"step {res.step + 1} at {res.position}: {res.value:.4g}", self._units())
        self._update_buttons()

    def _check_stuck(self, res):
        """Warn (once per episode) when the run is stuck; with a feature space, latent clustering counts too."""
        exp = self.experiment
        if exp is None:
            return
        stuck = bool(res.record.get("stuck"))
        K = exp.stuck_window
        tr = exp.trace
        verdict = None
        if self.feature_space is not None and tr.n_steps >= K:
            verdict = stuck_verdict(tr.steps["position"][-K:], tr.steps["std_mean"][-K:], exp.scan_shape,
                                    latent=self.feature_space.latent)
            stuck = stuck or verdict.stuck
        elif stuck:
            verdict = stuck_verdict(tr.steps["position"][-K:], tr.steps["std_mean"][-K:], exp.scan_shape)
        if stuck and res.step - self._stuck_warned_at >= K:
            self._stuck_warned_at = res.step
            msg = (f"The run looks stuck at step {res.step + 1}: {verdict.reason}. Consider: "
                   + "; ".join(verdict.suggestions) + ".")
            show_warning(msg)
            self.status.value = msg

    def _on_error(self, exc):
        self.experiment.close()   # the journal holds everything measured; close it cleanly
        show_error(f"The run stopped with an error: {exc}. The trace measured so far is kept: Save trace.")
        self.status.value = f"Stopped by an error at step {self.experiment.step_index}: {exc}"

    def _on_finished(self):
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self._draw_trajectory()   # the final state, drawn now rather than deferred
        if self.experiment is not None:
            self._enable_replay(self.experiment.trace)
        if self.experiment is not None and not self.status.value.startswith("Run "):
            self._finished_status()
        self._update_buttons()

    def _finished_status(self):
        exp = self.experiment
        done = "finished" if exp.done else "stopped"
        where = f" Journal: {exp.trace.journal.path}." if exp.trace.journal is not None else ""
        exp.close()
        self.status.value = (f"Run {done}: {exp.trace.n_steps} steps, {exp.trace.n_points} spectra.{where} "
                             "Save the trace to keep it as HDF5.")

    def _update_buttons(self):
        running = self.worker is not None
        self.start_btn.enabled = not running
        self.pause_btn.enabled = running and not self._paused
        self.resume_btn.enabled = running and self._paused
        self.step_btn.enabled = running
        self.stop_btn.enabled = running

    # ------------------------------------------------------------------------------------------------------
    # spectra
    def _units(self):
        d = self.dataset
        return d.energy.units if d is not None and d.energy is not None else "eV"

    def _bands(self, sc: Scalarizer):
        p = sc.params
        bands = [(p["a"], p["b"])] if "a" in p and "b" in p else []
        if "a2" in p:
            bands.append((p["a2"], p["b2"]))
        return bands

    def _show_mean_spectrum(self):
        data = self.dataset
        if data is None:
            return
        try:
            bands = self._bands(self.current_scalarizer())
        except HAEInputError:
            bands = []
        self.plot.show_spectrum(data.energies, self._mean_spectrum, bands, "mean spectrum", self._units())

    def spectrum_at(self, y: int, x: int):
        """(spectrum, value, source) at a scan position: the measured one if measured, else the pre-acquired one."""
        exp, data = self.experiment, self.dataset
        if exp is not None:
            tr = exp.trace
            if (y, x) in tr.positions[: len(tr.spectra)]:
                i = tr.positions.index((y, x))
                return tr.spectra[i], tr.values[i], "measured"
        spectrum = data.spectra[y, x]
        value = float(self.current_scalarizer()(spectrum[None], data.energies)[0])
        return spectrum, value, "pre-acquired"

    def _on_click(self, layer, event):
        data = self.dataset
        if data is None:
            return
        y, x = (int(round(c)) for c in layer.world_to_data(event.position)[-2:])
        if not (0 <= y < data.scan_shape[0] and 0 <= x < data.scan_shape[1]):
            return
        spectrum, value, source = self.spectrum_at(y, x)
        self.plot.show_spectrum(data.energies, spectrum, self._bands(self.current_scalarizer()),
                                f"{source} at ({y}, {x}): {value:.4g}", self._units())

    # ------------------------------------------------------------------------------------------------------
    # traces
    def save_trace(self, path) -> Path:
        if self.experiment is None:
            raise HAEInputError("There is no run to save.", "start a run first.")
        return self.experiment.trace.save(path)

    def load_trace(self, path) -> Trace:
        """Show a saved trace: its trajectory and its last stored maps."""
        tr = Trace.load(path)
        layer = self.layer_combo.value
        scale = layer.scale if layer is not None else (1, 1)
        name = f"trace {Path(path).stem}"
        self.viewer.add_points(tr.positions_array().astype(float), name=name, scale=scale,
                               features={"step": np.asarray(tr.point_steps), "value": np.asarray(tr.values)},
                               face_color="orange", size=max(tr.structural.shape) / 60)
        if tr.map_steps:
            self.viewer.add_image(tr.maps["mean"][-1], name=f"{name} mean", colormap="viridis", scale=scale,
                                  opacity=0.7)
        self.replay_trace = tr
        self._enable_replay(tr)
        self.status.value = f"Loaded {path}: {tr.n_points} points, {tr.n_steps} steps, " \
                            f"{len(tr.interventions)} interventions."
        return tr

    # ------------------------------------------------------------------------------------------------------
    # monitors: replay, feature space, export
    def _enable_replay(self, trace: Trace):
        n = trace.n_steps
        self.replay.enabled = n > 0
        self.replay.max = max(0, n - 1)
        self.replay.value = max(0, n - 1)
        self.monitor_plot.update_from(trace, force=True)
        self.tabs.setCurrentWidget(self.monitor_plot)

    def show_replay(self, step=None):
        """Show the run as it stood after ``step`` (slider): stored maps, trajectory so far, monitors."""
        if self.worker is not None:
            return
        trace = self.replay_trace or (self.experiment.trace if self.experiment is not None else None)
        if trace is None or trace.n_steps == 0:
            return
        step = int(self.replay.value if step is None else step)
        st = replay_state(trace, step)
        self._show_maps(st.maps)
        if TRAJECTORY in self.viewer.layers:
            layer = self.viewer.layers[TRAJECTORY]
            layer.data = st.positions.astype(float)
            layer.features = {"step": st.point_steps, "value": st.values, "kind": list(trace.kinds[:len(st.values)])}
        self.monitor_plot.update_from(trace, upto=step, force=True)
        rec = st.record
        self.status.value = (f"Replay: step {step + 1}/{trace.n_steps} at {tuple(rec['position'])}, policy "
                             f"{rec['policy']}, mean uncertainty {rec['std_mean']:.3g}")

    def compute_feature_space(self, *_, epochs: int | None = None):
        """Train AtomAI's rVAE on all patches in a worker (progress bar), then draw the latent trajectory."""
        from .core.analysis.feature_space import fit_feature_space

        data = self.dataset
        if data is None or self._feature_worker is not None:
            return None
        n = int(self.experiment.patch_size if self.experiment is not None else self.patch_size.value)
        epochs = int(epochs or self.feature_epochs)
        pbar = progress(total=epochs, desc=f"rVAE feature space (patch {n})")

        def job():
            import queue

            q: queue.Queue = queue.Queue()
            import threading as th

            out = {}

            def run():
                try:
                    out["fs"] = fit_feature_space(data.structural, n, epochs=epochs,
                                                  progress=lambda e, k, loss: q.put((e, loss)))
                except Exception as exc:  # reported in the GUI below
                    out["error"] = exc
                q.put(None)

            t = th.Thread(target=run, daemon=True)
            t.start()
            while (item := q.get()) is not None:
                yield item
            if "error" in out:
                raise out["error"]
            return out["fs"]

        def on_yield(item):
            pbar.update(1)
            self.status.value = f"rVAE epoch {item[0]}/{epochs}: -ELBO {item[1]:.4g}"

        def on_return(fs):
            self.feature_space = fs
            self.monitor_plot.set_latent(fs.latent)
            trace = self.replay_trace or (self.experiment.trace if self.experiment is not None else None)
            if trace is not None:
                self.monitor_plot.update_from(trace, force=True)
            name = "hAE rVAE manifold"
            if name in self.viewer.layers:
                self.viewer.layers[name].data = fs.manifold
            else:
                self.viewer.add_image(fs.manifold, name=name, colormap="gray", visible=False)
            self.tabs.setCurrentWidget(self.monitor_plot)
            self.status.value = f"Feature space ready (patch {n}, {len(fs.losses)} epochs)."

        def on_done():
            pbar.close()
            self._feature_worker = None

        def on_error(exc):
            show_error(f"rVAE training failed: {exc}")

        w = create_worker(job)
        w.yielded.connect(on_yield)
        w.returned.connect(on_return)
        w.errored.connect(on_error)
        w.finished.connect(on_done)
        self._feature_worker = w
        w.start()
        return w

    def export_monitors(self, path) -> Path:
        path = Path(path)
        self.monitor_plot.save(path)
        return path

    def _export_dialog(self, *_):
        path, _ = QFileDialog.getSaveFileName(self, "Export monitors", "monitors.png", "Images (*.png *.svg)")
        if path:
            self.export_monitors(path)
            show_info(f"Monitors written to {path}")

    def _save_dialog(self, *_):
        path, _ = QFileDialog.getSaveFileName(self, "Save hAE trace", "trace.h5", "HDF5 (*.h5)")
        if path:
            try:
                self.save_trace(path)
                show_info(f"Trace saved to {path}")
            except HAEInputError as exc:
                show_error(str(exc))

    def _resume_dialog(self, *_):
        path, _ = QFileDialog.getOpenFileName(self, "Resume hAE run", str(self.runs_dir),
                                              "hAE traces (*.h5 *.journal)")
        if path:
            try:
                self.resume_trace(path)
            except HAEInputError as exc:
                show_error(str(exc))

    def _load_dialog(self, *_):
        path, _ = QFileDialog.getOpenFileName(self, "Load hAE trace", "", "HDF5 (*.h5)")
        if path:
            try:
                self.load_trace(path)
            except HAEInputError as exc:
                show_error(str(exc))
