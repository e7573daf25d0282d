"""Real input for the dock's GUI tests: keys typed into fields, combo boxes chosen with the keyboard, clicks and
drags on napari's canvas at the screen position of a scan pixel, and the gaps of napari's event loop."""

import sys
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gui_responsiveness import EventLoopGaps  # noqa: E402,F401  (the benchmark's timer, shared)


def open_dock(make_napari_viewer, data, qtbot, monkeypatch, tmp_path, fast_model: bool = True):
    """A shown napari window with ``data`` opened and the hAE dock (runs journaled under tmp_path)."""
    from napari_hae._layers import dataset_layer_data
    from napari_hae._widget import HAEWidget

    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer(show=True)
    for layer_data, kw, _ in dataset_layer_data(data):
        viewer.add_image(layer_data, **kw)
    w = HAEWidget(viewer)
    viewer.window.add_dock_widget(w, name="hAE")
    if fast_model:
        w.fit_iterations, w.fit_iterations_first, w.model_params = 10, 60, {"hidden": [32, 16]}
    qtbot.waitExposed(viewer.window._qt_window)
    # as a user finds it: the run's layers, made one per event-loop turn once a dataset is chosen, are there (and
    # drawn once, transparent, to build their shaders: LayerView.warm)
    qtbot.waitUntil(lambda: w.view.has_output_layers() and not w.view.settling, timeout=20_000)
    return viewer, w


def type_into(field, text: str) -> None:
    """Select the field's text, type ``text``, press Enter."""
    native = field.native
    line = native.lineEdit() if hasattr(native, "lineEdit") else native
    native.setFocus()
    QTest.keyClick(line, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    QTest.keyClicks(line, text)
    QTest.keyClick(line, Qt.Key.Key_Return)


def choose(combo, text: str) -> None:
    """Pick ``text`` in a combo box with the keyboard (Home, then Down as often as needed)."""
    native = combo.native
    items = [native.itemText(i) for i in range(native.count())]
    assert text in items, items
    native.setFocus()
    QTest.keyClick(native, Qt.Key.Key_Home)
    for _ in range(items.index(text)):
        QTest.keyClick(native, Qt.Key.Key_Down)


def canvas_point(viewer, ref, y: float, x: float) -> QPoint:
    """Where scan pixel (y, x) of layer ``ref`` is on napari's canvas (its 2-D camera: ``zoom`` canvas pixels per
    world unit around the camera centre)."""
    canvas = viewer.window._qt_viewer.canvas.native
    wy, wx = np.asarray(ref.data_to_world((y, x)))[-2:]
    cy, cx = viewer.camera.center[-2:]
    z = viewer.camera.zoom
    return QPoint(int(round((wx - cx) * z + canvas.width() / 2)), int(round((wy - cy) * z + canvas.height() / 2)))


def click_canvas(viewer, ref, y, x) -> None:
    QTest.mouseClick(viewer.window._qt_viewer.canvas.native, Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, canvas_point(viewer, ref, y, x))


def drag_canvas(viewer, ref, start, end, qtbot) -> None:
    canvas = viewer.window._qt_viewer.canvas.native
    p0, p1 = canvas_point(viewer, ref, *start), canvas_point(viewer, ref, *end)
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p0)
    for t in np.linspace(0.1, 1.0, 8):
        QTest.mouseMove(canvas, QPoint(int(p0.x() + t * (p1.x() - p0.x())), int(p0.y() + t * (p1.y() - p0.y()))))
        qtbot.wait(5)
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, p1)
