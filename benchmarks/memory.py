"""Peak memory of a run on a large spectrum image (reliability issue, class 6).

Writes a synthetic spectrum image of ``--gib`` GiB as .npy (float32, written in blocks) with its HAADF, runs
``napari-hae run`` on it in a fresh process, and reports that process' peak resident memory next to the same run
on a tiny spectrum image (the fixed overhead: Python, torch, the model) and the size of the patches the model
needs (scan positions x patch^2 x 4 bytes). The spectrum image is memory-mapped and every whole-array pass
(validity check, fingerprint, ground truth) reads it in row blocks, so the peak should not grow with the file.

    python benchmarks/memory.py --gib 2 --scan 256 --steps 5

The last printed line is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_data(folder: Path, scan: int, channels: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:scan, :scan]
    haadf = (np.sin(yy / 7.0) * np.cos(xx / 5.0) + 0.1 * rng.standard_normal((scan, scan))).astype(np.float32)
    spath, ipath = folder / "spectra.npy", folder / "haadf.npy"
    np.save(ipath, haadf)
    e = np.linspace(0.0, 1.0, channels, dtype=np.float32)
    mm = np.lib.format.open_memmap(spath, mode="w+", dtype=np.float32, shape=(scan, scan, channels))
    rows = max(1, int(2**26 // (scan * channels * 4)))
    for i in range(0, scan, rows):
        h = haadf[i:i + rows, :, None]
        mm[i:i + rows] = 10.0 + 5.0 * h * np.exp(-((e - 0.5) / 0.05) ** 2) + rng.random((h.shape[0], scan, 1))
    mm.flush()
    del mm
    return spath, ipath


def _hwm_kib(pid: int) -> int:
    """The process' resident-memory high-water mark (Linux /proc; VmHWM is reset by exec, unlike ru_maxrss)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(spath: Path, ipath: Path, out: Path, steps: int, patch: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "napari_hae.cli", "run", "--spectrum", str(spath), "--image", str(ipath), "--steps",
           str(steps), "--patch", str(patch), "--n-seeds", "5", "--band", "0", "2", "--no-maps", "--out",
           str(out), "-q"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        peak = max(peak, _hwm_kib(p.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(p.stderr.read()[-3000:])
    return peak / 2**20, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--scan", type=int, default=256)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dir", help="where to write the data (default: a temporary folder)")
    a = ap.parse_args()
    channels = int(a.gib * 2**30 / (a.scan * a.scan * 4))
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        tmp = Path(tmp)
        (tmp / "big").mkdir()
        (tmp / "tiny").mkdir()
        big = write_data(tmp / "big", a.scan, channels)
        tiny = write_data(tmp / "tiny", 32, 64)
        rss_tiny, wall_tiny = run(*tiny, tmp / "run_tiny", a.steps, a.patch)
        rss_big, wall_big = run(*big, tmp / "run_big", a.steps, a.patch)
        subprocess.run(["sync"], check=False)
    file_gib = a.scan * a.scan * channels * 4 / 2**30
    patches_gib = a.scan * a.scan * a.patch**2 * 4 / 2**30
    res = {"file_gib": round(file_gib, 3), "scan": a.scan, "channels": channels, "patch": a.patch,
           "patches_gib": round(patches_gib, 3), "peak_rss_gib": round(rss_big, 3),
           "overhead_gib": round(rss_tiny, 3), "growth_over_patches": round((rss_big - rss_tiny) / patches_gib, 2),
           "wall_s": round(wall_big, 1), "wall_tiny_s": round(wall_tiny, 1)}
    print(f"spectrum image {file_gib:.2f} GiB ({a.scan}^2 x {channels} float32), patches {patches_gib:.3f} GiB")
    print(f"peak RSS: {rss_big:.2f} GiB (tiny-data run, the fixed overhead: {rss_tiny:.2f} GiB); growth = "
          f"{res['growth_over_patches']:.2f} x the patches; wall {wall_big:.0f} s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
