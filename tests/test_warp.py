"""Issue 16: the DKL models positive targets on a log scale (the misfit is relative, so the intervals follow the
level); the posterior carries the warp, so policies, maps and the calibration monitor agree on it."""

import numpy as np
import pytest

from napari_hae.core.model.base import Posterior
from napari_hae.core.model.dkl import DKLRegressor
from napari_hae.core.model.warp import LOG, NONE, choose


def test_log_intervals_are_the_central_quantiles_of_the_predictive_distribution():
    rng = np.random.default_rng(0)
    c, s = np.log(40.0), 0.7
    draws = np.exp(rng.normal(c, s, 200_000))   # a log-normal predictive distribution
    median, half = LOG.to_units(c, s)
    assert median == pytest.approx(40.0) and half == pytest.approx(40.0 * np.sinh(0.7))
    inside = (draws >= LOG.inverse(c - s)) & (draws <= LOG.inverse(c + s))
    assert inside.mean() == pytest.approx(0.6827, abs=0.005)
    # the posterior's z-scores are those quantiles: |z| <= 1 exactly inside the 68% interval
    post = Posterior(mean=np.full(3, 0.5), std=np.full(3, 0.6), noise=0.8, offset=np.log(40.0) - 0.35, scale=0.7,
                     warp=LOG)
    assert post.in_units()[0] == pytest.approx(np.full(3, 40.0))
    z = post.z_scores(np.array([40.0, 40.0 * np.exp(0.7), 40.0 * np.exp(-1.4)]))
    np.testing.assert_allclose(z, [0.0, 1.0, -2.0], atol=1e-12)   # spread: hypot(0.6, 0.8) x 0.7 = 0.7
    assert NONE.to_units(np.array([2.0]), np.array([3.0])) == (2.0, 3.0)


def test_the_warp_is_log_only_while_every_target_is_positive():
    assert choose([1.0, 5.0, 300.0], "log") == (LOG, [])
    assert choose([1.0, 5.0, 300.0], "none") == (NONE, [])
    assert choose([-1.0, 5.0], "log") == (NONE, [])           # a first fit: nothing to tell
    warp, events = choose([0.0, 5.0], "log", before=LOG)
    assert warp is NONE and events == ["a target <= 0 (min 0): the model fits the targets on their own scale from "
                                       "here, not on a log scale"]
    assert choose([2.0, 5.0], "log", before=NONE)[1] == ["the model fits the targets on a log scale again (all are "
                                                         "> 0)"]


@pytest.fixture
def problem():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 16))
    y = np.exp(1.5 * np.tanh(X[:, 0]) + 0.1 * rng.normal(size=60)) * 10   # positive, varying by factors
    return X, y


def test_a_dkl_fitted_on_positive_targets_predicts_medians_in_units(problem):
    X, y = problem
    model = DKLRegressor(16, seed=0, hidden=(16,))
    model.fit(X, y, iterations=40, warm=False)
    post = model.posterior(X)
    assert post.warp is LOG and model.hyperparameters()["noise"] > 0
    mean, std = model.predict(X)
    np.testing.assert_allclose((mean, std), post.in_units(), rtol=1e-12)
    assert np.all(mean > 0)                                                # a median of positive targets
    assert np.median(np.abs(np.log(mean / y))) < 0.3                       # fits on the log scale
    assert post.standardize(y[:1]) == pytest.approx((np.log(y[0]) - post.offset) / post.scale)


def test_a_target_below_zero_switches_the_model_to_the_targets_own_scale_and_says_so(problem):
    X, y = problem
    model = DKLRegressor(16, seed=0, hidden=(16,), refit_points=20)   # above 20 points: conditioning steps
    model.fit(X[:40], y[:40], iterations=20, warm=False)
    assert model.posterior(X).warp is LOG
    y2 = np.append(y[:40], -3.0)
    rep = model.fit(X[:41], y2, iterations=20, warm=True)   # a conditioning step would take log(-3): refits
    assert model.posterior(X).warp is NONE and any("a target <= 0 (min -3)" in e for e in rep.events)
    mean, std = model.predict(X)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))
    model_none = DKLRegressor(16, seed=0, hidden=(16,), warp="none")
    model_none.fit(X, y, iterations=5, warm=False)
    assert model_none.posterior(X).warp is NONE


