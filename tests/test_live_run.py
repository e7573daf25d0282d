"""A live run that wastes neither time nor dose (issue 26).

A pipelined run (``pipeline_depth=1``): the next point is decided while the current one is measured. What must
hold: the microscope waits less (wall time per step near max(dwell, fit) instead of their sum), every acquisition
the instrument made is a recorded spectrum (a decision made ahead and dropped is never measured), nothing is
measured twice, a failing acquisition or fit loses nothing, and the setting is resolved and recorded. The dose
ledger: each point's beam time, failed attempts included. A dwell the instrument cannot expose is refused before
anything is measured. A DTMicroscope server restarted mid-run gets its session back.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.core.errors import HAERunError, MicroscopeFault
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.model.base import FitReport, Posterior
from napari_hae.core.run.driver import Event, RunDriver
from napari_hae.core.run.experiment import Experiment
from napari_hae.core.run.results import StepResult


class SlowScope:
    """An instrument over pre-acquired data (no ``data`` of its own: a live instrument for the run's defaults) that
    takes ``dwell`` seconds a spectrum and counts its acquisitions."""

    def __init__(self, data, dwell=0.0, fail_at=()):
        self._sim = SimulatedMicroscope(data)
        self.wait, self.fail_at, self.acquired = dwell, set(fail_at), []
        self.scan_shape, self.energy, self.signal_shape = data.scan_shape, data.energy, data.signal_shape

    def structural_image(self):
        return self._sim.structural_image()

    def acquire(self, y, x):
        time.sleep(self.wait)
        if (y, x) in self.fail_at:
            self.fail_at.discard((y, x))
            raise OSError("detector timeout")
        self.acquired.append((int(y), int(x)))
        return self._sim.acquire(y, x)


class SlowModel:
    """Fits in ``seconds`` (sleeping, like a fit that releases the GIL) and ranks positions by the structural image
    (a deterministic stand-in for a real model)."""

    def __init__(self, seconds=0.0, fail_fits=()):
        self.seconds, self.fail_fits, self.n_fits = seconds, set(fail_fits), 0

    def fit(self, X, y, *, iterations, warm):
        self.n_fits += 1
        time.sleep(self.seconds)
        if self.n_fits in self.fail_fits:
            raise RuntimeError("cholesky_cpu: not positive definite")
        self.mu, self.sd = float(np.mean(y)), float(np.std(y)) or 1.0
        return FitReport(losses=[0.0])

    def posterior(self, X):
        mean = np.asarray(X, dtype=np.float64).reshape(len(X), -1).mean(axis=1)
        return Posterior(mean=(mean - mean.mean()) / (mean.std() or 1.0), std=np.full(len(X), 0.5),
                         offset=self.mu, scale=self.sd)


def _run(data, depth, dwell=0.0, fit=0.0, budget=6, **kw):
    mic = SlowScope(data, dwell, kw.pop("fail_at", ()))
    model = SlowModel(fit, kw.pop("fail_fits", ()))
    exp = Experiment(mic, fast_settings(budget=budget, pipeline_depth=depth, **kw), model_factory=lambda d, s: model)
    return exp, mic, model


@pytest.mark.slow   # timed: 6 s of sleeping instruments and models
@pytest.mark.quiet   # measures time
def test_the_microscope_measures_while_the_model_learns(small_sample):
    """Dwell 0.3 s and a 0.3 s fit: a sequential step takes their sum, a pipelined one about the longer."""
    times = {}
    for depth in (0, 1):
        exp, mic, _ = _run(small_sample, depth, dwell=0.3, fit=0.3, budget=6)
        exp.start()
        t0 = time.perf_counter()
        RunDriver(exp).run()
        times[depth] = (time.perf_counter() - t0) / 6
        assert exp.trace.n_points == 6 + 6 and sorted(mic.acquired) == sorted(exp.trace.positions)
    print(f"s per step: sequential {times[0]:.3f}, pipelined {times[1]:.3f}")
    assert times[0] >= 0.59 and times[1] < 0.75 * times[0]


def test_every_acquisition_is_recorded_once_and_a_decision_made_ahead_is_never_measured(small_sample):
    """Pause, an intervention and a stop while a pipelined run goes on: the decisions made ahead are dropped,
    never acquired; every acquisition is a recorded spectrum; no position twice."""
    exp, mic, _ = _run(small_sample, 1, budget=10)
    driver = RunDriver(exp)
    seen = []
    for item in driver.events():
        if isinstance(item, StepResult):
            seen.append(item.step)
            if item.step == 2:
                driver.request("policy", lambda e: e.set_policy("ucb", beta=1.0))
            if item.step == 4:
                driver.pause()
            if item.step == 7:
                driver.stop()
        elif isinstance(item, Event) and item.kind == "paused":
            driver.resume()
    tr = exp.trace
    assert seen == list(range(8)) and tr.n_steps == 8
    assert mic.acquired == list(tr.positions)                                # nothing measured but what is recorded
    assert len(set(tr.positions)) == tr.n_points                             # and nothing twice
    assert tr.interventions[0]["step"] == 3 and tr.steps["policy"][3] == "ucb(beta=1)"   # at the next decision


def test_a_failed_acquisition_drops_the_decision_made_ahead_and_the_run_goes_on(small_sample):
    exp, mic, _ = _run(small_sample, 1, budget=5, acquire_retries=0)
    exp.start()
    ahead = exp.decide()
    mic.fail_at = {ahead.position}
    driver = RunDriver(exp, pause_on_fault=True)
    items = []
    for item in driver.events():
        items.append(item)
        if isinstance(item, Event) and item.kind == "fault":
            assert exp.step_index == 0 and driver._ahead is None             # nothing recorded for the step
            driver.resume()
    assert [i.kind for i in items if isinstance(i, Event)] == ["fault", "done"]   # seeds measured before
    assert exp.done and mic.acquired == list(exp.trace.positions)
    assert any("detector timeout" in e["message"] for e in exp.trace.events)


def test_a_fit_that_fails_while_measuring_keeps_the_spectrum_and_the_next_step_fits_again(small_sample):
    """The fit for the next step (made while step 1 is measured) fails: step 1's spectrum is recorded, step 2
    decides afresh (and its fit works)."""
    exp, mic, model = _run(small_sample, 1, budget=4, fail_fits={3})
    RunDriver(exp).run()
    assert exp.done and exp.trace.n_steps == 4 and mic.acquired == list(exp.trace.positions)
    assert any("model fit failed" in e["message"] for e in exp.trace.events)


def test_a_fault_without_pausing_raises_and_keeps_what_was_measured(small_sample):
    exp, mic, _ = _run(small_sample, 1, budget=4, acquire_retries=0)
    RunDriver(exp).run(on_step=lambda r: mic.fail_at.add((0, 0)) if r.step == 0 else None)
    assert exp.done   # (0, 0) never chosen: nothing failed
    exp2, mic2, _ = _run(small_sample, 1, budget=4, acquire_retries=0)
    exp2.start()
    mic2.fail_at = {exp2.decide().position}
    with pytest.raises(MicroscopeFault):
        RunDriver(exp2).run()
    assert exp2.step_index == 0 and mic2.acquired == list(exp2.trace.positions)
    assert issubclass(MicroscopeFault, HAERunError)


def test_the_depth_resolves_by_instrument_and_is_recorded(small_sample):
    on_data = Experiment(SimulatedMicroscope(small_sample), fast_settings())
    live = Experiment(SlowScope(small_sample), fast_settings())
    assert on_data.settings.pipeline_depth == 0 and on_data.trace.settings["pipeline_depth"] == 0
    assert live.settings.pipeline_depth == 1 and live.trace.settings["pipeline_depth"] == 1
    asked = fast_settings(pipeline_depth=1)
    assert Experiment(SimulatedMicroscope(small_sample), asked).trace.settings["pipeline_depth"] == 1
    assert asked.pipeline_depth == 1   # the caller's settings are not changed
    unset = fast_settings()
    Experiment(SlowScope(small_sample), unset)
    assert unset.pipeline_depth is None

    class Dwelling(SlowScope):
        def acquire(self, y, x, dwell=None):
            return super().acquire(y, x)

    assert Experiment(Dwelling(small_sample), fast_settings(dwell=0.05)).settings.pipeline_depth == 0   # short
    assert Experiment(Dwelling(small_sample), fast_settings(dwell=0.1)).settings.pipeline_depth == 1
    with pytest.raises(ValueError, match="pipeline_depth"):
        fast_settings(pipeline_depth=2)


def test_a_pipelined_run_travels_as_recorded_and_resumes(small_sample, tmp_path):
    """travel_px is measured between recorded points (not from where the beam was when the decision was made),
    and a killed pipelined run resumes from its records like a sequential one."""
    exp, mic, _ = _run(small_sample, 1, budget=6, fail_fits=())
    exp.journal_to(tmp_path / "trace.journal")
    driver = RunDriver(exp)
    for item in driver.events():
        if isinstance(item, StepResult) and item.step == 2:
            driver.stop()
    pos = np.asarray(exp.trace.steps["position"], float)
    prev = np.vstack([exp.trace.positions_array()[exp.settings.n_seed_points - 1], pos[:-1]])
    np.testing.assert_allclose(exp.trace.step_array("travel_px"), np.cumsum(np.hypot(*(pos - prev).T)))
    exp.close()
    resumed = Experiment.resume(tmp_path / "trace.journal", SlowScope(small_sample),
                                model_factory=lambda d, s: SlowModel())
    assert resumed.step_index == 3 and resumed.settings.pipeline_depth == 1
    RunDriver(resumed).run()
    assert resumed.done and len(set(resumed.trace.positions)) == resumed.trace.n_points


# -- the dose ledger: per point, the seconds the beam was on ----------------------------------------------------
class BlankingScope(SlowScope):
    """Blanks: the beam is on between unblank and blank. ``extra``: seconds it stays on after the spectrum is read
    (an adapter that waits a frame) before the guard can blank."""

    def __init__(self, data, dwell=0.0, extra=0.0, fail_at=()):
        super().__init__(data, dwell, fail_at)
        self.extra, self.on_since, self.beam_seconds = extra, None, 0.0

    def unblank(self):
        self.on_since = time.perf_counter()

    def blank(self):
        if self.on_since is not None:
            self.beam_seconds += time.perf_counter() - self.on_since
        self.on_since = None

    def acquire(self, y, x):
        s = super().acquire(y, x)
        time.sleep(self.extra)
        return s


def test_each_point_records_the_seconds_the_beam_was_on(small_sample, tmp_path):
    mic = BlankingScope(small_sample, dwell=0.05, extra=0.05)
    exp = Experiment(mic, fast_settings(budget=3, pipeline_depth=0), model_factory=lambda d, s: SlowModel())
    exp.journal_to(tmp_path / "trace.journal")
    exp.run()
    beam = np.asarray(exp.trace.beam_on)
    assert beam.shape == (exp.trace.n_points,) and np.all(beam >= 0.1) and np.all(beam < 0.3)
    assert beam.sum() == pytest.approx(mic.beam_seconds, rel=0.05, abs=0.02)   # what the instrument had on
    exp.close()
    from napari_hae.core.record.trace import Trace

    assert Trace.load(tmp_path / "trace.journal").beam_on == exp.trace.beam_on          # journaled
    saved = Trace.load(exp.trace.save(tmp_path / "t.h5"))
    np.testing.assert_array_equal(saved.beam_on, exp.trace.beam_on)                      # and in trace.h5


def test_failed_attempts_count_and_a_point_without_spectrum_is_said(small_sample):
    mic = BlankingScope(small_sample, dwell=0.05)
    exp = Experiment(mic, fast_settings(budget=2, pipeline_depth=0, acquire_retries=1, acquire_retry_wait=0),
                     model_factory=lambda d, s: SlowModel())
    exp.start()
    d = exp.decide()
    mic.fail_at = {d.position}                        # fails once, then works: two exposures for one spectrum
    exp.record(d, exp.measure(d))
    assert exp.trace.beam_on[-1] >= 0.1
    d = exp.decide()
    exp.guard.retries = 0
    mic.fail_at = {d.position}
    with pytest.raises(MicroscopeFault):
        exp.measure(d)
    assert any(f"at (y, x) = {d.position} without a spectrum to record" in e["message"] for e in exp.trace.events)


class Reporting(BlankingScope):
    """An instrument that says how long its beam was on: 12.3 ms for every spectrum."""

    last_beam_on_s = float("nan")

    def acquire(self, y, x):
        s = super().acquire(y, x)
        self.last_beam_on_s = 0.0123
        return s


def test_an_instrument_that_reports_its_beam_time_is_believed(small_sample):
    exp = Experiment(Reporting(small_sample, dwell=0.02), fast_settings(budget=1, pipeline_depth=0),
                     model_factory=lambda d, s: SlowModel())
    exp.run()
    assert exp.trace.beam_on == [0.0123] * exp.trace.n_points


def test_a_registered_instrument_still_has_its_beam_time_believed(small_sample):
    """A resumed live run acquires through ``Registered`` (the drift followed): the guard's reset of the reported beam
    time was set on the wrapper, hid the instrument's figure for the rest of the run, and the ledger fell back to
    the guard's own clock."""
    from napari_hae.core.instrument.guard import AcquisitionGuard
    from napari_hae.core.instrument.registration import Registered

    inner = Reporting(small_sample, dwell=0.02)
    guard = AcquisitionGuard(Registered(inner, small_sample.structural, (0, 0)), timeout=None)
    for y in range(3):
        guard(y, 1, small_sample.signal_shape)
        assert guard.last_beam_on_s == 0.0123


def test_the_summary_gives_the_beam_time_against_a_full_grid_scan(small_sample):
    from napari_hae.core.analysis.summary import summarize

    mic = BlankingScope(small_sample, dwell=0.01)
    exp = Experiment(mic, fast_settings(budget=2, pipeline_depth=0), model_factory=lambda d, s: SlowModel())
    exp.run()
    exp.trace.beam_on[:] = [0.02] * exp.trace.n_points                 # known figures: 8 points of 20 ms
    exp.trace.beam_on[0] = float("nan")                                 # one point without a beam time
    dose = summarize(exp.trace)["dose"]
    assert dose["points_with_beam_time"] == 7 and dose["points_without_beam_time"] == 1
    assert dose["beam_on_s"] == pytest.approx(0.14) and dose["full_grid_positions"] == 48 * 48
    assert dose["full_grid_beam_on_s"] == pytest.approx(48 * 48 * 0.02)
    assert dose["fraction_of_full_grid"] == pytest.approx(0.14 / (48 * 48 * 0.02))
    exp.trace.dataset["probe_current_a"] = 1e-10
    assert summarize(exp.trace)["dose"]["electrons"] == pytest.approx(0.14 * 1e-10 / 1.602176634e-19)
    exp.trace.beam_on[:] = [float("nan")] * exp.trace.n_points          # replayed data: no ledger, not zero
    assert summarize(exp.trace)["dose"]["beam_on_s"] is None


def test_replayed_data_has_no_beam_to_account_for(small_sample):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1), model_factory=lambda d, s: SlowModel())
    exp.run()
    assert np.isnan(exp.trace.beam_on).all()


