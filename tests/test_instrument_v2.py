"""The microscope interface's live-instrument capabilities: dwell passed through and recorded per point, the beam
blanked while the model fits, one acquisition in flight at most (abort, a timeout that grows with the dwell),
permanent errors not retried, a reconnect hook tried before pausing."""

import re
import threading
import time

import numpy as np
import pytest

from conftest import assert_traces_equal, fast_settings
from napari_hae.core.errors import HAEInputError, InstrumentDisconnected, InstrumentRefused, MicroscopeFault
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment


class LiveFake(SimulatedMicroscope):
    """A simulated microscope with a live instrument's capabilities, logging every call and how many
    acquisitions ran at once."""

    replays = False   # a live instrument (its structural image is acquired, not stored)

    def __init__(self, data, exposure=0.0, abort_works=True):
        super().__init__(data)
        self.exposure, self.abort_works = exposure, abort_works
        self.log, self.dwells = [], []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self.blanked = False

    def acquire(self, y, x, dwell=None):
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.log.append(("acquire", self.blanked))
            self.dwells.append(dwell)
            self._abort.clear()
            if self._abort.wait(self.exposure):
                raise RuntimeError("acquisition aborted")
            return super().acquire(y, x)
        finally:
            with self._lock:
                self.in_flight -= 1

    def blank(self):
        self.log.append(("blank", self.blanked))
        self.blanked = True

    def unblank(self):
        self.log.append(("unblank", self.blanked))
        self.blanked = False

    def abort(self):
        self.log.append(("abort", self.blanked))
        if self.abort_works:
            self._abort.set()


def test_the_dwell_reaches_the_instrument_and_every_point_records_it(small_sample, tmp_path):
    mic = LiveFake(small_sample)
    exp = Experiment(mic, fast_settings(budget=3, dwell=0.004), journal=tmp_path / "journal.bin")
    exp.run()
    assert mic.dwells == [0.004] * 9 and exp.trace.dwells == [0.004] * 9
    exp.trace.save(tmp_path / "t.h5")
    assert_traces_equal(Trace.load(tmp_path / "t.h5"), exp.trace)
    assert Trace.load(tmp_path / "journal.bin").dwells == [0.004] * 9
    exp.close()


def test_a_dwell_the_instrument_cannot_take_is_refused_before_anything_is_measured(small_sample):
    mic = SimulatedMicroscope(small_sample)   # its acquire(y, x) has no dwell
    with pytest.raises(HAEInputError, match=r"does not take a dwell time.* Fix: leave the dwell unset"):
        Experiment(mic, fast_settings(dwell=0.01))
    assert mic.n_acquisitions == 0
    exp = Experiment(mic, fast_settings(budget=1))
    exp.run()
    assert np.isnan(exp.trace.dwells).all() and len(exp.trace.dwells) == 7   # unknown: the instrument's own


def test_the_beam_is_blanked_while_the_model_fits_and_each_step_records_how_long(small_sample):
    mic = LiveFake(small_sample)
    exp = Experiment(mic, fast_settings(budget=3))
    exp.run()
    # every acquisition with the beam on, and blanked right after it
    assert [k for k, _ in mic.log] == ["unblank", "acquire", "blank"] * 9
    assert all(not blanked for k, blanked in mic.log if k == "acquire")
    blanked = exp.trace.steps["blanked_s"]
    fits = np.add(exp.trace.steps["fit_time"], exp.trace.steps["predict_time"])
    assert all(b >= f for b, f in zip(blanked, fits))   # blanked through the fit and the prediction
    exp.close()


def test_blanking_can_be_turned_off_and_an_instrument_without_it_records_nan(small_sample):
    mic = LiveFake(small_sample)
    exp = Experiment(mic, fast_settings(budget=1, blank_between=False))
    exp.run()
    assert [k for k, _ in mic.log] == ["acquire"] * 7 and np.isnan(exp.trace.steps["blanked_s"]).all()
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1))
    exp.run()
    assert np.isnan(exp.trace.steps["blanked_s"]).all()


@pytest.mark.quiet   # measures time
def test_a_slow_acquisition_is_aborted_and_never_two_run_at_once(small_sample):
    """The issue's 2.5 s exposure with a 1 s timeout (scaled down): 4 acquisitions ran at once before."""
    mic = LiveFake(small_sample, exposure=1.6, abort_works=False)   # longer than timeout + grace (0.1 + 1 s)
    exp = Experiment(mic, fast_settings(budget=2, n_seeds=2, acquire_timeout=0.1, acquire_retries=3,
                                        acquire_retry_wait=0.0))
    t0 = time.perf_counter()
    with pytest.raises(MicroscopeFault) as e:
        exp.start()
    assert mic.max_in_flight == 1
    assert str(e.value).startswith("The microscope has not returned the acquisition at (y, x) = (")
    assert "no further acquisition is started while it runs" in str(e.value) and "Fix: " in str(e.value)
    assert exp.trace.n_points == 0 and time.perf_counter() - t0 < 2.0
    time.sleep(0.6)                                                # the instrument answers at last: resume
    mic.exposure = 0.0
    exp.run()
    assert exp.done and exp.trace.n_points == 4 and mic.max_in_flight == 1
    assert mic.n_acquisitions == 4   # the late spectrum was used: no position measured twice
    assert any("returned later: its spectrum is used" in e["message"] for e in exp.trace.events)
    exp.close()


