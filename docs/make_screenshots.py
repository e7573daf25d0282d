"""Screenshots of napari-hae in action, for README and the user guide: the user guide followed literally.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" python docs/make_screenshots.py docs/images

(Qt's offscreen platform renders napari's OpenGL canvas black; a real X window on Xvfb renders it.)

Every step goes through what the guide names: menus are triggered by their path (*File > Open Sample > ...*,
*Plugins > napari hAE > hAE experiment*: the script stops if a path is missing), buttons are clicked. On the sample
at 1920 x 1080 it marks an "avoid" object, runs 25 steps, switches the policy (an intervention), runs 15 more, and
saves the viewer and the dock; then trains the rVAE feature space, replays step 30 and saves the monitors; then a
small sweep in the sweep dock. Then the CuZn core-loss EELS map (../shared/data; skipped if absent) at
1920 x 1080 and 1366 x 768, and the sample at 1366 x 768: the dock's starting target (Cu L2,3 after a power-law
background) is checked, a short run is made, the whole window saved as napari_<data>_<W>x<H>.png, and the dock is
checked to fit the screen (no widget off-screen).
"""

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QScrollArea

from napari_hae._constants import SAMPLE_MENU
from napari_hae._sweep_widget import SweepWidget
from napari_hae._widget import OBJECTS, HAEWidget

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DOCK_MENU = "Plugins > napari hAE > hAE experiment"
SWEEP_MENU = "Plugins > napari hAE > hAE sweep"


def menu(win, path: str):
    """The menu action at ``path`` ("File > Open Sample > ..."), as the guide names it."""
    actions = win.menuBar().actions()
    parts = [p.strip() for p in path.split(" > ")]
    for name in parts[:-1]:
        act = next((a for a in actions if a.text().replace("&", "") == name), None)
        if act is None or act.menu() is None:
            raise SystemExit(f"menu path {path!r}: no menu {name!r} among {[a.text() for a in actions]}")
        act.menu().aboutToShow.emit()
        actions = act.menu().actions()
    act = next((a for a in actions if a.text().replace("&", "") == parts[-1]), None)
    if act is None:
        raise SystemExit(f"menu path {path!r}: no entry {parts[-1]!r} among {[a.text() for a in actions]}")
    return act


def click(widget) -> None:
    QTest.mouseClick(widget.native, Qt.MouseButton.LeftButton)


