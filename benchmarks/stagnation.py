"""Do anti-stagnation policies get stuck less than plain EI? Same budget, >= 20 seeds, on the sample data.

    python benchmarks/stagnation.py --random-seeds 20 --steps 50 --out sweeps/stagnation

A run counts as stuck when the stuck-run detector (last 10 picks within 5% of the scan size while the mean
uncertainty fell < 5%) flagged at least one of its steps. Also printed: steps to the top 1% (median; never
reached = budget + 1), travel distance. The table and heat maps stay in --out.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_hae.core.analysis.sweep import SweepSpec, parse_policy, read_table, run_sweep
from napari_hae.core.plots.heatmaps import heatmaps

POLICIES = ["ei:xi=0.01", "ei_penalized:xi=0.01,radius=5", "ucb_scheduled:beta_start=16,beta_end=0.5",
            "ucb_travel:beta=4,cost=1"]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--random-seeds", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--patch", type=int, nargs="+", default=[10])
    p.add_argument("--policy", nargs="+", default=POLICIES)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="sweeps/stagnation")
    a = p.parse_args(argv)
    spec = SweepSpec({"sample": "nanoparticles"},
                     {"budget": a.steps, "n_seeds": 10, "record_maps": False,
                      "scalarizer": {"name": "band_integral", "params": {"a": 1.2, "b": 2.25}}},
                     {"patch_size": a.patch, "policy": [parse_policy(s) for s in a.policy]},
                     list(range(a.random_seeds)))
    t0 = time.perf_counter()
    table = run_sweep(spec, a.out, n_workers=a.workers)
    rows = read_table(table)
    heatmaps(table, f"{a.out}/heatmaps.png",
             title=f"nanoparticles dipole band, {a.steps} steps, {a.random_seeds} seeds")
    print(f"\n{len(rows)} runs, {time.perf_counter() - t0:.0f} s\n")
    print("| policy | patch | runs | stuck runs | stuck steps (mean) | steps to top 1% (median) | travel px (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for lab in sorted({r["policy_label"] for r in rows}):
        for n in sorted({int(r["patch_size"]) for r in rows}):
            rs = [r for r in rows if r["policy_label"] == lab and int(r["patch_size"]) == n]
            top = [r["steps_to_top1"] if r["steps_to_top1"] is not None else r["steps"] + 1 for r in rs]
            print(f"| {lab} | {n} | {len(rs)} | {np.mean([r['stuck_run'] for r in rs]):.0%} | "
                  f"{np.mean([r['stuck_steps'] for r in rs]):.1f} | {np.median(top):.0f} | "
                  f"{np.median([r['travel_px'] for r in rs]):.0f} |")


if __name__ == "__main__":
    main()
