import numpy as np
import pytest

from napari_hae.core.analysis.metrics import r2_score
from napari_hae.core.model.dkl import DKLRegressor


def _blob_patches(n, rng, size=8):
    """Patches of a Gaussian blob with random amplitude a and offset b; target is smooth in (a, b)."""
    a = rng.uniform(0.5, 2.0, n)
    b = rng.uniform(-2.0, 2.0, n)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    blob = np.exp(-(yy**2 + xx**2) / (2 * 2.0**2))
    X = a[:, None, None] * blob[None] + 0.3 * b[:, None, None] * (xx / size)[None]
    X += 0.01 * rng.standard_normal(X.shape)
    y = np.sin(2.0 * a) + 0.5 * b**2
    return X.astype(np.float32), y


def test_dkl_learns_smooth_target_of_patch_content():
    rng = np.random.default_rng(0)
    X, y = _blob_patches(700, rng)
    model = DKLRegressor(64, seed=0)
    model.fit(X[:200], y[:200], iterations=400)
    mean, std = model.predict(X[200:])
    r2 = r2_score(y[200:], mean)
    assert r2 >= 0.9, r2
    assert np.all(std > 0) and np.all(np.isfinite(std))


def test_warm_start_continues_from_current_weights():
    rng = np.random.default_rng(1)
    X, y = _blob_patches(120, rng)
    model = DKLRegressor(64, seed=0, restart="warm", refit_points=0)   # every fit trains
    first = model.fit(X[:100], y[:100], iterations=100)
    second = model.fit(X[:110], y[:110], iterations=5)
    # a warm start begins near the converged loss, far below a fresh start's initial loss
    assert second.losses[0] < first.losses[0] - 0.2
    fresh = DKLRegressor(64, seed=0).fit(X[:110], y[:110], iterations=5)
    assert second.losses[0] < fresh.losses[0]


def test_constant_targets_do_not_crash():
    rng = np.random.default_rng(2)
    X, _ = _blob_patches(30, rng)
    model = DKLRegressor(64)
    model.fit(X, np.full(30, 3.0), iterations=20)
    mean, std = model.predict(X)
    np.testing.assert_allclose(mean, 3.0, atol=1e-3)
    assert np.all(np.isfinite(std))


def test_joint_sample_has_the_posterior_mean():
    rng = np.random.default_rng(3)
    X, y = _blob_patches(60, rng)
    model = DKLRegressor(64, dtype=__import__("torch").float64)
    model.fit(X[:40], y[:40], iterations=50)
    s = model.sample(X[40:], np.random.default_rng(0), n_samples=4000)
    zmean, zstd = model.predict(X[40:], standardized=True)
    np.testing.assert_allclose(s.mean(0), zmean, atol=5 * zstd.max() / np.sqrt(4000) + 1e-3)
    np.testing.assert_allclose(s.std(0), zstd, rtol=0.1, atol=1e-3)


def test_predict_before_fit_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not fitted"):
        DKLRegressor(4).predict(np.zeros((2, 4)))


def test_results_do_not_depend_on_a_changed_global_default_dtype():
    """AtomAI sets torch's process-wide default tensor type to float64; the DKL model must not follow it."""
    import torch

    rng = np.random.default_rng(4)
    X, y = _blob_patches(60, rng)
    ref = DKLRegressor(64, seed=0)
    ref.fit(X[:40], y[:40], iterations=30)
    mean_ref, std_ref = ref.predict(X[40:])
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        other = DKLRegressor(64, seed=0)
        other.fit(X[:40], y[:40], iterations=30)
        mean, std = other.predict(X[40:])
        assert torch.get_default_dtype() == torch.float64          # the caller's setting is left alone
    finally:
        torch.set_default_dtype(prev)
    np.testing.assert_array_equal(mean, mean_ref)
    np.testing.assert_array_equal(std, std_ref)
    assert other.model.covar_module.raw_outputscale.dtype == torch.float32


def test_cholesky_failure_is_retried_with_more_jitter(monkeypatch):
    """A non-PSD error during training is caught, retried with jitter, and reported."""
    from napari_hae.core.model import dkl as dkl_mod

    rng = np.random.default_rng(5)
    X, y = _blob_patches(40, rng)
    model = DKLRegressor(64, seed=0)
    calls = {"n": 0}
    original = DKLRegressor._train_loop

    def flaky(self, x, yt, iterations, report, jitter):
        calls["n"] += 1
        if calls["n"] == 1:
            raise dkl_mod.NotPSDError("Matrix not positive definite after repeatedly adding jitter")
        return original(self, x, yt, iterations, report, jitter)

    monkeypatch.setattr(DKLRegressor, "_train_loop", flaky)
    report = model.fit(X, y, iterations=20)
    assert report.retries == 1 and "jitter" in report.events[0]
    mean, std = model.predict(X)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(std))


@pytest.mark.parametrize("n", [5, 40])
def test_the_training_loss_is_gpytorchs_exact_marginal_log_likelihood(n):
    """The fit trains on a plain-torch loss (37% faster): it must be gpytorch's -mll / n, value and gradient, also
    when the jitter setting of a retry is on."""
    import contextlib

    import gpytorch
    import torch

    rng = np.random.default_rng(n)
    X, y = _blob_patches(n, rng)
    model = DKLRegressor(64, seed=1)
    model.fit(X, y, iterations=5)
    gp, lik = model.model, model.likelihood
    x, yt = gp.train_inputs[0], gp.train_targets
    gp.train()
    lik.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, gp)
    for jitter in (None, 1e-3):
        ctx = gpytorch.settings.cholesky_jitter(float_value=jitter) if jitter else contextlib.nullcontext()
        with ctx:
            ours, theirs = gp.exact_loss(x, yt), -mll(gp(x), yt)
            g_ours = torch.autograd.grad(ours, list(gp.parameters()), allow_unused=True)
            g_theirs = torch.autograd.grad(theirs, list(gp.parameters()), allow_unused=True)
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5, abs=1e-6)
        for a, b in zip(g_ours, g_theirs, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=1e-5)


def test_a_model_with_priors_trains_on_gpytorchs_loss_with_its_prior_terms(monkeypatch):
    """Priors add their log densities to gpytorch's loss, which the plain loss leaves out: with priors the fit
    must not call it."""
    import napari_hae.core.model.dkl as dkl_mod

    called = []
    monkeypatch.setattr(dkl_mod._DKLModel, "exact_loss", lambda *a: called.append(1))
    rng = np.random.default_rng(3)
    X, y = _blob_patches(20, rng)
    DKLRegressor(64, seed=0, priors=True).fit(X, y, iterations=3)
    assert called == []
