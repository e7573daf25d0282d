"""The dock's layers driven by real input events (issue 14, defects 6, 8 and 9): a second dataset's scale, replay
of a loaded trace, objects keeping their mode's colour, and a seed clicked inside an avoid region. Clicks and
drags go to napari's canvas with QTest at the screen position of a scan pixel."""

import dataclasses

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402

from conftest import saved_trace  # noqa: E402
from napari_hae._layers import dataset_layer_data  # noqa: E402
from napari_hae._widget import MAPS, OBJECTS, SEEDS, TRAJECTORY, HAEWidget  # noqa: E402
from qt_input import choose, click_canvas, drag_canvas  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


def _open(viewer, data):
    for layer_data, kw, _ in dataset_layer_data(data):
        return viewer.add_image(layer_data, **kw)


def _dock(viewer, qtbot):
    w = HAEWidget(viewer)
    viewer.window.add_dock_widget(w, name="hAE")
    w.fit_iterations, w.fit_iterations_first, w.model_params = 10, 60, {"hidden": [32, 16]}
    w.patch_size.value = 8
    viewer.window._qt_window.resize(1600, 1000)
    qtbot.waitExposed(viewer.window._qt_window)
    return w


@pytest.mark.slow
def test_a_second_dataset_moves_seeds_and_maps_onto_its_scale(make_napari_viewer, small_sample, qtbot, monkeypatch,
                                                              tmp_path):
    """Defect 6: seeds, objects and map layers kept the first dataset's scale (a click at pixel (30, 30) of the
    second became another seed); mixing nm and um files left a black canvas."""
    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer(show=True)
    _open(viewer, small_sample)
    w = _dock(viewer, qtbot)
    in_um = dataclasses.replace(small_sample, name="in_um", pixel_size=0.002, pixel_units="um")
    second = _open(viewer, in_um)
    assert tuple(second.scale) == pytest.approx((2.0, 2.0)) and tuple(map(str, second.units)) == ("nanometer",) * 2
    choose(w.layer_combo, second.name)
    seeds = viewer.layers[SEEDS]
    assert tuple(seeds.scale) == pytest.approx((2.0, 2.0)) and seeds.units == second.units
    viewer.reset_view()
    viewer.layers.selection.active = seeds
    seeds.mode = "add"
    click_canvas(viewer, second, 30, 30)
    click_canvas(viewer, second, 10, 40)
    assert w.view.seed_positions() == [(30, 30), (10, 40)]
    w.budget.value = 1
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)
    assert w.experiment.trace.positions[:2] == [(30, 30), (10, 40)]
    assert tuple(viewer.layers[MAPS["mean"][0]].scale) == pytest.approx((2.0, 2.0))
    assert tuple(viewer.layers[TRAJECTORY].scale) == pytest.approx((2.0, 2.0))


@pytest.mark.slow
@pytest.mark.parametrize("dataset_open", [True, False])
def test_a_loaded_trace_replays_into_the_maps_and_trajectory(make_napari_viewer, small_sample, qtbot, monkeypatch,
                                                             tmp_path, dataset_open):
    """Defect 8: in a fresh session Load trace + slider moved only the monitors (no map or trajectory layers);
    the loaded 'trace trace mean' layer hid the replayed maps; after a new run the slider replayed the old trace
    and failed; the slider counted from 0, the status from 1."""
    from qtpy.QtWidgets import QFileDialog

    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    tr, path = saved_trace(small_sample, tmp_path)
    viewer = make_napari_viewer(show=True)
    if dataset_open:
        _open(viewer, small_sample)
    w = _dock(viewer, qtbot)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a: (str(path), a[-1]))
    QTest.mouseClick(w.load_btn.native, Qt.MouseButton.LeftButton)
    names = [layer.name for layer in viewer.layers]
    assert not [n for n in names if n.startswith("trace ")], names       # no extra layer over the maps
    assert (dataset_open or "nanoparticles (structural, from the trace)" in names)
    mean = viewer.layers[MAPS["mean"][0]]
    np.testing.assert_array_equal(mean.data, tr.map_at("mean", tr.n_steps - 1))
    assert len(viewer.layers[TRAJECTORY].data) == tr.n_points
    from qtpy.QtWidgets import QSlider

    slider = w.replay.native.findChild(QSlider) or w.replay.native
    assert (w.replay.min, w.replay.max, w.replay.value) == (1, 3, 3)
    slider.setFocus()
    QTest.keyClick(slider, Qt.Key.Key_Home)
    assert w.replay.value == 1 and w.status.value.startswith("Replay: step 1/3 at")
    assert len(viewer.layers[TRAJECTORY].data) == tr.n_points - 2
    np.testing.assert_array_equal(mean.data, tr.map_at("mean", 0))
    if not dataset_open:
        return
    w.budget.value = 2
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)
    assert w.replay_trace is None and (w.replay.max, w.replay.value) == (2, 2)
    slider.setFocus()
    QTest.keyClick(slider, Qt.Key.Key_Home)
    new = w.experiment.trace
    assert w.status.value.startswith(f"Replay: step 1/2 at {tuple(new.steps['position'][0])}")
    np.testing.assert_array_equal(mean.data, new.map_at("mean", 0))