def test_an_abort_that_works_ends_the_slow_call_and_the_acquisition_is_retried(small_sample):
    mic = LiveFake(small_sample, exposure=5.0)
    exp = Experiment(mic, fast_settings(budget=1, n_seeds=2, acquire_timeout=0.1, acquire_retries=1,
                                        acquire_retry_wait=0.0))
    t0 = time.perf_counter()
    with pytest.raises(MicroscopeFault, match="failed to acquire .* 2 times"):
        exp.start()
    assert time.perf_counter() - t0 < 2.0 and [k for k, _ in mic.log].count("abort") == 2
    assert mic.max_in_flight == 1 and any("TimeoutError" in e["message"] for e in exp.trace.events)
    exp.close()


def test_the_timeout_grows_with_the_dwell(small_sample):
    mic = LiveFake(small_sample, exposure=0.3)   # longer than the timeout, shorter than timeout + dwell
    exp = Experiment(mic, fast_settings(budget=1, n_seeds=2, acquire_timeout=0.1, dwell=0.3))
    exp.run()
    assert exp.done and "abort" not in [k for k, _ in mic.log] and exp.trace.events == []
    exp.close()


class Refusing(LiveFake):
    def __init__(self, data, error):
        super().__init__(data)
        self.error, self.calls, self.reconnects = error, 0, 0

    def acquire(self, y, x, dwell=None):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return super().acquire(y, x, dwell)


class Reconnecting(Refusing):
    def reconnect(self):
        self.reconnects += 1
        self.error = None


def test_a_refused_coordinate_is_not_retried_and_says_so(small_sample):
    mic = Refusing(small_sample, InstrumentRefused("position (3, 4) is outside the beam-shift range"))
    exp = Experiment(mic, fast_settings(acquire_retries=3, acquire_retry_wait=0.0))
    with pytest.raises(MicroscopeFault, match=r"refused the acquisition at \(y, x\) = .*: position \(3, 4\) is "
                                              r"outside the beam-shift range\. Retrying would not help"):
        exp.start()
    assert mic.calls == 1 and exp.trace.n_points == 0


def test_a_lost_connection_is_reconnected_before_the_run_pauses(small_sample):
    mic = Reconnecting(small_sample, InstrumentDisconnected("server session lost"))
    exp = Experiment(mic, fast_settings(budget=1, acquire_retries=0))
    exp.run()
    assert exp.done and mic.reconnects == 1
    assert any("reconnected" in e["message"] for e in exp.trace.events)
    exp.close()


class Drifted(LiveFake):
    """The same specimen after the stage drifted by ``d`` pixels: what was at pixel p is now at p + d (a fresh,
    noisy structural image of it), and a spectrum at instrument pixel q is the specimen's at q - d."""

    def __init__(self, data, d, noise=0.02, seed=1):
        super().__init__(data)
        self.d = d
        rng = np.random.default_rng(seed)
        img = np.roll(data.structural, d, axis=(0, 1))
        self.image = img + noise * float(img.std()) * rng.standard_normal(img.shape)

    def structural_image(self):
        return self.image

    def acquire(self, y, x, dwell=None):
        ny, nx = self.scan_shape
        return super().acquire((y - self.d[0]) % ny, (x - self.d[1]) % nx, dwell)


def test_resume_on_a_reacquired_image_registers_the_drift_and_measures_where_the_run_left_off(small_sample,
                                                                                              tmp_path):
    exp = Experiment(LiveFake(small_sample), fast_settings(budget=6), journal=tmp_path / "j.bin")
    exp.run(3)
    exp.close()                                                       # the process dies here
    mic = Drifted(small_sample, (2, -3))
    exp = Experiment.resume(tmp_path / "j.bin", mic, journal=tmp_path / "j.bin", append_journal=True)
    assert np.array_equal(exp.structural, small_sample.structural)   # the run's frame: the recorded image
    said = [e["message"] for e in exp.trace.events if "registered" in e["message"]]
    assert len(said) == 1 and "shift (dy, dx) = (2, -3) px" in said[0]
    exp.run()
    assert exp.done and len(set(exp.trace.positions)) == exp.trace.n_points == 12
    for p, s in zip(exp.trace.positions[9:], exp.trace.spectra[9:]):   # where the run's image says
        np.testing.assert_array_equal(s, small_sample.spectrum(*p))
    exp.close()


