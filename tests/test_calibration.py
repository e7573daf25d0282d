"""Issue 16's live calibration monitor: before each measurement the model states its predictive distribution at
the chosen point; afterwards the measured value's z-score and log score are recorded, judged over a window, and an
overconfident model is flagged (event, stuck flag, dock warning, report)."""

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.model.base import FitReport, Posterior
from napari_hae.core.model.warp import LOG, calibration_scores
from napari_hae.core.run.diagnostics import calibration_verdict
from napari_hae.core.run.experiment import Experiment


def test_calibration_scores_known_answer():
    s = calibration_scores(3.0, 1.0, 2.0)
    assert s["z_score"] == 1.0
    assert s["log_score"] == pytest.approx(-0.5 - np.log(2.0) - 0.5 * np.log(2 * np.pi), rel=1e-12)
    assert np.isnan(calibration_scores(float("nan"), 1.0, 2.0)["z_score"])
    assert np.isnan(calibration_scores(1.0, 1.0, 0.0)["log_score"])
    # on a log scale: median 1 and spread 1 put e at z = 1; its density in units carries the Jacobian 1/e
    s = calibration_scores(np.e, 1.0, 1.0, LOG)
    assert s["z_score"] == pytest.approx(1.0, rel=1e-12)
    assert s["log_score"] == pytest.approx(-0.5 - 0.5 * np.log(2 * np.pi) - 1.0, rel=1e-12)
    assert np.isnan(calibration_scores(-1.0, 1.0, 1.0, LOG)["z_score"])   # a value the log cannot take


def test_calibration_verdict_windows():
    assert calibration_verdict([0.1] * 9) is None
    ok = calibration_verdict([0.5, -1.5, 0.2, 1.1, -0.3, 2.5, 0.0, -0.8, 0.4, 1.9])
    assert not ok.overconfident and ok.coverage_1sigma == 0.6 and ok.coverage_2sigma == 0.9
    bad = calibration_verdict([np.nan, 0.1] + [5.0] * 9)       # NaNs are skipped; the last 10 finite count
    assert bad.overconfident and bad.coverage_2sigma == pytest.approx(0.1) and bad.suggestions
    assert "only 10% of the last 10 measurements fell within the predicted 2-sigma interval" in bad.reason


class FixedModel:
    """A model that predicts the same mean everywhere with a fixed standardized std (the test's constructed
    over- or under-confident model)."""

    def __init__(self, std):
        self.std = std

    def fit(self, X, y, *, iterations, warm):
        self.mu, self.sd = float(np.mean(y)), float(np.std(y)) or 1.0
        return FitReport(losses=[0.0])

    def posterior(self, X):
        n = len(X)
        rng = np.random.default_rng(n)
        return Posterior(mean=rng.normal(0, 1e-3, n), std=np.full(n, self.std), offset=self.mu, scale=self.sd)


@pytest.mark.parametrize("std,flagged", [(1e-4, True), (50.0, False)])
def test_an_overconfident_model_is_flagged_and_a_cautious_one_is_not(small_sample, std, flagged):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=14, n_seeds=5),
                     model_factory=lambda d, s: FixedModel(std))
    exp.run()
    z = exp.trace.step_array("z_score")
    assert np.isfinite(z).all() and np.isfinite(exp.trace.step_array("log_score")).all()
    events = [e["message"] for e in exp.trace.events if "overconfident" in e["message"]]
    over = exp.trace.step_array("overconfident")
    if flagged:
        assert np.median(np.abs(z)) > 10 and len(events) == 1 and "Consider:" in events[0]   # once per streak
        assert over[10:].all() and not over[:10].any()          # judged from the 11th step on (a full window)
    else:
        assert np.abs(z).max() < 1 and not events and not over.any()