@pytest.mark.slow   # a run in a real window: the full suite
def test_objects_keep_their_mode_colour_and_a_seed_inside_avoid_is_refused(make_napari_viewer, small_sample,
                                                                            qtbot, monkeypatch, tmp_path):
    """Defect 9: switching 'new objects' to visit recoloured the selected avoid rectangle green while it stayed
    avoid; a seed clicked inside an avoid region was measured without a word."""
    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer(show=True)
    ref = _open(viewer, small_sample)
    w = _dock(viewer, qtbot)
    viewer.reset_view()
    objects = viewer.layers[OBJECTS]
    viewer.layers.selection.active = objects
    objects.mode = "add_rectangle"
    drag_canvas(viewer, ref, (5, 5), (20, 20), qtbot)
    assert len(objects.data) == 1
    red = np.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(objects.edge_color[0], red)
    choose(w.object_mode, "visit")
    np.testing.assert_allclose(objects.edge_color[0], red)            # still avoid, still red
    drag_canvas(viewer, ref, (30, 30), (40, 40), qtbot)
    assert len(objects.data) == 2
    np.testing.assert_allclose(objects.edge_color[1], [0.0, 1.0, 0.0, 1.0])
    assert [mode for _, mode, _ in w.view.objects_drawn(small_sample.scan_shape)] == ["avoid", "visit"]
    seeds = viewer.layers[SEEDS]
    viewer.layers.selection.active = seeds
    seeds.mode = "add"
    click_canvas(viewer, ref, 12, 12)                                      # inside the avoid rectangle
    click_canvas(viewer, ref, 44, 4)
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    assert w.worker is None
    assert w.status.value == ("Cannot start: Seed position(s) [[12, 12]] (y, x) lie inside an 'avoid' object: they "
                              "would be measured where the run must not measure. Fix: move or delete those seeds, "
                              "or draw that object as 'visit'.")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())   # no run folder made


def test_a_steps_drawing_leaves_the_viewers_dimensions_alone_and_hidden_layers_wait(make_napari_viewer, small_sample,
                                                                                    monkeypatch):
    """Issue 28 (freezes): napari recomputed the viewer's dimensions from every layer on each data event (two per
    points layer set, ~9 ms each: a third of a step's drawing) although a step's points and maps lie inside them;
    and the hidden 'measured values' layer was redrawn every step. Points outside the viewer's ranges still
    update them; a hidden layer gets its newest drawing when shown."""
    from napari_hae._qt.layer_view import VALUES, LayerView

    viewer = make_napari_viewer()
    ref = _open(viewer, small_sample)
    view = LayerView(viewer)
    view.prepare_output_layers(view.geometry(ref), small_sample.scan_shape)
    calls = []
    monkeypatch.setattr(viewer, "_on_layers_change", lambda *a: calls.append(a))
    view.show_points([(3, 4), (40, 47)], [-1, 0], [1.0, 2.0], ["seed", "policy"], budget=5)
    view.show_maps({"mean": np.ones(small_sample.scan_shape, np.float32)})
    assert calls == []
    assert viewer.layers[TRAJECTORY].data.tolist() == [[3, 4], [40, 47]]
    assert viewer.layers[MAPS["mean"][0]].data.max() == 1.0
    view.show_points([(3, 4), (400, 47)], [-1, 0], [1.0, 2.0], ["seed", "policy"], budget=5)   # outside: recomputed
    assert calls

    vl = viewer.layers[VALUES]
    view._draw(vl, lambda: view._show_values(vl, np.array([[1, 2]]), [5.0]))
    view._draw(vl, lambda: view._show_values(vl, np.array([[1, 2], [3, 4]]), [5.0, 7.0]))
    assert len(vl.data) == 0
    vl.visible = True
    assert vl.features["value"].tolist() == [5.0, 7.0]


