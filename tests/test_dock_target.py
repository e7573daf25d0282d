"""The dock's target fields driven by real input events (issue 14, defects 2, 4 and 7, and the band dragged on the
spectrum): keys typed into the fields with QTest, the mouse dragged on the spectrum canvas."""

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtCore import QPoint, Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402

from napari_hae.core.data.dataset import EnergyAxis, SpectrumImage  # noqa: E402
from qt_input import open_dock, type_into  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT = 120_000


def _eds_data():
    rng = np.random.default_rng(0)
    e = np.arange(2048) * 10.0
    yy, xx = np.mgrid[:32, :32]
    disc = ((yy - 16) ** 2 + (xx - 12) ** 2 < 60).astype(float)
    lam = (np.exp(-0.5 * ((e - 277) / 40) ** 2) * 3.0 + disc[..., None] * np.exp(-0.5 * ((e - 1740) / 55) ** 2)
           * 2.5 + 0.3 * np.exp(-e / 4000))
    return SpectrumImage(structural=disc + 0.1, spectra=rng.poisson(lam).astype(np.float32),
                         energy=EnergyAxis(2048, 0.0, 10.0), name="eds", signal_type="EDS_TEM")


@pytest.mark.slow
def test_eds_bands_are_typed_in_kev_and_a_kev_band_measures_the_peak(make_napari_viewer, qtbot, monkeypatch,
                                                                      tmp_path):
    """Defect 4: an EDS user typed Si K as 1.64-1.84 into eV fields; the band held no channel and the run measured
    zeros. The fields now show keV and start on the structured peak; 1.64-1.84 typed is 1640-1840 eV."""
    viewer, w = open_dock(make_napari_viewer, _eds_data(), qtbot, monkeypatch, tmp_path)
    assert w.band_a.label == "band start (keV)" and w.band_b.label == "band end (keV)"
    assert w.band_a.value < 1.74 < w.band_b.value                   # suggested: the Si K peak
    assert "Si K peak at 1.7" in w.status.value and "then Start" in w.status.value
    assert w.plot.ax.get_xlabel() == "energy (keV)" and w.plot.ax.get_xlim()[1] == pytest.approx(20.47)
    type_into(w.band_a, "1.64")
    type_into(w.band_b, "1.84")
    sc = w.target.scalarizer()
    assert (sc.params["a"], sc.params["b"]) == pytest.approx((1640.0, 1840.0))
    values = w.dataset.scalarize(sc)
    assert np.ptp(values) > 0 and values[16, 12] > values[0, 0]    # a map, not zeros
    type_into(w.band_a, "1640")                                           # a band typed in eV into keV fields
    assert w.band_a.value == pytest.approx(1640.0)                    # not clamped to the axis
    assert w.status.value == ("Scalarizer: The band [1640, 1.84] keV is reversed or empty (start must be below "
                              "end). Fix: give the lower energy first, e.g. [1.84, 1640] keV.")
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    assert w.worker is None and w.status.value.startswith("Cannot start: The band")


@pytest.mark.slow
def test_a_value_outside_the_axis_is_said_not_clamped(viewer_widget_shown, qtbot):
    """Defect 7: typing 931 into a band on 0.2-6.2 eV data gave 3.0 with no message."""
    viewer, w = viewer_widget_shown
    type_into(w.band_b, "931")
    assert w.band_b.value == pytest.approx(931.0)
    assert "extends beyond the energy axis" in w.status.value and "Fix: clip the band to" in w.status.value
    type_into(w.band_b, "2.2")
    assert w.status.value.startswith("Scalarizer fields are valid")


@pytest.mark.slow   # a run in a real window: the full suite
def test_patch_size_typed_mid_run_is_one_intervention(viewer_widget_shown, qtbot):
    """Defect 7: typing "14" in patch size mid-run applied 1 (clamped to 3), then 14: three interventions."""
    viewer, w = viewer_widget_shown
    w.budget.value = 30
    asked = []
    request = w.controller.request
    w.controller.request = lambda label, change: (asked.append(label), request(label, change))[1]
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    QTest.mouseClick(w.pause_btn.native, Qt.MouseButton.LeftButton)
    type_into(w.patch_size, "14")
    assert asked == ["patch size 14"]
    QTest.mouseClick(w.stop_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)


