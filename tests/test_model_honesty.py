"""Surrogates whose uncertainty is honest: robust target scaling, cold restarts, the DKL ensemble."""

import numpy as np
import pytest

from napari_hae.core.errors import HAEInputError
from napari_hae.core.model import make_model
from napari_hae.core.model.base import robust_targets
from napari_hae.core.model.dkl import DKLRegressor
from napari_hae.core.model.ensemble import DKLEnsemble
from test_dkl import _blob_patches


def test_ordinary_targets_are_scaled_by_their_mean_and_std_and_not_clipped():
    y = np.random.default_rng(0).gamma(1.5, 10.0, 500)
    clipped, offset, scale, n = robust_targets(y)
    assert n == 0 and np.array_equal(clipped, y)
    assert (offset, scale) == pytest.approx((y.mean(), y.std()), rel=1e-12)


def test_the_sample_targets_are_inside_the_fence(small_sample):
    from napari_hae.core.targets.scalarizers import Scalarizer

    y = np.asarray(small_sample.scalarize(Scalarizer("band_integral", {"a": 1.2, "b": 2.25}))).ravel()
    assert robust_targets(y)[3] == 0


def test_one_wild_target_does_not_set_the_scale():
    """A failed background fit gave -2e6 among band integrals of order 10: the plain std (2.8e5) would map every
    other target to ~0."""
    rng = np.random.default_rng(1)
    y = rng.normal(10.0, 3.0, 50)
    y[7] = -2e6
    clipped, offset, scale, n = robust_targets(y)
    assert n == 1 and y.std() > 2e5
    assert 2.5 < scale < 25.0 and abs(offset - 10.0) < 10.0
    assert np.std(((clipped - offset) / scale)[np.arange(50) != 7]) > 0.1


def test_a_second_population_is_not_clipped_as_outliers():
    """Nion's simulated STEM: a third of the first spectra fall on particles (band integrals ~1e6), the rest on
    vacuum (~0 with tiny noise); the fence clipped the particles, the very targets the run looks for."""
    rng = np.random.default_rng(2)
    y = np.concatenate([rng.normal(0.0, 1e-3, 6), rng.normal(1e6, 1e4, 3)])
    clipped, offset, scale, n = robust_targets(y)
    assert n == 0 and np.array_equal(clipped, y)
    assert (offset, scale) == pytest.approx((y.mean(), y.std()), rel=1e-12)


def test_dkl_still_learns_the_other_targets_beside_one_outlier():
    rng = np.random.default_rng(0)
    X, y = _blob_patches(81, rng)
    y = y.copy()
    y[0] = -2e6
    model = DKLRegressor(64, seed=0)
    rep = model.fit(X[:80], y[:80], iterations=200)
    assert rep.events and "1 training target(s) lie beyond 50 robust standard deviations" in rep.events[0]
    assert not model.fit(X[:80], y[:80], iterations=1).events   # said once, not every step
    model.fit(X[:80], y[:80], iterations=200, warm=False)
    mean, _ = model.predict(X[1:80])
    assert np.corrcoef(mean, y[1:80])[0, 1] > 0.35   # 0.07 when the outlier set the scale


def test_cold_restart_starts_every_fit_from_fresh_weights():
    rng = np.random.default_rng(1)
    X, y = _blob_patches(120, rng)
    # cold: the default; refit_points=0: every fit trains (past 100 points the schedule would only condition)
    warm, cold = DKLRegressor(64, seed=0, restart="warm", refit_points=0), DKLRegressor(64, seed=0, refit_points=0)
    warm.fit(X[:100], y[:100], iterations=100)
    cold.fit(X[:100], y[:100], iterations=100)
    w2 = warm.fit(X[:110], y[:110], iterations=5, warm=True)
    c2 = cold.fit(X[:110], y[:110], iterations=5, warm=True)
    assert c2.losses[0] > w2.losses[0] + 0.2     # the cold model began again from an untrained network


def test_restart_value_is_checked():
    with pytest.raises(HAEInputError, match=r"The model 'dkl' got restart='hot'.*use one of \['cold', 'warm'\]"):
        DKLRegressor(4, restart="hot")