def test_calibration_is_in_the_trace_summary_and_report(small_sample, tmp_path):
    from napari_hae.core.analysis.summary import summarize
    from napari_hae.core.plots.report import summary_figure
    from napari_hae.core.record.trace import Trace

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=4))
    exp.run()
    exp.trace.save(tmp_path / "t.h5")
    t = Trace.load(tmp_path / "t.h5")
    np.testing.assert_array_equal(t.step_array("z_score"), exp.trace.step_array("z_score"))
    rec = t.steps
    assert t.settings["model"]["params"]["warp"] == "log" and min(t.values) > 0   # the default on counts
    for k in range(t.n_steps):   # the score is the one of the value measured at the step's position
        i = t.positions.index(tuple(rec["position"][k]))
        m, sd = rec["next_mean"][k], rec["pred_std"][k]   # median and half the 68% interval: m sinh(spread)
        assert rec["z_score"][k] == pytest.approx(np.log(t.values[i] / m) / np.arcsinh(sd / m), rel=1e-6)
        spread = np.arcsinh(sd / m)   # the 95% interval is a factor exp(2 spread) either side of the median
        assert (rec["pred_lo"][k], rec["pred_hi"][k]) == pytest.approx((m / np.exp(2 * spread), m * np.exp(2 * spread)))
        assert rec["pred_std"][k] >= rec["next_std"][k]          # the observation noise is included
    s = summarize(t)
    assert s["calibration"]["n"] == 4 and 0 <= s["calibration"]["coverage_2sigma"] <= 1
    assert summary_figure(t, tmp_path / "r.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_stuck_run_of_the_issue_is_flagged_and_the_readme_run_is_not(sample, tmp_path):
    """The README demo as the issue measured it (its defaults then: UCB beta 4, warm start with 30 iterations;
    2 torch threads), stuck below half the maximum: flagged by the calibration monitor and the stuck-run detector.
    The README demo with today's defaults (log EI, a cold restart every step) reaches the top 1% and is not
    flagged.

    The stuck run follows a recorded stuck trajectory (tests/data/stuck_ucb_warm_run.json) with the model of those
    defaults fitted at every step as it was: which seed of that command gets stuck depends on the CPU's float
    rounding (seed 2 on the machines of 2026-12-03; on an AMD EPYC with torch's AVX2 kernels seed 2 reaches the top
    1% at step 18 and seed 4, recorded here, is stuck), while the detectors' verdicts on a stuck path are what is
    tested."""
    import json
    from pathlib import Path

    from napari_hae.cli import main
    from napari_hae.core.analysis.summary import summarize

    rec = json.loads((Path(__file__).parent / "data" / "stuck_ucb_warm_run.json").read_text())
    settings = {"budget": len(rec["positions"]), "seed_mode": "given", "seed_positions": rec["seeds"],
                "n_seeds": len(rec["seeds"]), "policy": {"name": "ucb", "params": {"beta": 4.0}},
                "fit_iterations": 30, "recalibrate": False, "random_seed": 4, "record_maps": False,
                "model": {"name": "dkl", "params": {"threads": 2, "restart": "warm", "warp": "none",
                                                    "kernel": "rbf"}}}
    exp = Experiment(SimulatedMicroscope(sample), settings, follow=rec["positions"])
    exp.run()
    truth = sample.scalarize(exp.scalarizer)
    s = summarize(exp.trace, truth)
    assert [list(p) for p in exp.trace.steps["position"]] == rec["positions"]
    assert s["steps_to_top1pct"] is None and s["best_fraction_of_truth_best"] < 0.5      # the stuck run
    assert s["calibration"]["overconfident_steps"] > 0 and s["calibration"]["coverage_2sigma"] < 0.5
    assert s["stuck_steps"] > 0
    assert main(["run", "--sample", "nanoparticles", "--steps", "60", "--out", str(tmp_path / "now"), "-q"]) == 0
    s = json.loads((tmp_path / "now" / "summary.json").read_text())
    assert s["policy_steps_to_top1pct"] is not None and s["best_fraction_of_truth_best"] >= 0.9
    assert s["stuck_steps"] == 0 and s["calibration"]["coverage_2sigma"] > 0.5   # measured 0.77


def test_a_runs_picks_do_not_depend_on_the_machines_thread_count(small_sample):
    """Issue 16, reproducibility: the model pins its own torch thread count (recorded in the model spec), so the
    same run gives the same picks whatever the process' thread setting."""
    import torch

    runs = []
    prev = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=8))
            exp.run()
            assert torch.get_num_threads() == n                  # restored after every fit and prediction
            runs.append(exp.trace)
    finally:
        torch.set_num_threads(prev)
    assert runs[0].positions == runs[1].positions and runs[0].values == runs[1].values
    np.testing.assert_array_equal(runs[0].step_array("std_mean"), runs[1].step_array("std_mean"))
    assert runs[0].settings["model"]["params"].get("threads", 1) == 1


