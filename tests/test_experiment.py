import numpy as np
import pytest

from conftest import assert_traces_equal, fast_settings
from napari_hae.core.data.samples.nanoparticles import BANDS
from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment
from napari_hae.core.targets.scalarizers import Scalarizer


def _exp(data, **kw):
    return Experiment(SimulatedMicroscope(data), fast_settings(**kw), dataset_info=data.describe())


def test_run_measures_seeds_plus_budget_and_never_repeats(small_sample):
    exp = _exp(small_sample, budget=8)
    trace = exp.run()
    assert trace.n_points == 6 + 8 and trace.n_steps == 8
    assert trace.kinds.count("seed") == 6
    assert len(set(trace.positions)) == trace.n_points
    # each step's chosen position is the next measured point, and maps are finite where they should be
    assert [tuple(p) for p in trace.steps["position"]] == trace.positions[6:]
    assert np.all(np.isfinite(trace.maps["mean"][-1])) and np.all(trace.maps["std"][-1] >= 0)
    # the stored value is the scalarizer of the stored spectrum
    sc = exp.scalarizer
    np.testing.assert_allclose(trace.values, sc(trace.spectra_array(), small_sample.energies))
    with pytest.raises(RuntimeError, match="budget"):
        exp.step()


def test_runs_are_reproducible_with_the_same_seed(small_sample):
    a = _exp(small_sample, budget=4).run()
    b = _exp(small_sample, budget=4).run()
    assert a.positions == b.positions
    np.testing.assert_allclose(a.maps["mean"][-1], b.maps["mean"][-1], rtol=1e-5, atol=1e-5)


def test_band_change_mid_run_changes_next_picks_and_is_recorded(small_sample):
    base = _exp(small_sample, budget=8)
    changed = _exp(small_sample, budget=8)
    base.run(3)
    changed.run(3)
    assert base.trace.positions == changed.trace.positions
    bulk = Scalarizer("band_integral", {"a": BANDS["bulk"][0], "b": BANDS["bulk"][1]})
    changed.set_scalarizer(bulk)
    base.run()
    changed.run()
    assert base.trace.positions[9:] != changed.trace.positions[9:]
    iv = changed.trace.interventions
    assert len(iv) == 1 and iv[0]["step"] == 3 and iv[0]["kind"] == "scalarizer"
    assert iv[0]["new"]["params"] == {"a": BANDS["bulk"][0], "b": BANDS["bulk"][1]}
    assert changed.trace.steps["scalarizer"][2] != changed.trace.steps["scalarizer"][3]
    # the model after the change is trained on the new target for *all* points, earlier ones included
    y_new = bulk(changed.trace.spectra_array(), small_sample.energies)
    assert changed.model.warp.name == "log" and y_new.min() > 0   # positive targets: modelled as their log
    assert changed.model.y_mean == pytest.approx(np.log(y_new[:-1]).mean())


def test_patch_size_change_keeps_earlier_points_and_retrains(small_sample):
    exp = _exp(small_sample, budget=6)
    exp.run(3)
    before = list(exp.trace.positions)
    exp.set_patch_size(12)
    assert exp.patches.shape[1] == 144
    exp.run()
    assert exp.trace.positions[: len(before)] == before
    assert exp.model.input_dim == 144
    assert exp.model.model.train_inputs[0].shape[0] == exp.trace.n_points - 1
    assert exp.trace.steps["patch_size"][:3] == [8, 8, 8] and exp.trace.steps["patch_size"][3:] == [12, 12, 12]
    assert exp.trace.interventions[0] == {"step": 3, "kind": "patch_size", "old": 8, "new": 12}


def test_policy_change_is_recorded_and_used(small_sample):
    exp = _exp(small_sample, budget=4)
    exp.run(2)
    exp.set_policy("mu")
    exp.run()
    # the default policy (one default for core, CLI, dock and sweep: log EI, xi 0), then the change
    assert exp.trace.steps["policy"] == ["ei(xi=0)", "ei(xi=0)", "mu", "mu"]
    # maximum uncertainty picks the argmax of the stored std map among unmeasured positions
    std = exp.trace.map_at("std", 3).ravel().copy()
    measured_before = exp.trace.positions[: 6 + 3]
    for y, x in measured_before:
        std[y * 48 + x] = -np.inf
    assert np.unravel_index(np.argmax(std), (48, 48)) == exp.trace.steps["position"][3]


