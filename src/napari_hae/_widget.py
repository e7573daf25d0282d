"""The hAE dock: small panels (data, target, policy, run, monitors) over one run controller.

The GUI thread only translates: panels turn widget values into core specs, interventions are queued on the run
driver, and what the worker yields is drawn by the layer view. Training, prediction and acquisition run in the
controller's worker thread, by the same :class:`~napari_hae.core.run.driver.RunDriver` as the command line.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from napari.utils.notifications import show_error, show_info
from platformdirs import user_data_dir
from qtpy.QtCore import QEvent, Qt
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import QApplication, QCheckBox, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ._constants import SAMPLE_MENU
from ._monitor_plot import MonitorPlot
from ._qt.controller import RunController
from ._qt.data_panel import DataPanel
from ._qt.dataset_actions import DatasetActions
from ._qt.layer_view import MAPS, OBJECTS, PARETO, SEEDS, TRAJECTORY, VALUES, LayerView
from ._qt.monitor_panel import MonitorPanel
from ._qt.policy_panel import PolicyPanel
from ._qt.run_actions import RunActions
from ._qt.run_panel import RunPanel
from ._qt.spectrum_actions import SpectrumActions
from ._qt.status_line import StatusLine
from ._qt.target_panel import TargetPanel
from ._qt.trace_actions import TraceActions
from ._spectrum_plot import SpectrumPlot
from ._torch_preload import preload_torch_compiler
from .core.run.experiment import Experiment
from .core.run.settings import ExperimentSettings

__all__ = ["HAEWidget", "MAPS", "OBJECTS", "PARETO", "SEEDS", "TRAJECTORY", "VALUES"]


def _forget(callbacks: list, callback) -> None:
    if callback in callbacks:
        callbacks.remove(callback)

preload_torch_compiler()   # before any worker trains: see _torch_preload

# widgets of the panels, reachable on the dock by their names (scripts and tests use them)
_PANEL_WIDGETS = {
    "data": ("layer_combo", "structural_combo", "patch_size"),
    "target": ("scalarizer_name", "band_a", "band_b", "band_a2", "band_b2", "background", "bg_c", "bg_d",
               "multi_objective", "apply_scalarizer"),
    "policy": ("policy_name", "apply_policy", "model_name"),
    "run_panel": ("n_seeds", "budget", "random_seed", "microscope_kind", "microscope_params", "acquire_btn",
                  "object_mode",
                  "start_btn", "pause_btn", "step_btn", "resume_btn", "stop_btn",
                  "save_btn", "load_btn", "resume_trace_btn"),
    "monitors": ("replay", "feature_btn", "export_btn"),
}


class HAEWidget(DatasetActions, RunActions, TraceActions, SpectrumActions, QWidget):
    """Dock widget running a human-in-the-loop automated experiment on the selected dataset."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.view = LayerView(napari_viewer)
        self.experiment: Experiment | None = None
        self.controller = RunController(self._on_item, self._on_error, self._on_finished)
        self.data, self.target, self.policy = DataPanel(napari_viewer), TargetPanel(), PolicyPanel()
        self.run_panel, self.monitors = RunPanel(), MonitorPanel()
        for panel, names in _PANEL_WIDGETS.items():
            for name in names:
                setattr(self, name, getattr(getattr(self, panel), name))
        self.status = StatusLine(f"Open a dataset (File > Open File(s)... a spectrum image, or {SAMPLE_MENU}), then "
                                 "Start.")   # never cut: a longer message scrolls inside its three lines
        self.plot, self.monitor_plot = SpectrumPlot(self), MonitorPlot(self)
        self.log_counts = QCheckBox("log counts")
        self.log_counts.toggled.connect(self.plot.set_log)
        spectrum_tab = QWidget()
        tab_layout = QVBoxLayout(spectrum_tab)
        tab_layout.setContentsMargins(0, 0, 0, 0)
        tab_layout.addWidget(self.plot)
        tab_layout.addWidget(self.log_counts)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(spectrum_tab, "Spectrum")
        self.tabs.addTab(self.monitor_plot, "Monitors")
        self._n_objects_seen = 0
        self._mean_spectrum = None          # of the selected dataset, computed once when it is selected
        self.replay_trace = None            # a loaded trace shown by the replay slider
        self.feature_space = None           # core FeatureSpace of the dataset, when computed
        self._stuck_warned_at = -10**9
        self._overconfidence_warned = False
        # advanced, not shown: tests and power users may change them before Start
        d = ExperimentSettings()
        self.fit_iterations, self.fit_iterations_first = d.fit_iterations, d.fit_iterations_first
        self.model_params: dict = {}
        self.feature_epochs = 15
        # every run journals each measurement here before the next step (crash-safe); NAPARI_HAE_RUNS_DIR overrides
        env = os.environ.get("NAPARI_HAE_RUNS_DIR")
        self.runs_dir = Path(env) if env else Path(user_data_dir("napari-hae")) / "runs"

        # the panels scroll inside the dock, so it fits 1366 x 768 screens as well as 1080p ones
        inner = QWidget()
        layout = QVBoxLayout(inner)
        for box in (self.data, self.target, self.policy, self.run_panel):
            layout.addWidget(box.native)
        for w in (self.status.native, self.tabs, self.monitors.native):
            layout.addWidget(w)
        layout.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._scroll = scroll

        for field in (*self.target.bands, self.background):
            field.changed.connect(self._on_target_fields)
        self.plot.on_band = self.target.set_band   # a dragged band fills the fields, which redraw and check it
        self._follow_theme()
        napari_viewer.events.theme.connect(self._follow_theme)
        connections = [
            (self.layer_combo.changed, self._on_dataset_changed),
            (self.structural_combo.changed, self._on_structural),
            (self.apply_scalarizer.clicked, self.request_scalarizer),
            (self.apply_policy.clicked, self.request_policy), (self.patch_size.changed, self._on_patch_size),
            (self.acquire_btn.clicked, self.acquire_image),
            (self.start_btn.clicked, self.start), (self.pause_btn.clicked, self.pause),
            (self.step_btn.clicked, self.step_once), (self.resume_btn.clicked, self.resume),
            (self.stop_btn.clicked, self.stop), (self.save_btn.clicked, self._save_dialog),
            (self.load_btn.clicked, self._load_dialog), (self.resume_trace_btn.clicked, self._resume_dialog),
            (self.object_mode.changed, lambda *_: self.view.set_object_mode(self.object_mode.value)),
            (self.replay.changed, self.show_replay), (self.feature_btn.clicked, self.compute_feature_space),
            (self.export_btn.clicked, self._export_dialog)]
        for signal, slot in connections:
            signal.connect(slot)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self._on_dataset_changed()
        self._update_buttons()
        # napari closing deletes the dock before the application quits: both ends stop the threads (the
        # controller, a plain Python object, outlives the widget; a slot of the widget would be disconnected)
        controller, click, viewer = self.controller, self._on_click, napari_viewer
        self.destroyed.connect(lambda *_: (controller.shutdown(), _forget(viewer.mouse_drag_callbacks, click)))
        alive = weakref.ref(controller)   # the application outlives many docks: it must not keep their runs
        QApplication.instance().aboutToQuit.connect(lambda: (c := alive()) is not None and c.shutdown())
        # keys while napari's window is active (the canvas focused too): F5 Start, F6 Pause/Resume, F7 Step, F8 Stop
        for key, slot in (("F5", self.start), ("F6", self._pause_or_resume), ("F7", self.step_once),
                          ("F8", self.stop)):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
            shortcut.activated.connect(slot)

    def event(self, event):
        """Closing the dock (napari takes it out of its window: no parent) stops a run after the step in flight;
        once its worker has ended, the journal is closed and the instrument released (``_on_finished``)."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.controller.running:
            self.controller.stop()
            self.run_phase = "stopped"
            show_info("The hAE dock was closed: the run stops after the step in flight, its journal is closed and "
                      "the instrument released. Reopen the dock to see it; Load trace and Resume to go on.")
        return super().event(event)

    def _follow_theme(self, *_):
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        for plot in (self.plot, self.monitor_plot):
            plot.set_theme(theme.background.as_hex(), theme.text.as_hex())

    def _pause_or_resume(self):
        if self.controller.paused:
            self.resume()
        elif self.controller.running:
            self.pause()

    @property
    def _feature_worker(self):
        return self.controller.feature_worker

    @_feature_worker.setter
    def _feature_worker(self, worker):
        self.controller.feature_worker = worker

    def panels(self) -> QWidget:
        """The scrolled content of the dock (all panels, also those scrolled out of view)."""
        return self._scroll.widget()

    def showEvent(self, event):
        """Width from the panels as napari's style draws them (their hints grow once styled), plus the scroll bar."""
        super().showEvent(event)
        need = self._scroll.widget().minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width()
        self.setMinimumWidth(need + 4)
        self.setMaximumWidth(max(460, need + 24))

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def dataset(self):
        return self.data.dataset

    @property
    def worker(self):
        return self.controller.worker

    @property
    def _paused(self) -> bool:
        return self.controller.paused

    @property
    def policy_param(self):
        return self.policy.policy_param

    # -- interventions (queued; the worker applies them before its next step) --------------------------------
    def _queue(self, label: str, change) -> bool:
        if not self.controller.request(label, change):
            return False   # no run going: the dock's values are used at Start
        self.status.value = f"Queued: {label} (applied before the next step)"
        return True

    def request_scalarizer(self, *_):
        data = self.dataset
        problem = None if data is None else self.target.problem(data.energies, data.signal_shape)
        if problem is not None:
            show_error(problem)
            self.status.value = f"Scalarizer: {problem}"
            return
        sc = self.target.scalarizer()
        self._queue(f"scalarizer {sc.label()}", lambda exp: exp.set_scalarizer(sc))
        self._show_mean_spectrum()

    def request_policy(self, *_):
        pol = self.policy.policy()
        self._queue(f"policy {pol['name']} {pol['params']}", lambda exp: exp.set_policy(pol["name"], **pol["params"]))

    def _on_patch_size(self, *_):
        n = int(self.patch_size.value)
        self._queue(f"patch size {n}", lambda exp: exp.set_patch_size(n))

    def _on_objects_changed(self, event=None):
        """A shape drawn during a run is queued as an object (an intervention); before Start nothing is kept here:
        Start takes the objects the layer shows then (:meth:`LayerView.objects_drawn`)."""
        layer = self.viewer.layers[OBJECTS]
        n, mode = len(layer.data), self.object_mode.value
        if n > self._n_objects_seen and self.controller.running:
            masks = layer.to_masks(mask_shape=self.dataset.scan_shape)
            for i in range(self._n_objects_seen, n):
                mask, label = masks[i].astype(bool), f"{mode} #{i}"
                self._queue(f"object {label}", lambda e, m=mask, mo=mode, la=label: e.add_object(m, mo, la))
        self._n_objects_seen = n