@pytest.mark.slow
def test_on_the_sample_the_log_scale_calibrates_where_the_targets_own_scale_did_not(sample):
    """Issue 16's calibration acceptance on fixed training sets: the 50 points that ten default runs had measured
    (recorded in tests/data), the model fitted once as it was before (targets on their own scale, RBF kernel) and
    once with today's defaults (log scale, Matern 5/2). Before, the intervals were too wide on the background
    (1-sigma coverage 0.95) and too narrow on the top 1% (0.65); now 0.80 and 0.79 (docs/performance.md has the
    benchmark's figures over whole runs)."""
    import json
    from pathlib import Path

    from napari_hae.core.analysis.metrics import top_mask
    from napari_hae.core.data.patches import PatchGrid
    from napari_hae.core.data.samples.nanoparticles import BANDS
    from napari_hae.core.targets.scalarizers import Scalarizer

    truth = Scalarizer("band_integral", dict(zip("ab", BANDS["dipole"])))(sample.spectra, sample.energies).ravel()
    top = top_mask(truth.reshape(sample.scan_shape), 0.01).ravel()
    grid = PatchGrid(np.asarray(sample.structural, dtype=np.float64), 16)
    runs = json.loads((Path(__file__).parent / "data" / "sample_n50_positions.json").read_text())["runs"]
    cov = {"now": [], "before": []}
    params = {"now": {}, "before": {"warp": "none", "kernel": "rbf"}}
    for seed, pos in runs.items():
        idx = np.asarray(pos)[:, 0] * sample.scan_shape[1] + np.asarray(pos)[:, 1]
        unmeasured = np.ones(truth.size, bool)
        unmeasured[idx] = False
        for which in cov:
            model = DKLRegressor(grid.shape[1], seed=int(seed), **params[which])
            model.fit(np.asarray(grid[idx]), truth[idx], iterations=60, warm=False)
            z = np.abs(model.posterior(grid).z_scores(truth))
            cov[which].append((np.mean(z[unmeasured] <= 1), np.mean(z[unmeasured & top] <= 2)))
    now, before = np.mean(cov["now"], 0), np.mean(cov["before"], 0)
    assert before[0] > 0.9 and before[1] < 0.7                  # the defect: too wide overall, too narrow on top
    assert 0.6 <= now[0] <= 0.85 and now[1] >= 0.7 and now[1] > before[1] + 0.05


def test_the_floored_matern_kernel_is_gpytorchs_until_its_values_are_negligible():
    import gpytorch
    import torch

    from napari_hae.core.model.kernels import EXP_FLOOR, FloorMaternKernel

    torch.manual_seed(0)
    x1, x2 = torch.randn(50, 2, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64) * 3
    ours, theirs = FloorMaternKernel(ard_num_dims=2).double(), gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=2)
    theirs = theirs.double()
    for k in (ours, theirs):
        k.lengthscale = torch.tensor([[0.05, 0.08]], dtype=torch.float64)   # many pairs far apart
    a, b = ours(x1, x2).to_dense().detach(), theirs(x1, x2).to_dense().detach()
    floor = float((1 + 30 + 30**2 / 3) * np.exp(EXP_FLOOR))                  # the kernel at the capped distance
    near = b > floor
    assert near.any() and (~near).any()
    torch.testing.assert_close(a[near], b[near], rtol=1e-9, atol=0)
    assert torch.all(a[~near] == a[~near].max()) and float(a[~near].max()) == pytest.approx(floor, rel=1e-9)
    assert torch.allclose(ours(x1, x1, diag=True), torch.ones(50, dtype=torch.float64))


@pytest.mark.parametrize("warp", ["log", "none"])
def test_the_grid_predictors_error_is_reported_in_scalarizer_units(warp):
    """The recorded grid error (`grid_mean_err`, `grid_std_err`) is in scalarizer units: on a log-scale model the
    standardised differences are log ratios, and the scale alone would not turn them into counts."""
    from napari_hae.core.data.patches import PatchGrid
    from napari_hae.core.model import exact_predict, large

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:52]
    image = np.sin(yy / 4.0) * np.cos(xx / 6.0) + 0.3 * rng.standard_normal((40, 52))
    grid = PatchGrid(image, 6)
    y = 50.0 * np.exp(np.asarray(grid).mean(1))                         # positive, varying by factors
    idx = np.random.default_rng(0).choice(image.size, 120, replace=False)
    model = DKLRegressor(36, hidden=(16, 8), seed=0, predictor="grid", grid_size=8, warp=warp)
    model.fit(grid[idx], y[idx], iterations=60, warm=False)
    model.predict(grid)
    rep = model.last_grid
    assert np.isfinite(rep.mean_units) and rep.mean_units > 0
    units = lambda m, s: model.warp.to_units(m * model.y_std + model.y_mean, s * model.y_std)   # noqa: E731
    z = model._embedded(grid)
    mean, std, again = large.grid_posterior(model.model, model._factors, z, 8, 1024, exact_top=0, units=units,
                                            rng=np.random.default_rng(model.n_fits))
    check = np.random.default_rng(model.n_fits).choice(len(z), size=256, replace=False)   # the report's positions
    em, es = exact_predict.predict_embedded(model.model, model._factors, z[check], 1024)
    (gm_u, gs_u), (em_u, es_u) = units(mean[check], std[check]), units(em, es)
    assert again.mean_units == pytest.approx(np.sqrt(np.mean((gm_u - em_u) ** 2)), rel=1e-9)
    assert again.std_units == pytest.approx(np.sqrt(np.mean((gs_u - es_u) ** 2)), rel=1e-9)
    if warp == "none":
        assert rep.mean_units == pytest.approx(rep.mean_rms * model.y_std, rel=1e-9)
    else:   # a log ratio is not counts: the old record (mean_rms x scale) was ~level times too small
        assert rep.mean_units > 5 * rep.mean_rms * model.y_std
