"""napari habits (issue 14): keys for the run buttons, progress where the user looks, the contrast the user set
kept, the spectrum on click whatever layer is selected, and a dock that opens without warnings."""

import warnings

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtCore import QPoint, Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402

from napari_hae._layers import dataset_layer_data  # noqa: E402
from napari_hae._widget import MAPS, SEEDS, HAEWidget  # noqa: E402
from qt_input import click_canvas  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


@pytest.fixture
def shown(make_napari_viewer, small_sample, qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    viewer = make_napari_viewer(show=True)
    for layer_data, kw, _ in dataset_layer_data(small_sample):
        ref = viewer.add_image(layer_data, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = HAEWidget(viewer)
        viewer.window.add_dock_widget(w, name="hAE")
    w.fit_iterations, w.fit_iterations_first, w.model_params = 10, 60, {"hidden": [32, 16]}
    w.patch_size.value = 8
    qtbot.waitExposed(viewer.window._qt_window)
    yield viewer, w, ref, caught
    w.stop()
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)


def test_the_dock_opens_without_deprecation_warnings(shown):
    *_, caught = shown
    bad = [str(c.message) for c in caught if issubclass(c.category, (DeprecationWarning, FutureWarning))
           and "napari_hae" in (c.filename or "")]
    assert bad == []


@pytest.mark.slow   # a run in a real window: the full suite
def test_function_keys_drive_the_run_and_the_dock_shows_progress(shown, qtbot):
    viewer, w, ref, _ = shown
    w.budget.value = 30
    win = viewer.window._qt_window
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=5_000)
    viewer.window._qt_viewer.canvas.native.setFocus()               # keys while the canvas has the focus
    canvas = viewer.window._qt_viewer.canvas.native
    QTest.keyClick(canvas, Qt.Key.Key_F5)
    assert w.worker is not None
    qtbot.waitUntil(lambda: w.experiment.step_index >= 1, timeout=TIMEOUT)
    QTest.keyClick(canvas, Qt.Key.Key_F6)
    qtbot.waitUntil(lambda: w.status.value.startswith("Paused after step"), timeout=TIMEOUT)  # not mid-step
    said = f"Paused after step {w.experiment.step_index} of 30: Resume (F6), Step once (F7) or Stop (F8)."
    assert w.status.value == said
    qtbot.waitUntil(lambda: w.run_panel.progress.value == w.experiment.step_index, timeout=TIMEOUT)
    bar = w.run_panel.progress
    assert bar.max == 30 and bar.native.text() == f"{w.experiment.step_index} / 30 steps"
    n = w.experiment.step_index
    QTest.keyClick(canvas, Qt.Key.Key_F7)                               # one step
    qtbot.waitUntil(lambda: w.experiment.step_index > n and w.controller.driver.idle, timeout=TIMEOUT)
    assert w.experiment.step_index == n + 1 and w.paused
    QTest.keyClick(canvas, Qt.Key.Key_F8)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)
    assert w.experiment.trace.n_steps < 30


@pytest.mark.slow   # a run in a real window: the full suite
def test_the_contrast_the_user_set_stays(shown, qtbot):
    viewer, w, ref, _ = shown
    w.budget.value = 6
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.experiment.step_index >= 1, timeout=TIMEOUT)
    QTest.mouseClick(w.pause_btn.native, Qt.MouseButton.LeftButton)
    # paused once the step in flight has ended and been drawn (the pause flag is set at the click: a map drawn
    # after it would come before any contrast the user could have set on it)
    qtbot.waitUntil(lambda: w.status.value.startswith("Paused after step"), timeout=TIMEOUT)
    mean = viewer.layers[MAPS["mean"][0]]
    std = viewer.layers[MAPS["std"][0]]
    mean.contrast_limits = (0.0, 1.0)                                # as the layer controls set it
    QTest.mouseClick(w.resume_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)
    assert tuple(mean.contrast_limits) == (0.0, 1.0)
    assert viewer.layers.extent.units is not None                    # no "Inconsistent units across layers"
    last = w.experiment.trace.map_at("std", 5)
    assert not np.array_equal(std.data, last)                        # hidden: not uploaded at every step
    std.visible = True                                               # shown: the latest map, fitted contrast
    np.testing.assert_array_equal(std.data, last)
    assert tuple(std.contrast_limits) == pytest.approx((float(last.min()), float(last.max())), rel=1e-5)


