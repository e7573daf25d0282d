"""Monitors (learning curves, travel, model error, stuck-run detector), rVAE feature space, replay and
counterfactual runs."""

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.core.analysis.feature_space import density_maxima, train_rvae
from napari_hae.core.analysis.monitors import detect_stuck, learning_curves, model_errors, policy_travel
from napari_hae.core.analysis.replay import counterfactual, replay_state
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.diagnostics import stuck_verdict
from napari_hae.core.run.experiment import Experiment


def _toy_trace(points, step_positions, std_means=None, maps=None, pixel_size=1.0):
    """A hand-made trace: ``points`` [(y, x, kind, step)], one step record per ``step_positions``."""
    t = Trace(structural=np.zeros((20, 30)), dataset={"pixel_size": pixel_size})
    for y, x, kind, step in points:
        t.add_point((y, x), np.zeros(3), 1.0, kind, step)
    for i, p in enumerate(step_positions):
        rec = {k: 0.0 for k in t.steps}
        rec.update(position=p, policy="ucb", scalarizer="s", std_mean=1.0 if std_means is None else std_means[i])
        t.add_step(rec, None if maps is None else maps[i])
    return t


def test_travel_counts_from_the_last_seed():
    t = _toy_trace([(0, 0, "seed", -1), (0, 3, "seed", -1), (4, 3, "policy", 0), (4, 0, "policy", 1),
                    (0, 0, "visit", 2)], [(4, 3), (4, 0), (0, 0)], pixel_size=0.5)
    np.testing.assert_allclose(policy_travel(t), [4.0, 7.0, 11.0])
    c = learning_curves(t)
    np.testing.assert_allclose(c["travel_units"], [2.0, 3.5, 5.5])
    assert list(c["step"]) == [0, 1, 2]


def test_experiment_records_the_same_travel_per_step(small_sample):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=5))
    exp.run()
    np.testing.assert_allclose(exp.trace.steps["travel_px"], policy_travel(exp.trace))
    assert exp.trace.steps["travel_px"][0] > 0


def test_model_error_against_truth_complete_and_final():
    truth = np.arange(600.0).reshape(20, 30)
    maps = [{"mean": truth + k, "std": np.ones((20, 30)), "acq": np.zeros((20, 30))} for k in range(4)]
    t = _toy_trace([(0, 0, "seed", -1)] + [(1, k, "policy", k) for k in range(4)],
                   [(1, k) for k in range(4)], maps=maps)
    e = model_errors(t, truth, complete=truth + 1.0)
    np.testing.assert_allclose(e["vs_truth"], [0, 1, 2, 3])
    np.testing.assert_allclose(e["vs_complete"], [1, 0, 1, 2])
    np.testing.assert_allclose(e["vs_final"], [3, 2, 1, 0])
    assert np.isnan(model_errors(t)["vs_truth"]).all()


def test_stuck_detector_fires_on_a_stuck_run_and_not_on_a_random_one():
    rng = np.random.default_rng(0)
    flat = np.full(10, 0.5) - np.arange(10) * 1e-3           # uncertainty barely falls (2%)
    stuck = [(10 + rng.integers(-1, 2), 15 + rng.integers(-1, 2)) for _ in range(10)]
    v = stuck_verdict(stuck, flat, (96, 96))
    assert v.stuck and "within" in v.reason and v.spread_px <= 2 * np.sqrt(2)
    assert any("mu" in s for s in v.suggestions)
    spread = [tuple(rng.integers(0, 96, 2)) for _ in range(10)]
    assert not stuck_verdict(spread, flat, (96, 96)).stuck
    learning = np.linspace(0.5, 0.3, 10)                     # clustered, but the model still learns a lot
    assert not stuck_verdict(stuck, learning, (96, 96)).stuck
    # spread in real space but all in one latent cluster
    latent = np.zeros((96 * 96, 2))
    latent[:, 0] = np.random.default_rng(1).uniform(0, 10, 96 * 96)
    idx = [y * 96 + x for y, x in spread]
    latent[idx] = [5.0, 5.0]
    v = stuck_verdict(spread, flat, (96, 96), latent=latent)
    assert v.stuck and "latent cluster" in v.reason
    t = _toy_trace([(0, 0, "seed", -1)] + [(y, x, "policy", i) for i, (y, x) in enumerate(stuck)], stuck, flat)
    assert not detect_stuck(t).stuck       # best flat, but every measurement as predicted (z = 0): converged
    t.steps["z_score"] = [4.0] * 10        # ... every one far outside its predicted interval: stuck
    assert detect_stuck(t).stuck and not detect_stuck(t, k=11).stuck


def _shape(kind, angle, n=12):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    if kind == "bar":
        return ((np.abs(v) < 1.0) & (np.abs(u) < 5)).astype(np.float32)
    return ((np.hypot(u, v) < 4.5) & (np.hypot(u, v) > 2.5)).astype(np.float32)   # ring


