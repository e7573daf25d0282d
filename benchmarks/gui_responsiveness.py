"""napari's event loop during a run in the dock: the gaps between the ticks of a 10 ms timer in the GUI thread.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/gui_responsiveness.py [--steps 30]

The bundled sample (96 x 96) with the dock's defaults, opened and started as the user guide says (menus, the
Start button), in a real window on Xvfb, measured until the run (or 'Acquire image', or napari alone adding the
acquired image) has ended and 1 s after it. Prints the machine's load average before the run (the issue asks
for an idle machine), the gaps' median, 99th percentile and maximum, how many exceed 100 and 250 ms, Python's
full garbage collections meanwhile, the run's wall time, and a JSON line last.
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
        self.ends: list[float] = []
        self._last = self._t0 = time.perf_counter()
        from qtpy.QtCore import QTimer

        self._timer = QTimer()
        self._timer.timeout.connect(self._tick)
        self._period = period_ms

    def _tick(self):
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self.ends.append(now - self._t0)
        self._last = now

    def start(self):
        self.gaps.clear()
        self.ends = []   # when each gap ended, s since start: where in the run the worst ones fall
        self._last = self._t0 = time.perf_counter()
        self._timer.start(self._period)
        return self

    def stop(self) -> list[float]:
        self._timer.stop()
        return self.gaps


class FullCollections:
    """How long each of Python's full garbage collections took (ms) while started: with napari, torch and the
    dock loaded (~850,000 objects tracked) one takes ~0.3 s, in whichever thread set it off, with the GIL held."""

    def __init__(self):
        self.ms: list[float] = []
        self._t = None

    def _cb(self, phase, info):
        if info["generation"] == 2:
            if phase == "start":
                self._t = time.perf_counter()
            elif self._t is not None:
                self.ms.append(round(1000 * (time.perf_counter() - self._t), 1))

    def start(self):
        import gc

        gc.callbacks.append(self._cb)
        return self

    def stop(self) -> list[float]:
        import gc

        gc.callbacks.remove(self._cb)
        return self.ms


class StallSampler:
    """What the GUI thread is doing while it is stalled: a thread samples its stack every ``every`` s once the
    event loop's last tick (``gaps``) is older than ``after`` s; :meth:`top` counts the innermost frames of this
    package and napari/vispy/Qt/matplotlib seen (a sample is ~``every`` s of stall)."""

    def __init__(self, gaps: EventLoopGaps, after: float = 0.08, every: float = 0.01):
        import collections
        import threading

        self.gaps, self.after, self.every = gaps, after, every
        self.counts = collections.Counter()
        self.episodes: dict[float, list] = {}   # the last tick before a stall -> its samples
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        import traceback

        while not self._stop.wait(self.every):
            if time.perf_counter() - self.gaps._last < self.after:
                continue
            frame = sys._current_frames().get(self._main)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if "napari_hae" in f.filename]
            where = ours[-1] if ours else stack[-1]
            inner = stack[-1]
            key = (f"{Path(where.filename).name}:{where.lineno} {where.name}",
                   f"{Path(inner.filename).parent.name}/{Path(inner.filename).name}:{inner.lineno} {inner.name}")
            self.counts[key] += 1
            depth = int(os.environ.get("HAE_STALL_DEPTH", 12))   # frames kept per sample
            self.episodes.setdefault(self.gaps._last, []).append((key, [f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                                                        for f in stack[-depth:]]))

    def longest(self, n: int = 3) -> list[str]:
        """The ``n`` longest stalls, each with the stack sampled most often in it."""
        import collections

        out = []
        for _, samples in sorted(self.episodes.items(), key=lambda kv: -len(kv[1]))[:n]:
            common = collections.Counter(k for k, _ in samples).most_common(1)[0][0]
            stack = next(st for k, st in samples if k == common)
            out.append(f"~{len(samples) * self.every * 1000 + self.after * 1000:.0f} ms stalled: " +
                       " > ".join(stack))
        return out

    def top(self, n: int = 15) -> list[str]:
        self._stop.set()
        return [f"{c * self.every * 1000:7.0f} ms  {ours}  <- {inner}" for (ours, inner), c in
                self.counts.most_common(n)]


def _args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, nargs=2, default=(1920, 1080), metavar=("W", "H"),
                    help="the window's size (default 1920 1080; software OpenGL repaints in time ~ its area)")
    ap.add_argument("--stalls", action="store_true", help="sample the GUI thread's stack while it is stalled "
                                                          "(> 80 ms since the last tick) and print where")
    ap.add_argument("--open", metavar="FILE", help="open FILE in napari (as File > Open does) during the run, once "
                                                   "a third of its steps are done")
    ap.add_argument("--model-param", action="append", default=[], metavar="K=V",
                    help="a parameter of the run's model, as the dock's advanced model_params (JSON values; "
                         "repeatable), e.g. embed_dim=2 for an A/B")
    ap.add_argument("--reader", default="napari-hae", help="the plug-in that reads --open's FILE (default "
                                                         "napari-hae; 'napari' for napari's own, e.g. a .tif)")
    ap.add_argument("--acquire", action="store_true", help="instead of a run: 'Acquire image' on nion-usim (the "
                                                           "dock's microscope choice, its default field), measured "
                                                           "until the image is shown and 1 s after")
    ap.add_argument("--napari-only", action="store_true", help="with --acquire: napari's own part, the same "
                                                               "acquired image added by viewer.add_image from the "
                                                               "event loop (dock open, its layers made; the dock "
                                                               "not told), measured for 1.5 s; with --open: napari "
                                                               "opening FILE from the event loop with no dock and "
                                                               "no run (the sample open), measured for 1.5 s")
    return ap.parse_args()


AFTER_S = 1.0   # measured on after the end: what the end sets off (the turns after it, a frame, a collection)


def _choose_nion_usim(w):
    """The dock's microscope set to nion-usim, as a user chooses it before pressing Acquire image (the dock then
    lays out that microscope's fields: not part of the acquisition)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from make_screenshots import loop_until

    from qt_input import choose

    choose(w.microscope_kind, "nion-usim")
    loop_until(lambda: False, 2.0)


