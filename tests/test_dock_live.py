"""A run on a live instrument from the dock (Nion's simulated STEM): Acquire image opens the instrument's HAADF as
a layer to click seeds on, Start runs on that instrument. Real clicks and keys in a shown window."""

import math

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("nion.usim_device", reason="Nion's simulated STEM (pip install 'napari-hae[nion]') is absent")

from qtpy.QtCore import Qt  # noqa: E402
from qtpy.QtTest import QTest  # noqa: E402

from qt_input import choose, click_canvas, open_dock, type_into  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.mark.slow   # a run on the simulated instrument in a shown window
def test_acquire_image_then_start_runs_on_the_live_instrument(make_napari_viewer, small_sample, qtbot, monkeypatch,
                                                               tmp_path):
    import threading

    from napari_hae.core.instrument import nion

    acquired_in, image = [], nion.NionMicroscope.structural_image

    def structural_image(self):
        acquired_in.append(threading.current_thread() is threading.main_thread())
        return image(self)

    monkeypatch.setattr(nion.NionMicroscope, "structural_image", structural_image)
    # the worker's `finished` arrives in an event after its result: the buttons must not wait for it (they were
    # grey while the status said "Acquired"; CI clicked then)
    monkeypatch.setattr("napari_hae._qt.microscope_link.MicroscopeLink._connect_done", lambda self, worker: None)
    viewer, w = open_dock(make_napari_viewer, small_sample, qtbot, monkeypatch, tmp_path)
    assert w.acquire_btn.native.isHidden()                             # the simulator replays the open data
    choose(w.microscope_kind, "nion-usim")
    assert not w.acquire_btn.native.isHidden()
    form = w.run_panel.microscope_params
    type_into(form.size, "32")
    type_into(form.exposure_ms, "2")
    QTest.mouseClick(w.acquire_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.status.value.startswith("Acquired the nion-usim structural image"), timeout=60_000)
    assert w.status.value.startswith("Acquired the nion-usim structural image (32 x 32 pixels of 3.125 nm)")
    assert acquired_in == [False]          # Issue 28: acquired in a worker (on the GUI thread it froze napari 2-3 s)
    assert w.start_btn.enabled and w.acquire_btn.enabled and w.resume_trace_btn.enabled
    layer = w.layer_combo.value
    assert layer.name.endswith("(structural)") and layer.data.shape == (32, 32)
    assert tuple(layer.scale) == pytest.approx((3.125, 3.125))
    click_canvas(viewer, layer, 10, 12)                                 # nothing measured there yet
    assert w.status.value.startswith("(10, 12) is not measured yet")
    type_into(w.budget, "3")
    type_into(w.patch_size, "8")
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None and w.experiment is not None and w.experiment.done, timeout=120_000)
    t = w.experiment.trace
    assert t.n_steps == 3 and t.dataset["pixel_units"] == "nm" and t.dataset["live"] is True
    assert np.array_equal(t.structural, layer.data)                     # the instrument the image came from
    assert all(b > 0 for b in t.steps["blanked_s"]) and all(math.isnan(d) for d in t.dwells)
    assert w.status.value.startswith("Run finished: 3 steps")
    assert nion._USIM["config"] is None                                 # released when the run ended


@pytest.mark.slow   # two connections to the simulated instrument in a shown window
def test_a_stopped_live_run_resumes_from_the_dock_on_a_reacquired_image(make_napari_viewer, small_sample, qtbot,
                                                                        monkeypatch, tmp_path):
    from qtpy.QtWidgets import QFileDialog

    from napari_hae.core.record.trace import JOURNAL_NAME

    viewer, w = open_dock(make_napari_viewer, small_sample, qtbot, monkeypatch, tmp_path)
    choose(w.microscope_kind, "nion-usim")
    form = w.run_panel.microscope_params
    type_into(form.size, "32")
    type_into(form.exposure_ms, "2")
    type_into(w.budget, "6")
    type_into(w.patch_size, "8")
    QTest.mouseClick(w.acquire_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.status.value.startswith("Acquired"), timeout=60_000)
    first = np.array(w.layer_combo.value.data)
    QTest.mouseClick(w.start_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.experiment is not None and w.experiment.step_index >= 2, timeout=120_000)
    QTest.mouseClick(w.stop_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    stopped_exp = w.experiment
    stopped = w.experiment.trace
    journal = stopped.journal.path if stopped.journal is not None else None
    journal = journal or next((tmp_path / "runs").glob(f"*/{JOURNAL_NAME}"))
    assert not w.experiment.done
    QTest.mouseClick(w.acquire_btn.native, Qt.MouseButton.LeftButton)   # a fresh connection, a fresh HAADF
    qtbot.waitUntil(lambda: w.status.value.startswith("Acquired"), timeout=60_000)
    assert not np.array_equal(w.layer_combo.value.data, first)
    assert w.resume_trace_btn.enabled and w.start_btn.enabled   # a finished connection greyed them for good
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a: (str(journal), a[-1]))
    errors = []
    monkeypatch.setattr("napari_hae._qt.trace_browser.show_error", errors.append)
    QTest.mouseClick(w.resume_trace_btn.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: errors or (w.worker is None and w.experiment is not stopped_exp and w.experiment.done),
                    timeout=120_000)
    assert errors == [], (errors, w.status.value)
    t = w.experiment.trace
    assert t.n_steps == 6 and len(set(t.positions)) == t.n_points == 16      # nothing measured twice
    assert np.array_equal(t.structural, first)                              # the run's frame: the recorded image
    assert any("was registered to the recorded one" in e["message"] for e in t.events)