def test_resume_on_an_image_that_does_not_register_is_refused_and_replays_still_need_the_same_image(
        small_sample, tmp_path):
    exp = Experiment(LiveFake(small_sample), fast_settings(budget=4), journal=tmp_path / "j.bin")
    exp.run(2)
    exp.close()
    other = Drifted(small_sample, (0, 0))
    other.image = np.random.default_rng(5).random(small_sample.scan_shape)   # another field altogether
    with pytest.raises(HAEInputError, match=r"could not be registered to the recorded one .* Fix: "):
        Experiment.resume(tmp_path / "j.bin", other)
    replay = SimulatedMicroscope(small_sample)
    replay.data = Drifted(small_sample, (2, -3)).data
    replay.structural_image = lambda: np.roll(small_sample.structural, 1, axis=0)
    with pytest.raises(HAEInputError, match="structural image differs from the one recorded"):
        Experiment.resume(tmp_path / "j.bin", replay)


def test_an_energy_axis_that_changes_mid_run_pauses_the_run_and_mixes_nothing(small_sample):
    from napari_hae.core.data.dataset import EnergyAxis

    mic = LiveFake(small_sample)
    e = small_sample.energy
    mic.last_energy = e
    exp = Experiment(mic, fast_settings(budget=3))
    exp.run(1)
    n = exp.trace.n_points
    mic.last_energy = EnergyAxis(e.size, e.offset + 0.5, e.scale, e.units)   # the drift tube moved by 0.5 eV
    with pytest.raises(MicroscopeFault, match=r"energy axis changed mid-run at \(y, x\) = .*: offset "
                                              r"[-0-9.]+ -> [-0-9.]+ eV.* this one is not recorded.* Fix: restore"):
        exp.step()
    assert exp.trace.n_points == n and any("energy axis changed" in ev["message"] for ev in exp.trace.events)
    mic.last_energy = e                                                      # restored: the run goes on
    exp.run()
    assert exp.done