def _acquire(w):
    """Press Acquire image (nion-usim chosen); returns (wall s, what was measured)."""
    from make_screenshots import click, loop_until

    t0 = time.perf_counter()
    click(w.acquire_btn)
    loop_until(lambda: w.status.value.startswith(("Acquired", "Could not")), 600)
    wall = time.perf_counter() - t0
    loop_until(lambda: False, AFTER_S)
    return wall, w.status.value.split(". ")[0]


def _nion_usim_image() -> tuple:
    """The image and layer settings 'Acquire image' adds on nion-usim (acquired before anything is measured),
    without the dataset in its metadata: a plain image layer the dock does not answer."""
    from napari_hae._layers import dataset_layer_data
    from napari_hae.core.instrument.adapters import close_microscope, make_microscope
    from napari_hae.core.instrument.live import LiveImage

    mic = make_microscope("nion-usim", None, seed=0)
    try:
        (image, kw, _), = dataset_layer_data(LiveImage.of(mic, "nion-usim"))
    finally:
        close_microscope(mic)
    return image, {k: v for k, v in kw.items() if k != "metadata"}


def _napari_alone(action) -> float:
    """Call ``action`` from a timer (as a worker's result or a menu's choice arrives) and let the event loop run
    1.5 s; the seconds ``action`` took."""
    from make_screenshots import loop_until
    from qtpy.QtCore import QTimer

    took = []

    def timed():
        t = time.perf_counter()
        action()
        took.append(time.perf_counter() - t)

    QTimer.singleShot(0, timed)
    loop_until(lambda: False, 1.5)
    return took[0]


def _add_as_napari(viewer, image, kw):
    """napari alone adding the acquired image; (wall s, what)."""
    t0 = time.perf_counter()
    _napari_alone(lambda: viewer.add_image(image, **kw))
    return time.perf_counter() - t0, f"napari alone added the {image.shape[0]} x {image.shape[1]} acquired image"


def _open_as_napari(viewer, path, reader):
    """napari opening ``path`` with the plug-in ``reader``, nothing of the dock there; (wall s, what)."""
    t0 = time.perf_counter()
    took = _napari_alone(lambda: viewer.open(path, plugin=reader))
    return time.perf_counter() - t0, f"napari alone opened {Path(path).name} in {took:.2f} s (that call)"


