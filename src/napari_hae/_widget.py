"""The hAE dock: small panels (data, target, policy, run, monitors) over one run controller.

The GUI thread only translates: panels turn widget values into core specs, interventions are queued on the run
driver, and what the worker yields is drawn by the layer view. Training, prediction and acquisition run in the
controller's worker thread, by the same :class:`~napari_hae.core.run.driver.RunDriver` as the command line.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

from platformdirs import user_data_dir
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QApplication, QCheckBox, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from ._constants import SAMPLE_MENU
from ._monitor_plot import MonitorPlot
from ._qt import keys
from ._qt.controller import RunController
from ._qt.data_panel import DataPanel
from ._qt.dataset_switch import DatasetSwitch
from ._qt.interventions import Interventions
from ._qt.layer_view import MAPS, OBJECTS, PARETO, SEEDS, TRAJECTORY, VALUES, LayerView
from ._qt.microscope_link import MicroscopeLink
from ._qt.monitor_panel import MonitorPanel
from ._qt.policy_panel import PolicyPanel
from ._qt.run_panel import RunPanel
from ._qt.run_session import RunSession
from ._qt.spectrum_view import SpectrumView
from ._qt.status_line import StatusLine
from ._qt.target_panel import TargetPanel
from ._qt.trace_browser import TraceBrowser
from ._spectrum_plot import SpectrumPlot
from ._torch_preload import preload_torch_compiler
from .core.data.io import prepare_reading

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
    "run_panel": ("n_seeds", "seed_mode", "budget", "random_seed", "microscope_kind", "microscope_params",
                  "drift_every", "acquire_btn", "object_mode",
                  "start_btn", "pause_btn", "step_btn", "resume_btn", "stop_btn",
                  "save_btn", "load_btn", "resume_trace_btn"),
    "monitors": ("replay", "feature_btn", "export_btn"),
}


class _Of:
    """A name on the dock that belongs to one of its parts (scripts, tests and the user guide use the dock's
    names; the part owns the state): ``experiment = _Of("run")`` reads and writes ``dock.run.experiment``."""

    def __init__(self, part: str, name: str | None = None):
        self.part, self.name = part, name

    def __set_name__(self, owner, name):
        self.name = self.name or name

    def __get__(self, dock, owner=None):
        return self if dock is None else getattr(getattr(dock, self.part), self.name)

    def __set__(self, dock, value):
        setattr(getattr(dock, self.part), self.name, value)


class HAEWidget(QWidget):
    """Dock widget running a human-in-the-loop automated experiment on the selected dataset.

    It composes parts that each own their state and builds nothing else: the panels (widgets, specs from their
    values), ``view`` (the hAE layers), ``spectra`` (the spectrum plot), ``controller`` (worker threads), ``link``
    (microscope connections), ``run`` (the run and what it last delivered), ``interventions``, ``datasets`` (answers
    to the data panel) and ``traces`` (save, load, replay, feature space). The names below are the dock's public
    face; each says which part it belongs to.
    """

    experiment = _Of("run")
    last_view = _Of("run")
    run_phase = _Of("run")
    fit_iterations = _Of("run")
    fit_iterations_first = _Of("run")
    model_params = _Of("run")
    runs_dir = _Of("run")
    build_experiment = _Of("run")
    start = _Of("run")
    pause = _Of("run")
    resume = _Of("run")
    step_once = _Of("run")
    stop = _Of("run")
    paused = _Of("run")
    replay_trace = _Of("traces")
    feature_space = _Of("traces")
    feature_epochs = _Of("traces")
    save_trace = _Of("traces")
    load_trace = _Of("traces")
    resume_trace = _Of("traces")
    show_replay = _Of("traces")
    compute_feature_space = _Of("traces")
    export_monitors = _Of("traces")
    spectrum_at = _Of("spectra")
    show_spectrum = _Of("spectra", "show")
    request_scalarizer = _Of("interventions")
    request_policy = _Of("interventions")
    acquire_image = _Of("link")
    worker = _Of("controller")
    dataset = _Of("data")
    policy_param = _Of("policy")

    def __init__(self, napari_viewer):
        super().__init__()
        prepare_reading()   # now, among the pauses of opening the dock, not when a file is opened mid-run
        self.viewer = napari_viewer
        self._make_parts(napari_viewer)
        self._lay_out()
        self._connect(napari_viewer)
        self.datasets.dataset_changed()
        self.run.update_buttons()
        # Python's full garbage collection, now, among the pauses of opening the dock: with napari, torch and the
        # dock loaded it tracks ~850,000 objects and a full collection of them holds the GIL 0.3 s. Python starts
        # one once the objects made since the last one exceed a quarter of those: without this, that came at the
        # end of 'Acquire image' (a 0.45 s pause, docs/performance.md); after it, only after ~200,000 more.
        gc.collect()

    def _make_parts(self, viewer) -> None:
        self.view, self.controller = LayerView(viewer), RunController()
        self.data, self.target, self.policy = DataPanel(viewer), TargetPanel(), PolicyPanel()
        self.run_panel, self.monitors = RunPanel(), MonitorPanel()
        for panel, names in _PANEL_WIDGETS.items():
            for name in names:
                setattr(self, name, getattr(getattr(self, panel), name))
        panels = {"data": self.data, "target": self.target, "policy": self.policy, "run": self.run_panel,
                  "monitors": self.monitors}
        self.status = StatusLine(f"Open a dataset (File > Open File(s)... a spectrum image, or {SAMPLE_MENU}), then "
                                 "Start.")   # never cut: a longer message scrolls inside its three lines
        self.plot, self.monitor_plot = SpectrumPlot(self), MonitorPlot(self)
        self.log_counts = QCheckBox("log counts")
        self.tabs = QTabWidget(self)
        run_view = lambda: self.run.last_view   # noqa: E731  (the run is made below; read when called)
        self.spectra = SpectrumView(self.plot, self.target, self.status, lambda: self.data.dataset,
                                    lambda: self.data.layer_combo.value, run_view)
        self.link = MicroscopeLink(viewer, self.data, self.run_panel, self.controller, self.status,
                                   lambda: self.run.update_buttons())
        self.run = RunSession(panels, self.view, self.controller, self.link, self.status, self.spectra,
                              self.monitor_plot, latent=lambda: self.traces.latent())
        self.traces = TraceBrowser(self, viewer, panels, self.run, self.link, self.monitor_plot, self.tabs,
                                   self.status)
        self.run.launched.append(self.traces.forget_loaded)
        self.run.ended.append(self.traces.enable_replay)
        self.interventions = Interventions(viewer, panels, self.controller, self.status, self.spectra.show_mean,
                                           self.view)
        self.run.launched.append(self.interventions.run_started)
        self.datasets = DatasetSwitch(viewer, panels, self.view, self.controller, self.status, self.spectra,
                                      self.interventions, run_view)
        # every run journals each measurement here before the next step (crash-safe); NAPARI_HAE_RUNS_DIR overrides
        env = os.environ.get("NAPARI_HAE_RUNS_DIR")
        self.run.runs_dir = Path(env) if env else Path(user_data_dir("napari-hae")) / "runs"

    def _lay_out(self) -> None:
        spectrum_tab = QWidget()
        tab_layout = QVBoxLayout(spectrum_tab)
        tab_layout.setContentsMargins(0, 0, 0, 0)
        tab_layout.addWidget(self.plot)
        tab_layout.addWidget(self.log_counts)
        self.tabs.addTab(spectrum_tab, "Spectrum")
        self.tabs.addTab(self.monitor_plot, "Monitors")
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

    def _connect(self, viewer) -> None:
        run, traces, datasets, interventions = self.run, self.traces, self.datasets, self.interventions
        self.log_counts.toggled.connect(self.plot.set_log)
        for field in (*self.target.bands, self.background):
            field.changed.connect(self.spectra.on_target_fields)
        self.plot.on_band = self.target.set_band   # a dragged band fills the fields, which redraw and check it
        self._follow_theme()
        viewer.events.theme.connect(self._follow_theme)
        connections = [
            (self.layer_combo.changed, datasets.dataset_changed),
            (self.structural_combo.changed, datasets.structural_changed),
            (self.apply_scalarizer.clicked, interventions.request_scalarizer),
            (self.apply_policy.clicked, interventions.request_policy),
            (self.patch_size.changed, interventions.patch_size), (self.acquire_btn.clicked, self.link.acquire_image),
            (self.start_btn.clicked, run.start), (self.pause_btn.clicked, run.pause),
            (self.step_btn.clicked, run.step_once), (self.resume_btn.clicked, run.resume),
            (self.stop_btn.clicked, run.stop), (self.save_btn.clicked, traces.save_dialog),
            (self.load_btn.clicked, traces.load_dialog), (self.resume_trace_btn.clicked, traces.resume_dialog),
            (self.object_mode.changed, lambda *_: self.view.set_object_mode(self.object_mode.value)),
            (self.replay.changed, traces.show_replay), (self.feature_btn.clicked, traces.compute_feature_space),
            (self.export_btn.clicked, traces.export_dialog), (viewer.layers.events.removed, datasets.layer_removed)]
        for signal, slot in connections:
            signal.connect(slot)
        # napari closing deletes the dock before the application quits: both ends stop the threads (the
        # controller, a plain Python object, outlives the widget; a slot of the widget would be disconnected)
        controller, click = self.controller, self.spectra.on_click
        # F5-F8 as napari actions (Preferences > Shortcuts), the buttons' tooltips following them; see keyPressEvent
        forget_keys = keys.install(viewer, run, self.run_panel.show_keys)
        self.destroyed.connect(lambda *_: (controller.shutdown(), _forget(viewer.mouse_drag_callbacks, click),
                                           forget_keys()))
        alive = weakref.ref(controller)   # the application outlives many docks: it must not keep their runs
        QApplication.instance().aboutToQuit.connect(lambda: (c := alive()) is not None and c.shutdown())

    def keyPressEvent(self, event):
        """A run key pressed while a field of the dock has the focus (napari's keymap sees the canvas's keys)."""
        name = keys.action_for(event)
        if name is None:
            super().keyPressEvent(event)
            return
        getattr(self.run, name)()
        event.accept()

    def event(self, event):
        """Closing the dock (napari takes it out of its window: no parent) stops a run after the step in flight."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.run.closed()
        return super().event(event)

    def _follow_theme(self, *_):
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        for plot in (self.plot, self.monitor_plot):
            plot.set_theme(theme.background.as_hex(), theme.text.as_hex())

    def panels(self) -> QWidget:
        """The scrolled content of the dock (all panels, also those scrolled out of view)."""
        return self._scroll.widget()

    def showEvent(self, event):
        """Width from the panels as napari's style draws them (their hints grow once styled), plus the scroll bar."""
        super().showEvent(event)
        need = self._scroll.widget().minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width()
        self.setMinimumWidth(need + 4)
        self.setMaximumWidth(max(460, need + 24))
