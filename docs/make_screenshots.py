"""Screenshots of napari-hae in action, for README and the user guide.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" python docs/make_screenshots.py docs/images

(Qt's offscreen platform renders napari's OpenGL canvas black; a real X window on Xvfb renders it.)

Opens the bundled sample, marks an "avoid" object, runs 25 steps in the plugin's worker, switches the policy
(an intervention), runs 15 more, and saves the viewer (with docks) and the dock alone; then trains the rVAE
feature space, replays step 30 and saves the monitors tab; then runs a small sweep in the sweep dock.
"""

import sys
import time
from pathlib import Path

import napari
import numpy as np

from napari_hae._sweep_widget import SweepWidget
from napari_hae._widget import OBJECTS, HAEWidget


def main():  # guarded: the sweep's dask workers re-import this file
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-hae", "nanoparticles")
    w = HAEWidget(viewer)
    viewer.window.add_dock_widget(w, name="hAE experiment", area="right")
    app = napari.qt.get_qapp()


    def run_until(cond, limit=300):
        t0 = time.time()
        while not cond() and time.time() - t0 < limit:
            app.processEvents()
            time.sleep(0.01)


    w.object_mode.value = "avoid"
    viewer.layers[OBJECTS].add_rectangles(np.array([[70, 5], [92, 30]]))
    w.budget.value = 40
    w.start()
    run_until(lambda: w.experiment is not None and w.experiment.step_index >= 25)
    w.pause()
    run_until(lambda: True, 1)
    w.policy_name.value = "ei"
    w.policy_param.value = 0.05
    w.request_policy()
    w.resume()
    run_until(lambda: w.worker is None)
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    viewer.layers["hAE uncertainty"].visible = False
    viewer.layers["hAE acquisition"].visible = False
    viewer.screenshot(str(out / "napari_viewer.png"), canvas_only=False)
    w.panels().grab().save(str(out / "napari_dock.png"))      # the whole scrolled content
    viewer.layers["hAE predicted mean"].visible = False
    viewer.layers["hAE uncertainty"].visible = True
    viewer.screenshot(str(out / "napari_uncertainty.png"), canvas_only=True)
    viewer.layers["hAE uncertainty"].visible = False
    viewer.layers["hAE predicted mean"].visible = True

    # monitors: feature space (worker), then the replay slider at step 30
    w.compute_feature_space()
    run_until(lambda: w._feature_worker is None)
    w.replay.value = 30
    run_until(lambda: w.monitor_plot.n_steps_drawn == 30 and w.monitor_plot.wait(0.05), 60)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    w.panels().grab().save(str(out / "napari_monitors.png"))
    viewer.screenshot(str(out / "napari_replay.png"), canvas_only=False)

    # the sweep dock

    sw = SweepWidget(viewer)
    viewer.window.add_dock_widget(sw, name="hAE sweep", area="right")
    sw.patches.value, sw.seeds.value, sw.steps.value = "8 16", 2, 10
    sw.policies.value = "ei:xi=0.01 ei_penalized:xi=0.01,radius=5"
    sw.run()
    run_until(lambda: sw.worker is None, 900)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    sw.grab().save(str(out / "napari_sweep.png"))
    print("wrote", sorted(p.name for p in out.glob("napari_*.png")))
    viewer.close()


if __name__ == "__main__":
    main()