def test_a_click_shows_the_spectrum_whatever_layer_is_selected(shown, qtbot):
    viewer, w, ref, _ = shown
    viewer.reset_view()
    viewer.layers.selection.active = viewer.layers[SEEDS]            # not the dataset layer
    click_canvas(viewer, ref, 20, 31)
    assert w.plot.title.startswith("pre-acquired at (20, 31): ")


@pytest.mark.slow
def test_the_spectrum_follows_the_theme_and_zooms_with_the_wheel(shown, qtbot):
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme
    from qtpy.QtCore import QPointF
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    viewer, w, ref, _ = shown
    plot = w.plot
    assert to_hex(plot.figure.get_facecolor()) == get_theme(viewer.theme).background.as_hex()
    viewer.theme = "light"
    assert to_hex(plot.figure.get_facecolor()) == get_theme("light").background.as_hex()
    assert to_hex(plot.line.get_color()) == get_theme("light").text.as_hex()
    w.tabs.setCurrentIndex(0)
    qtbot.waitExposed(plot)
    plot.draw()
    full = plot.ax.get_xlim()
    x = 3.0
    px, py = plot.ax.transData.transform((x, float(np.mean(plot.ax.get_ylim()))))
    ratio = plot.devicePixelRatioF()
    pos = QPointF(px / ratio, plot.height() - py / ratio)
    for _ in range(3):                                                # three notches of the wheel, up: zoom in
        QApplication.sendEvent(plot, QWheelEvent(pos, plot.mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120),
                                                 Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                                                 Qt.ScrollPhase.NoScrollPhase, False))
    a, b = plot.ax.get_xlim()
    assert b - a == pytest.approx((full[1] - full[0]) * 0.8 ** 3, rel=0.02) and a < x < b
    visible = w.spectra.mean_spectrum[(w.dataset.energies >= a) & (w.dataset.energies <= b)]
    assert plot.ax.get_ylim()[1] == pytest.approx(visible.max() + 0.05 * np.ptp(visible), rel=1e-3)
    w.show_spectrum(w.spectra.mean_spectrum, "again")                        # a new spectrum keeps the zoom
    assert plot.ax.get_xlim() == pytest.approx((a, b))
    QTest.mouseDClick(plot, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pos.toPoint())
    assert plot.ax.get_xlim() == pytest.approx(full)


@pytest.mark.slow
def test_the_monitors_follow_the_theme(shown, qtbot, tmp_path, monkeypatch):
    """The monitor figure was white in napari's dark theme, its measured values black on it; a loaded trace's
    monitors are drawn on the theme's background and redrawn when the theme changes."""
    from napari.utils.theme import get_theme
    from qtpy.QtWidgets import QFileDialog

    from conftest import saved_trace

    viewer, w, _, _ = shown
    _, path = saved_trace(w.dataset, tmp_path)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a: (str(path), a[-1]))
    QTest.mouseClick(w.load_btn.native, Qt.MouseButton.LeftButton)
    plot = w.monitor_plot

    def corner():
        plot.wait()
        qtbot.waitUntil(lambda: not plot.pixmap().isNull(), timeout=10_000)
        return plot.pixmap().toImage().pixelColor(2, 2).name()

    def background():   # as a pixmap on this display holds it (pytest-xvfb's display has 16-bit colour)
        from qtpy.QtGui import QColor, QPixmap

        pm = QPixmap(4, 4)
        pm.fill(QColor(get_theme(viewer.theme).background.as_hex()))
        return pm.toImage().pixelColor(2, 2).name()

    assert corner() == background()
    viewer.theme = "light" if viewer.theme == "dark" else "dark"
    qtbot.waitUntil(lambda: corner() == background(), timeout=10_000)