@pytest.mark.slow
def test_rvae_latent_separates_two_shapes_whatever_their_rotation():
    rng = np.random.default_rng(0)
    kinds = np.array(["bar", "ring"] * 150)
    patches = np.stack([_shape(k, rng.uniform(0, np.pi)) for k in kinds])
    import torch

    before = torch.get_default_dtype()
    fs = train_rvae(patches, epochs=30, batch_size=50, hidden=64, lr=3e-3, seed=0)
    assert torch.get_default_dtype() == before              # AtomAI's global dtype change is undone
    z = fs.latent
    a, b = z[kinds == "bar"], z[kinds == "ring"]
    # nearest-centroid classification in the latent plane
    ca, cb = a.mean(0), b.mean(0)
    pred_bar = np.linalg.norm(z - ca, axis=1) < np.linalg.norm(z - cb, axis=1)
    accuracy = np.mean(pred_bar == (kinds == "bar"))
    assert accuracy >= 0.95, accuracy
    assert fs.manifold.shape == (8 * 12, 8 * 12) and np.isfinite(fs.manifold).all()
    assert len(fs.losses) == 30 and fs.losses[-1] < fs.losses[0]


def test_density_maxima_find_two_clusters():
    rng = np.random.default_rng(0)
    pts = np.vstack([rng.normal([0, 0], 0.3, (60, 2)), rng.normal([5, 2], 0.3, (40, 2))])
    _, maxima, _ = density_maxima(pts)
    assert len(maxima) == 2
    np.testing.assert_allclose(maxima[0], [0, 0], atol=0.4)    # the denser cluster first
    np.testing.assert_allclose(maxima[1], [5, 2], atol=0.4)


def test_replay_reproduces_the_stored_maps_exactly(small_sample, tmp_path):
    seen = []
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=4))
    exp.run(callback=lambda r: seen.append(r))
    exp.trace.save(tmp_path / "t.h5")
    t = Trace.load(tmp_path / "t.h5")
    for r in seen:
        st = replay_state(t, r.step)
        np.testing.assert_array_equal(st.maps["mean"], r.mean.astype(np.float32))
        np.testing.assert_array_equal(st.maps["std"], r.std.astype(np.float32))
        np.testing.assert_array_equal(st.maps["acq"], r.acq.astype(np.float32))
        assert tuple(st.positions[-1]) == r.position and len(st.positions) == 6 + r.step + 1
    assert len(replay_state(t, -1).positions) == 6
    from napari_hae.core.errors import HAEInputError

    with pytest.raises(HAEInputError, match="not in this trace"):
        replay_state(t, 4)


def test_counterfactual_with_the_same_settings_reproduces_the_run(small_sample):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=5))
    exp.run(2)
    exp.set_policy("ei", xi=0.1)
    exp.run()
    same = counterfactual(exp.trace)
    assert same.positions == exp.trace.positions and same.interventions == exp.trace.interventions
    for k in ("mean", "std", "acq"):
        for a, b in zip(same.maps[k], exp.trace.maps[k]):
            np.testing.assert_array_equal(a, b)
    other = counterfactual(exp.trace, patch_size=12, fit_iterations=20)
    assert other.positions == exp.trace.positions                 # the same trajectory...
    assert set(other.steps["patch_size"]) == {12}
    assert not np.allclose(other.maps["mean"][-1], exp.trace.maps["mean"][-1])   # ...another belief


def _replay_flags(steps, shape, **kw):
    from napari_hae.core.run.diagnostics import window_verdict

    n = len(steps["position"])
    return [bool((v := window_verdict({c: steps[c][: i + 1] for c in steps}, shape, **kw)) and v.stuck)
            for i in range(n)]


def test_the_stuck_readme_demo_run_is_flagged():
    """The README demo run as recorded when it got stuck at 40% of the maximum (2 torch threads): picks spread over
    the scan (the spatial rule alone never fired) while the best value stalled and the measurements kept missing
    the predicted intervals."""
    import json
    from pathlib import Path

    rec = json.loads((Path(__file__).parent / "data" / "stuck_demo_steps.json").read_text())
    steps, shape = rec["steps"], tuple(rec["scan_shape"])
    flags = _replay_flags(steps, shape)
    assert sum(flags) >= 10
    spatial_only = _replay_flags({c: steps[c] for c in ("position", "std_mean")}, shape)
    assert sum(spatial_only) == 0
    v = stuck_verdict(steps["position"][-10:], steps["std_mean"][-10:], shape, best=steps["best_so_far"][-10:],
                      z_scores=steps["z_score"][-10:])
    assert v.stuck and "the model is confidently wrong where it looks" in v.reason and v.suggestions