def test_a_pick_decided_by_a_flat_acquisition_map_is_recorded(small_sample):
    """Issue 16: 'no policy pick is decided by an all-equal acquisition map' must be measurable: each step records
    how many available candidates shared the chosen score."""
    class Flat(FixedModel):
        def posterior(self, X):
            return Posterior(mean=np.zeros(len(X)), std=np.ones(len(X)), offset=self.mu, scale=self.sd)

    settings = fast_settings(budget=3, n_seeds=5, policy={"name": "mu", "params": {}})
    exp = Experiment(SimulatedMicroscope(small_sample), settings, model_factory=lambda d, s: Flat(1.0))
    exp.run()
    n = small_sample.n_positions
    assert exp.trace.steps["acq_ties"] == [float(n - 5), float(n - 6), float(n - 7)]   # every available one
    real = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3, policy={"name": "ei", "params": {}}))
    real.run()
    assert all(t >= 1 for t in real.trace.steps["acq_ties"])


def test_seed_hits_are_counted_apart_from_the_policys_own():
    from napari_hae.core.analysis.summary import summarize
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.settings import ExperimentSettings

    truth = np.zeros((10, 10))
    truth[0, 0] = 10.0                                     # the top 1% is position (0, 0) alone
    t = Trace(structural=np.zeros((10, 10)), settings=ExperimentSettings(budget=3).to_dict())
    for p, kind, step in (((0, 0), "seed", -1), ((5, 5), "seed", -1), ((1, 1), "policy", 0), ((0, 0), "policy", 1)):
        t.add_point(p, np.ones(3), truth[p], kind, step)
    s = summarize(t, truth)
    assert s["steps_to_top1pct"] == 0 and s["seed_in_top1pct"] is True
    assert s["policy_steps_to_top1pct"] == 2


def test_the_spread_is_widened_to_the_runs_misses_never_narrowed():
    from napari_hae.core.run.diagnostics import SPREAD_AT_LEAST, spread_factor

    ones = np.ones(40)
    assert spread_factor(np.full(SPREAD_AT_LEAST - 1, 5.0), ones[:SPREAD_AT_LEAST - 1]) == 1.0   # too few yet
    assert spread_factor(np.full(20, 0.3), ones[:20]) == 1.0                  # covered: never narrower
    z = np.linspace(0.0, 3.0, 31)[1:]                                         # |z| 0.1 .. 3.0
    assert spread_factor(z, ones[:30]) == pytest.approx(np.quantile(z, 0.6827))
    # recorded z-scores are under the widened spread: the model's own miss is z x the factor it was drawn with
    assert spread_factor(z / 2.0, np.full(30, 2.0)) == pytest.approx(np.quantile(z, 0.6827))
    assert spread_factor(np.r_[np.full(30, 9.0), np.full(30, 2.0)], np.ones(60)) == pytest.approx(2.0)   # window
    assert spread_factor(np.r_[np.full(12, np.nan), z], np.full(42, np.nan)) == pytest.approx(
        np.quantile(z, 0.6827))                                               # NaN: none / before it was recorded


def test_a_widened_posterior_draws_every_spread_wider():
    post = Posterior(mean=np.array([0.0, 1.0]), std=np.array([0.5, 1.0]), noise=np.array([0.1, 0.2]), offset=3.0,
                     scale=2.0, sample=lambda idx, rng: np.array([2.0, 0.0])[idx])
    wide = post.widened(3.0)
    np.testing.assert_allclose(wide.std, [1.5, 3.0])
    np.testing.assert_allclose(wide.noise, [0.3, 0.6])
    np.testing.assert_allclose(wide.z_scores(np.array([9.0, 9.0])), post.z_scores(np.array([9.0, 9.0])) / 3.0)
    np.testing.assert_allclose(wide.sample(np.array([0, 1]), None), [6.0, -2.0])   # mean + 3 x deviation
    assert post.widened(1.0) is post