def test_a_dwell_the_instrument_cannot_expose_is_refused_before_anything_is_measured(small_sample, tmp_path):
    from napari_hae.core.errors import HAEInputError

    class Ranged(SlowScope):
        dwell_range = (0.001, 10.0)

        def acquire(self, y, x, dwell=None):
            return super().acquire(y, x)

    for dwell in (1e9, 1e-6):
        mic = Ranged(small_sample)
        said = re.escape(f"A dwell of {dwell:g} s is outside what Ranged can expose (0.001 to 10 s). Fix: choose a "
                         "dwell (--dwell) from 0.001 to 10 s.")
        with pytest.raises(HAEInputError, match=said):
            Experiment(mic, fast_settings(dwell=dwell), journal=tmp_path / "trace.journal")
        assert mic.acquired == [] and not (tmp_path / "trace.journal").exists()
    assert Experiment(Ranged(small_sample), fast_settings(dwell=2.0)).guard.dwell == 2.0


@pytest.mark.slow   # server processes
def test_a_dtmicroscope_server_restarted_mid_run_gets_its_session_back_and_the_run_goes_on(small_sample):
    """Issue 26: DTMicroscope's server gives each connection a fresh object with no data; reconnect() never
    restored it, so every retry failed after a restart. Now the run completes by itself, every spectrum at its
    pixel. The server is a process, killed and started again mid-run."""
    pytest.importorskip("Pyro5", reason="Pyro5 (napari-hae[dtmicroscope]) is absent")
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from napari_hae.core.instrument.adapters import make_microscope

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = str(Path(__file__).with_name("dtm_server.py"))

    def start():
        proc = subprocess.Popen([sys.executable, script, str(port)], stdout=subprocess.PIPE, text=True)
        return proc, proc.stdout.readline().strip()

    servers = [start()]
    mic = make_microscope("dtmicroscope", None, uri=servers[0][1], data_source="sample.h5")
    exp = Experiment(mic, fast_settings(budget=6, acquire_retry_wait=0.5), model_factory=lambda d, s: SlowModel())

    def restart(res):
        if res.step == 1:
            servers[-1][0].kill()                                 # the server process dies ...
            servers[-1][0].wait()
            servers.append(start())                               # ... and comes back, with no session
    try:
        RunDriver(exp).run(on_step=restart)
        assert exp.done and len(servers) == 2
        for (y, x), s in zip(exp.trace.positions, exp.trace.spectra):
            np.testing.assert_array_equal(s, small_sample.spectra[y, x])
        assert any("reconnected" in e["message"] for e in exp.trace.events), exp.trace.events
    finally:
        exp.close()
        mic.close()
        for proc, _ in servers:
            proc.kill()
            proc.wait()