@pytest.mark.parametrize("spec, match", [
    ("nosuch", r"Unknown microscope 'nosuch'\. Fix: choose one of \["),
    ("simulator:zoom=3", r"The microscope 'simulator' has no parameter\(s\) \['zoom'\]\. Fix: its parameters are"),
    ("remote:timeout=abc", r"got timeout='abc', which is not a number\. Fix: give timeout \(10 s, 0\.1-3600\)"),
    ("nion-usim:size=3", r"got size=3, which is not >= 8\. Fix: give size \(64 px, 8-4096\)"),
])
def test_bad_microscope_names_and_options_are_clear_errors(spec, match, capsys):
    from napari_hae.cli import main

    data = ["--sample", "nanoparticles"] if spec.startswith("simulator") else []
    assert main(["run", *data, "--microscope", spec, "--steps", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Fix:" in err, err


class Batching(LiveFake):
    def __init__(self, data, fail=False):
        super().__init__(data)
        self.batches, self.fail = [], fail

    def acquire_many(self, positions, dwell=None):
        self.batches.append(list(positions))
        if self.fail:
            raise RuntimeError("the batch scan engine is busy")
        return [SimulatedMicroscope.acquire(self, y, x) for y, x in positions]


def test_seeds_are_acquired_in_one_batch_where_the_instrument_can(small_sample):
    mic = Batching(small_sample)
    exp = Experiment(mic, fast_settings(budget=2))
    exp.run()
    assert len(mic.batches) == 1 and len(mic.batches[0]) == 6           # the six seeds, one call
    assert [k for k, _ in mic.log].count("acquire") == 2                 # the policy's steps, one at a time
    assert [tuple(p) for p in mic.batches[0]] == exp.trace.positions[:6]
    for p, s in zip(exp.trace.positions, exp.trace.spectra):             # each spectrum where it was asked
        np.testing.assert_array_equal(s, small_sample.spectrum(*p))
    plain = Experiment(LiveFake(small_sample), fast_settings(budget=2))
    plain.run()
    assert plain.trace.positions == exp.trace.positions
    exp.close()
    plain.close()


def test_a_failed_batch_falls_back_to_one_by_one_and_says_so(small_sample):
    mic = Batching(small_sample, fail=True)
    exp = Experiment(mic, fast_settings(budget=1))
    exp.run()
    assert len(mic.batches) == 1 and exp.trace.n_points == 7
    assert any("batch acquisition of 6 points failed (RuntimeError: the batch scan engine is busy); acquiring them "
               "one by one" in e["message"] for e in exp.trace.events)
    exp.close()


def test_a_batch_that_hangs_pauses_the_run_instead_of_blocking_it(small_sample):
    release = threading.Event()

    class Hanging(Batching):
        def acquire_many(self, positions, dwell=None):
            release.wait(30)                                              # the scan engine hangs
            return super().acquire_many(positions, dwell)

    mic = Hanging(small_sample)
    exp = Experiment(mic, fast_settings(budget=1, acquire_timeout=0.1, acquire_retry_wait=0.0))
    outcome = []

    def start():
        try:
            exp.start()
            outcome.append("started")
        except MicroscopeFault as exc:
            outcome.append(str(exc))

    t = threading.Thread(target=start, daemon=True)
    t.start()
    t.join(10)
    release.set()
    assert outcome and outcome[0].startswith("The microscope has not returned the acquisition"), outcome
    assert any("batch acquisition of 6 points failed (TimeoutError" in e["message"] for e in exp.trace.events)
    exp.close()


def _turned(image, angle=0.0, scale=1.0, noise=0.05, seed=2):
    from napari_hae.core.instrument.registration import _transformed

    out = _transformed(np.asarray(image, float), angle, scale)
    return out + noise * float(out.std()) * np.random.default_rng(seed).standard_normal(out.shape)


@pytest.mark.parametrize("angle,scale,said", [(10.0, 1.0, "rotated by about 10 degrees"),
                                              (-10.0, 1.0, "rotated by about -10 degrees"),
                                              (0.0, 1.25, "magnified about 1.25x")])
def test_a_rotated_or_magnified_image_is_refused_not_taken_for_a_drift(small_sample, shared_data, angle, scale, said):
    """Issue 26: an image rotated 10 degrees (correlation 0.93 as a shift) or magnified 1.25x registered as a drift and
    the resumed spectra were recorded where they were not measured. Refused, on the sample and the real maps."""
    from napari_hae.core.data.io import load_source
    from napari_hae.core.instrument.registration import register

    images = [small_sample.structural]
    cuzn = shared_data / "cuzn_eels"
    if cuzn.is_dir():
        images.append(load_source({"spectrum": str(cuzn / "CuZn_EELS_mapping_tutorial.hspy"),
                                   "image": str(cuzn / "CuZn_HAADF.hspy")}).structural)
    for image in images:
        with pytest.raises(HAEInputError, match=rf"is {said} against the recorded one .* Nothing was measured\. "
                                                r"Fix: set the scan rotation and the field of view"):
            register(image, _turned(image, angle, scale))


def test_a_slightly_turned_or_noisy_image_still_registers_as_a_drift(small_sample):
    from napari_hae.core.instrument.registration import register

    image = small_sample.structural
    assert register(image, _turned(image, 1.0, 1.0, noise=0.3))[0] == (0, 0)   # 1 degree: < 0.5 px at the edge
    assert register(image, _turned(image, 0.0, 1.02, noise=0.3))[0] == (0, 0)
    shifted = np.roll(_turned(image, noise=0.3), (2, -3), axis=(0, 1))
    assert register(image, shifted)[0] == (2, -3)


@pytest.mark.parametrize("noise", [0.3, 0.5, 0.8])
def test_two_noisy_images_of_the_same_field_register_however_noisy(small_sample, noise):
    """The recorded image is as noisy as the new one (both shot-noise limited): smoothing either by a rotation's
    interpolation must not pass for a better fit than the shift alone."""
    from napari_hae.core.instrument.registration import register

    image = small_sample.structural
    for seed in range(4):
        recorded, new = _turned(image, noise=noise, seed=seed), _turned(image, noise=noise, seed=seed + 10)
        assert register(recorded, new)[0] == (0, 0)


def test_a_sub_pixel_drift_is_followed_where_the_instrument_takes_fractions(small_sample):
    """Issue 26: the sub-pixel estimate was computed but rounded (a 1.5 px drift left 0.5 px of error). An adapter
    that takes fractional positions now gets them, within 0.1 px; one that does not gets whole pixels."""
    from scipy.ndimage import shift as subshift

    from napari_hae.core.instrument.registration import Registered, register

    image = small_sample.structural
    moved = subshift(image, (1.5, -0.5), order=3, mode="nearest")
    whole, sub, _ = register(image, moved)

    class Fractional(LiveFake):
        subpixel = True

        def __init__(self, data):
            super().__init__(data)
            self.asked = []

        def acquire(self, y, x, dwell=None):
            self.asked.append((y, x))
            return super().acquire(int(round(y)), int(round(x)), dwell)

    fractional, plain = Fractional(small_sample), LiveFake(small_sample)
    Registered(fractional, image, whole, sub).acquire(20, 20)
    assert fractional.asked[-1] == pytest.approx((21.5, 19.5), abs=0.1)
    seen = []
    plain.acquire = lambda y, x, dwell=None: seen.append((y, x))
    Registered(plain, image, whole, sub).acquire(20, 20)
    assert seen == [(20 + whole[0], 20 + whole[1])] and all(isinstance(c, int) for c in seen[0])