def test_a_run_on_layers_already_on_the_datas_scale_does_not_set_their_scale_again(make_napari_viewer,
                                                                                   small_sample):
    """Issue 28 (freezes): a run's start set every hAE layer's scale and units, already the data's, and napari redid
    its layer list and the viewer's dimensions for each (the 190 ms stall at Start in the --stalls profile). Only a
    layer not on the data's scale is moved."""
    from napari_hae._qt.layer_view import LayerView

    viewer = make_napari_viewer()
    ref = _open(viewer, small_sample)
    view = LayerView(viewer)
    geo = view.geometry(ref)
    view.prepare_output_layers(geo, small_sample.scan_shape)
    moved = []
    for layer in viewer.layers:
        layer.events.scale.connect(lambda e, name=layer.name: moved.append(name))
    view.prepare_output_layers(geo, small_sample.scan_shape)   # a second run on the same data
    assert moved == []
    viewer.layers[TRAJECTORY].scale = (2.0, 2.0)
    moved.clear()
    view.prepare_output_layers(geo, small_sample.scan_shape)
    assert moved == [TRAJECTORY] and tuple(viewer.layers[TRAJECTORY].scale) == geo["scale"]


@pytest.mark.slow
def test_a_contrast_set_before_the_runs_queued_layer_steps_end_stays(make_napari_viewer, small_sample):
    """Issue 28 (contrast survives): a run's layer steps run one per event-loop turn, and their last one forgot the
    contrast the dock had set. A fast run could draw, be paused and have its contrast set by the user before that
    step ran (`test_the_contrast_the_user_set_stays` failed under load): the contrast of a new run is forgotten when
    it starts (new_run), not in a queued step; a layer made again (deleted mid-run) gets fitted contrast."""
    from napari_hae._qt.layer_view import LayerView

    viewer = make_napari_viewer()
    ref = _open(viewer, small_sample)
    view = LayerView(viewer)
    geo, shape = view.geometry(ref), small_sample.scan_shape
    view.prepare_output_layers(geo, shape)
    view.new_run()
    queued = view.output_layer_steps(geo, shape)                 # the run's steps, not yet run
    mean = viewer.layers[MAPS["mean"][0]]
    view.show_maps({"mean": np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)})
    mean.contrast_limits = (1.0, 2.0)                            # the user, as the layer controls set it
    for step in queued:
        step()
    view.show_maps({"mean": np.ones(shape, np.float32) * 7})
    assert tuple(mean.contrast_limits) == (1.0, 2.0)
    view.new_run()                                               # the next run: fitted again
    view.show_maps({"mean": np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)})
    assert tuple(mean.contrast_limits) == (0.0, shape[0] * shape[1] - 1.0)
    viewer.layers.remove(mean)                                   # deleted mid-run: comes back fitted
    view.prepare_output_layers(geo, shape)
    view.show_maps({"mean": np.full(shape, 3.0, np.float32) + np.eye(*shape, dtype=np.float32)})
    assert tuple(viewer.layers[MAPS["mean"][0]].contrast_limits) == (3.0, 4.0)


