"""Run panel: seeds, budget, random seed, microscope, objects' mode, and the run and trace buttons."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, ProgressBar, PushButton

from ..core.instrument.adapters import MICROSCOPES
from ..core.run.settings import SEED_MODES, ExperimentSettings
from .forms import IntField, ParamForm, commit_on_enter

DEFAULTS = ExperimentSettings()


class RunPanel(Container):
    def __init__(self):
        self.n_seeds = commit_on_enter(IntField(label="random seeds (if no points)", value=DEFAULTS.n_seeds, min=1,
                                               max=10000))
        self.seed_mode = ComboBox(label="seeds at", choices=list(SEED_MODES),
                                  value=DEFAULTS.seed_mode,
                                  tooltip="where the seeds go when no points are drawn: random; mixed: half on the "
                                          "structural image's brightest features, half random; bright: all on the "
                                          "brightest features; grid: a centred grid; cover: over what the image "
                                          "shows, the most different places first (targets that are not the "
                                          "brightest: edges, interfaces, odd spots)")
        self.budget = commit_on_enter(IntField(label="budget (steps)", value=DEFAULTS.budget, min=1,
                                              max=1_000_000))
        self.random_seed = commit_on_enter(IntField(label="random seed", value=DEFAULTS.random_seed, min=0,
                                                   max=2**31 - 1))
        self.microscope_kind = ComboBox(label="microscope", choices=MICROSCOPES.names(), value="simulator",
                                        tooltip="the instrument: an installed microscope adapter")
        self.microscope_params = ParamForm()   # the adapter's parameters, from its specs
        self.drift_every = commit_on_enter(IntField(
            label="follow drift every (points)", value=DEFAULTS.drift_every, min=0, max=1_000_000,
            tooltip="a live instrument: acquire the structural image again every N points, register it to the "
                    "run's and measure where the specimen now is (0: off; the image's beam time is recorded)"))
        self.acquire_btn = PushButton(text="Acquire image", tooltip="connect to the live instrument and open its "
                                      "structural image as a layer: click seeds and draw objects on it, then Start")
        self.object_mode = ComboBox(label="new objects", choices=["avoid", "visit"], value="avoid")
        self.start_btn = PushButton(text="Start")
        self.pause_btn = PushButton(text="Pause")
        self.step_btn = PushButton(text="Step once")
        self.resume_btn = PushButton(text="Resume")
        self.stop_btn = PushButton(text="Stop")
        self.progress = ProgressBar(label="progress", min=0, max=DEFAULTS.budget, value=0)
        self.progress.native.setFormat("%v / %m steps")
        self.save_btn = PushButton(text="Save trace")
        self.load_btn = PushButton(text="Load trace")
        self.resume_trace_btn = PushButton(text="Resume trace...")
        row = dict(layout="horizontal", labels=False)
        super().__init__(widgets=[
            self.n_seeds, self.seed_mode, self.budget, self.random_seed, self.microscope_kind, self.microscope_params,
            self.drift_every, self.acquire_btn, self.object_mode,
            Container(widgets=[self.start_btn, self.pause_btn, self.step_btn], **row),
            Container(widgets=[self.resume_btn, self.stop_btn], **row), self.progress,
            Container(widgets=[self.save_btn, self.load_btn, self.resume_trace_btn], **row)], label="Run")
        self.microscope_kind.changed.connect(self._on_kind)

    def show_keys(self, key_text) -> None:
        """The buttons' tooltips with the keys bound now (``key_text(action)``: the user may rebind them)."""
        for button, what, action in ((self.start_btn, "start a run", "start"),
                                     (self.pause_btn, "pause after the current step", "pause_or_resume"),
                                     (self.step_btn, "one step while paused", "step_once"),
                                     (self.resume_btn, "go on after a pause", "pause_or_resume"),
                                     (self.stop_btn, "stop after the current step", "stop")):
            button.tooltip = f"{what} ({key_text(action)})"
        self._on_kind()

    def _live(self) -> bool:
        """A live instrument is chosen (not pre-acquired data): it has its own image, and drift."""
        return not MICROSCOPES.get(self.microscope_kind.value).extra.get("needs_data")

    def _on_kind(self, *_):
        self.microscope_params.show(MICROSCOPES.get(self.microscope_kind.value).params)
        self.acquire_btn.visible = self.drift_every.visible = self._live()

    def drift(self) -> int:
        """Points between drift checks: the field's, on a live instrument; 0 on pre-acquired data (no drift)."""
        return int(self.drift_every.value) if self._live() else 0

    def microscope(self) -> tuple[str, dict]:
        """(adapter name, parameters) as the form shows them."""
        return self.microscope_kind.value, self.microscope_params.values()

    def update_buttons(self, running: bool, paused: bool) -> None:
        self.start_btn.enabled = not running
        self.pause_btn.enabled = running and not paused
        self.resume_btn.enabled = running and paused
        self.step_btn.enabled = running
        self.stop_btn.enabled = running
        self.resume_trace_btn.enabled = self.acquire_btn.enabled = not running
