"""Scale (issue 15): patches not held, the first layer as a convolution, the grid posterior against the exact one,
the bounded training subset, and old traces rebuilt with the behaviour they had."""

import numpy as np
import pytest
import torch

from napari_hae.core.data.patches import PatchGrid, extract_patches
from napari_hae.core.model import large
from napari_hae.core.model.dkl import DKLRegressor


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:52]
    return np.sin(yy / 4.0) * np.cos(xx / 6.0) + 0.3 * rng.standard_normal((40, 52))


def _truth(image, patch):
    """A target that depends on the patch: its mean brightness and contrast."""
    p = extract_patches(image, patch).reshape(image.size, -1)
    return 3 * p.mean(1) + p.std(1)


def test_patch_grid_is_the_patch_array_without_holding_it(image):
    grid, full = PatchGrid(image, 7), extract_patches(image, 7).reshape(image.size, -1)
    assert grid.shape == full.shape and len(grid) == len(full)
    np.testing.assert_array_equal(np.asarray(grid), full)
    idx = np.array([0, 51, 52, 2079, 17])
    np.testing.assert_array_equal(grid[idx], full[idx])
    np.testing.assert_array_equal(grid[5], full[5])
    np.testing.assert_array_equal(grid.rows(3, 6), full[3 * 52:6 * 52])
    assert grid.padded.nbytes < full.nbytes / 30


@pytest.mark.parametrize("patch", [6, 7])
def test_the_first_layer_as_a_convolution_is_the_mlp_on_every_patch(image, patch):
    model = DKLRegressor(patch * patch, hidden=(16, 8), seed=3)
    ext = model._new_extractor()
    grid = PatchGrid(image, patch)
    with torch.no_grad():
        direct = ext(torch.as_tensor(np.asarray(grid)))
    conv = large.embed_positions(ext, grid, torch.float32, rows_per_block=7)   # blocks that do not divide 40
    np.testing.assert_allclose(conv.numpy(), direct.numpy(), rtol=1e-4, atol=1e-5)


def _fitted(image, patch=6, n=120, **kw):
    y = _truth(image, patch)
    idx = np.random.default_rng(0).choice(image.size, n, replace=False)
    grid = PatchGrid(image, patch)
    model = DKLRegressor(patch * patch, hidden=(16, 8), seed=0, **kw)
    model.fit(grid[idx], y[idx], iterations=80, warm=False)
    return model, grid, idx, y


def test_exact_posterior_on_a_patch_grid_equals_the_one_on_the_patch_array(image):
    model, grid, _, _ = _fitted(image, predictor="exact")
    m_grid, s_grid = model.predict(grid)
    m_arr, s_arr = model.predict(np.asarray(grid))
    np.testing.assert_allclose(m_grid, m_arr, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s_grid, s_arr, rtol=1e-4, atol=1e-4)
    assert model.last_grid is None


def test_the_grid_posterior_agrees_with_the_exact_one_and_says_how_well(image):
    """Tolerance: with 64 nodes per embedding axis, RMS differences below 0.5% of the standardised target's unit
    (mean) and below 1% of the exact std's RMS (std); the report's figures are those differences."""
    exact, grid, _, _ = _fitted(image, predictor="exact")
    m_e, s_e = exact.predict(grid, standardized=True)
    fast, _, _, _ = _fitted(image, predictor="grid", grid_size=64)
    m_g, s_g = fast.predict(grid, standardized=True)
    np.testing.assert_allclose(m_g, m_e, atol=0.2)              # same fit (same seed): the same posterior
    assert np.sqrt(np.mean((m_g - m_e) ** 2)) < 0.005
    assert np.sqrt(np.mean((s_g - s_e) ** 2)) < 0.01 * np.sqrt(np.mean(s_e ** 2))
    rep = fast.last_grid
    assert rep.n_checked == 256
    assert rep.mean_rms < 0.005 and rep.std_rms < 0.01 * rep.std_scale
    z = fast._embedded(grid)                                             # positions asked for exactly are exact
    gm, gs, _ = large.grid_posterior(fast.model, fast._factors, z, 8, 512, exact_at=np.array([3, 700]))
    em, es = large.exact_predict.predict_embedded(fast.model, fast._factors, z, 512)
    np.testing.assert_allclose(gm[[3, 700]], em[[3, 700]], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gs[[3, 700]], es[[3, 700]], rtol=1e-6, atol=1e-9)
    for grid_value, exact_value in ((gm, em), (gs, es), (gm + 2 * gs, em + 2 * es)):   # where policies decide
        assert np.argmax(grid_value) == np.argmax(exact_value)                        # even on an 8 x 8 grid
    coarse_only, _, _ = large.grid_posterior(fast.model, fast._factors, z, 8, 512, exact_top=0)
    assert np.abs(coarse_only - em).max() > 10 * np.abs(gm - em)[np.argsort(-gm)[:256]].max()
    coarse, _, _, _ = _fitted(image, predictor="grid", grid_size=8)
    coarse.predict(grid, standardized=True)
    assert coarse.last_grid.std_rms > rep.std_rms                  # a coarser grid is measurably worse


