"""What the adapter layer costs per spectrum: the acquisition guard (owner thread, checks, blanking) around a
microscope, against calling the microscope directly, in one process, alternated; and, with the [nion] extra,
where the time of a spectrum on Nion's simulated STEM goes (probe move + frame) next to its exposure.

    python benchmarks/adapter_overhead.py [--n 400]

Prints the figures and a last JSON line. The step time to compare with is a run's median step (the same machine:
``napari-hae run --sample nanoparticles --steps 30``, printed at its end).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_hae.core.data.samples.nanoparticles import make_nanoparticles
from napari_hae.core.instrument.guard import AcquisitionGuard
from napari_hae.core.instrument.microscope import SimulatedMicroscope


class Blanking(SimulatedMicroscope):
    def blank(self):
        pass

    def unblank(self):
        pass


def per_call(fn, positions) -> float:
    t0 = time.perf_counter()
    for y, x in positions:
        fn(y, x)
    return (time.perf_counter() - t0) / len(positions)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    data = make_nanoparticles(shape=(64, 64), seed=0)
    mic = Blanking(data)
    rng = np.random.default_rng(0)
    positions = [tuple(int(v) for v in p) for p in rng.integers(0, 64, (args.n, 2))]
    shape = mic.signal_shape
    guarded = AcquisitionGuard(mic, timeout=120.0, blank=True)
    plain = AcquisitionGuard(mic, timeout=None, blank=False)
    direct, guard, bare = [], [], []
    for _ in range(5):   # alternated: the machine is shared
        direct.append(per_call(mic.acquire, positions))
        guard.append(per_call(lambda y, x: guarded(y, x, shape), positions))
        bare.append(per_call(lambda y, x: plain(y, x, shape), positions))
    guarded.close()
    out = {"direct_us": 1e6 * float(np.median(direct)), "guard_thread_blank_us": 1e6 * float(np.median(guard)),
           "guard_inline_us": 1e6 * float(np.median(bare))}
    out["guard_overhead_us"] = out["guard_thread_blank_us"] - out["direct_us"]
    print(f"simulator, {args.n} spectra x 5 rounds (median per spectrum): direct {out['direct_us']:.0f} us, "
          f"through the guard (owner thread, blanking, checks) {out['guard_thread_blank_us']:.0f} us, "
          f"guard without timeout thread {out['guard_inline_us']:.0f} us: overhead "
          f"{out['guard_overhead_us']:.0f} us per spectrum")
    try:
        from napari_hae.core.instrument.adapters import close_microscope, make_microscope

        nion = make_microscope("nion-usim", None, size=32, exposure_ms=2.0)
    except Exception as exc:  # the extra is optional
        print(f"nion-usim not measured: {exc}")
    else:
        g = AcquisitionGuard(nion, timeout=120.0, blank=True)
        pos = positions[:60]
        t_direct = per_call(lambda y, x: nion.acquire(y % 32, x % 32), pos)
        t_guard = per_call(lambda y, x: g(y % 32, x % 32, nion.signal_shape), pos)
        g.close()
        close_microscope(nion)
        out.update(nion_direct_ms=1e3 * t_direct, nion_guard_ms=1e3 * t_guard, nion_exposure_ms=2.0)
        print(f"nion-usim, 60 spectra, exposure 2 ms: adapter (probe move + next frame) {1e3 * t_direct:.1f} ms, "
              f"through the guard (+ C_Blank twice) {1e3 * t_guard:.1f} ms per spectrum")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