def test_ensemble_mixture_mean_and_variance():
    rng = np.random.default_rng(2)
    X, y = _blob_patches(60, rng)
    ens = make_model({"name": "dkl_ensemble", "params": {"members": 3}}, 64, seed=0)
    assert isinstance(ens, DKLEnsemble)
    ens.fit(X[:40], y[:40], iterations=40, warm=False)
    post = ens.posterior(X)
    means = np.array([m.predict(X)[0] for m in ens.members])
    vars_ = np.array([m.predict(X)[1] ** 2 for m in ens.members])
    np.testing.assert_allclose(post.mean, means.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(post.std ** 2, vars_.mean(0) + means.var(0), rtol=1e-5, atol=1e-9)
    assert np.all(post.std ** 2 >= vars_.mean(0) - 1e-9)   # disagreement only adds
    unit_mean, _ = post.in_units()
    assert np.corrcoef(unit_mean[40:], y[40:])[0, 1] > 0.5
    assert post.noise > 0


def test_ensemble_members_differ_and_thompson_draws_from_one():
    rng = np.random.default_rng(3)
    X, y = _blob_patches(40, rng)
    ens = DKLEnsemble(64, members=2, seed=0)
    ens.fit(X, y, iterations=20, warm=False)
    a, b = (m.predict(X)[0] for m in ens.members)
    assert not np.allclose(a, b)
    draw = ens.posterior(X).sample(np.arange(5), np.random.default_rng(0))
    assert draw.shape == (5,) and np.all(np.isfinite(draw))


def test_ensemble_needs_two_members():
    with pytest.raises(HAEInputError, match="members=1 is not a whole number >= 2"):
        DKLEnsemble(4, members=1)


def test_a_run_with_the_ensemble_resumes_with_it(small_sample, tmp_path):
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    s = fast_settings(model={"name": "dkl_ensemble", "params": {"members": 2, "hidden": [16]}}, budget=3)
    exp = Experiment(SimulatedMicroscope(small_sample), s, journal=tmp_path / "j")
    exp.run(2)
    exp.close()
    again = Experiment.resume(tmp_path / "j", SimulatedMicroscope(small_sample))
    again.run()
    assert isinstance(again.model, DKLEnsemble) and again.trace.n_steps == 3
    assert np.all(np.isfinite(again.trace.step_array("noise_std")))
    again.close()


def test_a_run_records_its_model_parameters_in_full(small_sample, tmp_path):
    """A default changed later must not change what a recorded run rebuilds."""
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.experiment import Experiment

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1), journal=tmp_path / "j")
    exp.run()
    exp.close()
    params = Trace.load(tmp_path / "j").settings["model"]["params"]
    assert params == {"hidden": [32, 16], "embed_dim": 8, "kernel": "matern", "lr": 0.01, "restart": "cold",
                      "priors": False, "threads": 1, "predictor": "auto", "grid_size": 32, "max_train": 256,
                      "predict_threads": 0, "refit_points": 100, "warp": "log", "device": "auto",
                      "noise": "learned"}


def test_the_embedding_is_eight_dimensional_up_to_128_by_128_positions_and_two_above():
    """embed_dim="auto" is written out from the scan's size before the run records its settings; a model built
    outside a run takes the large scans' 2 (the grid predictor's)."""
    from napari_hae.core.run.experiment import resolved_settings

    assert [resolved_settings(None, None, True, n).model.params["embed_dim"] for n in (2_000, 128 * 128,
                                                                                        128 * 128 + 1)] == [8, 8, 2]
    assert resolved_settings({"model": {"name": "dkl", "params": {"embed_dim": 3}}}, None, True,
                             100).model.params["embed_dim"] == 3   # the user's own number is kept
    assert "embed_dim" not in resolved_settings({"model": {"name": "gp"}}, None, True, 100).model.params
    grid = {"model": {"name": "dkl", "params": {"predictor": "grid"}}}   # the grid predictor is 2-D
    assert resolved_settings(grid, None, True, 100).model.params["embed_dim"] == 2
    assert DKLRegressor(16).embed_dim == 2 and DKLRegressor(16, embed_dim=5).embed_dim == 5


