"""The experimental trace: everything that happened in a run, saved to and loaded from HDF5 (h5py).

Points (one per measurement): position (y, x) in pixels, spectrum, scalarizer value at measurement time, kind
(seed / policy / visit / user), the policy step at which it was measured (-1 for seeds) and the patch size then.
Steps (one per policy decision): the chosen position, acquisition value, prediction summaries and, optionally,
the full mean / std / acquisition maps. Interventions: what the user changed, and before which step.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HAEInputError
from .journal import MAGIC, Journal, read_records

POINT_KINDS = ("seed", "policy", "visit", "user")
STEP_SCALARS = ("acq_value", "next_std", "next_mean", "std_mean", "std_std", "std_q10", "std_q50", "std_q90",
                "mean_max", "best_so_far", "loss", "fit_time", "predict_time", "step_time", "patch_size",
                "travel_px", "stuck", "objective_weight")
MAP_NAMES = ("mean", "std", "acq")
FORMAT_VERSION = 1
TRACE_NAME = "trace.h5"          # names inside a run's output folder
JOURNAL_NAME = "trace.journal"


def software_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("napari-hae", "numpy", "torch", "gpytorch", "h5py", "hyperspy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


@dataclass
class Trace:
    """In-memory trace; grows as the experiment runs. ``save``/``load`` round-trip it exactly."""

    structural: np.ndarray
    settings: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    positions: list = field(default_factory=list)        # (y, x) int
    spectra: list = field(default_factory=list)          # np arrays, signal shape
    values: list = field(default_factory=list)           # float, scalarizer at measurement time
    kinds: list = field(default_factory=list)            # str in POINT_KINDS
    point_steps: list = field(default_factory=list)      # int, -1 for seeds
    steps: dict = field(default_factory=lambda: {"position": [], "policy": [], "scalarizer": [],
                                                  **{k: [] for k in STEP_SCALARS}})
    maps: dict = field(default_factory=lambda: {k: [] for k in MAP_NAMES})
    map_steps: list = field(default_factory=list)
    interventions: list = field(default_factory=list)    # dicts: step, kind, old, new
    objects: list = field(default_factory=list)          # dicts: mode, label, mask (bool array)
    events: list = field(default_factory=list)           # dicts: step, message (fit retries, faults...)
    versions: dict = field(default_factory=software_versions)
    rng_state: dict | None = None                        # the run's random generator after the latest step
    monitors: dict = field(default_factory=dict)         # name -> array: monitors computed after a run
    journal: Journal | None = field(default=None, repr=False, compare=False)

    # -- growing (each addition is journaled first when a journal is attached) ------------------------------
    def _log(self, kind: str, fields: dict | None = None, arrays: dict | None = None) -> None:
        if self.journal is not None:
            self.journal.write(kind, fields, arrays)

    def _log_point(self, position, spectrum, value, kind, step) -> None:
        self._log("point", {"position": position, "value": float(value), "point_kind": kind, "step": int(step)},
                  {"spectrum": spectrum})

    def _log_step(self, row: dict, maps: dict | None) -> None:
        self._log("step", {"record": row}, maps)

    def _log_object(self, mode: str, label: str, mask: np.ndarray) -> None:
        self._log("object", {"mode": mode, "label": label}, {"mask": mask})

    def add_point(self, position, spectrum, value, kind, step):
        if kind not in POINT_KINDS:
            raise ValueError(f"kind must be one of {POINT_KINDS}")
        position = (int(position[0]), int(position[1]))
        spectrum = np.asarray(spectrum)
        self._log_point(position, spectrum, value, kind, step)
        self.positions.append(position)
        self.spectra.append(spectrum)
        self.values.append(float(value))
        self.kinds.append(kind)
        self.point_steps.append(int(step))

    def add_step(self, record: dict, maps: dict | None = None):
        step = len(self.steps["position"])
        row = {k: (tuple(int(c) for c in record[k]) if k == "position" else record[k]) for k in self.steps}
        maps = None if maps is None else {k: np.asarray(maps[k], dtype=np.float32) for k in MAP_NAMES}
        self._log_step(row, maps)
        for k, v in row.items():
            self.steps[k].append(v)
        if maps is not None:
            self.map_steps.append(step)
            for k in MAP_NAMES:
                self.maps[k].append(maps[k])

    def add_intervention(self, step: int, kind: str, old, new) -> None:
        d = json.loads(json.dumps({"step": int(step), "kind": kind, "old": old, "new": new}))
        self._log("intervention", {"intervention": d})
        self.interventions.append(d)

    def add_object(self, mode: str, label: str, mask: np.ndarray) -> int:
        mask = np.asarray(mask, dtype=bool)
        self._log_object(mode, label, mask)
        self.objects.append({"mode": mode, "label": label, "mask": mask.copy()})
        return len(self.objects) - 1

    def add_event(self, step: int, message: str) -> None:
        self._log("event", {"event": {"step": int(step), "message": message}})
        self.events.append({"step": int(step), "message": message})

    def set_rng_state(self, state: dict) -> None:
        state = json.loads(json.dumps(state))
        self._log("rng", {"state": state})
        self.rng_state = state

    # -- crash safety --------------------------------------------------------------------------------------
    def attach_journal(self, path, append: bool = False) -> Path:
        """Journal every later addition to ``path`` (see :mod:`napari_hae.core.record.journal`).

        A new journal starts with the header and everything already in the trace, so it alone can rebuild the
        trace; ``append=True`` continues a journal this trace was read from.
        """
        if append:
            self.journal = Journal.append_to(path)
            return self.journal.path
        self.journal = Journal(path)
        self._log("header", {"settings": self.settings, "dataset": self.dataset, "versions": self.versions},
                  {"structural": self.structural})
        for i in range(self.n_points):
            self._log_point(self.positions[i], np.asarray(self.spectra[i]), self.values[i], self.kinds[i],
                            self.point_steps[i])
        for i in range(self.n_steps):
            maps = None
            if i in self.map_steps:
                j = self.map_steps.index(i)
                maps = {k: self.maps[k][j] for k in MAP_NAMES}
            self._log_step({k: self.steps[k][i] for k in self.steps}, maps)
        for d in self.interventions:
            self._log("intervention", {"intervention": d})
        for o in self.objects:
            self._log_object(o["mode"], o.get("label", ""), o["mask"])
        for e in self.events:
            self._log("event", {"event": e})
        if self.rng_state is not None:
            self._log("rng", {"state": self.rng_state})
        return self.journal.path

    def close_journal(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    @classmethod
    def from_journal(cls, path) -> "Trace":
        """Rebuild a trace from its journal; a record torn by a crash is dropped (and reported in ``events``)."""
        records, _, dropped = read_records(path)
        if not records or records[0][0]["kind"] != "header":
            raise HAEInputError(f"Journal {str(path)!r} has no header record.",
                                "pass the trace.journal written by a napari-hae run.")
        meta, arrays = records[0]
        t = cls(structural=arrays["structural"], settings=meta["settings"], dataset=meta["dataset"],
                versions=meta["versions"])
        for meta, arrays in records[1:]:
            kind = meta["kind"]
            if kind == "point":
                t.add_point(meta["position"], arrays["spectrum"], meta["value"], meta["point_kind"], meta["step"])
            elif kind == "step":
                t.add_step(meta["record"], arrays or None)
            elif kind == "intervention":
                t.interventions.append(meta["intervention"])
            elif kind == "object":
                t.objects.append({"mode": meta["mode"], "label": meta["label"], "mask": arrays["mask"]})
            elif kind == "event":
                t.events.append(meta["event"])
            elif kind == "rng":
                t.rng_state = meta["state"]
        if dropped:
            t.events.append({"step": t.n_steps, "message": f"journal: dropped a torn last record ({dropped} bytes)"})
        return t

    # -- views ---------------------------------------------------------------------------------------------
    @property
    def n_points(self) -> int:
        return len(self.positions)

    @property
    def n_steps(self) -> int:
        return len(self.steps["position"])

    def positions_array(self) -> np.ndarray:
        return np.asarray(self.positions, dtype=np.int64).reshape(-1, 2)

    def spectra_array(self) -> np.ndarray:
        return np.stack(self.spectra) if self.spectra else np.zeros((0,))

    def step_array(self, key: str) -> np.ndarray:
        return np.asarray(self.steps[key], dtype=float)

    def map_at(self, name: str, step: int) -> np.ndarray | None:
        """The stored map ``name`` ('mean', 'std', 'acq') of policy step ``step``, or None if not recorded."""
        try:
            i = self.map_steps.index(step)
        except ValueError:
            return None
        return self.maps[name][i]

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the whole trace to an HDF5 file (written to a temporary name, then renamed)."""
        import h5py

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "napari-hae trace"
            f.attrs["format_version"] = FORMAT_VERSION
            for key in ("settings", "dataset", "interventions", "events", "versions", "rng_state"):
                f.attrs[key] = json.dumps(getattr(self, key))
            f.create_dataset("structural", data=self.structural)
            p = f.create_group("points")
            p.create_dataset("positions", data=self.positions_array())
            if self.spectra:
                p.create_dataset("spectra", data=self.spectra_array(), compression="gzip", compression_opts=1)
            p.create_dataset("values", data=np.asarray(self.values, dtype=np.float64))
            p.create_dataset("kinds", data=np.asarray([POINT_KINDS.index(k) for k in self.kinds], dtype=np.int8))
            p.create_dataset("steps", data=np.asarray(self.point_steps, dtype=np.int64))
            s = f.create_group("steps")
            s.create_dataset("position", data=np.asarray(self.steps["position"], dtype=np.int64).reshape(-1, 2))
            s.attrs["policy"] = json.dumps(self.steps["policy"])
            s.attrs["scalarizer"] = json.dumps(self.steps["scalarizer"])
            for k in STEP_SCALARS:
                s.create_dataset(k, data=np.asarray(self.steps[k], dtype=np.float64))
            m = f.create_group("maps")
            m.create_dataset("steps", data=np.asarray(self.map_steps, dtype=np.int64))
            for k in MAP_NAMES:
                if self.maps[k]:
                    m.create_dataset(k, data=np.stack(self.maps[k]), compression="gzip", compression_opts=1,
                                     chunks=(1, *self.structural.shape))
            mon = f.create_group("monitors")
            for k, v in self.monitors.items():
                mon.create_dataset(k, data=np.asarray(v))
            o = f.create_group("objects")
            for i, obj in enumerate(self.objects):
                d = o.create_dataset(str(i), data=np.asarray(obj["mask"], dtype=bool))
                d.attrs["mode"] = obj["mode"]
                d.attrs["label"] = obj.get("label", "")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "Trace":
        """Load a trace: an HDF5 trace, a journal, or a run folder (its journal, which is never older)."""
        import h5py

        path = Path(path)
        if path.is_dir():
            for name in (JOURNAL_NAME, TRACE_NAME):
                if (path / name).exists():
                    return cls.load(path / name)
            raise HAEInputError(f"Folder {str(path)!r} holds no {JOURNAL_NAME} or {TRACE_NAME}.",
                                "pass a run's output folder or its trace file.")
        if not path.exists():
            raise HAEInputError(f"Trace file {str(path)!r} does not exist.", "check the path.")
        with open(path, "rb") as fh:
            if fh.read(4) == MAGIC:
                return cls.from_journal(path)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise HAEInputError(f"{str(path)!r} is not a readable HDF5 trace ({exc}).",
                                "pass a trace written by napari-hae (trace.h5).") from exc
        with f:
            if f.attrs.get("format") != "napari-hae trace":
                raise HAEInputError(f"{str(path)!r} is an HDF5 file but not a napari-hae trace.",
                                    "pass a trace written by napari-hae (trace.h5).")
            t = cls(structural=f["structural"][()])
            for key in ("settings", "dataset", "interventions", "events", "versions", "rng_state"):
                if key in f.attrs:
                    setattr(t, key, json.loads(f.attrs[key]))
            p = f["points"]
            t.positions = [tuple(int(c) for c in row) for row in p["positions"][()]]
            t.spectra = list(p["spectra"][()]) if "spectra" in p else []
            t.values = [float(v) for v in p["values"][()]]
            t.kinds = [POINT_KINDS[int(k)] for k in p["kinds"][()]]
            t.point_steps = [int(v) for v in p["steps"][()]]
            s = f["steps"]
            t.steps["position"] = [tuple(int(c) for c in row) for row in s["position"][()]]
            t.steps["policy"] = json.loads(s.attrs["policy"])
            t.steps["scalarizer"] = json.loads(s.attrs["scalarizer"])
            for k in STEP_SCALARS:   # a scalar added in a later version reads as NaN from older traces
                t.steps[k] = [float(v) for v in s[k][()]] if k in s else [float("nan")] * len(t.steps["position"])
            m = f["maps"]
            t.map_steps = [int(v) for v in m["steps"][()]]
            for k in MAP_NAMES:
                t.maps[k] = list(m[k][()]) if k in m else []
            if "monitors" in f:
                t.monitors = {k: d[()] for k, d in f["monitors"].items()}
            t.objects = [{"mode": d.attrs["mode"], "label": d.attrs["label"], "mask": d[()]}
                         for _, d in sorted(f["objects"].items(), key=lambda kv: int(kv[0]))]
        return t
