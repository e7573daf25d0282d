"""Sweep throughput: the same grid on a LocalCluster with 1 worker and with 2 workers (1 torch thread each).

    python benchmarks/sweep_throughput.py --random-seeds 2 --steps 20

Target: 2 workers finish in <= 0.6x the time of 1 worker.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from napari_hae.core.analysis.sweep import SweepSpec, parse_policy, read_table, run_sweep


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--random-seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args(argv)
    spec = SweepSpec({"sample": "nanoparticles"},
                     {"budget": a.steps, "n_seeds": 10, "record_maps": False,
                      "scalarizer": {"name": "band_integral", "params": {"a": 1.2, "b": 2.25}}},
                     {"patch_size": [8, 16], "policy": [parse_policy("ei:xi=0.01"), parse_policy("ucb:beta=4")]},
                     list(range(a.random_seeds)))
    times = {}
    for n in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            table = run_sweep(spec, tmp, n_workers=n, progress=False)
            times[n] = time.perf_counter() - t0
            rows = read_table(table)
        per_run = sum(r["time_s"] for r in rows) / len(rows)
        print(f"{n} worker(s): {len(rows)} runs in {times[n]:.1f} s (mean {per_run:.1f} s per run inside a worker)",
              flush=True)
    print(f"2 workers / 1 worker: {times[2] / times[1]:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