def test_trajectory_colours_stand_apart_from_the_mean_map(make_napari_viewer):
    """The trajectory was coloured by all of plasma: its first steps dark blue-purple and its last yellow, the
    colours of the mean map's viridis at its low and high end (CIE76 distance 1.2). Every step's colour, seeds
    included, must stand apart from every colour of the mean layer's colormap."""
    from skimage.color import rgb2lab

    from napari_hae._qt.layer_view import TRAJECTORY, LayerView

    viewer = make_napari_viewer()
    view = LayerView(viewer)
    view.prepare_output_layers({"scale": (1.0, 1.0), "units": ("pixel", "pixel")}, (40, 40))
    budget = 60
    steps = np.arange(-5, budget)
    view.show_points(np.c_[steps % 40, steps % 40 + 0], steps, np.zeros(len(steps)), ["x"] * len(steps), budget)
    faces = np.asarray(viewer.layers[TRAJECTORY].face_color)[:, :3]
    cmap = viewer.layers[MAPS["mean"][0]].colormap.map(np.linspace(0, 1, 256))[:, :3]
    lab_f, lab_m = rgb2lab(faces[None])[0], rgb2lab(cmap[None])[0]
    distance = np.sqrt(((lab_f[:, None] - lab_m[None]) ** 2).sum(-1))
    assert distance.min() >= 25
    assert len({tuple(c) for c in faces.round(3)}) > budget // 2      # the steps still tell apart by colour


def test_the_monitors_give_travel_in_the_dataset_length_units(small_sample, tmp_path):
    """Travel was drawn in scan pixels whatever the calibration; with a pixel size it is in the dataset's units."""
    import dataclasses

    from conftest import saved_trace
    from napari_hae._monitor_figure import MonitorFigure, snapshot
    from napari_hae.core.analysis.monitors import policy_travel

    data = dataclasses.replace(small_sample, pixel_size=0.25, pixel_units="nm")
    tr, _ = saved_trace(data, tmp_path, budget=4)
    fig = MonitorFigure()
    fig.draw_artists(snapshot(tr))
    assert fig.ax_travel.get_title() == "cumulative travel (nm)"
    np.testing.assert_allclose(fig.l_travel.get_ydata(), 0.25 * policy_travel(tr))
    assert policy_travel(tr)[-1] > 0


def test_the_monitors_step_axes_have_whole_steps(small_sample, tmp_path):
    """Issue 28: the step axis had fractional ticks (0, 1.5, 3, 4.5 after a 6-step run), in the dock's monitors and
    the summary's panels. Steps are counted."""
    from conftest import saved_trace
    from napari_hae._monitor_figure import MonitorFigure, snapshot

    tr, _ = saved_trace(small_sample, tmp_path, budget=6)
    fig = MonitorFigure()
    fig.render(snapshot(tr))
    from matplotlib.figure import Figure

    from napari_hae.core.plots.report import draw_summary

    report = Figure(figsize=(20, 8), layout="constrained")   # the summary's panels (summary.png, napari-hae report)
    draw_summary(report, tr)
    report.canvas.draw()
    step_axes = [a for a in report.axes if a.get_xlabel() == "step"]
    assert len(step_axes) == 4
    for ax in (fig.ax_std, fig.ax_val, fig.ax_travel, *step_axes):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)


def _shown_spectrum_plot(qtbot):
    """The dock's spectrum plot at its size in the dock, shown, and an energy axis of 600 channels (eV)."""
    from napari_hae._spectrum_plot import SpectrumPlot

    plot = SpectrumPlot()
    qtbot.addWidget(plot)
    plot.resize(340, 220)
    plot.show()
    qtbot.waitExposed(plot)
    return plot, np.linspace(0.0, 6.0, 600)


