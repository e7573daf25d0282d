"""How much of a live run is spent acquiring: Nion's simulated STEM (nion-usim), in one process, sequential
(``pipeline_depth`` 0) and pipelined (1), at several dwells.

The time per policy point is the interval between the steps the run driver delivers, from step ``--skip`` on (the
first fits are longer): its median, and its mean (the same as the difference of two runs that differ only in
their step count, divided by the difference). The acquiring share is the dwell over the median. The beam time per
point is the trace's ``beam_on_s`` (the dose ledger) over the dwell; the fit time the trace's ``fit_time``.

    python benchmarks/live_pipeline.py [--dwells 0.05 0.2 1] [--steps 16] [--skip 3]

Prints a table and a last JSON line. Needs the [nion] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def run(dwell: float, steps: int, depth: int) -> dict:
    from napari_hae.core.instrument.adapters import close_microscope, make_microscope
    from napari_hae.core.run.driver import RunDriver
    from napari_hae.core.run.experiment import Experiment, ExperimentSettings
    from napari_hae.core.run.results import StepResult

    mic = make_microscope("nion-usim", None)
    settings = ExperimentSettings(n_seeds=4, budget=steps, dwell=dwell, pipeline_depth=depth,
                                  scalarizer={"name": "band_integral", "params": {"a": 150.0, "b": 320.0}})
    exp = Experiment(mic, settings)
    delivered = [time.perf_counter() for item in RunDriver(exp).events() if isinstance(item, StepResult)]
    tr = exp.trace
    exp.close()
    close_microscope(mic)
    return {"intervals": np.diff(delivered), "beam": np.asarray(tr.beam_on, float),
            "fit": tr.step_array("fit_time")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dwells", type=float, nargs="+", default=[0.05, 0.2, 1.0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--skip", type=int, default=3, help="intervals left out at the start (the first fits)")
    args = ap.parse_args()
    rows = []
    for dwell in args.dwells:
        for depth in (0, 1):
            r = run(dwell, args.steps, depth)
            iv = r["intervals"][args.skip:]
            row = {"dwell_s": dwell, "pipeline_depth": depth, "s_per_point_median": round(float(np.median(iv)), 4),
                   "s_per_point_mean": round(float(np.mean(iv)), 4),
                   "acquiring_share": round(dwell / float(np.median(iv)), 3),
                   "fit_s_median": round(float(np.median(r["fit"][args.skip:])), 4),
                   "beam_on_per_dwell_median": round(float(np.nanmedian(r["beam"])) / dwell, 3)}
            rows.append(row)
            print(f"dwell {dwell:>5g} s  pipeline {depth}: {row['s_per_point_median']:.3f} s per policy point "
                  f"(mean {row['s_per_point_mean']:.3f}), {100 * row['acquiring_share']:.0f}% acquiring, fit "
                  f"{row['fit_s_median']:.3f} s, beam on {row['beam_on_per_dwell_median']:.2f} x the dwell",
                  flush=True)
    print(json.dumps({"benchmark": "live_pipeline", "microscope": "nion-usim", "steps": args.steps,
                      "cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