def test_avoid_object_is_never_measured_and_visit_object_forces_next_pick(small_sample):
    exp = _exp(small_sample, budget=10)
    exp.start()
    first = exp.step()
    avoid = np.zeros((48, 48), bool)
    avoid[:, :24] = True                       # the whole left half
    exp.add_object(avoid, "avoid", "beam-sensitive")
    visit = np.zeros((48, 48), bool)
    visit[40:44, 40:44] = True
    exp.add_object(visit, "visit", "corner particle")
    res = exp.step()
    assert res.kind == "visit" and visit[res.position]
    exp.run()
    later = exp.trace.positions[6 + 2:]
    assert not any(avoid[p] for p in later)
    assert [iv["kind"] for iv in exp.trace.interventions] == ["object", "object"]
    assert exp.trace.objects[0]["mode"] == "avoid" and exp.trace.objects[1]["label"] == "corner particle"
    assert first.step == 0


def test_a_retracted_object_no_longer_applies_and_the_journal_rebuilds_that(small_sample, tmp_path):
    """Issue 28: an object deleted on the layer during a run was still applied. Retracting it is an intervention
    (recorded, applied from the next step, rebuilt the same from the journal); an unknown or retracted label is
    refused with a Fix and changes nothing."""
    from napari_hae.core.run.state import RunState

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=4), dataset_info=small_sample.describe(),
                     journal=tmp_path / "trace.journal")
    exp.start()
    left, corner = np.zeros((48, 48), bool), np.zeros((48, 48), bool)
    left[:, :24] = True
    corner[40:44, 40:44] = True
    exp.add_object(left, "avoid", "avoid #0")
    exp.add_object(corner, "visit", "visit #1")
    assert exp.avoid.reshape(48, 48)[:, :24].all() and len(exp.visit) == 1
    exp.remove_object("avoid #0")
    exp.remove_object("visit #1")
    assert not exp.avoid.any() and exp.visit == []
    res = exp.step()
    assert res.kind != "visit"                                          # the corner is no longer forced
    for bad in ("avoid #0", "nothing"):
        with pytest.raises(HAEInputError, match=rf"No object labelled '{bad}' is in force in this run\. Fix: "):
            exp.remove_object(bad)
    exp.add_object(left, "avoid", "avoid #0")                           # drawn again: in force again
    assert exp.avoid.reshape(48, 48)[:, :24].all()
    exp.run()
    assert not any(left[p] for p in exp.trace.positions[6 + 1:])       # avoided again from the next step
    kinds = [d["kind"] for d in exp.trace.interventions]
    assert kinds == ["object", "object", "remove_object", "remove_object", "object"]
    assert exp.trace.interventions[2]["new"] == {"index": 0, "label": "avoid #0"}
    exp.close()
    rebuilt = RunState.from_trace(Trace.load(tmp_path / "trace.journal"))
    for key in ("avoid", "measured"):
        assert np.array_equal(rebuilt.snapshot()[key], exp.state.snapshot()[key])
    assert rebuilt.object_in_force("avoid #0") == 2 and rebuilt.object_in_force("visit #1") is None


def test_given_grid_and_random_seeds(small_sample):
    given = _exp(small_sample, seed_mode="given", seed_positions=[[1, 1], [10, 20], [30, 5]], budget=1)
    given.start()
    assert given.trace.positions == [(1, 1), (10, 20), (30, 5)]
    grid = _exp(small_sample, seed_mode="grid", n_seeds=9, budget=1)
    grid.start()
    assert len(set(grid.trace.positions)) == 9


def test_goal_min_reports_values_in_scalarizer_units(small_sample):
    exp = _exp(small_sample, goal="min", budget=3)
    exp.run()
    assert exp.trace.steps["best_so_far"][-1] == pytest.approx(min(exp.trace.values[:-1]))


def test_trace_round_trip_is_exact(small_sample, tmp_path):
    exp = _exp(small_sample, budget=4)
    exp.run(2)
    exp.set_policy("ucb", beta=9.0)
    m = np.zeros((48, 48), bool)
    m[:5, :5] = True
    exp.add_object(m, "avoid", "edge")
    exp.run()
    path = exp.trace.save(tmp_path / "t.h5")
    loaded = Trace.load(path)
    assert_traces_equal(exp.trace, loaded)
    # and a second save of the loaded trace is identical again
    assert_traces_equal(loaded, Trace.load(loaded.save(tmp_path / "t2.h5")))


def test_loading_a_non_trace_is_a_clear_error(tmp_path):
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = 1
    with pytest.raises(HAEInputError, match="not a napari-hae trace"):
        Trace.load(tmp_path / "x.h5")
    (tmp_path / "y.h5").write_bytes(b"not hdf5")
    with pytest.raises(HAEInputError, match="not a readable HDF5"):
        Trace.load(tmp_path / "y.h5")


def test_multi_objective_mode_returns_the_pareto_set(small_sample):
    from napari_hae.core.targets.objective import pareto_mask

    second = {"name": "band_integral", "params": {"a": 3.45, "b": 4.05}}
    exp = _exp(small_sample, budget=8, objectives=[second])
    exp.run()
    w = exp.trace.step_array("objective_weight")
    assert np.all((w > 0) & (w < 1)) and np.std(w) > 0            # a new random weight every step
    pos, vals = exp.pareto_set()
    Y = exp.objective_values()
    assert vals.shape[1] == 2 and len(pos) == pareto_mask(Y).sum() >= 1
    for v in vals:                                                 # no measured point dominates a Pareto point
        assert not np.any(np.all(Y >= v, axis=1) & np.any(Y > v, axis=1))