def test_a_run_of_spectra_is_blitted_and_looks_as_a_full_redraw_would(qtbot):
    """Each new spectrum redrew the whole axes (~60 ms of pure Python on the GUI thread). Spectra of one run
    are now blitted over the saved axes; the picture must be the one a full redraw gives, pixel for pixel."""
    plot, e = _shown_spectrum_plot(qtbot)
    rng = np.random.default_rng(0)
    for i in range(20):
        plot.show_spectrum(e, rng.poisson(100 * np.exp(-e) + 20).astype(float), [(1.0, 2.0 + i / 20)],
                           f"step {i + 1}")
        qtbot.wait(1)
    assert plot.n_full_draws <= 3
    blitted = np.asarray(plot.buffer_rgba()).copy()
    plot.draw()
    np.testing.assert_array_equal(blitted, np.asarray(plot.buffer_rgba()))
    plot.show_spectrum(e, 10 * rng.poisson(100 * np.exp(-e) + 20).astype(float), [(1.0, 2.0)], "ten times")
    assert plot.ax.get_ylim()[1] > 10 * 100                           # a spectrum out of the axis rescales it


def test_a_runs_spectra_hold_the_counts_axis_from_particle_to_background(qtbot):
    """Issue 28: a run alternating between a particle (10x the counts) and the background redrew the whole axes at
    each change of scale (the dim spectrum filled under 60% of it): 4 full redraws of 130-190 ms in a 30-step run
    on the GUI thread beside the model's fit (benchmarks/gui_responsiveness.py --stalls). A run's spectra hold the
    axis: it grows when one leaves it, with room, and never shrinks meanwhile; each spectrum stays inside it."""
    plot, e = _shown_spectrum_plot(qtbot)
    rng = np.random.default_rng(1)
    plot.show_spectrum(e, rng.poisson(300 * np.exp(-e) + 60).astype(float), [(1.0, 2.0)], "mean spectrum")
    qtbot.wait(1)
    before = plot.n_full_draws
    for i in range(20):
        level = 10.0 if i % 2 else 1.0
        s = rng.poisson(level * (100 * np.exp(-e) + 20)).astype(float)
        plot.show_spectrum(e, s, [(1.0, 2.0)], f"step {i + 1}", hold=True)
        qtbot.wait(1)
        lo, hi = plot.ax.get_ylim()
        assert lo <= s.min() and s.max() <= hi
    assert plot.n_full_draws - before <= 2                            # the first bright one grows it; that is all
    top = plot.ax.get_ylim()[1]
    plot.show_spectrum(e, rng.poisson(100 * np.exp(-e) + 20).astype(float), [(1.0, 2.0)], "under the cursor")
    assert plot.ax.get_ylim()[1] < top / 3                            # a spectrum looked at is fitted as before


def test_the_status_line_never_cuts_a_message(qtbot):
    """Issue 28: the status line was fixed at 3 lines and cut its own instructions and the journal path. It keeps
    its height (no re-layout per message) and a longer message scrolls inside it, whole, with the text as tooltip."""
    from napari_hae._qt.status_line import StatusLine

    status = StatusLine("Running.")
    qtbot.addWidget(status.native)
    status.native.resize(320, status.native.height())
    status.native.show()
    qtbot.waitExposed(status.native)
    height = status.native.height()
    assert not status.is_cut()
    long = ("Run finished: 60 steps, 70 spectra. Journal: /home/microscopist/.local/share/napari-hae/runs/"
            "20261202-193912/trace.journal. Save the trace to keep it as HDF5. " * 2)
    status.value = long
    qtbot.waitUntil(status.is_cut, timeout=2_000)
    assert status.value == long and status.native.toolTip() == long and status.native.height() == height


