"""Soak: a long run on the sample data, printing memory and step time as it goes.

    python benchmarks/soak.py --steps 1000 --patch 8 --fit-iterations 5
    python benchmarks/soak.py --steps 1000 --scan 512 --patch 16 --fit-iterations 60   # issue 15: 512 x 512

``--scan S`` runs on the synthetic S x S scan of ``benchmarks/scale.py`` with the default model (bounded training
subset, refit schedule, grid predictor) and the default iterations given.

Memory is the process's resident set size (psutil); step time is the median over the last 50 steps (with its fit and
predict parts). The run is journaled to a temporary folder (as the CLI does), maps are not stored (they would
grow by design: 3 maps per step). Prints one line per 100 steps and a final table.

The exact GP's cost grows with the number of measured points (Cholesky n^3, prediction on every patch ~ n per
patch), so step time and working memory grow with n by design. ``--window M`` trains each step on the M most
recent points only (a benchmark device, not a product setting): the per-step work is then constant, and any
growth left would be a leak in the loop, the trace, the journal or the model wrapper.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from napari_hae.core.data.samples import load_sample
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.run.experiment import Experiment, ExperimentSettings


class WindowedModel:
    """DKLRegressor trained on the last ``window`` points only (constant work per step)."""

    def __init__(self, model, window):
        self.model_, self.window = model, int(window)

    def fit(self, X, y, **kw):
        return self.model_.fit(X[-self.window:], y[-self.window:], **kw)

    def __getattr__(self, name):
        return getattr(self.model_, name)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--fit-iterations", type=int, default=5)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--window", type=int, default=0, help="train on the last M points only (0: all)")
    p.add_argument("--scan", type=int, default=0, help="the synthetic S x S scan of scale.py (0: the sample)")
    a = p.parse_args(argv)
    proc = psutil.Process()
    if a.scan:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from scale import synthetic

        data = synthetic(a.scan)
    else:
        data = load_sample("nanoparticles")
    settings = ExperimentSettings(patch_size=a.patch, budget=a.steps, n_seeds=10, fit_iterations=a.fit_iterations,
                                  fit_iterations_first=100, record_maps=False,
                                  policy={"name": "ucb", "params": {"beta": 4.0}},
                                  **({"scalarizer": {"name": "band_integral", "params": {"a": 3.0, "b": 5.0}}}
                                     if a.scan else {}))
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "trace.journal"
        factory = None
        if a.window:
            from napari_hae.core.model import make_model

            def factory(dim, s):
                return WindowedModel(make_model(s.model.to_dict(), dim, seed=s.random_seed), a.window)

        exp = Experiment(SimulatedMicroscope(data), settings, journal=journal, model_factory=factory)
        exp.start()
        times, fits, preds, rows = [], [], [], []
        rss0 = proc.memory_info().rss / 2**20
        print(f"torch threads {torch.get_num_threads()}, scan {data.scan_shape}, patch {a.patch}, "
              f"{a.fit_iterations} Adam iterations per step; RSS after seeds {rss0:.0f} MiB")
        t_all = time.perf_counter()
        for res in exp.iter_steps():
            times.append(res.record["step_time"])
            fits.append(res.record["fit_time"])
            preds.append(res.record["predict_time"])
            k = res.step + 1
            if k % a.every == 0:
                gc.collect()
                rss = proc.memory_info().rss / 2**20
                med = float(np.median(times[-50:]))
                fm, pm = float(np.median(fits[-50:])), float(np.median(preds[-50:]))
                rows.append((k, exp.trace.n_points, rss, med, journal.stat().st_size / 2**20, fm, pm))
                print(f"step {k:5d}: {exp.trace.n_points:5d} points, RSS {rss:7.1f} MiB, median step (last 50) "
                      f"{med * 1000:6.1f} ms (fit {fm * 1000:.0f}, predict {pm * 1000:.0f}), journal "
                      f"{rows[-1][4]:.1f} MiB", flush=True)
        exp.close()
        wall = time.perf_counter() - t_all
    print(f"\n{a.steps} steps in {wall:.0f} s")
    print("| step | points | RSS (MiB) | median step (ms) | fit (ms) | predict (ms) | journal (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for k, n, rss, med, jm, fm, pm in rows:
        print(f"| {k} | {n} | {rss:.0f} | {med * 1000:.0f} | {fm * 1000:.0f} | {pm * 1000:.0f} | {jm:.1f} |")
    if len(rows) >= 2:
        r100 = rows[0]
        rl = rows[-1]
        print(f"\nRSS growth step {r100[0]} -> {rl[0]}: {rl[2] - r100[2]:+.1f} MiB; "
              f"step time ratio {rl[3] / r100[3]:.2f}")


if __name__ == "__main__":
    main()