def test_pareto_mask_on_a_known_set():
    from napari_hae.core.targets.objective import pareto_mask

    Y = np.array([[1, 5], [2, 4], [2, 2], [3, 1], [0, 0], [3, 1]])
    assert pareto_mask(Y).tolist() == [True, True, False, True, False, True]


def test_driver_applies_everything_queued_before_resume_before_the_next_step(small_sample):
    """The GUI queues interventions and then resumes; a step must never start with one of them still queued,
    even when one is queued while the driver is applying the previous ones (a race seen in the dock test)."""
    from napari_hae.core.run.driver import RunDriver
    from napari_hae.core.run.experiment import StepResult

    exp = _exp(small_sample, budget=3)
    driver = RunDriver(exp, idle_wait=0.001)
    events = driver.events()
    next(events)                       # seeds
    driver.pause()

    def policy_then_gui_acts(e):
        e.set_policy("mu")
        # while the driver is busy applying this, the GUI thread queues another change and resumes
        driver.request("scalarizer", lambda e2: e2.set_scalarizer({"name": "peak_max", "params": {"a": 3.45,
                                                                                                  "b": 4.05}}))
        driver.resume()

    driver.request("policy", policy_then_gui_acts)
    while not isinstance(item := next(events), StepResult):
        pass
    assert [(d["kind"], d["step"]) for d in exp.trace.interventions] == [("policy", 0), ("scalarizer", 0)]
    assert item.record["scalarizer"].startswith("peak_max")


def test_seeds_and_avoid_objects_drawn_before_the_start(small_sample):
    """Issue 14, defect 9: a seed inside an avoid region was measured; random seeds now fall outside it."""
    mask = np.zeros(small_sample.scan_shape, bool)
    mask[:, :40] = True
    exp = _exp(small_sample, seed_mode="given", seed_positions=[(12, 12), (5, 44)])
    exp.add_object(mask, "avoid", "beam-sensitive")
    with pytest.raises(HAEInputError, match=r"Seed position\(s\) \[\[12, 12\]\] \(y, x\) lie inside an 'avoid' "
                                            r"object.*Fix: move or delete those seeds"):
        exp.start()
    assert exp.trace.n_points == 0                      # refused before anything was measured
    exp = _exp(small_sample, n_seeds=20)
    exp.add_object(mask, "avoid", "beam-sensitive")
    exp.start()
    assert exp.trace.n_points == 20 and all(x >= 40 for _, x in exp.trace.positions)


def test_trace_index_of_finds_the_newest_measurement_at_a_position():
    from napari_hae.core.record.trace import Trace

    t = Trace(structural=np.zeros((8, 8)))
    t.add_point((1, 2), np.ones(4), 1.0, "seed", -1)
    t.add_point((3, 4), np.ones(4), 2.0, "seed", -1)
    assert t.index_of((3, 4)) == 1 and t.index_of(np.array([1, 2], dtype=np.int64)) == 0
    assert t.index_of((35, 68)) is None


def test_messages_end_in_one_full_stop():
    from napari_hae.core.errors import sentence

    err = HAEInputError("The band is empty.", "widen it.")
    assert f"stopped: {sentence(err)} Kept." == "stopped: The band is empty. Fix: widen it. Kept."
    assert sentence("no answer") == "no answer." and sentence("really?") == "really?"


def test_step_once_is_one_step_even_when_pressed_while_a_step_is_being_measured(small_sample):
    """Pause pressed during a step, then Step once before that step ends: the step in flight is the one step
    (the dock made two, and its F-key test timed out waiting for exactly one)."""
    from napari_hae.core.run.driver import Event, RunDriver
    from napari_hae.core.run.experiment import StepResult

    exp = _exp(small_sample, budget=6)
    driver = RunDriver(exp, idle_wait=0.001)
    step = exp.step

    def step_with_presses():
        assert driver.stepping and not driver.idle
        driver.pause()
        driver.step_once()          # pressed while this step is still being measured
        return step()

    exp.step = step_with_presses
    events = driver.events()
    assert isinstance(next(events), Event)                     # seeds
    assert isinstance(next(events), StepResult)
    exp.step = step
    assert next(events).kind == "paused" and driver.idle and not driver.stepping
    n = exp.step_index
    driver.step_once()                                         # pressed while idle: exactly one step
    assert isinstance(next(events), StepResult) and exp.step_index == n + 1
    assert next(events).kind == "paused" and exp.step_index == n + 1