def test_number_fields_read_exponent_notation(qtbot):
    """Issue 28: "1e9" typed as a budget became 19 and "1e6" as xi 16 (the "e" key was refused), silently. Typed with
    real keys: exponent notation is read in every number field (a plug-in's parameters too), small values are kept,
    not rounded to the field's decimals; a number that cannot be the field's is refused visibly (the field shows its
    value again) and a number out of range is shown clamped."""
    from napari_hae._qt.forms import IntField, ParamForm, commit_on_enter
    from napari_hae.core.policy.base import POLICIES
    from qt_input import type_into

    form = ParamForm()
    form.show(POLICIES.get("ei").params)
    budget = commit_on_enter(IntField(label="budget (steps)", value=30, min=1, max=100_000))
    for w in (form, budget):
        qtbot.addWidget(w.native)
        w.native.show()
    xi = form["xi"]
    type_into(xi, "1e-5")
    assert form.values()["xi"] == 1e-5 and xi.native.text() == "1e-05"
    type_into(xi, "2.5E-1")
    assert form.values()["xi"] == 0.25 and xi.native.text() == "0.25"
    type_into(xi, "1e6")                                              # xi's range ends at 10: clamped, shown
    assert form.values()["xi"] == 10.0 and xi.native.text() == "10"
    type_into(budget, "1e3")
    assert budget.value == 1000 and budget.native.text() == "1000"
    type_into(budget, "2.5")                                          # not a whole number of steps: refused
    assert budget.value == 1000 and budget.native.text() == "1000"
    type_into(budget, "1e9")                                          # out of range: clamped, shown
    assert budget.value == 100_000 and budget.native.text() == "100000"


def test_a_number_field_collected_while_focused_raises_nothing_into_qt(qtbot):
    """The CI's teardown errors: napari closed with a number field focused; Python had cleared the box's wrapper
    (its attributes) while Qt still sent it focus-out and close events: superqt raised AttributeError
    ('_pending_emit') into Qt's event loop, which pytest-qt reports as an error."""
    from qtpy.QtCore import QEvent, Qt
    from qtpy.QtGui import QCloseEvent, QFocusEvent

    from napari_hae._qt.forms import IntField

    budget = IntField(label="budget (steps)", value=30, min=1, max=100_000)
    qtbot.addWidget(budget.native)
    box = budget.native                                                # the superqt box itself
    box.__dict__.clear()                                               # as the collector leaves a wrapper
    box.focusOutEvent(QFocusEvent(QEvent.Type.FocusOut, Qt.FocusReason.OtherFocusReason))
    box.closeEvent(QCloseEvent())


def test_the_run_keys_are_napari_shortcuts_the_user_can_rebind(shown, qtbot):
    """Issue 28: F5-F8 were Qt shortcuts of the dock, invisible in napari's Preferences > Shortcuts and fixed. They
    are napari viewer actions now: listed there, rebindable (the tooltips follow), pressed on the canvas or in a
    field of the dock."""
    from napari._qt.widgets.qt_keyboard_settings import ShortcutEditor
    from napari.utils.action_manager import action_manager

    viewer, w, ref, _ = shown
    editor = ShortcutEditor()
    qtbot.addWidget(editor)
    listed = editor.key_bindings_strs[editor.VIEWER_KEYBINDINGS]
    assert {"napari-hae:start", "napari-hae:pause_or_resume", "napari-hae:step_once", "napari-hae:stop"} <= set(listed)
    assert w.start_btn.tooltip == "start a run (F5)" and w.stop_btn.tooltip == "stop after the current step (F8)"
    win, canvas = viewer.window._qt_window, viewer.window._qt_viewer.canvas.native
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=5_000)
    action_manager.unbind_shortcut("napari-hae:start")
    action_manager.bind_shortcut("napari-hae:start", "F9")
    try:
        assert w.start_btn.tooltip == "start a run (F9)"
        canvas.setFocus()
        QTest.keyClick(canvas, Qt.Key.Key_F5)                           # no longer the run's key
        assert w.worker is None
        QTest.keyClick(canvas, Qt.Key.Key_F9)
        assert w.worker is not None
        w.budget.native.setFocus()                                      # a field of the dock has the focus
        QTest.keyClick(w.budget.native, Qt.Key.Key_F8)
        qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)
    finally:
        action_manager.unbind_shortcut("napari-hae:start")
        action_manager.bind_shortcut("napari-hae:start", "F5")