@pytest.mark.slow
def test_the_runs_layers_are_made_hidden_when_the_data_opens_and_shown_by_the_first_run(make_napari_viewer,
                                                                                          small_sample, qtbot,
                                                                                          monkeypatch, tmp_path):
    """Issue 28 (freezes): napari takes 0.1-0.3 s to make each layer (its layer controls); the run's five layers
    were made in the run's first second (one 0.9-1.7 s pause, their posted events handled in one go). They are
    made, hidden, when the data opens, without taking the user's layer selection; the first run shows the mean
    map and the trajectory as before."""
    from napari_hae._qt.layer_view import VALUES

    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer(show=True)
    _open(viewer, small_sample)
    w = _dock(viewer, qtbot)
    names = [MAPS[k][0] for k in ("mean", "std", "acq")] + [VALUES, TRAJECTORY]
    active = viewer.layers.selection.active
    qtbot.waitUntil(lambda: all(n in viewer.layers for n in names), timeout=10_000)
    # drawn once, transparent, so that vispy builds their shaders now, not in the run's first frame
    qtbot.waitUntil(lambda: w.view.settling, timeout=5_000)
    seen = {}
    qtbot.waitUntil(lambda: seen.update({n: (viewer.layers[n].visible, viewer.layers[n].opacity) for n in names
                                         if viewer.layers[n].visible}) or not w.view.settling, timeout=10_000)
    assert set(seen) == {MAPS["mean"][0], TRAJECTORY} and all(op == 0.0 for _, op in seen.values()), seen
    assert not any(viewer.layers[n].visible for n in names)
    assert viewer.layers[MAPS["mean"][0]].opacity == 0.7 and viewer.layers[TRAJECTORY].opacity == 1.0
    assert viewer.layers.selection.active is active
    w.budget.value = 1
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None and w.experiment is not None, timeout=TIMEOUT)
    shown = {n for n in names if viewer.layers[n].visible}
    assert shown == {MAPS["mean"][0], TRAJECTORY}
    assert [layer.name for layer in viewer.layers].count(TRAJECTORY) == 1
    assert len(viewer.layers[TRAJECTORY].data) == w.experiment.trace.n_points


@pytest.mark.slow
def test_paced_steps_are_drawn_once_the_run_pauses(make_napari_viewer, small_sample, qtbot, monkeypatch, tmp_path):
    """Issue 28: drawing every step cost each step a 100-150 ms pause of napari in software OpenGL, so steps are
    drawn at a pace (DrawPace). Steps not drawn yet are not lost: a pause shows the paused step's maps and the
    whole trajectory at once."""
    from napari_hae._qt.turns import DrawPace

    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer(show=True)
    _open(viewer, small_sample)
    w = _dock(viewer, qtbot)
    w.run.pace = DrawPace(share=1e-4, longest=1e9)   # after the first drawing, none until the run pauses
    drawn = []
    monkeypatch.setattr(w.view, "show_maps", lambda maps, f=w.view.show_maps: (drawn.append(1), f(maps)))
    w.budget.value = 30
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.experiment is not None and w.experiment.step_index >= 4, timeout=TIMEOUT)
    QTest.mouseClick(w.pause_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.status.value.startswith("Paused after step"), timeout=TIMEOUT)
    tr = w.experiment.trace
    assert len(drawn) == 2 < tr.n_steps              # the first step, then the paused one
    np.testing.assert_array_equal(viewer.layers[MAPS["mean"][0]].data, tr.map_at("mean", tr.n_steps - 1))
    assert len(viewer.layers[TRAJECTORY].data) == tr.n_points
    assert w.status.value.startswith(f"Paused after step {tr.n_steps} of 30")
    QTest.mouseClick(w.stop_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)


