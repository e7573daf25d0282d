"""Step-time benchmark: one DKL step (retrain + predict on every patch + acquire + measure) at
128 x 128 positions (16,384 patches), patch 16, 200 measured points, on the bundled nanoparticle physics.

Side by side, in the same experiment loop: the workflow of AtomAI's dklGPR active-learning examples (a fresh
dklGPR refit each step with its defaults), and the same at napari-hae's network size and iterations.
Optionally (--discovery) compares discovery on the 96 x 96 sample: warm start vs a cold refit with 200
iterations every step (the atomai schedule on our model).

    python benchmarks/step_time.py [--repeats 15] [--atomai-repeats 2] [--discovery] [--warm] [--no-atomai]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
warnings.filterwarnings("ignore")

from napari_hae.core.analysis.metrics import random_median_steps, top_mask  # noqa: E402
from napari_hae.core.data.samples import load_sample  # noqa: E402
from napari_hae.core.data.samples.nanoparticles import make_nanoparticles  # noqa: E402
from napari_hae.core.instrument.microscope import SimulatedMicroscope  # noqa: E402
from napari_hae.core.model.dkl import DKLRegressor  # noqa: E402
from napari_hae.core.run.experiment import Experiment, ExperimentSettings  # noqa: E402


def step_times(data, n_steps, model_factory=None, skip_first=True, **kw):
    settings = ExperimentSettings(patch_size=16, n_seeds=200, budget=n_steps + 1, random_seed=0,
                                  policy={"name": "ei", "params": {"xi": 0.01}}, record_maps=False, **kw)
    exp = Experiment(SimulatedMicroscope(data), settings, model_factory=model_factory)
    exp.start()
    times = [exp.step().record["step_time"] for _ in range(n_steps + (1 if skip_first else 0))]
    return np.array(times[1:] if skip_first else times), exp


def discovery(model_factory=None, runs=10, label=""):
    data = load_sample("nanoparticles")
    from napari_hae.core.data.samples.nanoparticles import BANDS
    from napari_hae.core.targets.scalarizers import Scalarizer

    mask = top_mask(Scalarizer("band_integral", dict(zip("ab", BANDS["dipole"])))(data.spectra, data.energies))
    cap = random_median_steps(data.n_positions - 10, int(mask.sum()))
    steps, t0 = [], time.perf_counter()
    for seed in range(runs):
        exp = Experiment(SimulatedMicroscope(data),
                         ExperimentSettings(policy={"name": "ucb", "params": {"beta": 4.0}}, budget=cap,
                                            random_seed=seed, record_maps=False), model_factory=model_factory)
        exp.start()
        steps.append(next((r.step + 1 for r in exp.iter_steps() if mask[r.position]), cap))
    print(f"discovery {label}: steps to top-1% {steps}, median {np.median(steps)} (random {cap}, cap {cap}); "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--atomai-repeats", type=int, default=2)
    ap.add_argument("--discovery", action="store_true")
    ap.add_argument("--warm", action="store_true", help="also time the warm start (the default before issue 16)")
    ap.add_argument("--no-atomai", action="store_true", help="skip the AtomAI comparison")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)
    data = make_nanoparticles(shape=(128, 128), n_clusters=28, seed=7)

    ours, exp = step_times(data, args.repeats)
    r = exp.trace.steps
    print(f"napari-hae step: median {np.median(ours):.3f} s, mean {ours.mean():.3f} s (min {ours.min():.3f}, max "
          f"{ours.max():.3f}) over "
          f"{len(ours)} steps; fit {np.median(r['fit_time'][1:]):.3f} s ({exp.settings.fit_iterations} iterations, "
          f"restart={exp.settings.model.params['restart']}), predict {np.median(r['predict_time'][1:]):.3f} s; "
          f"MLP {_hidden(exp.settings)}", flush=True)
    if args.warm:   # the earlier default in the same process: continue from the last weights, 30 iterations
        warm, wexp = step_times(data, args.repeats, model={"name": "dkl", "params": {"restart": "warm"}},
                                fit_iterations=30)
        w = wexp.trace.steps
        print(f"warm start (30 iterations): median {np.median(warm):.3f} s, fit {np.median(w['fit_time'][1:]):.3f} "
              f"s, predict {np.median(w['predict_time'][1:]):.3f} s -> default / warm = "
              f"{np.median(ours) / np.median(warm):.2f}x", flush=True)
    if args.no_atomai:
        return

    from atomai_workflow import AtomaiDKL

    same, _ = step_times(data, args.atomai_repeats + 1, skip_first=False,
                         model_factory=lambda d, s: AtomaiDKL(d, training_cycles=s.fit_iterations,
                                                              hidden=_hidden(s), precision="single"))
    print(f"atomai dklGPR refit, equal network {_hidden(exp.settings)} and iterations {exp.settings.fit_iterations}, "
          f"float32: median {np.median(same):.3f} s -> ratio {np.median(same) / np.median(ours):.1f}x", flush=True)
    full, _ = step_times(data, args.atomai_repeats, skip_first=False,
                         model_factory=lambda d, s: AtomaiDKL(d, training_cycles=200))
    print(f"atomai dklGPR refit, its defaults ([1000, 500, 50], 200 cycles, float64, KISS-GP): median "
          f"{np.median(full):.2f} s -> ratio {np.median(full) / np.median(ours):.0f}x", flush=True)

    if args.discovery:
        discovery(label="napari-hae warm start (30 it/step)")
        discovery(model_factory=lambda d, s: _ColdRefit(d, s), label="cold refit every step (200 it)")


class _ColdRefit(DKLRegressor):
    """The atomai schedule on napari-hae's model: a fresh network fitted for 200 iterations at every step."""

    def __init__(self, d, s):
        super().__init__(d, seed=s.random_seed, **s.model.params)

    def fit(self, X, y, *, iterations=100, warm=True):
        return super().fit(X, y, iterations=200, warm=False)


def _hidden(s):
    """The MLP widths of the settings' DKL model."""
    return tuple(s.model.params.get("hidden", (64, 32)))


if __name__ == "__main__":
    main()
