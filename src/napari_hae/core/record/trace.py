"""The experimental trace: everything that happened in a run, saved to and loaded from HDF5 (h5py).

Points (one per measurement): position (y, x) in pixels, spectrum, scalarizer value at measurement time, kind
(seed / policy / visit / user), the policy step at which it was measured (-1 for seeds) and the patch size then.
Steps (one per policy decision): the chosen position, acquisition value, prediction summaries and, optionally,
the full mean / std / acquisition maps. Interventions: what the user changed, and before which step.
"""

from __future__ import annotations

import json
import math
import platform
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HAEInputError
from .journal import MAGIC, Journal, JournalContents, read_records, set_aside
from .schema import FORMAT_VERSION, MAP_NAMES, POINT_KINDS, StepRecord, migrate_settings  # noqa: F401

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


def index_of_position(positions, position) -> int | None:
    """The index of ``position`` (y, x) in ``positions`` (a list of int tuples), the newest first, or None."""
    key = tuple(int(c) for c in position)
    for i in range(len(positions) - 1, -1, -1):   # the newest first: the usual question
        if positions[i] == key:
            return i
    return None


class RecordColumns:
    """Reading a run's recorded columns (``positions``, ``steps``): what :class:`Trace` and a run's read-only view
    (:class:`~napari_hae.core.run.results.RunView`) share, so that the monitors read either."""

    positions: list
    steps: dict

    @property
    def n_points(self) -> int:
        return len(self.positions)

    @property
    def n_steps(self) -> int:
        return len(self.steps["position"])

    def index_of(self, position) -> int | None:
        """The index of the point measured at ``position`` (y, x), or None if it was not measured."""
        return index_of_position(self.positions, position)

    def positions_array(self) -> np.ndarray:
        return np.asarray(self.positions, dtype=np.int64).reshape(-1, 2)

    def step_array(self, key: str) -> np.ndarray:
        return np.asarray(self.steps[key], dtype=float)


