"""Hyperparameter sweeps: a grid of settings x random seeds, each an independent simulated experiment, run on
dask.distributed (an embedded ``LocalCluster`` by default, or any scheduler address).

Results go to ``OUT/results.csv``, one row per run, appended (and flushed) as each run finishes, and each run's
trace to ``OUT/traces/RUN_ID.h5``. A sweep that is interrupted and started again skips every run already in the
table: run ids are hashes of the run's settings and seed, so the same grid gives the same ids.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import HAEInputError
from ..registry import parse_name_params
from ..run.settings import ExperimentSettings


@dataclass
class SweepRow:
    """One run of a sweep: the table's columns (results.csv) are this schema's fields, in order."""

    run_id: str
    patch_size: int
    policy: str
    policy_param: float
    policy_label: str
    scalarizer: str
    model: str
    goal: str
    seed: int
    steps: int
    steps_to_top1: int | None
    steps_to_top5: int | None
    best_value: float | None
    best_fraction: float | None
    final_std_mean: float
    mean_std_mean: float
    mean_next_std: float
    travel_px: float
    stuck_steps: int
    stuck_run: int
    time_s: float
    worker: str


COLUMNS = tuple(f.name for f in fields(SweepRow))
TEXT_COLUMNS = tuple(f.name for f in fields(SweepRow) if f.type == "str")


def parse_policy(text: str) -> dict:
    """``"ei:xi=0.05"`` -> ``{"name": "ei", "params": {"xi": 0.05}}``; several parameters with commas. Validated."""
    from ..policy import make_policy

    d = parse_name_params(text, "ei:xi=0.05 or ucb:beta=4 or ei_penalized:xi=0.01,radius=5")
    make_policy(d["name"], **d["params"])          # validate now, not in a worker
    return d


@dataclass
class SweepSpec:
    """What to sweep. ``source`` names the data ({"sample": "nanoparticles"} or {"spectrum": path, "image": path});
    ``base`` holds ExperimentSettings fields shared by all runs; ``grid`` maps a field to its values (every
    combination is run); ``seeds`` are the random seeds (seed positions and noise differ per seed)."""

    source: dict
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])

    def runs(self) -> list[dict]:
        keys = list(self.grid)
        out = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            for seed in self.seeds:
                settings = {**self.base, **dict(zip(keys, combo)), "random_seed": int(seed)}
                ExperimentSettings.from_dict(settings)   # a typo in the grid is an error now, not a wrong run
                rid = hashlib.sha1(json.dumps([self.source, settings], sort_keys=True).encode()).hexdigest()[:12]
                out.append({"run_id": rid, "source": self.source, "settings": settings})
        if len({r["run_id"] for r in out}) != len(out):
            raise HAEInputError("The sweep grid repeats a run (the same settings and seed twice).",
                                "give each value once per grid field.")
        return out


@lru_cache(maxsize=4)
def _load(source_json: str):
    """The run's dataset, loaded once per worker process (runs of a sweep share it)."""
    from ..data.io import load_source

    return load_source(json.loads(source_json))


def run_one(run: dict, out_dir: str | None = None, torch_threads: int = 1) -> dict:
    """One simulated experiment (on a dask worker or here); returns its table row."""
    import torch

    from ..instrument.microscope import SimulatedMicroscope
    from ..run.driver import RunDriver
    from ..run.experiment import Experiment
    from .summary import summarize

    torch.set_num_threads(int(torch_threads))
    t0 = time.perf_counter()
    data = _load(json.dumps(run["source"], sort_keys=True))
    settings = ExperimentSettings.from_dict(run["settings"])
    exp = Experiment(SimulatedMicroscope(data, seed=settings.random_seed), settings,
                     dataset_info={**data.describe(), "source": run["source"],
                                   "fingerprint": data.fingerprint()})
    RunDriver(exp).run()
    tr = exp.trace
    summary = summarize(tr, data.scalarize(exp.scalarizer))
    pol = exp.policy.to_dict()
    params = pol.get("params", {})
    stuck = np.nan_to_num(tr.step_array("stuck"))
    nan = float("nan")
    row = SweepRow(
        run_id=run["run_id"], patch_size=exp.patch_size, policy=pol["name"],
        policy_param=next(iter(params.values()), nan) if params else nan,
        policy_label=exp.policy.label(), scalarizer=exp.scalarizer.label(), model=settings.model.name,
        goal=settings.goal, seed=settings.random_seed, steps=tr.n_steps,
        steps_to_top1=summary["steps_to_top1pct"], steps_to_top5=summary["steps_to_top5pct"],
        best_value=summary["best_value"], best_fraction=summary["best_fraction_of_truth_best"],
        final_std_mean=float(tr.steps["std_mean"][-1]) if tr.n_steps else nan,
        mean_std_mean=float(np.mean(tr.steps["std_mean"])) if tr.n_steps else nan,
        mean_next_std=float(np.mean(tr.steps["next_std"])) if tr.n_steps else nan,
        travel_px=float(tr.steps["travel_px"][-1]) if tr.n_steps else 0.0,
        stuck_steps=int(stuck.sum()), stuck_run=int(stuck.sum() > 0),
        time_s=time.perf_counter() - t0, worker=f"{os.getpid()}")
    if out_dir is not None:
        tr.save(Path(out_dir) / "traces" / f"{run['run_id']}.h5")
    return asdict(row)


