"""Crash-safe traces, resume, microscope faults and model-fit failures: measured data is never lost."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import assert_traces_equal, fast_settings
from napari_hae.core.errors import MicroscopeFault, ModelFitError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.record.journal import read_records
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment


def _run_with_interventions(data, journal, budget=6):
    exp = Experiment(SimulatedMicroscope(data), fast_settings(budget=budget), journal=journal)
    exp.run(2)
    exp.set_policy("mu")
    avoid = np.zeros(data.scan_shape, bool)
    avoid[:10, :] = True
    exp.add_object(avoid, "avoid", "top band")
    exp.run(2)
    exp.set_patch_size(6)
    return exp


def test_journal_rebuilds_the_trace_exactly(small_sample, tmp_path):
    exp = _run_with_interventions(small_sample, tmp_path / "trace.journal")
    exp.run()
    exp.close()
    assert_traces_equal(Trace.from_journal(tmp_path / "trace.journal"), exp.trace)
    exp.trace.save(tmp_path / "trace.h5")
    assert_traces_equal(Trace.load(tmp_path / "trace.h5"), exp.trace)   # rng state now in HDF5 too


def test_a_torn_last_record_is_dropped_and_the_rest_kept(small_sample, tmp_path):
    j = tmp_path / "trace.journal"
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2), journal=j)
    exp.run()
    exp.close()
    full = j.read_bytes()
    contents = read_records(j)
    assert contents.intact and contents.size == len(full)
    j.write_bytes(full[:-7])            # a crash in the middle of the last record (step 2 with its point)
    t = Trace.from_journal(j)
    assert t.n_points == exp.trace.n_points - 1 and t.n_steps == 1
    assert "unfinished last record" in t.events[-1]["message"]
    flipped = bytearray(full)
    flipped[-3] ^= 0xFF                 # a corrupted byte fails the CRC: that record is dropped too
    j.write_bytes(bytes(flipped))
    assert len(read_records(j).records) == len(contents.records) - 1


def test_resume_reapplies_interventions_and_finishes_the_budget(small_sample, tmp_path):
    j = tmp_path / "trace.journal"
    exp = _run_with_interventions(small_sample, j, budget=8)
    exp.close()                          # "crash": the in-memory run is gone, the journal is on disk
    res = Experiment.resume(j, SimulatedMicroscope(small_sample), journal=j, append_journal=True)
    assert res.step_index == 4 and res.patch_size == 6 and res.policy.name == "mu"
    assert res.avoid.reshape(48, 48)[:10].all() and res.rng.bit_generator.state == exp.rng.bit_generator.state
    res.run()
    res.close()
    t = Trace.load(tmp_path)
    assert t.n_steps == 8 and t.n_points == 6 + 8
    assert len(set(t.positions)) == t.n_points                       # nothing measured twice
    assert t.positions[:10] == exp.trace.positions                    # what was measured before is kept
    after = t.positions_array()[10:]
    assert (after[:, 0] >= 10).all()                                 # the avoid object still holds
    assert "resumed with 10 points" in t.events[-1]["message"]


def test_resume_on_other_data_is_refused(small_sample, sample, tmp_path):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2))
    exp.run(1)
    from napari_hae.core.errors import HAEInputError

    with pytest.raises(HAEInputError, match="differs from the one recorded"):
        Experiment.resume(exp.trace, SimulatedMicroscope(sample))


class FlakyMicroscope(SimulatedMicroscope):
    """Fails (raises, returns NaN or hangs) on the acquisitions whose numbers are in ``bad``."""

    def __init__(self, data, bad: dict[int, str]):
        super().__init__(data)
        self.bad = bad
        self.calls = 0

    def acquire(self, y, x):
        self.calls += 1
        how = self.bad.get(self.calls)
        if how == "raise":
            raise ConnectionError("detector not responding")
        if how == "hang":
            time.sleep(0.5)
        s = super().acquire(y, x)
        return np.full_like(s, np.nan) if how == "nan" else s


def test_failed_acquisitions_are_retried_and_logged(small_sample):
    mic = FlakyMicroscope(small_sample, {2: "raise", 8: "nan", 9: "hang"})
    exp = Experiment(mic, fast_settings(budget=2, acquire_timeout=0.2, acquire_retry_wait=0.0))
    exp.run()
    assert exp.trace.n_points == 8 and len(set(exp.trace.positions)) == 8
    assert all(np.isfinite(s).all() for s in exp.trace.spectra)
    msgs = [e["message"] for e in exp.trace.events]
    assert any("ConnectionError" in m for m in msgs)
    assert any("NaN/inf" in m for m in msgs)
    assert any("TimeoutError" in m for m in msgs)
    exp.close()


def test_a_persistent_fault_pauses_with_the_trace_intact_then_resumes(small_sample):
    mic = FlakyMicroscope(small_sample, {})
    exp = Experiment(mic, fast_settings(budget=3, acquire_retries=2, acquire_retry_wait=0.0))
    exp.run(1)
    before = list(exp.trace.positions)
    mic.bad = {mic.calls + i: "raise" for i in (1, 2, 3)}
    with pytest.raises(MicroscopeFault, match="failed to acquire .* 3 times") as e:
        exp.step()
    assert "resume" in str(e.value) and exp.trace.positions == before and exp.step_index == 1
    exp.run()                                  # the instrument is back: the same run goes on
    assert exp.done and exp.trace.n_points == 6 + 3


class BrokenModel:
    """A regressor whose fit fails like a non-PSD GP would, ``n_failures`` times."""

    def __init__(self, real, n_failures):
        self.real, self.n_failures = real, n_failures

    def fit(self, *a, **k):
        if self.n_failures > 0:
            self.n_failures -= 1
            raise RuntimeError("DKL fit failed after 3 retries: cholesky_cpu: not positive definite")
        return self.real.fit(*a, **k)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_model_fit_failure_keeps_the_trace_and_the_next_attempt_resets(small_sample):
    from napari_hae.core.run.experiment import _registered_model

    models = []

    def factory(dim, s):
        models.append(BrokenModel(_registered_model(dim, s), n_failures=1))
        return models[-1]

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2), model_factory=factory)
    exp.start()
    with pytest.raises(ModelFitError, match="could not be fitted at step 0.*all 6 measured points"):
        exp.step()
    assert exp.trace.n_points == 6 and "not positive definite" in exp.trace.events[-1]["message"]
    exp.run()
    assert exp.done and exp.trace.n_points == 8


def test_constant_scalarizer_values_do_not_crash(small_sample):
    from napari_hae.core.data.dataset import SpectrumImage

    flat = SpectrumImage(small_sample.structural, np.ones_like(small_sample.spectra), small_sample.energy)
    exp = Experiment(SimulatedMicroscope(flat), fast_settings(budget=3))
    exp.run()
    assert exp.done and np.ptp(exp.trace.values) == 0 and len(set(exp.trace.positions)) == 9


KILLED_RUN = textwrap.dedent("""
    import os, sys
    from napari_hae.core.run.experiment import Experiment, ExperimentSettings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.data.samples import load_sample

    out, log = sys.argv[1], open(sys.argv[2], "a")

    class Logged(SimulatedMicroscope):
        def acquire(self, y, x):
            s = super().acquire(y, x)
            log.write(f"{y} {x}\\n"); log.flush(); os.fsync(log.fileno())   # measured: the spectrum exists
            return s

    data = load_sample("nanoparticles")
    settings = ExperimentSettings(patch_size=8, n_seeds=6, budget=40, fit_iterations_first=40, fit_iterations=5,
                                  model={"name": "dkl", "params": {"hidden": [16, 8]}},
                                  policy={"name": "ucb", "params": {"beta": 4.0}})
    info = {**data.describe(), "source": {"sample": "nanoparticles", "noise": "none"}}
    Experiment(Logged(data), settings, dataset_info=info, journal=out + "/trace.journal").run()
""")


@pytest.mark.slow
def test_sigkill_mid_run_loses_no_measured_point_and_resume_completes(tmp_path, sample):
    script, log, out = tmp_path / "run.py", tmp_path / "acquired.log", tmp_path / "run"
    script.write_text(KILLED_RUN)
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(log)])
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 14:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(np.random.default_rng().uniform(0, 0.3))   # anywhere within a step
    proc.kill()   # SIGKILL on POSIX, TerminateProcess on Windows: no clean-up either way
    proc.wait()
    acquired = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    on_disk = Trace.load(out)
    # every spectrum that had been measured is on disk; at most the one in flight at the kill is not
    assert on_disk.positions in (acquired, acquired[:-1])
    for (y, x), s in zip(on_disk.positions, on_disk.spectra):
        np.testing.assert_array_equal(s, sample.spectra[y, x])

    done = subprocess.run([sys.executable, "-m", "napari_hae.cli", "run", "--resume", str(out), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    final = Trace.load(out / "trace.h5")
    assert final.n_steps == 40 and final.n_points == 46 and len(set(final.positions)) == 46
    assert final.positions[:on_disk.n_points] == on_disk.positions
