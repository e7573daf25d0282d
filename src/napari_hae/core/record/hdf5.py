"""A trace as an HDF5 file (h5py): every dataset checksummed (Fletcher-32), metadata checksummed (libver latest),
maps written one at a time (a long run's maps are never stacked in memory a second time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .files import replace_file
from .schema import FORMAT_VERSION, MAP_NAMES, POINT_KINDS, STEP_SCALARS, StepRecord, migrate_settings


def _dataset(group, name: str, data=None, **kw):
    """A dataset with a Fletcher-32 checksum (non-empty ones), so that a damaged trace.h5 fails to read instead of
    reading back wrong numbers; ``data`` None: an empty one of ``shape``, filled later."""
    data = None if data is None else np.asarray(data)
    if (data.size if data is not None else int(np.prod(kw["shape"]))):
        kw.setdefault("fletcher32", True)
    return group.create_dataset(name, data=data, **kw)


def write(trace, path) -> Path:
    """Write ``trace`` to ``path`` (a temporary name first, then renamed)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w", libver="latest") as f:   # latest: checksummed metadata
        f.attrs["format"] = "napari-hae trace"
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["run_id"] = trace.run_id
        for key in ("settings", "dataset", "interventions", "events", "versions", "rng_state"):
            f.attrs[key] = json.dumps(getattr(trace, key))
        _dataset(f, "structural", data=trace.structural)
        p = f.create_group("points")
        _dataset(p, "positions", data=trace.positions_array())
        if trace.spectra:
            _dataset(p, "spectra", data=trace.spectra_array(), compression="gzip", compression_opts=1)
        _dataset(p, "values", data=np.asarray(trace.values, dtype=np.float64))
        _dataset(p, "kinds", data=np.asarray([POINT_KINDS.index(k) for k in trace.kinds], dtype=np.int8))
        _dataset(p, "steps", data=np.asarray(trace.point_steps, dtype=np.int64))
        _dataset(p, "dwells", data=np.asarray(trace.dwells, dtype=np.float64))
        _dataset(p, "beam_on_s", data=np.asarray(trace.beam_on, dtype=np.float64))
        s = f.create_group("steps")
        _dataset(s, "position", data=np.asarray(trace.steps["position"], dtype=np.int64).reshape(-1, 2))
        for k in StepRecord.text_names():
            s.attrs[k] = json.dumps(trace.steps[k])
        for k in STEP_SCALARS:
            _dataset(s, k, data=np.asarray(trace.steps[k], dtype=np.float64))
        m = f.create_group("maps")
        held = trace.maps_held
        _dataset(m, "steps", data=np.asarray(held, dtype=np.int64))
        for k in MAP_NAMES:   # written map by map: never a second copy of them all in memory
            stack = [trace.map_at(k, step) for step in held]
            if stack:
                d = _dataset(m, k, shape=(len(stack), *np.shape(stack[0])), dtype=np.float32,
                             compression="gzip", compression_opts=1, chunks=(1, *np.shape(stack[0])))
                for i, a in enumerate(stack):
                    d[i] = a
        mon = f.create_group("monitors")
        for k, v in trace.monitors.items():
            _dataset(mon, k, data=np.asarray(v))
        o = f.create_group("objects")
        for i, obj in enumerate(trace.objects):
            d = _dataset(o, str(i), data=np.asarray(obj["mask"], dtype=bool))
            d.attrs["mode"] = obj["mode"]
            d.attrs["label"] = obj.get("label", "")
    _keep_another_runs_trace(path, trace.run_id)
    replace_file(tmp, path)   # held open elsewhere (Windows): FileInUse, the new trace kept in tmp
    return path


def _keep_another_runs_trace(path: Path, run_id: str) -> None:
    """A trace file at ``path`` of another run (or one that cannot be read to tell) is set aside, whole, before
    ``path`` is replaced: saving never deletes another run's record."""
    if not path.exists():
        return
    import h5py

    from .journal import set_aside

    try:
        with h5py.File(path, "r") as f:
            same = str(f.attrs.get("run_id", "")) == run_id and bool(run_id)
    except (OSError, KeyError, ValueError):
        same = False
    if not same:
        set_aside(path, "other-run")


def read(cls, f):
    """The trace (of class ``cls``) in the open HDF5 file ``f``."""
    t = cls(structural=f["structural"][()], run_id=str(f.attrs.get("run_id", "")))
    for key in ("settings", "dataset", "interventions", "events", "versions", "rng_state"):
        if key in f.attrs:
            setattr(t, key, json.loads(f.attrs[key]))
    t.settings = migrate_settings(t.settings)
    p = f["points"]
    t.positions = [tuple(int(c) for c in row) for row in p["positions"][()]]
    t.spectra = list(p["spectra"][()]) if "spectra" in p else []
    t.values = [float(v) for v in p["values"][()]]
    t.kinds = [POINT_KINDS[int(k)] for k in p["kinds"][()]]
    t.point_steps = [int(v) for v in p["steps"][()]]
    t.dwells = [float(v) for v in p["dwells"][()]] if "dwells" in p else [float("nan")] * len(t.positions)
    t.beam_on = [float(v) for v in p["beam_on_s"][()]] if "beam_on_s" in p else [float("nan")] * len(t.positions)
    s = f["steps"]
    t.steps["position"] = [tuple(int(c) for c in row) for row in s["position"][()]]
    for k in StepRecord.text_names():
        t.steps[k] = json.loads(s.attrs[k])
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
