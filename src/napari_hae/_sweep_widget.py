"""The sweep dock: launch a small hyperparameter sweep on the loaded data (dask.distributed, in a worker) and
show its table and heat maps. The sweep itself is ``core.sweep``, the same as ``napari-hae sweep``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, SpinBox, Table
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from platformdirs import user_data_dir
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ._constants import SAMPLE_MENU
from ._layers import dataset_of
from .core.analysis.sweep import COLUMNS, SweepSpec, parse_policy, read_table, run_sweep
from .core.errors import HAEInputError
from .core.plots.heatmaps import heatmaps
from .core.run.settings import ExperimentSettings
from .core.targets.suggest import suggest_target

DEFAULTS = ExperimentSettings()

SHOWN = ("patch_size", "policy_label", "seed", "steps_to_top1", "best_fraction", "mean_std_mean", "travel_px",
         "stuck_run", "time_s")


class SweepWidget(QWidget):
    """Dock: a grid of patch sizes x policies x seeds on the selected dataset."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.layer_combo = ComboBox(label="dataset", choices=self._dataset_layers)
        self.patches = LineEdit(label="patch sizes (px)", value="8 16")
        self.policies = LineEdit(label="policies", value="ei:xi=0.01 ei_penalized:xi=0.01,radius=5 ucb:beta=4")
        self.band = LineEdit(label="band (eV)", value="")
        self.seeds = SpinBox(label="random seeds", value=3, min=1, max=1000)
        self.steps = SpinBox(label="steps per run", value=20, min=1, max=100_000)
        self.workers = SpinBox(label="dask workers", value=2, min=1, max=max(1, os.cpu_count() or 1))
        self.run_btn = PushButton(text="Run sweep")
        self.status = Label(value="Pick a dataset and a grid, then Run sweep.")
        self.table = Table(value={"data": [], "index": [], "columns": list(SHOWN)})
        env = os.environ.get("NAPARI_HAE_RUNS_DIR")
        self.out_root = (Path(env) if env else Path(user_data_dir("napari-hae")) / "runs") / "sweeps"
        self.last_table: Path | None = None
        box = Container(widgets=[self.layer_combo, self.patches, self.policies, self.band, self.seeds, self.steps,
                                 self.workers, self.run_btn, self.status])
        layout = QVBoxLayout(self)
        layout.addWidget(box.native)
        self.table.native.setMinimumHeight(260)
        layout.addWidget(self.table.native)
        self.setMaximumWidth(560)
        self.run_btn.clicked.connect(self.run)
        self.viewer.layers.events.inserted.connect(lambda *_: self.layer_combo.reset_choices())
        self.viewer.layers.events.removed.connect(lambda *_: self.layer_combo.reset_choices())

    def _dataset_layers(self, *_):
        return [layer for layer in self.viewer.layers if dataset_of(layer) is not None]

    def spec(self, out: Path) -> SweepSpec:
        """The grid from the dock's fields; the dataset is written once to OUT/data.npz for the workers."""
        data = dataset_of(self.layer_combo.value)
        if data is None:
            raise HAEInputError("No dataset is selected.", f"open one (File > Open File(s)..., or {SAMPLE_MENU}).")
        try:
            patches = [int(v) for v in self.patches.value.split()]
        except ValueError:
            raise HAEInputError(f"Patch sizes {self.patches.value!r} are not whole numbers.",
                                "write e.g. 8 16") from None
        policies = [parse_policy(p) for p in self.policies.value.split()]
        if not patches or not policies:
            raise HAEInputError("The grid is empty.", "give at least one patch size and one policy.")
        a, b = ((float(v) for v in self.band.value.split()) if self.band.value.strip()
                else suggest_target(data).band)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "data.npz"
        e = data.energy
        np.savez(path, spectra=data.spectra, structural=data.structural,
                 **({"energy_offset": e.offset, "energy_scale": e.scale} if e is not None else {}))
        base = {"budget": int(self.steps.value), "n_seeds": DEFAULTS.n_seeds, "record_maps": False,
                "scalarizer": {"name": "band_integral", "params": {"a": a, "b": b}}}
        return SweepSpec({"spectrum": str(path), "image": None}, base,
                         {"patch_size": patches, "policy": policies}, list(range(int(self.seeds.value))))

    def run(self, *_, out: Path | None = None):
        if self.worker is not None:
            return None
        out = Path(out) if out else self.out_root / time.strftime("%Y%m%d-%H%M%S")
        try:
            spec = self.spec(out)
        except HAEInputError as exc:
            show_error(str(exc))
            self.status.value = str(exc)
            return None
        n = len(spec.runs())
        self.status.value = f"Running {n} simulated experiments on {int(self.workers.value)} dask workers..."
        self.run_btn.enabled = False

        def job():
            table = run_sweep(spec, out, n_workers=int(self.workers.value), progress=False)
            heatmaps(table, out / "heatmaps.png")
            return table

        self.worker = create_worker(job)
        self.worker.returned.connect(self._show_table)
        self.worker.errored.connect(lambda exc: show_error(f"The sweep failed: {exc}"))
        self.worker.finished.connect(self._finished)
        self.worker.start()
        return self.worker

    def _show_table(self, table: Path):
        self.last_table = Path(table)
        rows = read_table(table)
        data = [[_fmt(r[c]) for c in SHOWN] for r in rows]
        self.table.value = {"data": data, "index": list(range(len(data))), "columns": list(SHOWN)}
        self.status.value = f"{len(rows)} runs: {table}; heat maps: {Path(table).parent / 'heatmaps.png'}"
        show_info(self.status.value)

    def _finished(self):
        self.worker = None
        self.run_btn.enabled = True


def _fmt(v):
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return "" if v is None else v


assert set(SHOWN) <= set(COLUMNS)