def test_an_overconfident_models_spread_is_widened_by_the_run_and_replayed(small_sample, tmp_path):
    """The model says std 1e-4 (standardized) and misses by ~1e4 of it: from the 11th step the run draws its maps
    and the next point's interval wide enough for its misses, records the factor, and a resume decides the same."""
    journal = tmp_path / "run.journal"
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=14, n_seeds=5),
                     model_factory=lambda d, s: FixedModel(1e-4), journal=journal)
    exp.run()
    factor = exp.trace.step_array("spread_factor")
    assert (factor[:10] == 1.0).all() and (factor[10:] > 100).all()
    z = exp.trace.step_array("z_score")
    assert np.median(np.abs(z[:10])) > 100 and np.median(np.abs(z[10:])) < 5
    assert exp.trace.step_array("overconfident")[10:].all()            # the model's own misses are still judged
    said = [e for e in exp.trace.events if "wider than the model's" in e["message"]]
    assert len(said) == 1 and said[0]["step"] == 10                       # once, when it starts
    assert f"{factor[10]:.2f}x wider" in said[0]["message"]
    std = exp.trace.step_array("next_std")
    assert std[10:].min() > 100 * std[:10].max()
    from napari_hae.core.analysis.summary import summarize

    cal = summarize(exp.trace)["calibration"]
    assert cal["spread_factor_max"] == pytest.approx(factor.max())
    assert cal["model_coverage_2sigma"] == 0.0 and cal["coverage_1sigma"] > 0.1   # the model's own, the drawn
    exp.close()
    no = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=12, n_seeds=5, recalibrate=False),
                    model_factory=lambda d, s: FixedModel(1e-4))
    no.run()
    assert (no.trace.step_array("spread_factor") == 1.0).all()


def test_a_run_recorded_before_the_recalibration_is_rebuilt_without_it():
    from napari_hae.core.record.schema import migrate_settings

    assert migrate_settings({"budget": 3})["recalibrate"] is False
    assert migrate_settings({"budget": 3, "recalibrate": True})["recalibrate"] is True


def test_the_stuck_detector_judges_the_models_own_misses_not_the_widened_ones():
    """A stalled run whose misses were drawn within 2 sigma only because the run widened the spread x10 is still
    stuck: the model itself keeps being wrong where it looks."""
    from napari_hae.core.run.diagnostics import window_verdict

    k = 10
    steps = {"position": [(5, 5)] * k, "std_mean": [1.0] * k, "best_so_far": [3.0] * k, "z_score": [0.5] * k}
    assert not window_verdict(dict(steps, spread_factor=[1.0] * k), (40, 40), k).stuck
    assert window_verdict(dict(steps, spread_factor=[10.0] * k), (40, 40), k).stuck
    assert not window_verdict(steps, (40, 40), k).stuck                       # not recorded: as drawn


def test_the_widening_is_said_when_it_starts_and_when_it_stops():
    from napari_hae.core.run.diagnostics import spread_event

    assert "1.50x wider" in spread_event(float("nan"), 1.5) and "1.50x wider" in spread_event(1.0, 1.5)
    assert spread_event(1.5, 2.0) == "" and spread_event(1.0, 1.0) == "" and spread_event(float("nan"), 1.0) == ""
    assert spread_event(1.5, 1.0) == ("the model's intervals hold what is measured again: the run draws them as "
                                      "the model says")


def test_the_dock_says_when_the_run_widens_its_intervals(monkeypatch):
    """The uncertainty map grows by the factor at once: the dock's status line says why. Not as a notification:
    it asks nothing of the user, and napari's toast animation paused the window 0.2-0.33 s in software OpenGL."""
    from types import SimpleNamespace

    from napari_hae._qt import run_session
    from napari_hae._qt.run_session import RunWarnings

    toasts = []
    monkeypatch.setattr(run_session, "show_info", toasts.append)
    monkeypatch.setattr(run_session, "show_warning", toasts.append)

    def view(factors):
        n = len(factors)
        steps = {"position": [(i, i) for i in range(n)], "std_mean": list(np.linspace(1.0, 0.5, n)),
                 "best_so_far": list(range(n)), "z_score": [0.5] * n, "log_score": [0.0] * n,
                 "spread_factor": factors}
        return SimpleNamespace(steps=steps, scan_shape=(40, 40), stuck_window=10)

    warnings = RunWarnings(lambda: None)
    quiet = [1.0] * 11
    assert warnings.check(SimpleNamespace(step=10), view(quiet)) is None
    said = warnings.check(SimpleNamespace(step=11), view(quiet + [1.47]))
    assert said.startswith("Step 12: the model's last measurements") and "1.47x wider" in said
    assert warnings.check(SimpleNamespace(step=12), view(quiet + [1.47, 1.5])) is None     # said once
    assert "hold what is measured again" in warnings.check(SimpleNamespace(step=13),
                                                           view(quiet + [1.47, 1.5, 1.0]))
    assert toasts == []