@dataclass
class Trace(RecordColumns):
    """In-memory trace; grows as the experiment runs. ``save``/``load`` round-trip it exactly."""

    structural: np.ndarray
    settings: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    positions: list = field(default_factory=list)        # (y, x) int
    spectra: list = field(default_factory=list)          # np arrays, signal shape
    values: list = field(default_factory=list)           # float, scalarizer at measurement time
    kinds: list = field(default_factory=list)            # str in POINT_KINDS
    point_steps: list = field(default_factory=list)      # int, -1 for seeds
    dwells: list = field(default_factory=list)           # float, seconds asked of the instrument (NaN: its own)
    beam_on: list = field(default_factory=list)          # float, seconds the beam was on for the point (NaN: unknown)
    steps: dict = field(default_factory=lambda: {k: [] for k in StepRecord.names()})
    maps: dict = field(default_factory=lambda: {k: [] for k in MAP_NAMES})
    map_steps: list = field(default_factory=list)
    latest_maps: tuple | None = None                     # (step, maps) of the newest step when not stored above
    interventions: list = field(default_factory=list)    # dicts: step, kind, old, new
    objects: list = field(default_factory=list)          # dicts: mode, label, mask (bool array)
    events: list = field(default_factory=list)           # dicts: step, message (fit retries, faults...)
    versions: dict = field(default_factory=software_versions)
    rng_state: dict | None = None                        # the run's random generator after the latest step
    monitors: dict = field(default_factory=dict)         # name -> array: monitors computed after a run
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)   # binds a run's journal and trace.h5
    journal: Journal | None = field(default=None, repr=False, compare=False)
    # what else is built from this run's records (its RunState): each added record is applied there too
    listeners: list = field(default_factory=list, repr=False, compare=False)
    recovery: JournalContents | None = field(default=None, repr=False, compare=False)   # set if read from a journal
    # one record at a time: a pipelined run's instrument thread records its events while the run's thread learns
    _writing: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False, compare=False)

    # -- growing: every addition is a record, journaled first, then applied (as when read back) -------------
    def _add(self, kind: str, fields: dict, arrays: dict | None = None) -> None:
        with self._writing:
            try:
                if self.journal is not None:
                    self.journal.write(kind, fields, arrays)
            finally:   # a record the disk refused is still kept in memory (and in trace.h5 when it is saved)
                self._apply(kind, fields, arrays or {})
                for listener in self.listeners:
                    listener(kind, fields, arrays or {})

    def _apply(self, kind: str, f: dict, a: dict) -> None:
        """Apply one record to the in-memory trace: the one rule for live additions and journal replay."""
        if kind == "point":
            self.positions.append(tuple(int(c) for c in f["position"]))
            self.spectra.append(a["spectrum"])
            self.values.append(float(f["value"]))
            self.kinds.append(f["point_kind"])
            self.point_steps.append(int(f["step"]))
            self.dwells.append(float(f.get("dwell", math.nan)))   # journals before dwells were recorded: NaN
            self.beam_on.append(float(f.get("beam_on_s", math.nan)))   # and before the dose ledger
        elif kind == "step":
            if "point" in f:   # a policy step is one record: its measured point, the decision and the rng after
                self._apply("point", f["point"], {"spectrum": a["spectrum"]})
                a = {k: v for k, v in a.items() if k != "spectrum"}
            row = StepRecord.row(f["record"])
            for k, v in row.items():
                self.steps[k].append(v)
            if a:
                self.map_steps.append(self.n_steps - 1)
                for k in MAP_NAMES:
                    self.maps[k].append(a[k])
            if f.get("rng") is not None:
                self.rng_state = f["rng"]
        elif kind == "intervention":
            self.interventions.append(f["intervention"])
        elif kind == "object":
            self.objects.append({"mode": f["mode"], "label": f["label"], "mask": np.asarray(a["mask"], dtype=bool)})
        elif kind == "event":
            self.events.append(f["event"])
        elif kind == "rng":
            self.rng_state = f["state"]
        else:
            raise ValueError(f"Unknown trace record kind {kind!r}.")

    def records(self):
        """``(kind, fields, arrays)`` records that rebuild this trace (header excluded), for a new journal."""
        for i in range(self.n_points):
            fields = self._point_fields(self.positions[i], self.values[i], self.kinds[i], self.point_steps[i],
                                        self.dwells[i], self.beam_on[i])
            yield "point", fields, {"spectrum": np.asarray(self.spectra[i])}
        for i in range(self.n_steps):
            maps = None
            if i in self.map_steps:
                j = self.map_steps.index(i)
                maps = {k: self.maps[k][j] for k in MAP_NAMES}
            yield "step", {"record": {k: self.steps[k][i] for k in self.steps}}, maps
        for o in self.objects:   # before the interventions that name them, as a journal has them
            yield "object", {"mode": o["mode"], "label": o.get("label", "")}, {"mask": o["mask"]}
        for d in self.interventions:
            yield "intervention", {"intervention": d}, None
        for e in self.events:
            yield "event", {"event": e}, None
        if self.rng_state is not None:
            yield "rng", {"state": self.rng_state}, None

    @staticmethod
    def _point_fields(position, value, kind, step, dwell=math.nan, beam_on_s=math.nan) -> dict:
        if kind not in POINT_KINDS:
            raise ValueError(f"kind must be one of {POINT_KINDS}")
        return {"position": (int(position[0]), int(position[1])), "value": float(value), "point_kind": kind,
                "step": int(step), "dwell": float(math.nan if dwell is None else dwell),
                "beam_on_s": float(math.nan if beam_on_s is None else beam_on_s)}

    def add_point(self, position, spectrum, value, kind, step, dwell=math.nan, beam_on_s=math.nan):
        self._add("point", self._point_fields(position, value, kind, step, dwell, beam_on_s),
                  {"spectrum": np.asarray(spectrum)})

    def add_step(self, record: dict, maps: dict | None = None, point: dict | None = None, rng: dict | None = None,
                 latest: dict | None = None):
        """Record a policy step; with ``point`` (``add_point``'s arguments as a dict) and ``rng`` (the generator's
        state after the step), the measurement, the decision and the state are one record: a crash leaves either
        all of them on disk or none. ``latest``: this step's maps when they are not stored (``maps`` None), kept
        in memory as :attr:`latest_maps` (not journaled; :meth:`save` writes them)."""
        row = StepRecord.row(record)   # checked before anything is written
        arrays = {} if maps is None else {k: np.asarray(maps[k], dtype=np.float32) for k in MAP_NAMES}
        fields = {"record": row}
        if point is not None:
            fields["point"] = self._point_fields(**{k: v for k, v in point.items() if k != "spectrum"})
            arrays["spectrum"] = np.asarray(point["spectrum"])
        if rng is not None:
            fields["rng"] = json.loads(json.dumps(rng))
        self._add("step", fields, arrays or None)
        self.latest_maps = (self.n_steps - 1, {k: np.asarray(latest[k], dtype=np.float32) for k in MAP_NAMES}) \
            if maps is None and latest is not None else None

    def add_intervention(self, step: int, kind: str, old, new) -> dict:
        d = json.loads(json.dumps({"step": int(step), "kind": kind, "old": old, "new": new}))
        self._add("intervention", {"intervention": d})
        return d

    def add_object(self, mode: str, label: str, mask: np.ndarray) -> int:
        self._add("object", {"mode": mode, "label": label}, {"mask": np.asarray(mask, dtype=bool).copy()})
        return len(self.objects) - 1

    def add_event(self, step: int, message: str, **fields) -> None:
        """Record what happened at ``step``; ``fields``: figures that go with it (JSON values, e.g. ``beam_on_s``)."""
        self._add("event", {"event": {"step": int(step), "message": message, **fields}})

    def set_rng_state(self, state: dict) -> None:
        self._add("rng", {"state": json.loads(json.dumps(state))})

    # -- crash safety --------------------------------------------------------------------------------------
    def attach_journal(self, path, append: bool = False) -> Path:
        """Journal every later addition to ``path`` (see :mod:`napari_hae.core.record.journal`).

        A new journal starts with the header and everything already in the trace, so it alone can rebuild the
        trace; ``append=True`` continues a journal this trace was read from.
        """
        if append and Path(path).exists():
            contents = read_records(path)
            if contents.intact and self._holds_all_of(contents):
                self.journal = Journal.append_to(path, contents)
                if self.journal.lock.note:
                    self.add_event(self.n_steps, f"run folder: {self.journal.lock.note}")
                return self.journal.path
            # never truncated nor rewritten in place: the old file is kept aside, a fresh one holds everything
            why = "damaged" if not contents.intact else "superseded"
            kept = set_aside(path, why)
            self.events.append({"step": self.n_steps, "message": f"journal: {contents.describe()}; the original is "
                                                                 f"kept as {kept.name}"})
        self.journal = Journal(path)
        if self.journal.lock.note:
            self.events.append({"step": self.n_steps, "message": f"run folder: {self.journal.lock.note}"})
        self.journal.write("header", {"settings": self.settings, "dataset": self.dataset, "versions": self.versions,
                                      "run_id": self.run_id}, {"structural": self.structural})
        for kind, fields, arrays in self.records():
            self.journal.write(kind, fields, arrays)
        return self.journal.path

    def _holds_all_of(self, contents: JournalContents) -> bool:
        """Whether this trace is the journal's own (same run, nothing the journal has is missing here)."""
        head = contents.records[0][0] if contents.records else {}
        n_points = sum(1 for m, a in contents.records if m.get("kind") == "point" or "point" in m)
        n_steps = sum(1 for m, _ in contents.records if m.get("kind") == "step")
        return (head.get("kind") == "header" and head.get("run_id", self.run_id) == self.run_id
                and n_points == self.n_points and n_steps == self.n_steps)

    def close_journal(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    @classmethod
    def from_journal(cls, path) -> Trace:
        """Rebuild a trace from its journal, salvaging every intact record past damaged ones; what was lost is
        reported in ``events`` and in ``recovery`` (see :func:`~napari_hae.core.record.journal.read_records`)."""
        contents = read_records(path)
        records = contents.records
        if not records or records[0][0]["kind"] != "header":
            raise HAEInputError(f"Journal {str(path)!r} has no intact header record ({contents.describe()}): the "
                                "run's settings and structural image are lost from it.",
                                "load the run's trace.h5 instead if it exists; the spectra are still in the journal "
                                "(see docs/reliability.md, 'Recovering a run by hand').")
        meta, arrays = records[0]
        t = cls(structural=arrays["structural"], settings=migrate_settings(meta["settings"]), dataset=meta["dataset"],
                versions=meta["versions"], run_id=meta.get("run_id", ""))
        for meta, arrays in records[1:]:
            meta = {k: v for k, v in meta.items() if k != "seq"}
            t._apply(meta.pop("kind"), meta, arrays)
        t.recovery = contents
        if not contents.intact:
            t.events.append({"step": t.n_steps, "message": f"journal: {contents.describe()}"})
        return t

    @property
    def damaged(self) -> bool:
        """Read from a journal that was not intact (some records may be lost: see ``recovery``)."""
        return self.recovery is not None and not self.recovery.intact

    # -- views ---------------------------------------------------------------------------------------------
    def spectra_array(self) -> np.ndarray:
        return np.stack(self.spectra) if self.spectra else np.zeros((0,))

    @property
    def maps_held(self) -> list[int]:
        """Steps whose maps this trace holds: the stored ones and the newest kept in memory (:attr:`latest_maps`)."""
        return self.map_steps + ([self.latest_maps[0]] if self.latest_maps else [])

    def map_at(self, name: str, step: int) -> np.ndarray | None:
        """The stored map ``name`` ('mean', 'std', 'acq') of policy step ``step``, or None if not recorded."""
        try:
            i = self.map_steps.index(step)
        except ValueError:
            return self.latest_maps[1][name] if self.latest_maps and self.latest_maps[0] == step else None
        return self.maps[name][i]

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the whole trace to an HDF5 file (written to a temporary name, then renamed; maps one by one)."""
        from .hdf5 import write

        return write(self, path)

    @classmethod
    def _load_folder(cls, folder: Path) -> Trace:
        """The most complete record of the run in ``folder``: its journal or its trace.h5, whichever holds more
        (the journal on a tie: it is written first)."""
        found, errors = [], []
        for name in (JOURNAL_NAME, TRACE_NAME):
            if (folder / name).exists():
                try:
                    found.append(cls.load(folder / name))
                except HAEInputError as exc:
                    errors.append(exc)
        if not found:
            if errors:
                raise errors[0]
            raise HAEInputError(f"Folder {str(folder)!r} holds no {JOURNAL_NAME} or {TRACE_NAME}.",
                                "pass a run's output folder or its trace file.")
        best = max(found, key=lambda t: (t.n_points, t.n_steps, t.recovery is not None))
        ids = {t.run_id for t in found if t.run_id}
        if len(ids) > 1:   # a journal of another run beside this folder's trace.h5: the folder's run is read
            best = next(t for t in found if t.recovery is None)
            best.events.append({"step": best.n_steps, "message": f"run folder: {JOURNAL_NAME} belongs to another "
                                f"run than {TRACE_NAME}; {TRACE_NAME} was read (a resume sets the journal aside, "
                                "whole)"})
        for exc in errors:
            best.events.append({"step": best.n_steps, "message": f"run folder: could not read a record ({exc})"})
        return best

    def check(self, source: str = "the trace") -> Trace:
        """Refuse a damaged or crafted record before anything uses it: a point outside the scan (or negative), a
        spectrum whose shape is not the others', a position measured twice, a step whose point is missing. Says
        which record is bad."""
        ny, nx = self.structural.shape[:2]
        shape, seen = None, {}
        for i, (y, x) in enumerate(self.positions):
            if not (0 <= y < ny and 0 <= x < nx):
                self._bad(source, f"point #{i} at (y, x) = ({y}, {x}) lies outside the {ny} x {nx} scan")
            if (y, x) in seen:
                self._bad(source, f"point #{i} at (y, x) = ({y}, {x}) repeats point #{seen[(y, x)]}")
            seen[(y, x)] = i
            s = np.shape(self.spectra[i])
            shape = s if shape is None else shape
            if s != shape:
                self._bad(source, f"point #{i}'s spectrum has shape {s}, the others' {shape}")
        for k, (y, x) in enumerate(self.steps["position"]):
            if (int(y), int(x)) not in seen:
                self._bad(source, f"step #{k} chose (y, x) = ({y}, {x}), which no recorded point measured")
        return self

    @staticmethod
    def _bad(source: str, what: str):
        raise HAEInputError(f"{source} holds a damaged or crafted record: {what}; it is not used.",
                            "read the run's other record (its trace.journal or trace.h5, or the run folder); "
                            "see docs/reliability.md, 'Recovering a run by hand'.")

    @classmethod
    def load(cls, path) -> Trace:
        """Load a trace: an HDF5 trace, a journal, or a run folder (its journal, which is never older). What is
        read is checked (:meth:`check`)."""
        path = Path(path)
        trace = cls._load(path)
        return trace if path.is_dir() else trace.check(repr(str(path)))

    @classmethod
    def _load(cls, path: Path) -> Trace:
        import h5py

        if path.is_dir():
            return cls._load_folder(path)
        if not path.exists():
            if path.is_symlink():
                raise HAEInputError(f"{str(path)!r} is a broken or looping symbolic link.",
                                    "give the path of the trace file itself.")
            raise HAEInputError(f"Trace file {str(path)!r} does not exist.", "check the path.")
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == MAGIC or (path.suffix == ".journal" and head[:1] != b"\x89"):
            if not head:
                raise HAEInputError(f"Journal {str(path)!r} is empty: the run stopped before anything was "
                                    "recorded (nothing was measured).",
                                    "start the run again (in this folder with --overwrite; nothing is deleted).")
            return cls.from_journal(path)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise HAEInputError(f"{str(path)!r} is not a readable HDF5 trace ({exc}).",
                                "pass a trace written by napari-hae (trace.h5).") from exc
        with f:
            try:   # the format attribute too: a damaged byte may sit in it
                if f.attrs.get("format") != "napari-hae trace":
                    raise HAEInputError(f"{str(path)!r} is an HDF5 file but not a napari-hae trace.",
                                        "pass a trace written by napari-hae (trace.h5).")
                return cls._read_h5(f)
            except HAEInputError:
                raise
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:   # h5py: damaged metadata
                raise HAEInputError(f"The trace {str(path)!r} is damaged ({type(exc).__name__}: {exc}).",
                                    "load the run's trace.journal instead (or its folder: the most complete "
                                    "record is read); see docs/reliability.md.") from None

    @classmethod
    def _read_h5(cls, f) -> Trace:
        from .hdf5 import read

        return read(cls, f)