def loop_until(cond, limit: float, every=None) -> None:
    """Run Qt's event loop, as napari's own does, until ``cond()`` holds or ``limit`` s have passed; ``every()``
    is called from it every 10 ms. A loop of ``processEvents`` calls with sleeps between is not the same: it adds
    up to a sleep to every gap, and Qt's deferred deletions never run in it, so napari's activity spinner, stopped
    when a finished progress bar (a file's opening) is deleted, animated on: every later screenshot showed napari
    busy, and in benchmarks/gui_responsiveness.py it recomposed the window at every frame (median tick 33-38 ms)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop, t0 = QEventLoop(), time.time()

    def poll():
        if every is not None:
            every()
        if cond() or time.time() - t0 > limit:
            loop.quit()

    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(10)
    loop.exec()
    timer.stop()


def settle(n: int = 20) -> None:
    """Let napari draw for ``n`` x 20 ms."""
    loop_until(lambda: False, 0.02 * n)


def new_viewer(size):
    viewer = napari.Viewer(show=True)
    win = viewer.window._qt_window
    win.move(0, 0)
    win.resize(*size)
    return viewer, win


def open_dock(viewer, win, cls=HAEWidget):
    menu(win, DOCK_MENU if cls is HAEWidget else SWEEP_MENU).trigger()
    docks = win.findChildren(cls)
    if not docks:
        raise SystemExit(f"{cls.__name__} did not open from its menu")
    return docks[-1]


def check_fits(viewer, w, size) -> str:
    """The window within the screen, the dock within the window, no panel cut sideways: else stop."""
    win = viewer.window._qt_window
    settle(10)
    scroll = w.findChild(QScrollArea)
    top_left = w.mapTo(win, w.rect().topLeft())
    problems = []
    if win.width() > size[0] or win.height() > size[1]:
        problems.append(f"window {win.width()} x {win.height()} larger than the screen {size}")
    if top_left.y() + w.height() > win.height() or top_left.x() + w.width() > win.width():
        problems.append(f"dock {w.width()} x {w.height()} at {top_left.x()},{top_left.y()} leaves the window")
    if scroll.widget().minimumSizeHint().width() > scroll.viewport().width():
        problems.append("a panel is wider than the dock (cut off sideways)")
    if problems:
        raise SystemExit(f"the dock does not fit {size}: " + "; ".join(problems))
    return f"dock {w.width()} x {w.height()} fits {size[0]} x {size[1]}"


def main_run(out):
    """The sample at 1920 x 1080: the pictures of the guide."""
    size = (1920, 1080)
    viewer, win = new_viewer(size)
    menu(win, SAMPLE_MENU).trigger()
    w = open_dock(viewer, win)
    w.object_mode.value = "avoid"
    viewer.layers[OBJECTS].add_rectangles(np.array([[70, 5], [92, 30]]))
    w.budget.value = 40
    click(w.start_btn)
    loop_until(lambda: w.experiment is not None and w.experiment.step_index >= 25, 300)
    click(w.pause_btn)
    loop_until(lambda: w.paused, 60)
    w.policy_name.value = "ei"
    w.policy_param.value = 0.05
    click(w.apply_policy)
    click(w.resume_btn)
    loop_until(lambda: w.worker is None, 300)
    viewer.reset_view()
    settle()
    print(check_fits(viewer, w, size))
    viewer.layers["hAE uncertainty"].visible = False
    viewer.layers["hAE acquisition"].visible = False
    viewer.screenshot(str(out / "napari_viewer.png"), canvas_only=False)
    viewer.screenshot(str(out / "napari_sample_1920x1080.png"), canvas_only=False)
    w.panels().grab().save(str(out / "napari_dock.png"))      # the whole scrolled content
    viewer.layers["hAE predicted mean"].visible = False
    viewer.layers["hAE uncertainty"].visible = True
    viewer.screenshot(str(out / "napari_uncertainty.png"), canvas_only=True)
    viewer.layers["hAE uncertainty"].visible = False
    viewer.layers["hAE predicted mean"].visible = True

    # monitors: feature space (worker), then the replay slider at step 30
    click(w.feature_btn)
    loop_until(lambda: w.traces.feature_worker is None, 300)
    w.replay.value = 30
    loop_until(lambda: w.monitor_plot.n_steps_drawn == 30 and w.monitor_plot.wait(0.05), 60)
    settle()
    w.panels().grab().save(str(out / "napari_monitors.png"))
    viewer.screenshot(str(out / "napari_replay.png"), canvas_only=False)

    sw = open_dock(viewer, win, SweepWidget)
    sw.patches.value, sw.seeds.value, sw.steps.value = "8 16", 2, 10
    sw.policies.value = "ei:xi=0.01 ei_penalized:xi=0.01,radius=5"
    sw.run()
    loop_until(lambda: sw.worker is None, 900)
    settle()
    sw.grab().save(str(out / "napari_sweep.png"))
    viewer.close()


def screen_run(out, kind: str, size, steps: int = 15):
    """One dataset at one screen size: open it as the guide says, check the dock's start, run, save, check fit."""
    viewer, win = new_viewer(size)
    if kind == "sample":
        menu(win, SAMPLE_MENU).trigger()
    else:   # what File > Open File(s)... does with the file chosen
        d = SHARED / "cuzn_eels"
        viewer.open(str(d / "CuZn_EELS_mapping_tutorial.hspy"), plugin="napari-hae")
    w = open_dock(viewer, win)
    if kind == "cuzn":
        if not (w.background.value and "Cu L2,3 edge" in w.status.value):
            raise SystemExit(f"CuZn: the dock did not start on the Cu L2,3 edge with a background: {w.status.value}")
        w.patch_size.value = 8
    w.budget.value = steps
    click(w.start_btn)
    loop_until(lambda: w.experiment is not None and w.worker is None, 300)
    viewer.reset_view()
    settle()
    fits = check_fits(viewer, w, size)
    name = f"napari_{kind}_{size[0]}x{size[1]}.png"
    viewer.screenshot(str(out / name), canvas_only=False)
    if kind == "cuzn" and size[0] == 1920:   # the mean spectrum: the Cu L2,3 band over its fitted background
        w.tabs.setCurrentIndex(0)
        w.log_counts.setChecked(True)
        w.spectra.show_mean()
        settle()
        w.tabs.grab().save(str(out / "napari_cuzn_spectrum.png"))
    print(f"{name}: {fits}; {w.status.value[:100]}")
    viewer.close()


def main():  # guarded: the sweep's dask workers re-import this file
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    napari.qt.get_qapp()
    main_run(out)
    if SHARED.is_dir():
        for size in ((1920, 1080), (1366, 768)):
            screen_run(out, "cuzn", size)
    else:
        print(f"skipped the CuZn pictures: {SHARED} not found")
    screen_run(out, "sample", (1366, 768))
    print("wrote", sorted(p.name for p in out.glob("napari_*.png")))


if __name__ == "__main__":
    main()