def test_a_run_that_keeps_improving_is_not_stuck():
    picks = [(10 + i % 2, 10) for i in range(10)]
    flat = [1.0] * 10
    improving = list(np.linspace(1.0, 2.0, 10))
    assert stuck_verdict(picks, flat, (96, 96)).stuck                    # without the best: the spatial rule
    assert not stuck_verdict(picks, flat, (96, 96), best=improving).stuck
    converged = stuck_verdict(picks, flat, (96, 96), best=[2.0] * 10, z_scores=[0.5, -1.0] * 5)
    assert not converged.stuck and converged.reason == "the model's intervals hold what is measured"
    confined = stuck_verdict(picks, flat, (96, 96), best=[2.0] * 10, z_scores=[6.0, -3.0] * 5)
    assert confined.stuck and confined.reason.endswith("; the picks stay within 0.5 px")
    spread = [(i * 9, (i * 37) % 96) for i in range(10)]
    wrong, right = [5.0, -4.0] * 5, [0.5, -1.2] * 5
    assert stuck_verdict(spread, flat, (96, 96), best=[2.0] * 10, z_scores=wrong).stuck
    assert not stuck_verdict(spread, flat, (96, 96), best=[2.0] * 10, z_scores=right).stuck


def test_the_renderer_transport_is_plain_framed_pipes_on_every_platform():
    """The monitors' pipe was a multiprocessing Connection over file descriptors, which is POSIX-only: on Windows
    its first send failed and the monitors stayed blank. The transport is now length-prefixed messages over plain
    binary files, the same code on every platform; messages of any size round-trip."""
    import ast
    import os
    from pathlib import Path

    from napari_hae._monitor_renderer import Duplex

    src = Path(__file__).resolve().parents[1] / "src" / "napari_hae" / "_monitor_renderer.py"
    names = {n.module for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom)}
    assert "multiprocessing.connection" not in names
    import threading

    r, w = os.pipe()
    end = Duplex(os.fdopen(r, "rb"), os.fdopen(w, "wb"))   # one pipe, read back by its own reader
    big = np.arange(200_000, dtype=np.float64)   # larger than a pipe's buffer: written in parts, read whole
    sender = threading.Thread(target=lambda: (end.send(("render", {"x": big})), end.send(("stop",))))
    sender.start()
    got = end.recv()
    assert got[0] == "render" and np.array_equal(got[1]["x"], big)
    assert end.recv() == ("stop",)
    sender.join()
    end._w.close()
    with pytest.raises(EOFError):
        end.recv()


@pytest.mark.slow   # subprocesses / a real window / several runs: the full suite
def test_a_renderer_that_dies_falls_back_to_drawing_in_process_and_says_so(qtbot, small_sample):
    from napari_hae._monitor_plot import MonitorPlot
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2))
    exp.run()
    plot = MonitorPlot(min_interval=0.0)
    qtbot.addWidget(plot)
    warnings = []
    plot.failed.connect(warnings.append)
    plot.update_from(exp.trace, force=True)
    qtbot.waitUntil(lambda: plot.n_renders == 1, timeout=60_000)
    plot._renderer.proc.kill()                       # the renderer process dies (a crash, a broken pipe)
    plot._renderer.proc.wait()
    plot.update_from(exp.view(), force=True)         # drawn from a run's read-only view as well
    qtbot.waitUntil(lambda: plot.n_renders == 2, timeout=60_000)
    assert plot._renderer.local is not None and plot.n_steps_drawn == 2
    assert len(warnings) == 1 and "monitor renderer process failed" in warnings[0]
    plot.close_renderer()


def test_a_renderer_that_fails_after_the_dock_is_gone_ends_its_thread_quietly(qtbot, small_sample):
    """At a GUI test's teardown the renderer process was closed while the helper thread waited on it; the thread
    then fell back and emitted 'failed' into the deleted widget: "Exception in thread hae-monitor-render:
    RuntimeError: wrapped C/C++ object of type MonitorPlot has been deleted". A dock that is gone is not told."""
    import threading

    from napari_hae._monitor_plot import MonitorPlot
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1))
    exp.run()
    entered, release = threading.Event(), threading.Event()

    class ClosedUnderIt:   # the renderer process, closed by the teardown while a drawing waits on it
        local = None

        def call(self, *_):
            entered.set()
            release.wait(10)
            raise EOFError("the other end closed the pipe")

        def close(self):
            pass

    plot = MonitorPlot(min_interval=0.0)
    plot._renderer = ClosedUnderIt()
    raised = []
    hook, threading.excepthook = threading.excepthook, lambda args: raised.append(args.exc_value)
    try:
        plot.update_from(exp.trace, force=True)
        assert entered.wait(10)
        helper = plot._helper
        plot.deleteLater()
        qtbot.waitUntil(lambda: not plot._alive[0], timeout=5_000)
        release.set()
        helper.join(10)
    finally:
        threading.excepthook = hook
    assert not helper.is_alive() and raised == []
