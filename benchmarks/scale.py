"""Scale benchmark (issue 15): step time split fit / predict / acquire and peak memory, scan 128^2 to 1024^2 with
200 to 2,000 measured points, patch 16, the default model and policy.

    python benchmarks/scale.py                               # the table: every scan x n, one process each
    python benchmarks/scale.py --scan 1024 --n 2000 --patch 16   # one configuration; last line: JSON

A configuration measures ``n`` points as seeds (random positions), then runs ``--steps`` policy steps; the first
(the fit after the seeds, with ``fit_iterations_first``) is left out of the medians. Above ``max_train`` points the
network is refitted every ceil(n / 256) steps: the mean and the maximum show those steps. The data: a synthetic scan of
``scan``^2 positions (smooth random structure, 8-channel spectra whose band integral depends on the local
structure), built in the benchmark so that a 1024^2 run needs no 1 GiB file. Peak RSS is the process's
(``ru_maxrss``), so each configuration of the table runs in its own process. Per-step maps are not recorded
(``record_maps=False``): the timings are of the model and the policy. Grid-predictor error (scalarizer units,
RMS on 256 random positions against the exact posterior) is printed where the grid is used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def synthetic(scan: int, seed: int = 0):
    from scipy.ndimage import gaussian_filter

    from napari_hae.core.data.dataset import EnergyAxis, SpectrumImage

    rng = np.random.default_rng(seed)
    structure = gaussian_filter(rng.standard_normal((scan, scan)).astype(np.float32), 3.0)
    structure /= structure.std()
    local = gaussian_filter(structure ** 2, 6.0)                        # the target: local contrast
    energy = np.arange(1.0, 9.0)
    peak = np.exp(-0.5 * ((energy - 4.0) / 0.8) ** 2).astype(np.float32)
    spectra = (10.0 + 50.0 * local[..., None] * peak[None, None]).astype(np.float32)
    spectra += rng.normal(0, 0.5, spectra.shape).astype(np.float32)
    return SpectrumImage(structural=structure, spectra=spectra, energy=EnergyAxis(8, 1.0, 1.0),
                         pixel_size=1.0, pixel_units="nm", name=f"synthetic {scan}x{scan}")


def peak_rss_gib() -> float:
    try:
        import resource  # POSIX only: Windows has no resource module (psutil below)

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20     # KiB on Linux
    except ImportError:   # Windows
        import psutil

        return psutil.Process().memory_info().peak_wset / 2 ** 30


def one(scan: int, n: int, patch: int, steps: int, model_params: dict) -> dict:
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment, ExperimentSettings

    t0 = time.perf_counter()
    data = synthetic(scan)
    settings = ExperimentSettings(patch_size=patch, n_seeds=n, budget=steps + 1, random_seed=0, record_maps=False,
                                  scalarizer={"name": "band_integral", "params": {"a": 3.0, "b": 5.0}},
                                  model={"name": "dkl", "params": model_params})
    exp = Experiment(SimulatedMicroscope(data), settings)
    exp.start()
    setup = time.perf_counter() - t0
    for _ in range(steps + 1):
        exp.step()
    r = exp.trace.steps
    step, fit, pred = (np.asarray(r[k][1:], dtype=float) for k in ("step_time", "fit_time", "predict_time"))
    out = {"scan": scan, "n": n, "patch": patch, "steps": steps, "model": model_params,
           "median_step_s": round(float(np.median(step)), 3), "mean_step_s": round(float(np.mean(step)), 3),
           "max_step_s": round(float(np.max(step)), 3), "fit_s": round(float(np.median(fit)), 3),
           "predict_s": round(float(np.median(pred)), 3),
           "acquire_s": round(float(np.median(step - fit - pred)), 3),
           "first_step_s": round(float(r["step_time"][0]), 3), "setup_s": round(setup, 1),
           "peak_rss_gib": round(peak_rss_gib(), 2),
           "grid_mean_err": _finite_median(r["grid_mean_err"]), "grid_std_err": _finite_median(r["grid_std_err"]),
           "value_range": round(float(np.ptp(exp.trace.values)), 3),
           "device": str(exp.model.device)}   # where it computed: "cpu", or a GPU under device=auto
    exp.close()
    return out


def _finite_median(col):
    col = np.asarray(col, dtype=float)
    col = col[np.isfinite(col)]
    return round(float(np.median(col)), 5) if len(col) else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", type=int)
    ap.add_argument("--n", type=int)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16, help="policy steps after the first (2 refits at n = 2,000)")
    ap.add_argument("--model-param", action="append", default=[], metavar="K=V",
                    help="a DKL parameter, e.g. predictor=exact (JSON values)")
    args = ap.parse_args()
    params = {k: json.loads(v) if v[:1] in "[{0123456789-tf" else v
              for k, v in (p.split("=", 1) for p in args.model_param)}
    if args.scan:
        out = one(args.scan, args.n or 200, args.patch, args.steps, params)
        print(f"scan {out['scan']}^2, n {out['n']}, patch {out['patch']}, {out['device']}: median step "
              f"{out['median_step_s']} s "
              f"(fit {out['fit_s']}, predict {out['predict_s']}, acquire {out['acquire_s']}; mean "
              f"{out['mean_step_s']}, max {out['max_step_s']}); first step "
              f"{out['first_step_s']} s; peak RSS {out['peak_rss_gib']} GiB; grid error mean/std "
              f"{out['grid_mean_err']}/{out['grid_std_err']} (values span {out['value_range']})", flush=True)
        print(json.dumps(out))
        return
    print(f"cpus {os.cpu_count()}; one process per configuration; a GPU, where one was used, after n",
          flush=True)
    print("| scan | n | median step | mean / max step | fit | predict | acquire | peak RSS | grid error mean / std |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for scan in (128, 512, 1024):
        for n in (200, 1000, 2000):
            cmd = [sys.executable, __file__, "--scan", str(scan), "--n", str(n), "--patch", str(args.patch),
                   "--steps", str(args.steps), *sum((["--model-param", p] for p in args.model_param), [])]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(f"| {scan}^2 | {n} | failed: {res.stderr.strip().splitlines()[-1:]} |", flush=True)
                continue
            o = json.loads(res.stdout.strip().splitlines()[-1])
            where = "" if o["device"] == "cpu" else f" ({o['device']})"
            print(f"| {scan}^2 | {n}{where} | {o['median_step_s']} s | {o['mean_step_s']} / {o['max_step_s']} s | "
                  f"{o['fit_s']} s | {o['predict_s']} s | "
                  f"{o['acquire_s']} s | {o['peak_rss_gib']} GiB | {o['grid_mean_err']} / {o['grid_std_err']} |",
                  flush=True)


if __name__ == "__main__":
    main()
