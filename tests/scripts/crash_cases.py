# POSIX only (whole file): it forks; tests/test_crash_recovery.py, which runs it, is skipped on Windows.
"""Worker of the crash test (tests/test_crash_recovery.py): runs many kill-and-resume cases in one process.

Usage: python crash_cases.py WORKDIR CASES_JSON  -> one JSON result per line on stdout.

A case is {"id", "fault": "MODE:N" or null, "kill_frac": a fraction of a clean run's duration or null, "signal":
"KILL" | "INT"}. For each
case a forked child runs an experiment in WORKDIR/<id> with the fault injected (the journal's pause points, see
napari_hae.core.record.journal.FAULT_ENV) or is sent the signal after ``kill_frac`` of the time an uninterrupted
run takes on this machine (measured first); a second forked
child then resumes the run to its budget. Both children log every acquisition to a file of their own (fsync'd
before the spectrum is returned): the independent record against which the trace is checked. This process trains
nothing itself before forking except one warm-up fit with a single torch thread, so forking is safe.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

import numpy as np  # noqa: E402

from napari_hae.cli.run import _ctrl_c_stops  # noqa: E402
from napari_hae.core.analysis.summary import summarize  # noqa: E402
from napari_hae.core.data.samples.nanoparticles import make_nanoparticles  # noqa: E402
from napari_hae.core.instrument.microscope import SimulatedMicroscope  # noqa: E402
from napari_hae.core.record import journal as journal_module  # noqa: E402
from napari_hae.core.record.trace import JOURNAL_NAME, TRACE_NAME, Trace  # noqa: E402
from napari_hae.core.run.driver import RunDriver  # noqa: E402
from napari_hae.core.run.experiment import Experiment, ExperimentSettings  # noqa: E402

DATA = make_nanoparticles(shape=(24, 24), n_clusters=3, seed=3)
SETTINGS = dict(patch_size=4, n_seeds=3, budget=5, fit_iterations_first=10, fit_iterations=3,
                model={"name": "dkl", "params": {"hidden": [8]}}, random_seed=0)


class LoggingMicroscope(SimulatedMicroscope):
    def __init__(self, data, log: Path):
        super().__init__(data)
        self.log = open(log, "a")

    def acquire(self, y, x, dwell=None):
        s = super().acquire(y, x)
        self.log.write(f"{y} {x}\n")
        self.log.flush()
        os.fsync(self.log.fileno())
        return s


def drive(exp: Experiment, folder: Path) -> int:
    driver = RunDriver(exp)
    with _ctrl_c_stops(driver, folder, quiet=True):
        for _ in driver.events():
            pass
    exp.close()
    exp.trace.save(folder / TRACE_NAME)
    return 130 if driver.stopped and not exp.done else 0


def child_run(folder: Path, fault: str | None) -> None:
    journal_module._writes = 0
    if fault:
        os.environ[journal_module.FAULT_ENV] = fault
    exp = Experiment(LoggingMicroscope(DATA, folder / "acq1.log"), ExperimentSettings(**SETTINGS),
                     journal=folder / JOURNAL_NAME)
    os._exit(drive(exp, folder))


def child_resume(folder: Path) -> None:
    os.environ.pop(journal_module.FAULT_ENV, None)
    exp = Experiment.resume(Trace.load(folder), LoggingMicroscope(DATA, folder / "acq2.log"),
                            journal=folder / JOURNAL_NAME, append_journal=True)
    os._exit(drive(exp, folder))


def fork(fn, *args, kill_after=None, sig=signal.SIGKILL, timeout=120.0) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        except KeyboardInterrupt:   # Ctrl-C before the run's loop started: napari-hae's main exits with 130
            os._exit(130)
        except BaseException as exc:   # report and leave without running the parent's cleanup
            sys.stderr.write(f"child failed: {type(exc).__name__}: {exc}\n")
            os._exit(99)
    t0 = time.time()
    sent = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if kill_after is not None and not sent and time.time() - t0 >= kill_after:
            os.kill(pid, sig)
            sent = True
        if time.time() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -999
        time.sleep(0.002)


def read_log(p: Path) -> list[tuple[int, int]]:
    if not p.exists():
        return []
    return [tuple(int(v) for v in line.split()) for line in p.read_text().splitlines() if line.strip()]


def check(case: dict, root: Path, run_seconds: float = 1.0) -> dict:
    folder = root / case["id"]
    folder.mkdir(parents=True)
    sig = signal.SIGINT if case.get("signal") == "INT" else signal.SIGKILL
    kill_after = None if case.get("kill_frac") is None else case["kill_frac"] * run_seconds
    rc1 = fork(child_run, folder, case.get("fault"), kill_after=kill_after, sig=sig)
    out = {"id": case["id"], "rc1": rc1}
    acq1 = read_log(folder / "acq1.log")
    try:
        before = Trace.load(folder)
        kept = list(before.positions)
    except Exception as exc:   # nothing on disk (killed before the journal's header): a fresh start
        out["before"] = f"{type(exc).__name__}: {exc}"
        kept = []
    # what the killed run had acquired but not recorded: at most the one acquisition in flight (SIGKILL), none
    # when it was stopped by Ctrl-C
    unrecorded = [p for p in acq1 if p not in kept]
    out["unrecorded"] = len(unrecorded)
    out["recorded_not_acquired"] = len([p for p in kept if p not in acq1])
    if kept:
        rc2 = fork(child_resume, folder)
    else:   # nothing was recorded: the run is started again in a fresh folder
        for p in folder.iterdir():
            if p.name != "acq1.log":
                p.rename(folder / f"{p.name}.empty")
        rc2 = fork(child_run, folder, None)
    out["rc2"] = rc2
    acq2 = read_log(folder / "acq2.log") + ([] if kept else read_log(folder / "acq1.log")[len(acq1):])
    final = Trace.load(folder)
    out["n_steps"] = final.n_steps
    out["lost"] = len([p for p in kept if p not in final.positions])
    out["prefix_kept"] = final.positions[: len(kept)] == kept
    out["duplicates"] = final.n_points - len(set(final.positions))
    out["remeasured"] = len([p for p in acq2 if p in kept])
    out["final_matches_log"] = sorted(final.positions) == sorted(set(kept) | set(acq2))
    try:
        summarize(final, None)
        out["reportable"] = bool(np.isfinite(final.values).all())
    except Exception as exc:
        out["reportable"] = False
        out["report_error"] = f"{type(exc).__name__}: {exc}"
    return out


def main() -> None:
    root, cases = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    root.mkdir(parents=True, exist_ok=True)
    warm = Experiment(SimulatedMicroscope(DATA), ExperimentSettings(**{**SETTINGS, "budget": 1}))
    warm.run()
    warm.close()
    warm.trace.save(root / "warm.h5")   # h5py imported here, not in every child
    times = []
    for k in range(3):   # how long an uninterrupted run takes here (the random moments scale with it)
        (root / f"_clean{k}").mkdir(parents=True)
        t0 = time.perf_counter()
        fork(child_run, root / f"_clean{k}", None)
        times.append(time.perf_counter() - t0)
    run_seconds = float(np.median(times))
    for case in cases:
        print(json.dumps(check(case, root, run_seconds)), flush=True)


if __name__ == "__main__":
    main()