def _run(viewer, w, args):
    """Start a run (Start button); with ``args.open``, open that file a third of the way, from the event loop as
    File > Open does. Returns (wall s, what)."""
    from make_screenshots import click, loop_until

    t0, opened, draws0 = time.perf_counter(), [], w.plot.n_full_draws

    def open_file_once():
        if args.open and not opened and w.experiment is not None and w.experiment.step_index >= args.steps // 3:
            t = time.perf_counter()
            viewer.open(args.open, plugin=args.reader)
            opened.append(time.perf_counter() - t)

    click(w.start_btn)
    loop_until(lambda: w.experiment is not None and w.worker is None, 1800, every=open_file_once)
    wall = time.perf_counter() - t0
    loop_until(lambda: False, AFTER_S)
    said = f"{w.experiment.step_index} steps, {w.plot.n_full_draws - draws0} full redraws of the spectrum plot"
    if opened:
        said += f", {Path(args.open).name} opened in {opened[0]:.2f} s (that call)"
    return wall, said


def main():
    args = _args()
    import napari
    from make_screenshots import SAMPLE_MENU, loop_until, menu, new_viewer, open_dock
    load = os.getloadavg() if os.name == "posix" else (float("nan"),) * 3   # Windows has no load average
    napari.qt.get_qapp()
    viewer, win = new_viewer(tuple(args.size))
    menu(win, SAMPLE_MENU).trigger()
    open_alone = args.open and args.napari_only
    w = None if open_alone else open_dock(viewer, win)
    if w is not None:
        w.budget.value = args.steps
        w.run.model_params = {k: json.loads(v) for k, _, v in (kv.partition("=") for kv in args.model_param)}
    if args.acquire:
        _choose_nion_usim(w)
    alone = _nion_usim_image() if args.acquire and args.napari_only else None
    # napari draws the image and the dock and makes the run's layers, before the user presses Start
    loop_until(lambda: False, 2.0)
    collections = FullCollections().start()
    recorder = EventLoopGaps(10).start()
    sampler = StallSampler(recorder).start() if args.stalls else None
    wall, said = (_add_as_napari(viewer, *alone) if alone else _acquire(w) if args.acquire else
                  _open_as_napari(viewer, args.open, args.reader) if open_alone else _run(viewer, w, args))
    if sampler is not None:
        print("where the GUI thread was while stalled (sampled time, this package's innermost frame <- innermost):")
        print("\n".join(sampler.top()))
        print("the longest stalls:")
        print("\n".join(sampler.longest()))
    g = np.asarray(recorder.stop()) * 1000
    full_gc = collections.stop()
    worst = np.argsort(g)[::-1][:5]
    during = ("napari adds the acquired image" if alone else "acquire") if args.acquire else \
        "napari opens the file" if open_alone else "run" + (" + open" if args.open else "")
    out = {"size": list(args.size), "during": during,
           "load_avg_1_5_15": [round(x, 2) for x in load], "cpus": os.cpu_count(), "what": said,
           "wall_s": round(wall, 1), "ticks": len(g), "median_ms": round(float(np.median(g)), 1),
           "p99_ms": round(float(np.percentile(g, 99)), 1), "max_ms": round(float(g.max()), 1),
           "gaps_over_100ms": int((g > 100).sum()), "gaps_over_250ms": int((g > 250).sum()), "full_gc_ms": full_gc,
           "worst_ms_at_s": [[round(float(g[i]), 1), round(recorder.ends[i] - g[i] / 1000, 2)] for i in worst]}
    print(f"load average before: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"{said} in {wall:.0f} s; event-loop gaps: median {out['median_ms']} ms, 99th percentile "
          f"{out['p99_ms']} ms, worst {out['max_ms']} ms; {out['gaps_over_100ms']} over 100 ms, "
          f"{out['gaps_over_250ms']} over 250 ms")
    print(f"Python's full garbage collections meanwhile: {len(full_gc)}" + (f" ({', '.join(map(str, full_gc))} ms)"
                                                                           if full_gc else ""))
    print("the five worst gaps (ms, began s after the start):",
          ", ".join(f"{ms:.0f} at {at:.2f}" for ms, at in out["worst_ms_at_s"]))
    print(json.dumps(out))
    viewer.close()


if __name__ == "__main__":
    main()