def test_the_training_subset_is_recent_high_and_random_and_the_posterior_uses_every_point():
    y = np.arange(1000.0)[::-1]        # the oldest points are the highest
    sub = large.training_subset(y, 200, torch.Generator().manual_seed(0))
    assert len(sub) == 200 and len(np.unique(sub)) == 200
    assert set(range(900, 1000)) <= set(sub)                       # the most recent half
    assert set(range(0, 50)) <= set(sub)                           # the highest quarter of the others
    np.testing.assert_array_equal(large.training_subset(y[:150], 200, torch.Generator()), np.arange(150))


def test_a_bounded_fit_conditions_the_posterior_on_all_points(image):
    model, grid, idx, y = _fitted(image, n=300, max_train=64, predictor="exact")
    assert model.model.train_inputs[0].shape[0] == 300
    mean, _ = model.predict(grid)
    assert np.corrcoef(mean[idx], y[idx])[0, 1] > 0.9               # every measured point informs the map


def test_a_trace_from_before_the_bounded_fit_is_rebuilt_as_it_ran():
    from napari_hae.core.record.schema import migrate_settings

    old = migrate_settings({"model": {"name": "dkl", "params": {"restart": "cold"}}})
    assert old["model"]["params"] == {"restart": "cold", "max_train": 100_000, "predictor": "exact",
                                      "refit_points": 0, "warp": "none", "kernel": "rbf",
                                      "noise": "learned", "embed_dim": 2}   # as it ran then
    new = {"model": {"name": "dkl", "params": {"restart": "cold", "max_train": 512, "predictor": "auto",
                                               "refit_points": 100, "warp": "log", "kernel": "matern",
                                               "noise": "counts", "embed_dim": 8}}}
    assert migrate_settings(new)["model"] == new["model"]


def test_a_grid_predictor_needs_a_2d_embedding():
    from napari_hae.core.errors import HAEInputError

    with pytest.raises(HAEInputError, match="predictor='grid' is not"):
        DKLRegressor(36, embed_dim=3, predictor="grid")


def test_a_run_with_the_grid_predictor_records_its_error_each_step(small_sample, tmp_path):
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.experiment import Experiment

    model = {"name": "dkl", "params": {"hidden": [32, 16], "predictor": "grid", "grid_size": 32}}
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3, model=model), journal=tmp_path / "j")
    exp.run()
    exp.close()
    err = Trace.load(tmp_path / "j").step_array("grid_mean_err")
    assert len(err) == 3 and np.all(np.isfinite(err))
    assert np.all(err < 0.01 * np.ptp(exp.trace.values))           # scalarizer units, small against the values
    exact = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1))
    exact.run()
    assert np.isnan(exact.trace.step_array("grid_mean_err")).all()


