"""Sweeps on dask.distributed, resuming an interrupted sweep, heat maps, and the anti-stagnation policies."""

import csv

import numpy as np
import pytest

from napari_hae.core.analysis.sweep import SweepSpec, parse_policy, read_table, run_one, run_sweep, summary_grid
from napari_hae.core.errors import HAEInputError
from napari_hae.core.policy import AcquisitionContext, Posterior, make_policy
from napari_hae.core.policy.acquisition import expected_improvement

BASE = dict(budget=3, n_seeds=5, fit_iterations_first=40, fit_iterations=5,
            model={"name": "dkl", "params": {"hidden": [16, 8]}}, record_maps=False,
            scalarizer={"name": "band_integral", "params": {"a": 1.2, "b": 2.25}})


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    from napari_hae.core.data.samples.nanoparticles import make_nanoparticles

    d = make_nanoparticles(shape=(40, 40), n_clusters=5, seed=3)
    path = tmp_path_factory.mktemp("data") / "small.npz"
    np.savez(path, spectra=d.spectra, structural=d.structural, energy_offset=d.energy.offset,
             energy_scale=d.energy.scale)
    return {"spectrum": str(path), "image": None}


def _spec(source, seeds=(0, 1)):
    return SweepSpec(source, BASE, {"patch_size": [5, 8],
                                    "policy": [parse_policy("ei:xi=0.01"), parse_policy("ucb:beta=4")]},
                     list(seeds))


def test_parse_policy():
    assert parse_policy("ei:xi=0.05") == {"name": "ei", "params": {"xi": 0.05}}
    assert parse_policy("mu") == {"name": "mu", "params": {}}
    assert parse_policy("ei_penalized:xi=0.01,radius=4")["params"] == {"xi": 0.01, "radius": 4.0}
    with pytest.raises(HAEInputError, match="not name=value"):
        parse_policy("ei:xi")
    with pytest.raises(HAEInputError, match="no parameter"):
        parse_policy("ucb:xi=1")


def test_run_ids_are_stable_and_unique(small_source):
    a, b = _spec(small_source).runs(), _spec(small_source).runs()
    assert len(a) == 8 and [r["run_id"] for r in a] == [r["run_id"] for r in b]
    assert len({r["run_id"] for r in a}) == 8


@pytest.mark.slow
def test_2x2x2_sweep_on_a_local_cluster_with_two_workers(small_source, tmp_path):
    spec = _spec(small_source)
    table = run_sweep(spec, tmp_path, n_workers=2, progress=False)
    rows = read_table(table)
    assert len(rows) == 8 and {r["run_id"] for r in rows} == {r["run_id"] for r in spec.runs()}
    combos = {(int(r["patch_size"]), r["policy_label"], int(r["seed"])) for r in rows}
    assert combos == {(p, lab, s) for p in (5, 8) for lab in ("ei(xi=0.01)", "ucb(beta=4)") for s in (0, 1)}
    assert all(r["steps"] == 3 and r["travel_px"] > 0 and r["mean_std_mean"] > 0 for r in rows)
    assert len({r["worker"] for r in rows}) == 2                 # both worker processes ran runs
    assert len(list((tmp_path / "traces").glob("*.h5"))) == 8
    # a worker's result equals the same run done here
    here = run_one(spec.runs()[0])
    there = next(r for r in rows if r["run_id"] == here["run_id"])
    assert there["best_value"] == pytest.approx(here["best_value"], rel=1e-12)
    assert there["travel_px"] == pytest.approx(here["travel_px"], rel=1e-12)


def test_an_interrupted_sweep_resumes_without_repeating_finished_runs(small_source, tmp_path, monkeypatch):
    import napari_hae.core.analysis.sweep as sweep

    calls = []
    real = sweep.run_one

    def dies_after_three(run, out_dir=None, torch_threads=1):
        if len(calls) == 3:
            raise KeyboardInterrupt          # the sweep is killed during its 4th run
        calls.append(run["run_id"])
        return real(run, out_dir, torch_threads)

    monkeypatch.setattr(sweep, "run_one", dies_after_three)
    spec = _spec(small_source, seeds=(0,))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, local=True, progress=False)
    first = list(calls)
    assert len(read_table(tmp_path / "results.csv")) == 3
    calls.clear()
    monkeypatch.setattr(sweep, "run_one", lambda run, out_dir=None, torch_threads=1: (calls.append(run["run_id"]),
                                                                                   real(run, out_dir))[1])
    run_sweep(spec, tmp_path, local=True, progress=False)
    assert not set(calls) & set(first) and len(calls) == 1       # only the unfinished run ran again
    with open(tmp_path / "results.csv") as f:
        ids = [r["run_id"] for r in csv.DictReader(f)]
    assert len(ids) == 4 == len(set(ids))


def test_summary_grid_medians_and_stuck_fraction():
    rows = [dict(policy_label="ei", patch_size=5, steps=10, steps_to_top1=v, stuck_run=s)
            for v, s in ((2, 1), (4, 0), (None, 1))] + \
           [dict(policy_label="mu", patch_size=5, steps=10, steps_to_top1=7, stuck_run=0)]
    labels, patches, g = summary_grid(rows, "steps_to_top1")
    assert labels == ["ei", "mu"] and patches == [5]
    np.testing.assert_allclose(g[:, 0], [4, 7])                   # median of 2, 4, 11 (never: budget + 1)
    np.testing.assert_allclose(summary_grid(rows, "stuck_run")[2][:, 0], [2 / 3, 0])


def _ctx(measured, current=(0, 0), step=0, budget=10, n=20):
    yy, xx = np.mgrid[:n, :n]
    pos = np.stack([yy.ravel(), xx.ravel()], 1)
    return AcquisitionContext(best=0.0, rng=np.random.default_rng(0), available=np.ones(n * n, bool), step=step,
                              budget=budget, current=current, positions=pos, measured=np.asarray(measured))


def test_penalized_ei_is_zero_at_measured_points_and_ei_far_away():
    """Scores are log EI + log penalty: EI times the penalty, in log space."""
    post = Posterior(np.zeros(400), np.ones(400))
    ctx = _ctx([(10, 10)])
    s = np.exp(make_policy("ei_penalized", xi=0.0, radius=2.0)(post, ctx))
    ei = expected_improvement(post.mean, post.std, 0.0, 0.0)
    assert s[10 * 20 + 10] == 0.0
    np.testing.assert_allclose(s[0], ei[0], rtol=1e-9)           # 14 px away: no penalty left
    np.testing.assert_allclose(s[10 * 20 + 12], ei[0] * (1 - np.exp(-0.5)))   # 2 px = one radius


def test_travel_cost_prefers_the_nearer_of_equal_candidates():
    post = Posterior(np.zeros(400), np.ones(400))
    s = make_policy("ucb_travel", beta=4, cost=1.0)(post, _ctx([(5, 5)], current=(5, 5)))
    assert np.argmax(s) == 5 * 20 + 5 and s[5 * 20 + 6] > s[19 * 20 + 19]


def test_scheduled_ucb_explores_first_and_exploits_last():
    pol = make_policy("ucb_scheduled", beta_start=16, beta_end=0.25)
    assert pol.beta_at(0, 10) == pytest.approx(16) and pol.beta_at(9, 10) == pytest.approx(0.25)
    assert pol.beta_at(0, 10) > pol.beta_at(5, 10) > pol.beta_at(9, 10)
