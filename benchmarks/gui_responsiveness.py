"""napari's event loop during a run in the dock: the gaps between the ticks of a 10 ms timer in the GUI thread.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/gui_responsiveness.py [--steps 30]

The bundled sample (96 x 96) with the dock's defaults, opened and started as the user guide says (menus, the
Start button), in a real window on Xvfb. Prints the machine's load average before the run (the issue asks for
an idle machine), the gaps' median, 99th percentile and maximum, how many exceed 100 and 250 ms, the run's
wall time, and a JSON line last.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))


class EventLoopGaps:
    """The gaps (s) between the ticks of a ``period_ms`` timer in the GUI thread, while started."""

    def __init__(self, period_ms: int = 10):
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        from qtpy.QtCore import QTimer

        self._timer = QTimer()
        self._timer.timeout.connect(self._tick)
        self._period = period_ms

    def _tick(self):
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self):
        self.gaps.clear()
        self._last = time.perf_counter()
        self._timer.start(self._period)
        return self

    def stop(self) -> list[float]:
        self._timer.stop()
        return self.gaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    import napari
    from make_screenshots import SAMPLE_MENU, click, menu, new_viewer, open_dock, run_until
    load = os.getloadavg()
    app = napari.qt.get_qapp()
    viewer, win = new_viewer((1920, 1080))
    menu(win, SAMPLE_MENU).trigger()
    w = open_dock(viewer, win)
    w.budget.value = args.steps
    recorder = EventLoopGaps(10).start()
    t0 = time.perf_counter()
    click(w.start_btn)
    run_until(app, lambda: w.experiment is not None and w.worker is None, 1800)
    wall = time.perf_counter() - t0
    g = np.asarray(recorder.stop()) * 1000
    out = {"load_avg_1_5_15": [round(x, 2) for x in load], "cpus": os.cpu_count(), "steps": w.experiment.step_index,
           "wall_s": round(wall, 1), "ticks": len(g), "median_ms": round(float(np.median(g)), 1),
           "p99_ms": round(float(np.percentile(g, 99)), 1), "max_ms": round(float(g.max()), 1),
           "gaps_over_100ms": int((g > 100).sum()), "gaps_over_250ms": int((g > 250).sum())}
    print(f"load average before the run: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"{out['steps']} steps in {wall:.0f} s; event-loop gaps: median {out['median_ms']} ms, 99th percentile "
          f"{out['p99_ms']} ms, worst {out['max_ms']} ms; {out['gaps_over_100ms']} over 100 ms, "
          f"{out['gaps_over_250ms']} over 250 ms")
    print(json.dumps(out))
    viewer.close()


if __name__ == "__main__":
    main()
