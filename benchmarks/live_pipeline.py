"""How much of a live run is spent acquiring: Nion's simulated STEM (nion-usim) through the command line, sequential
(``--pipeline 0``) and pipelined (``--pipeline 1``), at several dwells.

The time per policy point is the difference of two runs that differ only in their step count, divided by the
difference (start-up, seeds and the first fit cancel out); the acquiring share is the dwell over that time. The
beam time per point is the trace's ``beam_on_s`` (the dose ledger) over the dwell.

    python benchmarks/live_pipeline.py [--dwells 0.05 0.2 1] [--steps 4 12]

Prints a table and a last JSON line. Needs the [nion] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def run(dwell: float, steps: int, depth: int, folder: Path) -> tuple[float, np.ndarray]:
    """(wall seconds of the run's loop, beam seconds per point) of one command-line run."""
    out = folder / f"d{dwell}-n{steps}-p{depth}"
    cmd = [sys.executable, "-m", "napari_hae.cli", "run", "--microscope", "nion-usim", "--dwell", str(dwell),
           "--steps", str(steps), "--pipeline", str(depth), "--n-seeds", "4", "--out", str(out), "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    from napari_hae.core.record.trace import Trace

    return float(summary["wall_time_s"]), np.asarray(Trace.load(out / "trace.h5").beam_on, dtype=float)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dwells", type=float, nargs="+", default=[0.05, 0.2, 1.0])
    ap.add_argument("--steps", type=int, nargs=2, default=[4, 12])
    args = ap.parse_args()
    short, long = args.steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dwell in args.dwells:
            for depth in (0, 1):
                (t_short, _), (t_long, beam) = (run(dwell, n, depth, Path(tmp)) for n in (short, long))
                per_point = (t_long - t_short) / (long - short)
                rows.append({"dwell_s": dwell, "pipeline_depth": depth, "s_per_policy_point": round(per_point, 4),
                             "acquiring_share": round(dwell / per_point, 3),
                             "beam_on_per_dwell_median": round(float(np.nanmedian(beam)) / dwell, 3)})
                r = rows[-1]
                print(f"dwell {dwell:>5g} s  pipeline {depth}: {per_point:.3f} s per policy point, "
                      f"{100 * r['acquiring_share']:.0f}% acquiring, beam on {r['beam_on_per_dwell_median']:.2f} x "
                      "the dwell (median)", flush=True)
    print(json.dumps({"benchmark": "live_pipeline", "microscope": "nion-usim", "steps": [short, long],
                      "cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