def _drag(canvas, x0: float, x1: float) -> None:
    """Press at energy x0 (plot units), move, release at x1, in the middle of the plot's height."""
    ax = canvas.ax
    y = float(np.mean(ax.get_ylim()))
    h = canvas.height()
    ratio = canvas.devicePixelRatioF()

    def point(x):
        px, py = ax.transData.transform((x, y))
        return QPoint(int(round(px / ratio)), int(round(h - py / ratio)))

    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point(x0))
    for t in np.linspace(0, 1, 5):
        QTest.mouseMove(canvas, point(x0 + t * (x1 - x0)))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point(x1))


def test_band_dragged_on_the_spectrum_fills_the_fields(viewer_widget_shown, qtbot):
    viewer, w = viewer_widget_shown
    w.tabs.setCurrentIndex(0)
    qtbot.waitExposed(w.plot)
    w.plot.draw()
    _drag(w.plot, 3.5, 4.0)                                           # a new band where there was none
    assert w.band_a.value == pytest.approx(3.5, abs=0.05) and w.band_b.value == pytest.approx(4.0, abs=0.05)
    a, b = w.band_a.value, w.band_b.value
    _drag(w.plot, 3.75, 3.25)                                         # grab the middle: the band moves
    assert w.band_a.value == pytest.approx(a - 0.5, abs=0.05) and w.band_b.value == pytest.approx(b - 0.5, abs=0.05)
    sc = w.target.scalarizer()
    assert sc.params["a"] == pytest.approx(w.band_a.value) and sc.params["b"] == pytest.approx(w.band_b.value)


@pytest.mark.slow
def test_core_loss_eels_starts_with_the_edge_and_its_background(make_napari_viewer, qtbot, monkeypatch, tmp_path,
                                                                  shared_data):
    """Defect 2: the dock had no background control and started on the middle third of the axis; on CuZn the
    raw band integral correlates 0.21 with the Cu signal."""
    from napari_hae.core.data.io import load_spectrum_image

    d = shared_data / "cuzn_eels"
    data = load_spectrum_image(d / "CuZn_EELS_mapping_tutorial.hspy", d / "CuZn_HAADF.hspy")
    viewer, w = open_dock(make_napari_viewer, data, qtbot, monkeypatch, tmp_path)
    assert w.background.value and not w.bg_c.native.isHidden() and not w.bg_d.native.isHidden()
    assert w.band_a.label == "band start (eV)" and 900 <= w.band_a.value <= 931 < w.band_b.value
    assert "Cu L2,3 edge" in w.status.value and "power-law background" in w.status.value
    assert w.plot.bg_line.get_visible() and w.plot.bg_window.get_visible()   # the fit drawn over its window
    type_into(w.bg_c, "800")
    type_into(w.bg_d, "900")
    assert w.target.scalarizer().background == (800.0, 900.0)
    x, y = w.plot.bg_line.get_data()
    assert 800 <= x[0] < 808 and x[-1] > w.band_b.value - 8          # from the window to the band end (8 eV channels)
    QTest.mouseClick(w.background.native, Qt.MouseButton.LeftButton)  # untick: raw integral, no curve
    assert w.target.scalarizer().background is None and not w.plot.bg_line.get_visible()
    assert w.bg_c.native.isHidden()


@pytest.fixture
def viewer_widget_shown(make_napari_viewer, small_sample, qtbot, monkeypatch, tmp_path):
    viewer, w = open_dock(make_napari_viewer, small_sample, qtbot, monkeypatch, tmp_path)
    w.patch_size.value = 8
    yield viewer, w
    w.stop()
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT)
