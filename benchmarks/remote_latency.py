"""Round-trip latency of one spectrum from a microscope server over loopback, and its share of a step.

    python benchmarks/remote_latency.py --n 500

Starts ``napari-hae serve --sample nanoparticles`` as a separate process, times ``acquire`` through the client
(request, simulator replay, reply) against the same call in-process, then runs a short experiment through the
server to measure a full step (train, predict, acquire) on the same machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

from napari_hae.core.data.samples import load_sample
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.instrument.remote import RemoteMicroscope
from napari_hae.core.run.experiment import Experiment, ExperimentSettings


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args(argv)
    proc = subprocess.Popen([sys.executable, "-m", "napari_hae.cli", "serve", "--sample", "nanoparticles",
                             "--port", "0", "--token", "bench"], stdout=subprocess.PIPE, text=True)
    address = proc.stdout.readline().split(" on ")[1].split()[0]
    try:
        remote = RemoteMicroscope(address, token="bench")
        local = SimulatedMicroscope(load_sample("nanoparticles"))
        rng = np.random.default_rng(0)
        pos = rng.integers(0, 96, (a.n, 2))
        for y, x in pos[:20]:   # warm up
            remote.acquire(y, x)
        rt, lt = [], []
        for y, x in pos:
            t0 = time.perf_counter()
            s = remote.acquire(y, x)
            rt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            local.acquire(y, x)
            lt.append(time.perf_counter() - t0)
        exp = Experiment(remote, ExperimentSettings(patch_size=16, budget=a.steps, n_seeds=10))
        exp.run()
        step = float(np.median(exp.trace.step_array("step_time")))
        med, p95 = float(np.median(rt)), float(np.quantile(rt, 0.95))
        print(f"spectrum: {s.size} channels ({s.nbytes} bytes)")
        print(f"round trip over loopback: median {med * 1e3:.2f} ms, 95% {p95 * 1e3:.2f} ms "
              f"(in-process acquire: median {np.median(lt) * 1e3:.3f} ms)")
        print(f"median step through the server (96x96, patch 16, {a.steps} steps): {step * 1e3:.0f} ms; "
              f"network share {100 * (med - np.median(lt)) / step:.2f}%")
        remote.close()
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
