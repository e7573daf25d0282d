"""Following the specimen's drift during a run (issue 26): every ``drift_every`` acquisitions the instrument acquires
its structural image again, it is registered to the run's, the check is recorded, and later spectra are measured
where the specimen now is; positions that left the field are avoided (a recorded object)."""

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.run.experiment import Experiment
from napari_hae.core.run.resuming import RUN_DRIFT_LABEL
from napari_hae.core.run.state import RunState


class Drifting:
    """A live instrument over a spectrum image whose specimen can move: what was at pixel p is at p + ``offset``."""

    def __init__(self, data):
        self._data, self.offset, self.images = data, (0, 0), 0
        self.scan_shape, self.signal_shape, self.energy = data.scan_shape, data.signal_shape, data.energy
        self._structural = data.structural.copy()

    def structural_image(self):
        return self._structural

    def acquire(self, y, x):
        sy, sx = int(y) - self.offset[0], int(x) - self.offset[1]
        ny, nx = self.scan_shape
        if not (0 <= sy < ny and 0 <= sx < nx):
            return np.zeros(self.signal_shape)   # off the specimen
        return self._data.spectra[sy, sx].astype(np.float64)

    def acquire_structural_image(self):
        self.images += 1
        self.last_image_beam_on_s = 0.01
        return np.roll(self._data.structural, self.offset, axis=(0, 1))


def _run(data, drift_every, move_after=3):
    mic = Drifting(data)
    exp = Experiment(mic, fast_settings(n_seeds=4, budget=10, drift_every=drift_every))
    exp.run(move_after)               # 4 seeds + 3 steps: 7 points; checks after points 4, 8 and 12 (every 4)
    mic.offset = (3, -2)              # the stage moves: point 8 is measured before the check finds it
    exp.run()
    return mic, exp


@pytest.fixture(scope="module")
def tracked(small_sample):
    mic, exp = _run(small_sample, drift_every=4)
    yield mic, exp
    exp.close()


def test_a_specimen_that_moves_mid_run_is_followed_and_the_check_recorded(small_sample, tracked):
    mic, exp = tracked
    events = [e["message"] for e in exp.trace.events if e["message"].startswith("drift check")]
    assert len(events) == 3 and mic.images == 3                # after points 4, 8 and 12 of 14
    assert events[0].startswith("drift check after point 4: ") and events[1].startswith("drift check after point 8")
    assert "shift (dy, dx) = (0, 0) px" in events[0] and "shift (dy, dx) = (3, -2) px (was (0, 0)" in events[1]
    assert "beam on 0.01 s" in events[1]
    # every spectrum is the specimen's at its recorded position, on the right features after the check too; only
    # point 8, measured between the move and the check that found it, is where the instrument put it
    right = [np.array_equal(s, small_sample.spectra[y, x]) for (y, x), s in zip(exp.trace.positions,
                                                                              exp.trace.spectra)]
    assert right[:7] == [True] * 7 and right[8:] == [True] * 6
    # what left the field (3 rows at the bottom, 2 columns on the left) is avoided, by a recorded object
    ny, nx = small_sample.scan_shape
    out = np.zeros((ny, nx), bool)
    out[ny - 3:, :] = out[:, :2] = True
    avoided = np.asarray(exp.avoid).reshape(ny, nx)
    assert exp.state.object_in_force(RUN_DRIFT_LABEL) is not None
    np.testing.assert_array_equal(avoided, out & ~np.asarray(exp.measured).reshape(ny, nx))
    assert not any(out[p] for p in exp.trace.positions[-6:])   # nothing measured there after the move
    # the run is its records: the state rebuilt from them avoids the same positions
    np.testing.assert_array_equal(RunState.from_trace(exp.trace).avoid, exp.avoid)


def test_without_tracking_the_same_move_puts_spectra_on_other_features(small_sample):
    """The test above can fail: untracked, the spectra after the move are not the specimen's at their positions."""
    _, exp = _run(small_sample, drift_every=0)
    wrong = [not np.array_equal(s, small_sample.spectra[y, x]) for (y, x), s in
             zip(exp.trace.positions, exp.trace.spectra)]
    assert not any(wrong[:7]) and sum(wrong[7:]) >= 5
    exp.close()


def test_an_instrument_that_cannot_acquire_its_image_again_refuses_drift_tracking(small_sample):
    with pytest.raises(HAEInputError, match=r"drift_every=5: SimulatedMicroscope cannot acquire its structural image "
                                            r"again during a run.*Fix: leave drift tracking off"):
        Experiment(SimulatedMicroscope(small_sample), fast_settings(drift_every=5))


@pytest.mark.slow   # Nion's simulated STEM
def test_the_stage_moved_mid_run_on_nion_usim_is_followed(tmp_path):
    """Acceptance (issue 26): the stage moved mid-run on nion-usim: the drift is detected, recorded, and later
    spectra are on the run's features (their counts follow the run's image where the run says they were taken)."""
    pytest.importorskip("nion.usim_device", reason="Nion's simulated STEM (napari-hae[nion]) is absent")
    from nion.utils import Geometry

    from napari_hae.core.instrument.adapters import close_microscope, make_microscope

    mic = make_microscope("nion-usim", None, size=32, exposure_ms=2.0)
    try:
        exp = Experiment(mic, fast_settings(n_seeds=4, budget=6, drift_every=4, dwell=0.005),
                         journal=tmp_path / "trace.journal")
        exp.run(3)                                                                   # 7 points; checks after 4, 8
        mic.instrument.stage_position_m = Geometry.FloatPoint(y=12.5e-9, x=0.0)   # 4 pixels of 3.125 nm
        exp.run()
        checks = [e["message"] for e in exp.trace.events if e["message"].startswith("drift check")]
        assert len(checks) == 2 and "shift (dy, dx) = (4, 0) px (was (0, 0)" in checks[1], checks
        assert exp.microscope.shift == (4, 0) and exp.trace.n_points == 10
        exp.close()
        ref = exp.structural
        grid = [(y, x) for y in range(2, 28, 4) for x in range(2, 30, 4)]   # inside the field after the move

        def counts_follow_the_image(m):
            v = [np.sum(m.acquire(y, x, dwell=0.002)) for y, x in grid]
            return abs(np.corrcoef(v, [ref[p] for p in grid])[0, 1])

        followed, untracked = counts_follow_the_image(exp.microscope), counts_follow_the_image(mic)
        assert followed > 0.7 and followed > untracked + 0.2, (followed, untracked)
    finally:
        close_microscope(mic)


def test_the_beam_time_of_the_drift_images_is_in_the_dose_ledger(tracked, tmp_path):
    """The images a drift check acquires cost dose: their beam time is recorded with each check (a field of the
    event, kept through trace.h5) and the summary's ledger counts it beside the spectra's."""
    from napari_hae.core.analysis.summary import dose_ledger
    from napari_hae.core.record.trace import Trace

    _, exp = tracked
    exp.trace.save(tmp_path / "trace.h5")
    for trace in (exp.trace, Trace.load(tmp_path / "trace.h5")):
        dose = dose_ledger(trace)
        assert dose["structural_images"] == 3 and dose["structural_images_beam_on_s"] == pytest.approx(0.03)