@pytest.mark.parametrize("bad", [0, 17, 2.5, "two"])
def test_an_embedding_dimension_that_is_not_auto_or_1_to_16_is_refused(bad):
    with pytest.raises(HAEInputError, match=rf"Model 'dkl': embed_dim={bad!r} is not 'auto' or a whole number "
                                            r"from 1 to 16\..*Fix: use --model-param embed_dim=auto"):
        DKLRegressor(16, embed_dim=bad)


def test_a_run_builds_and_resumes_the_embedding_it_recorded(small_sample, tmp_path):
    """The 48 x 48 sample: an 8-D embedding recorded and rebuilt on resume, also once the default would differ."""
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.model import dkl
    from napari_hae.core.run.experiment import Experiment

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2), journal=tmp_path / "j")
    exp.run(1)
    assert exp.model.embed_dim == 8 and exp.trace.settings["model"]["params"]["embed_dim"] == 8
    exp.close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dkl, "EMBED_AUTO", {"small": 3, "large": 3})   # a later default
        again = Experiment.resume(tmp_path / "j", SimulatedMicroscope(small_sample))
        again.run()
    assert again.model.embed_dim == 8 and again.trace.n_steps == 2
    again.close()


def test_a_trace_from_before_the_auto_embedding_resumes_two_dimensional():
    from napari_hae.core.record.schema import migrate_settings

    old = {"model": {"name": "dkl", "params": {"hidden": [64, 32], "restart": "cold", "max_train": 256,
                                               "predictor": "auto", "refit_points": 100, "warp": "log",
                                               "kernel": "matern", "noise": "learned"}}}
    assert migrate_settings(old)["model"]["params"]["embed_dim"] == 2
    assert migrate_settings({"model": {"name": "dkl", "params": {**old["model"]["params"], "embed_dim": 8}}}
                            )["model"]["params"]["embed_dim"] == 8


def test_a_trace_from_before_the_cold_default_resumes_warm(small_sample, tmp_path):
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.experiment import Experiment

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2))
    exp.run(1)
    exp.trace.settings["model"]["params"].pop("restart")      # as recorded before the cold default
    exp.trace.save(tmp_path / "old.h5")
    old = Trace.load(tmp_path / "old.h5")
    assert old.settings["model"]["params"]["restart"] == "warm"
    again = Experiment.resume(old, SimulatedMicroscope(small_sample))
    assert again.model.restart == "warm"
    again.close()


@pytest.mark.parametrize("kernel", ["rbf", "matern"])
def test_the_short_exact_posterior_is_gpytorchs(kernel):
    """Prediction factorises once per fit and solves once per batch; it must be the same posterior as gpytorch's
    exact prediction (float32 model; agreement to float32 precision of the standardized values)."""
    import gpytorch
    import torch

    rng = np.random.default_rng(4)
    X, y = _blob_patches(300, rng)
    model = DKLRegressor(64, seed=0, kernel=kernel)
    model.fit(X[:120], y[:120], iterations=80)
    mean, std = model.predict(X, batch_size=64, standardized=True)
    model.model.eval()
    with torch.no_grad(), gpytorch.settings.max_cholesky_size(8192):
        post = model.model(torch.as_tensor(X.reshape(300, -1)))
        ref_mean, ref_std = post.mean.double().numpy(), post.variance.clamp_min(0).sqrt().double().numpy()
    np.testing.assert_allclose(mean, ref_mean, atol=2e-3 * np.abs(ref_mean).max())
    np.testing.assert_allclose(std, ref_std, atol=2e-3 * ref_std.max())
    assert np.all(std[:120] < std[120:].max())   # measured inputs are the least uncertain
    factors = model._factors
    again = model.predict(X[:5], batch_size=64, standardized=True)
    assert model._factors is factors                    # factorised once per fit, not per call
    np.testing.assert_allclose(again[0], mean[:5], rtol=1e-5, atol=1e-6)   # float32 MLP: batch-size rounding
    model.fit(X[:150], y[:150], iterations=10)
    assert model._factors is None                       # a new fit discards them