def test_bright_seeds_start_where_the_structural_image_is_brightest_one_per_feature(small_sample):
    """Issue 27: on every real map, measuring in order of brightness found the target as fast as the model. The
    seed mode "bright" gives the model that start: the brightest places of the smoothed image, half a patch apart,
    outside avoid objects."""
    from scipy.ndimage import gaussian_filter

    from napari_hae.core.run.picking import bright_seeds

    image = np.zeros((20, 20))
    image[5, 5], image[5, 6], image[15, 15], image[2, 17] = 10.0, 9.0, 8.0, 3.0   # 3 features, one of 2 pixels
    flat = bright_seeds(image, 3, patch_size=6)
    assert sorted(divmod(int(i), 20) for i in flat) == [(2, 17), (5, 5), (15, 15)]   # not (5, 6): same feature
    avoid = np.zeros(400, bool)
    avoid[5 * 20 + 5] = avoid[5 * 20 + 6] = True
    assert (5 * 20 + 5) not in bright_seeds(image, 3, 6, avoid) and len(bright_seeds(image, 12, 6)) == 12
    exp = _exp(small_sample, seed_mode="bright", n_seeds=6, budget=1)
    exp.start()
    smooth = gaussian_filter(small_sample.structural, 1.0, mode="nearest")
    assert max(smooth[p] for p in exp.trace.positions) == pytest.approx(smooth.max())
    assert exp.trace.kinds == ["seed"] * 6 and exp.trace.settings["seed_mode"] == "bright"


def test_cover_seeds_reach_a_small_odd_spot_that_random_and_bright_seeds_miss(small_sample):
    """Issue 27: seeds over what the image shows (farthest first in its local mean and contrast). On a half dark,
    half bright image with one small dim spot on the dark half, 6 cover seeds always sit on both halves and reach the
    spot (an 11 x 11 window around it, 121 of 2,304 positions) in 18 of 20 draws; 6 random seeds would in 28%, and
    bright seeds never leave the bright half."""
    from napari_hae.core.run.picking import bright_seeds, cover_seeds

    image = np.zeros((48, 48))
    image[:, 24:] = 10.0
    image[30:33, 8:11] = 4.0

    def kinds(flat):
        yx = [divmod(int(i), 48) for i in flat]
        return {"spot" if 26 <= y <= 36 and 4 <= x <= 14 else "dark" if x < 24 else "bright" for y, x in yx}

    draws = [cover_seeds(image, 6, 8, np.random.default_rng(s)) for s in range(20)]
    assert all(len(set(d)) == 6 and "bright" in kinds(d) and kinds(d) - {"bright"} for d in draws)   # both halves
    assert sum("spot" in kinds(d) for d in draws) == 18
    assert kinds(bright_seeds(image, 6, 8)) == {"bright"}
    again = cover_seeds(image, 6, 8, np.random.default_rng(3))
    assert np.array_equal(again, draws[3])                           # the run's random seed fixes them
    avoid = np.zeros(48 * 48, bool)
    avoid[30 * 48:33 * 48] = True                                    # the spot's rows
    assert not any(avoid[cover_seeds(image, 6, 8, np.random.default_rng(s), avoid)].any() for s in range(5))
    flat = cover_seeds(np.ones((10, 10)), 7, 4, np.random.default_rng(0))
    assert len(set(flat)) == 7                                       # a flat image: distinct seeds all the same
    exp = _exp(small_sample, seed_mode="cover", n_seeds=5, budget=1)
    exp.start()
    assert exp.trace.kinds == ["seed"] * 5 and exp.trace.settings["seed_mode"] == "cover"
    with pytest.raises(HAEInputError, match=r"Seeds placed by the image \('cover'\) need the structural image"):
        from napari_hae.core.run.picking import seed_indices
        from napari_hae.core.run.settings import ExperimentSettings
        seed_indices(ExperimentSettings(seed_mode="cover"), (48, 48), np.random.default_rng(0))


def test_mixed_seeds_are_half_bright_half_random_and_never_twice(small_sample):
    from napari_hae.core.run.picking import bright_seeds, seed_indices
    from napari_hae.core.run.settings import ExperimentSettings

    s = ExperimentSettings(seed_mode="mixed", n_seeds=7, patch_size=8)
    avoid = np.zeros(48 * 48, bool)
    avoid[:48 * 10] = True                                             # the top ten rows
    a = seed_indices(s, (48, 48), np.random.default_rng(1), avoid, small_sample.structural)
    b = seed_indices(s, (48, 48), np.random.default_rng(2), avoid, small_sample.structural)
    bright = bright_seeds(small_sample.structural, 4, 8, avoid)
    assert len(a) == len(set(a)) == 7 and set(bright) <= set(a) and set(bright) <= set(b)
    assert set(a) != set(b) and not avoid[a].any()                     # the random half differs with the seed