def _rows(table) -> list[dict]:
    """The table's complete rows, checked against the schema; a last row cut short (a killed sweep) is dropped, it
    is run again. Damage elsewhere is a clear error."""
    table = Path(table)
    try:
        with open(table, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("run_id", *COLUMNS) if c not in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HAEInputError(f"The sweep table {str(table)!r} cannot be read ({exc}).",
                            "check the file; move it aside to start the sweep afresh.") from None
    if missing:
        raise HAEInputError(f"The sweep table {str(table)!r} is not a napari-hae results table (no column(s) "
                            f"{sorted(set(missing))[:5]}).",
                            "pass the results.csv written by napari-hae sweep, or move this file aside.")
    complete = [None not in r.values() and None not in r for r in rows]
    if rows and not complete[-1]:
        rows, complete = rows[:-1], complete[:-1]
    if not all(complete):
        raise HAEInputError(f"The sweep table {str(table)!r} has damaged rows (line(s) "
                            f"{[i + 2 for i, ok in enumerate(complete) if not ok][:5]}).",
                            "remove those lines (their runs are run again on the next sweep), or move the table "
                            "aside.")
    return rows


def finished_runs(table: Path) -> set[str]:
    if not Path(table).exists():
        return set()
    return {r["run_id"] for r in _rows(table)}


def read_table(table) -> list[dict]:
    """The results table as a list of dicts with numbers parsed (empty cells: None)."""
    rows = []
    for line, r in enumerate(_rows(table), start=2):
        out = {}
        for k, v in r.items():
            if k in TEXT_COLUMNS:
                out[k] = v
                continue
            try:
                out[k] = None if v in ("", "None") else float(v)
            except ValueError:
                raise HAEInputError(f"The sweep table {str(table)!r}, line {line}: {k}={v!r} is not a number.",
                                    "fix or remove that line, or move the table aside.") from None
        rows.append(out)
    return rows


def run_sweep(spec: SweepSpec, out, scheduler: str | None = None, n_workers: int = 2, progress: bool = True,
              local: bool = False) -> Path:
    """Run every run of ``spec`` not yet in ``OUT/results.csv``; returns the table path.

    ``scheduler``: address of an existing Dask scheduler; default: an embedded LocalCluster with ``n_workers``
    single-threaded worker processes. ``local=True`` runs in this process (no Dask; for debugging).
    """
    from tqdm import tqdm

    out = Path(out)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    table = out / "results.csv"
    (out / "sweep.json").write_text(json.dumps({"source": spec.source, "base": spec.base, "grid": spec.grid,
                                                "seeds": spec.seeds}, indent=2))
    done = finished_runs(table)
    todo = [r for r in spec.runs() if r["run_id"] not in done]
    new_file = not table.exists()
    with open(table, "a", newline="") as fh, tqdm(total=len(todo), desc="sweep", unit="run",
                                                  disable=not progress) as bar:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
            fh.flush()

        def record(row):
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(1)

        if local:
            for r in todo:
                record(run_one(r, str(out)))
            return table
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler is None:
            import logging

            cluster = LocalCluster(n_workers=int(n_workers), threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(scheduler or cluster)
        try:
            futures = [client.submit(run_one, r, str(out.resolve()), key=f"hae-run-{r['run_id']}", pure=False)
                       for r in todo]
            for fut in as_completed(futures):
                record(fut.result())
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return table


def summary_grid(rows: list[dict], metric: str) -> tuple[list[str], list[int], np.ndarray]:
    """(policy labels, patch sizes, grid[label, patch]) of ``metric`` over seeds: the mean for ``stuck_run`` (a
    fraction), else the median. A run that never reached its target counts as budget + 1 steps."""
    labels = sorted({r["policy_label"] for r in rows})
    patches = sorted({int(r["patch_size"]) for r in rows})
    grid = np.full((len(labels), len(patches)), np.nan)
    for i, lab in enumerate(labels):
        for j, n in enumerate(patches):
            vals = [(r[metric] if r[metric] is not None else r["steps"] + 1) for r in rows
                    if r["policy_label"] == lab and int(r["patch_size"]) == n]
            if vals:
                grid[i, j] = np.mean(vals) if metric == "stuck_run" else np.median(vals)
    return labels, patches, grid