@pytest.mark.quiet   # counts frames within 200 ms
def test_the_layer_list_is_laid_out_in_the_frame_of_the_drawing(make_napari_viewer, qtbot):
    """Issue 28: napari's layer list answered a drawn step's layer events with a layout on a zero timer of Qt's
    item view, which fired after the frame the drawing asked for: a second composition of the whole window per
    drawn step (30-80 ms at 1920 x 1080 in software OpenGL, benchmarks/gui_responsiveness.py). The drawing now
    lays the list out at once (``layer_list_now``): one frame, the list painted in it."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QApplication

    from napari_hae._qt.turns import layer_list_now

    viewer = make_napari_viewer(show=True)
    points = viewer.add_points(np.zeros((1, 2)), name="trajectory")
    viewer.add_image(np.zeros((8, 8)), name="map")
    window, rows = viewer.window._qt_window, viewer.window._qt_viewer.layers.viewport()
    qtbot.waitExposed(window)
    qtbot.wait(100)

    class Frames(QObject):
        def __init__(self):
            super().__init__()
            self.seen = []

        def eventFilter(self, obj, event):
            if obj is window and event.type() == QEvent.Type.UpdateRequest:
                self.seen.append("frame")
            elif obj is rows and event.type() == QEvent.Type.Paint:
                self.seen.append("rows")
            return False

    frames = Frames()
    app = QApplication.instance()
    app.installEventFilter(frames)

    def after_a_step(drawn):
        frames.seen = []
        points.data = np.random.default_rng(len(points.data)).uniform(0, 8, (3, 2))   # what a drawing changes
        points.face_color = "red"
        drawn()
        qtbot.wait(200)
        return frames.seen

    try:
        assert after_a_step(lambda: None) == ["frame", "frame", "rows"]   # napari's own: the rows a frame later
        assert after_a_step(lambda: layer_list_now(viewer)) == ["frame", "rows"]   # one frame, the rows in it
    finally:
        app.removeEventFilter(frames)


@pytest.mark.slow
def test_the_layers_queued_at_start_never_draw_an_older_run_over_a_newer_one(make_napari_viewer, small_sample,
                                                                             qtbot, monkeypatch, tmp_path):
    """The run's layers are made one per event-loop turn from Start on, and the last turn drew the run as it was at
    Start: on a loaded machine (CI with a core busy) a short run ended before those turns did, and the trajectory
    was drawn back to the empty state of Start (0 of 9 points). Here the turns are held until the run has ended."""
    from napari_hae._qt import run_session

    held = []
    monkeypatch.setattr(run_session, "one_per_turn", lambda calls, viewer, still=lambda: True: held.extend(calls))
    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer()
    _open(viewer, small_sample)
    w = _dock(viewer, qtbot)
    viewer.layers[SEEDS].add([[5, 5], [20, 30], [40, 10], [30, 30]])
    w.budget.value = 5
    w.start()
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)
    assert held and len(viewer.layers[TRAJECTORY].data) == 9
    for call in held:   # what the event loop does with them later
        call()
    assert len(viewer.layers[TRAJECTORY].data) == 9
    np.testing.assert_allclose(viewer.layers[TRAJECTORY].features["value"], w.experiment.trace.values)


@pytest.mark.slow
def test_layers_warmed_once_are_not_warmed_again_when_another_dataset_is_chosen(make_napari_viewer, small_sample,
                                                                                 qtbot, monkeypatch, tmp_path):
    """Issue 28: the run's layers are drawn once, transparent, when the data opens, so that vispy builds their
    shaders then (LayerView.warm). Choosing another dataset (an acquired image, a second file) moves the same
    layers onto its scale, and they were drawn transparent again for 0.4 s: two more compositions of the whole
    window (~0.1 s each in software OpenGL) for shaders built already."""
    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer(show=True)
    _open(viewer, small_sample)
    w = _dock(viewer, qtbot)
    qtbot.waitUntil(lambda: w.view.has_output_layers() and not w.view.settling, timeout=20_000)
    names = [MAPS["mean"][0], TRAJECTORY]
    shown = []
    for name in names:
        viewer.layers[name].events.visible.connect(lambda e, name=name: shown.append(name))
    second = _open(viewer, dataclasses.replace(small_sample, name="in_um", pixel_size=0.002, pixel_units="um"))
    choose(w.layer_combo, second.name)
    qtbot.wait(1000)   # the dataset's turns and a warm-up's 0.4 s
    assert tuple(viewer.layers[TRAJECTORY].scale) == pytest.approx((2.0, 2.0))   # moved onto the new scale
    assert shown == [] and not any(viewer.layers[n].visible for n in names)
