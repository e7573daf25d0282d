"""rVAE feature space on the sample data: training time on this machine's CPU (target: < 2 min for 96 x 96
positions, patch 16), and how well the latent plane keeps the scalarizer's structure.

    python benchmarks/feature_space.py --patch 16 --epochs 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_hae.core.analysis.feature_space import density_maxima, fit_feature_space
from napari_hae.core.data.samples import load_sample
from napari_hae.core.data.samples.nanoparticles import BANDS
from napari_hae.core.targets.scalarizers import Scalarizer


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args(argv)
    data = load_sample("nanoparticles")
    t0 = time.perf_counter()
    times = []

    def progress(e, n, loss):
        times.append(time.perf_counter() - t0)
        print(f"epoch {e:3d}/{n}: -ELBO {loss:9.3f}  ({times[-1]:6.1f} s)", flush=True)

    fs = fit_feature_space(data.structural, a.patch, epochs=a.epochs, hidden=a.hidden, batch_size=a.batch,
                           progress=progress, use_cache=False)
    total = time.perf_counter() - t0
    truth = Scalarizer("band_integral", dict(zip("ab", BANDS["dipole"])))(data.spectra, data.energies).ravel()
    # how local is the scalarizer in the latent plane: R^2 of a 15-nearest-neighbour average
    from scipy.spatial import cKDTree

    _, nn = cKDTree(fs.latent).query(fs.latent, 16)
    pred = truth[nn[:, 1:]].mean(1)
    r2 = 1 - np.sum((truth - pred) ** 2) / np.sum((truth - truth.mean()) ** 2)
    _, maxima, _ = density_maxima(fs.latent)
    print(f"\n{data.scan_shape[0]}x{data.scan_shape[1]} positions, patch {a.patch}, {a.epochs} epochs, hidden "
          f"{a.hidden}, batch {a.batch}, torch threads {torch.get_num_threads()}: {total:.1f} s total "
          f"(training {times[-1]:.1f} s, encoding + manifold {total - times[-1]:.1f} s)")
    print(f"dipole intensity from 15 latent neighbours: R^2 = {r2:.3f}; density maxima of all patches: "
          f"{len(maxima)}")


if __name__ == "__main__":
    main()
