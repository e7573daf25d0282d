"""A run is its records: the state rebuilt from the journal equals the live state and decides the same next step;
building a run never changes the caller's settings; a step is decide -> measure -> record with immutable results."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fast_settings
from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.model.base import Posterior
from napari_hae.core.model.warp import Warp
from napari_hae.core.policy import AcquisitionContext, make_policy
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment, ExperimentSettings
from napari_hae.core.run.state import RunState

TINY = dict(patch_size=6, n_seeds=5, fit_iterations_first=12, fit_iterations=4,
            model={"name": "dkl", "params": {"hidden": [8], "threads": 1}})


def _snapshot_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k in ("measured", "avoid"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        elif k == "visit":
            assert len(a[k]) == len(b[k]) and all(np.array_equal(x, y) for x, y in zip(a[k], b[k]))
        elif k == "objects":
            assert [(m, lab) for m, lab, _ in a[k]] == [(m, lab) for m, lab, _ in b[k]]
            assert all(np.array_equal(x[2], y[2]) for x, y in zip(a[k], b[k]))
        else:
            assert a[k] == b[k], k


def _apply(exp, op, scan_shape) -> None:
    kind, arg = op
    if kind == "step":
        if not exp.done:
            exp.step()
    elif kind == "policy":
        exp.set_policy(arg[0], **arg[1])
    elif kind == "patch":
        exp.set_patch_size(arg)
    elif kind == "scalarizer":
        exp.set_scalarizer({"name": "band_integral", "params": {"a": arg, "b": arg + 0.6}})
    elif kind == "budget":
        exp.set_budget(exp.step_index + arg)
    else:   # an object over a corner: "avoid" or "visit"
        mask = np.zeros(scan_shape, bool)
        y0, x0 = arg[1]
        mask[y0:y0 + 6, x0:x0 + 6] = True
        exp.add_object(mask, arg[0], f"{arg[0]} {y0},{x0}")


def _check_rebuild(data, ops, kill_at, tmp_path) -> None:
    """Run ``ops`` up to ``kill_at`` journaling, abandon the process state there (a kill: the journal is flushed
    record by record), then rebuild: the state must equal the live one and decide the same next step."""
    journal = tmp_path / "trace.journal"
    live = Experiment(SimulatedMicroscope(data), fast_settings(budget=4, **TINY), journal=journal)
    live.start()
    for op in ops[:kill_at]:
        try:
            _apply(live, op, data.scan_shape)
        except HAEInputError:   # refused (e.g. a budget below the steps taken): refused changes record nothing
            pass
    read = Trace.load(journal)
    _snapshot_equal(RunState.from_trace(read).snapshot(), live.state.snapshot())
    # the same records in an HDF5 trace's order (grouped by kind) build the same state
    _snapshot_equal(RunState.from_trace(Trace.load(read.save(tmp_path / "t.h5"))).snapshot(),
                    live.state.snapshot())
    if live.done:
        return
    resumed = Experiment.resume(journal, SimulatedMicroscope(data))
    a, b = live.decide(), resumed.decide()
    assert (a.step, a.position, a.kind) == (b.step, b.position, b.kind)
    np.testing.assert_equal({k: v for k, v in a.record.items() if not k.endswith("_time")},
                            {k: v for k, v in b.record.items() if not k.endswith("_time")})
    np.testing.assert_array_equal(a.maps["acq"], b.maps["acq"])
    live.close()


def test_a_run_rebuilt_from_its_journal_is_the_live_run_and_decides_the_same(small_sample, tmp_path):
    ops = [("step", None), ("policy", ("ucb", {"beta": 2.0})), ("object", ("avoid", (0, 0))), ("step", None),
           ("patch", 8), ("object", ("visit", (30, 30))), ("scalarizer", 3.4), ("budget", 3), ("step", None)]
    _check_rebuild(small_sample, ops, len(ops), tmp_path)


OPS = st.one_of(
    st.just(("step", None)),
    st.tuples(st.just("policy"), st.sampled_from([("ei", {"xi": 0.1}), ("ucb", {"beta": 1.0}), ("mu", {}),
                                                   ("thompson", {"n_candidates": 64})])),
    st.tuples(st.just("patch"), st.sampled_from([4, 6, 8])),
    st.tuples(st.just("scalarizer"), st.sampled_from([1.2, 3.4])),
    st.tuples(st.just("budget"), st.integers(-1, 3)),
    st.tuples(st.just("object"), st.tuples(st.sampled_from(["avoid", "visit"]),
                                           st.tuples(st.integers(0, 40), st.integers(0, 40)))),
)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=7), kill=st.integers(0, 7))
def test_for_any_steps_interventions_and_kill_point_the_rebuild_equals_the_live_run(small_sample, tmp_path_factory,
                                                                                      ops, kill):
    _check_rebuild(small_sample, ops, min(kill, len(ops)), tmp_path_factory.mktemp("run"))


def test_building_a_run_leaves_the_callers_settings_unchanged(small_sample):
    s = ExperimentSettings(patch_size=8, n_seeds=5, budget=2, policy={"name": "ucb", "params": {}})
    before = s.to_dict()
    exp = Experiment(SimulatedMicroscope(small_sample), s)
    assert s.to_dict() == before
    assert s.model.params == {} and s.policy.params == {}
    # what the run filled in is what it recorded
    assert exp.trace.settings["policy"] == {"name": "ucb", "params": {"beta": 4.0}}
    assert exp.trace.settings["model"]["params"]["kernel"] == "matern"
    d = fast_settings(budget=2).to_dict()
    Experiment(SimulatedMicroscope(small_sample), d).run(1)
    assert d == fast_settings(budget=2).to_dict()


def test_the_run_settings_are_changed_by_interventions_only(small_sample):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2, **TINY))
    exp.settings.budget = 99            # a copy: changing it changes nothing
    assert exp.state.budget == 2
    with pytest.raises(ValueError):
        exp.measured[0] = True          # the state's views are read-only
    exp.set_budget(3)
    assert exp.settings.budget == 3 and exp.trace.interventions[-1]["new"] == 3


def test_a_step_is_decide_measure_record_with_immutable_results(small_sample):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3, **TINY))
    exp.start()
    n = exp.trace.n_points
    decision = exp.decide()
    assert exp.trace.n_points == n and exp.step_index == 0   # deciding records nothing
    m = exp.measure(decision)
    assert exp.trace.n_points == n and not exp.measured.reshape(exp.scan_shape)[decision.position]
    res = exp.record(decision, m)
    assert exp.trace.n_points == n + 1 and exp.step_index == 1 and res.position == decision.position
    assert exp.measured.reshape(exp.scan_shape)[decision.position]
    with pytest.raises(TypeError):
        res.record["next_mean"] = 0.0
    with pytest.raises(ValueError):
        res.mean[0, 0] = 1.0
    with pytest.raises(AttributeError):
        res.step = 7
    # a decision made while its point is pending does not choose that point again, and is for the next step
    nxt = exp.decide(pending=[decision.flat])
    after = exp.decide(pending=[nxt.flat])
    assert after.step == 2 and after.flat != nxt.flat
    with pytest.raises(RuntimeError, match="record in order"):
        exp.record(after, exp.measure(after))


def test_a_counterfactual_is_the_same_rebuild_with_the_recorded_trajectory_to_follow(small_sample):
    from napari_hae.core.analysis.replay import counterfactual

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3, **TINY))
    exp.run()
    cf = counterfactual(exp.trace, fit_iterations=2)
    assert cf.steps["position"] == exp.trace.steps["position"]
    state = RunState.from_trace(exp.trace, follow=exp.trace.steps["position"])
    assert [state.followed(k) for k in range(3)] == exp.trace.steps["position"]
    assert RunState.from_trace(exp.trace).followed(0) is None


class _ValueSpace(Warp):
    """A warp that supplies its own value-space EI: the policy must use it, whatever the warp is called."""

    name = "value-space"

    def log_expected_improvement(self, mean, std, best, xi, offset, scale):
        return -np.arange(len(mean), dtype=float)


def test_ei_asks_the_posterior_for_the_improvement_and_never_looks_at_the_warp():
    post = Posterior(mean=np.zeros(5), std=np.ones(5), warp=_ValueSpace())
    ctx = AcquisitionContext(best=0.0, rng=np.random.default_rng(0), available=np.ones(5, bool))
    np.testing.assert_array_equal(make_policy("ei")(post, ctx), -np.arange(5.0))


def test_one_xi_default_in_the_parameter_table_dock_cli_settings_and_guide(qapp, small_sample):
    """EI's xi has one default: its parameter table's; the dock's field, a CLI run, a run's resolved settings and
    the user guide all say the same."""
    import re
    from pathlib import Path

    from napari_hae._qt.policy_panel import PolicyPanel
    from napari_hae.cli import build_parser
    from napari_hae.cli._options import policy
    from napari_hae.core.policy import POLICIES
    from napari_hae.core.run.experiment import resolved_settings

    table = {p.name: p.default for p in POLICIES.get("ei").params}["xi"]
    panel = PolicyPanel()
    panel.policy_name.value = "ei"
    dock = panel.policy()["params"]["xi"]
    cli = resolved_settings(ExperimentSettings(policy=policy(build_parser().parse_args(
        ["run", "--sample", "nanoparticles"]))), None, True).policy.params["xi"]
    run = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1)).trace.settings["policy"]
    guide = (Path(__file__).resolve().parents[1] / "docs" / "user_guide.md").read_text()
    said = float(re.search(r"the default, xi ([0-9.]+)", guide).group(1))
    assert run == {"name": "ei", "params": {"xi": table}}
    assert dock == cli == said == table
    # a wrapper around EI keeps EI's default (it is read there, not written again)
    assert {p.name: p.default for p in POLICIES.get("ei_penalized").params}["xi"] == table


def test_seeking_the_models_stream_gives_the_weights_an_uninterrupted_run_draws():
    """A cold-restart DKL draws one fresh network per fit; seek(k) must give the k-th of that stream, so a resumed
    run (and the live run) fit what an uninterrupted one fitted, and old runs keep their exact trajectories."""
    import torch

    from napari_hae.core.model.dkl import DKLRegressor

    stream = DKLRegressor(16, seed=3, hidden=[4])
    first = [next(stream._new_extractor().parameters()).detach().clone() for _ in range(4)]
    for k in (0, 3, 1):
        m = DKLRegressor(16, seed=3, hidden=[4])
        m.seek(k)
        assert torch.equal(next(m._new_extractor().parameters()), first[k]), k


def test_data_changed_under_a_python_api_run_or_a_moved_energy_axis_is_refused_on_resume(small_sample, tmp_path):
    """Issue 30, class 3: runs made through the Python API carried no fingerprint, so a resume mixed changed data
    (values 23-38 became 7.5, exit 0); a resume on an energy axis moved by 0.3 eV went on without a check."""
    import dataclasses

    from napari_hae.core.data.dataset import EnergyAxis

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2, **TINY), journal=tmp_path / "j")
    exp.run(1)
    exp.close()
    assert exp.trace.dataset["fingerprint"] == small_sample.fingerprint()
    changed = dataclasses.replace(small_sample, spectra=small_sample.spectra * 0.3)
    with pytest.raises(HAEInputError, match="The run being resumed .*spectra \\(content differs\\)"):
        Experiment.resume(tmp_path / "j", SimulatedMicroscope(changed))
    e = small_sample.energy
    moved = dataclasses.replace(small_sample, energy=EnergyAxis(e.size, e.offset + 0.3, e.scale, e.units))
    n = Trace.load(tmp_path / "j").n_points
    with pytest.raises(HAEInputError, match=r"energy axis .* is not the one the run recorded.*Nothing was measured"):
        Experiment.resume(tmp_path / "j", SimulatedMicroscope(moved))
    assert Trace.load(tmp_path / "j").n_points == n
    Experiment.resume(tmp_path / "j", SimulatedMicroscope(small_sample)).run()   # the same data: goes on


def test_a_trace_kept_after_its_run_does_not_keep_the_run_alive(small_sample):
    import gc
    import weakref

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1, **TINY))
    exp.run()
    trace, gone = exp.trace, weakref.ref(exp)
    del exp
    gc.collect()
    assert gone() is None                      # the model and patches went with it
    trace.add_event(1, "a note after the run")  # and the trace still takes records
    assert trace.events[-1]["message"] == "a note after the run"