def test_above_refit_points_the_network_is_refitted_on_a_schedule_and_conditions_on_every_point(image):
    """n = 300 with refit_points 64: a refit every ceil(300 / 64) = 5 fits; in between no training (the weights stay
    as fitted), the new points enter the posterior, and the embedding of every position is reused."""
    y = _truth(image, 6)
    order = np.random.default_rng(0).permutation(image.size)
    grid = PatchGrid(image, 6)
    model = DKLRegressor(36, hidden=(16, 8), seed=0, max_train=64, refit_points=64, predictor="exact")
    trained = []
    for n in range(300, 306):
        idx = order[:n]
        before = [p.detach().clone() for p in model.model.feature_extractor.parameters()] if model.model else None
        rep = model.fit(grid[idx], y[idx], iterations=30, warm=True)
        trained.append(bool(rep.losses))
        assert model.model.train_inputs[0].shape[0] == n                 # the posterior sees every point
        if not rep.losses:
            assert all(torch.equal(a, b) for a, b in zip(before, model.model.feature_extractor.parameters()))
        z_first = model._embedded(grid)
        assert model._embedded(grid) is z_first                          # reused until the next fit
    assert trained == [True, False, False, False, False, True]
    rep = model.fit(grid[order[:307]], y[order[:307]], iterations=30, warm=True)
    assert not rep.losses
    # the posterior is the GP's on all 307 points, in the last fit's standardisation (computed here in numpy)
    gp = model.model.eval()
    with torch.no_grad():
        z, zs = gp.embed(torch.as_tensor(grid[order[:307]])), gp.embed(torch.as_tensor(grid[order[400:420]]))
        K, Ks = (gp.covar_module(a, z).to_dense().double().numpy() for a in (z, zs))
    noise, m = float(model.likelihood.noise), float(gp.mean_module.constant)
    yt = (y[order[:307]] - model.y_mean) / model.y_std
    expected = m + Ks @ np.linalg.solve(K + noise * np.eye(307), yt - m)
    np.testing.assert_allclose(model.predict(grid[order[400:420]], standardized=True)[0], expected, atol=2e-4)
    assert not DKLRegressor(36, refit_points=0)._reconditions(300)
    assert DKLRegressor(36)._reconditions(70) is False                   # the default: every step up to 100 points
    model.fit(grid[order[:308]], y[order[:308]], iterations=30, warm=False)     # an intervention: a full fit
    assert model._since_fit == 0


def test_maps_are_stored_every_k_steps_and_the_newest_always_kept(small_sample, tmp_path):
    """Per-step maps cost 12 MB a step at 1024 x 1024 (24 GB in 2,000 steps): they are stored every
    ``maps_every`` steps and at the last; the newest are kept in memory, written by save, and replay finds them."""
    from conftest import fast_settings
    from napari_hae.core.analysis.replay import replay_state
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.experiment import Experiment, ExperimentSettings

    assert ExperimentSettings().maps_every(96 * 96) == 1 and ExperimentSettings().maps_every(1024 * 1024) == 16
    assert ExperimentSettings(map_every=3).maps_every(1024 * 1024) == 3
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=6, map_every=2), journal=tmp_path / "j")
    results = list(exp.iter_steps(4))                                    # stopped after step index 3
    exp.close()
    tr = exp.trace
    assert tr.map_steps == [0, 2] and tr.latest_maps[0] == 3
    f32 = [{k: np.float32(getattr(r, k)) for k in ("mean", "std")} for r in results]   # maps are kept in float32
    np.testing.assert_array_equal(tr.map_at("mean", 3), f32[3]["mean"])
    assert tr.map_at("mean", 1) is None
    saved = Trace.load(tr.save(tmp_path / "t.h5"))
    assert saved.map_steps == [0, 2, 3]
    np.testing.assert_array_equal(saved.map_at("std", 3), f32[3]["std"])
    np.testing.assert_array_equal(replay_state(saved, 3).maps["mean"], f32[3]["mean"])
    assert Trace.load(tmp_path / "j").map_steps == [0, 2]                # the journal: the stored ones
    between = replay_state(saved, 1)                                    # a step without maps: the last before
    assert between.maps_step == 0 and np.array_equal(between.maps["mean"], f32[0]["mean"])
    full = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=4, map_every=3))
    full.run()
    assert full.trace.map_steps == [0, 3] and full.trace.latest_maps is None   # the budget's last step is stored


def test_the_complete_model_trains_on_all_its_points_not_the_runs_subset(small_sample, monkeypatch):
    """The complete model is 'what the run's model would believe with all data': the DKL's bounded training subset
    (256 points, the 'most recent' half of which would be the image's last rows here) must not apply to it."""
    from napari_hae.core.analysis.monitors import complete_model
    from napari_hae.core.model import base
    from napari_hae.core.targets.scalarizers import Scalarizer

    made = []
    real = base.make_model

    def spy(spec, *a, **kw):
        made.append(spec)
        return real(spec, *a, **kw)

    monkeypatch.setattr(base, "make_model", spy)
    truth = Scalarizer("band_integral", {"a": 1.2, "b": 2.25})(small_sample.spectra, small_sample.energies)
    mean, _ = complete_model(small_sample.structural, truth, 8, max_points=400, iterations=20)
    assert made[0]["params"]["max_train"] == 400 and mean.shape == truth.shape