def test_the_run_view_carries_the_ledger_for_the_dock(small_sample):
    from napari_hae.core.analysis.summary import dose_ledger

    exp = Experiment(BlankingScope(small_sample, dwell=0.01), fast_settings(budget=1, pipeline_depth=0),
                     model_factory=lambda d, s: SlowModel())
    exp.run()
    view = exp.view()
    assert view.beam_on == tuple(exp.trace.beam_on) and len(view.beam_on) == exp.trace.n_points
    assert dose_ledger(view) == dose_ledger(exp.trace)


@pytest.mark.slow   # timed: 1 s of a sleeping instrument
def test_a_pipelined_step_time_is_what_a_point_costs(small_sample):
    """step_time of a pipelined step counts from the step before's record (its decision began earlier, while that
    one was measured): with a 0.2 s dwell and a 0.05 s fit, about 0.2 s, not dwell + fit."""
    exp, _, _ = _run(small_sample, 1, dwell=0.2, fit=0.05, budget=5)
    RunDriver(exp).run()
    later = exp.trace.step_array("step_time")[1:]
    assert np.all(later < 0.245) and np.all(later > 0.19), later


def test_a_truth_with_undefined_positions_is_said_never_a_silent_nan(small_sample):
    """Issue 27's acceptance, in part: a scalarizer undefined at some positions (a background fit that fails on
    low counts) gave "truth_best": NaN and "steps_to_top1pct": null in summary.json. Now the figures are over the
    positions with a value and the summary says how many had none; a measured NaN is never the best value."""
    from napari_hae.cli.run import print_summary
    from napari_hae.core.analysis.summary import summarize

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3), model_factory=lambda d, s: SlowModel())
    exp.run()
    truth = np.asarray(small_sample.scalarize(exp.scalarizer), dtype=float)
    holes = np.where(truth < np.quantile(truth, 0.1), np.nan, truth)   # the faintest 10%: no value (low counts)
    n_holes = int(np.isnan(holes).sum())
    exp.trace.values[0] = float("nan")                      # and a measured spectrum without one
    s = summarize(exp.trace, holes)
    assert s["truth_undefined_positions"] == n_holes and f"no value at {n_holes} of 2304 positions" in s["truth_note"]
    assert s["truth_best"] == pytest.approx(np.nanmax(holes)) and np.isfinite(s["best_value"])
    assert s["best_value"] == pytest.approx(np.nanmax(exp.trace.values))
    clean = summarize(exp.trace, truth)
    assert "truth_undefined_positions" not in clean
    for key in ("steps_to_top1pct", "steps_to_top5pct", "best_fraction_of_truth_best"):   # the top is not a hole
        assert s[key] == clean[key], key
    none = summarize(exp.trace, np.full_like(truth, np.nan))
    assert none["truth_best"] is None and none["truth_undefined_positions"] == truth.size
    print_summary(none, None)                                # prints, does not raise on the missing figures
