"""The dock's spectrum plot: GUI-thread cost of showing a run's next spectrum, blitted vs a full redraw.

    QT_QPA_PLATFORM=offscreen python benchmarks/spectrum_plot.py [--spectra 60]

Poisson spectra of one level (as a run's steps give), 600 channels, a band and a title that change each time.
Prints the median milliseconds per spectrum for both ways, measured alternately in one run, their ratio, the
number of full redraws the blitted way needed, and a JSON line last.
"""

import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spectra", type=int, default=60)
    args = ap.parse_args()
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from napari_hae._spectrum_plot import SpectrumPlot

    plot = SpectrumPlot()
    plot.resize(340, 220)
    plot.show()
    for _ in range(5):
        app.processEvents()
    e = np.linspace(0.0, 6.0, 600)
    rng = np.random.default_rng(0)
    times = {"blit": [], "full": []}
    full_before = plot.n_full_draws
    for i in range(args.spectra):
        for way in ("blit", "full"):
            s = rng.poisson(100 * np.exp(-e) + 20).astype(float)
            t = time.perf_counter()
            plot.show_spectrum(e, s, [(1.0, 2.0 + i / args.spectra)], f"step {i + 1}: {s.max():.4g}")
            if way == "full":
                plot.draw()
            app.processEvents()
            times[way].append(time.perf_counter() - t)
    med = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    out = {"spectra": args.spectra, "blit_ms": round(med["blit"], 1), "full_ms": round(med["full"], 1),
           "ratio": round(med["full"] / med["blit"], 1),
           "full_draws_in_blit_way": plot.n_full_draws - full_before - args.spectra}
    print(f"per spectrum: blitted {out['blit_ms']} ms, full redraw {out['full_ms']} ms "
          f"({out['ratio']}x); full redraws the blitted way needed: {out['full_draws_in_blit_way']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
