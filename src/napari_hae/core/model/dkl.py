"""Deep kernel learning: an MLP over flattened patches feeding a GP kernel (exact GP, gpytorch).

Follows the GPyTorch DKL example and scikit-learn's fit/predict conventions. Targets are standardised internally;
:meth:`DKLRegressor.predict` returns mean and std in the units of ``y`` unless ``standardized=True``.
Every fit starts from fresh weights by default (``restart="cold"``): continuing from the previous step's weights
(``restart="warm"``, the earlier default) let the embedding overtrain step after step until the model was
confidently wrong where the targets are (2-sigma coverage 0.41-0.50 on unmeasured positions at n = 50, 0.01-0.07
on the top 1%, on the sample and both real datasets; cold: 0.99-1.00 and 0.52-0.94; benchmarks/discovery.py).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings

import gpytorch
import numpy as np
import torch
from linear_operator.utils.cholesky import psd_safe_cholesky

try:  # linear_operator >= 0.5
    from linear_operator.utils.errors import NanError, NotPSDError
except ImportError:  # pragma: no cover
    from gpytorch.utils.errors import NanError, NotPSDError

from ..data.patches import PatchGrid
from ..registry import ParamSpec
from . import compute, exact_predict, large
from . import warp as _warp
from .base import MODELS, FitReport, Posterior, clip_event, register_model, robust_targets
from .kernels import FloorMaternKernel, FloorRBFKernel
from .noise import KnownNoise, learned_noise, with_noise

log = logging.getLogger(__name__)


class MLPFeatureExtractor(torch.nn.Sequential):
    """Flattened patch (N*N) -> ReLU MLP -> embedding (``embed_dim``)."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...] = (64, 32), embed_dim: int = 2):
        layers: list[torch.nn.Module] = []
        dims = (input_dim, *hidden)
        for i in range(len(hidden)):
            layers += [torch.nn.Linear(dims[i], dims[i + 1]), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(dims[-1], embed_dim))
        super().__init__(*layers)


KERNELS = {"matern": FloorMaternKernel, "rbf": FloorRBFKernel}   # the kernel choices, here only
RESTARTS = ("cold", "warm")
NOISES = ("learned", "counts")


class _DKLModel(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, extractor, embed_dim, kernel, priors=False):
        super().__init__(x, y, likelihood)
        self.feature_extractor = extractor
        self.scale_to_bounds = gpytorch.utils.grid.ScaleToBounds(-1.0, 1.0)
        self.mean_module = gpytorch.means.ConstantMean()
        ls_prior = gpytorch.priors.GammaPrior(3.0, 6.0) if priors else None
        base = KERNELS[kernel](ard_num_dims=embed_dim, lengthscale_prior=ls_prior)
        self.covar_module = gpytorch.kernels.ScaleKernel(
            base, outputscale_prior=gpytorch.priors.GammaPrior(2.0, 0.15) if priors else None)

    def embed(self, x):
        return self.scale_to_bounds(self.feature_extractor(x))

    def forward(self, x):
        z = self.embed(x)
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    def exact_loss(self, x, y):
        """-(marginal log-likelihood of ``y`` at ``x``) / n, as gpytorch's ``ExactMarginalLogLikelihood`` computes
        it for this Gaussian likelihood without priors (the same Cholesky, linear_operator's ``psd_safe_cholesky``
        with its jitter setting), in plain torch: the lazy-tensor machinery around it was 40% of a fit on 20
        points, and the fit is what a live instrument waits for."""
        z = self.embed(x)
        with gpytorch.settings.lazily_evaluate_kernels(False):
            cov = self.covar_module(z).to_dense()
        n = y.shape[-1]
        cov = with_noise(cov, self.likelihood)
        r = y - self.mean_module(z)
        chol = psd_safe_cholesky(cov)
        alpha = torch.cholesky_solve(r.unsqueeze(-1), chol).squeeze(-1)
        return 0.5 * (r @ alpha + 2.0 * torch.log(torch.diagonal(chol)).sum() + n * math.log(2.0 * math.pi)) / n


GRID_WORK = 10_000_000   # positions x measured points from which predictor="auto" takes the grid
LARGE_SCAN = 65_536      # positions (256 x 256) from which prediction uses the process's threads
# embed_dim="auto": 8 dimensions on scans of up to 128 x 128 positions, where the posterior is exact at every
# position; 2 above, where the grid predictor (2-D only) keeps a step under a second. On the 7 discovery tasks
# (12-24 runs each) 8 found the top 1% sooner on three, as soon on three and 1.5 measurements later on one; on
# the C K / Si K ratio 23-29 measurements against 50-56 (docs/performance.md, issue 27).
EMBED_AUTO = {"small": 8, "large": 2}
EMBED_SMALL_SCAN = 128 * 128


def embed_dim_for(n_positions: int | None) -> int:
    """The embedding's dimension ``embed_dim="auto"`` stands for on a scan of ``n_positions`` (None: not known,
    the large scans' 2)."""
    small = n_positions is not None and n_positions <= EMBED_SMALL_SCAN
    return EMBED_AUTO["small" if small else "large"]


@register_model("dkl", params=(
    ParamSpec("hidden", None, "", help="hidden layer widths of the MLP"),
    ParamSpec("embed_dim", None, "", help="dimension of the embedding fed to the kernel, 1-16; 'auto': "
                                           f"{EMBED_AUTO['small']} on scans of up to {EMBED_SMALL_SCAN:,} positions "
                                           f"(128 x 128), {EMBED_AUTO['large']} above and with predictor='grid' "
                                           "(the grid predictor's)"),
    ParamSpec("kernel", None, "", help="'matern' (5/2) or 'rbf'", choices=tuple(KERNELS)),
    ParamSpec("lr", None, "", 1e-5, 1.0, "Adam learning rate"),
    ParamSpec("restart", None, "", help="'cold': every fit starts from fresh weights (calibrated uncertainty); "
                                           "'warm': later fits continue from the current weights (faster, but "
                                           "the embedding overtrains and the model becomes overconfident)",
              choices=RESTARTS),
    ParamSpec("warp", None, "", help="'log': the GP models log(target) while every target is > 0 (relative "
                                        "misfit: calibrated on counts); 'none': the target as it is",
              choices=_warp.MODES),
    ParamSpec("priors", None, "", help="weak priors on lengthscale, outputscale and noise (as BoTorch's)"),
    ParamSpec("noise", None, "", help="'counts': each measured value's counting variance (Poisson redraws of its "
                                         "spectrum, where the spectra are counts) is a floor of its noise, a learned "
                                         "variance added; 'learned': one noise variance, learned", choices=NOISES),
    ParamSpec("predictor", None, "", help="'exact' posterior at every position, 'grid': exact on a grid in the "
                                             "2-D embedding, interpolated (error measured each step); 'auto': "
                                             f"grid from {GRID_WORK:.0e} positions x points"),
    ParamSpec("grid_size", None, "", 8, 512, "grid nodes per embedding axis of the grid predictor"),
    ParamSpec("max_train", None, "", 16, 100_000, "points the network and hyperparameters train on (the most "
                                                 "recent half, the highest quarter, the rest at random); the "
                                                 "posterior conditions on all"),
    ParamSpec("refit_points", None, "", 0, 100_000, "above this many points, network and hyperparameters are "
                                                   "refitted every ceil(n / refit_points) steps, the posterior "
                                                   "conditioned on every point in between; 0: every step"),
    ParamSpec("threads", None, "", 1, 256, "torch threads for fitting, fixed so that a run's picks do not depend on "
                                        "the machine's core count (recorded with the model)"),
    ParamSpec("device", None, "", help="'auto': the first CUDA GPU when torch sees one (the CPU if it fails there), "
                                         "else the CPU; 'cpu'; 'cuda' or 'cuda:N'"),
    ParamSpec("predict_threads", None, "", 0, 256, "torch threads for prediction; 0: 'threads' below 256 x 256 "
                                                "positions, the process's above (the CLI: all cores, the dock: all "
                                                "but one; the posterior differs by ~1e-12 relative between counts)"),
))
class DKLRegressor(large.ScalableFit, compute.OnDevice):
    """DKL Gaussian-process regressor for patch -> scalar.

    Parameters
    ----------
    input_dim : length of a flattened patch (N*N).
    embed_dim : dimension of the learned embedding fed to the kernel; "auto" (the default): a run writes out
        :func:`embed_dim_for` its scan (:meth:`for_scan`), a model built outside a run takes the large scans' 2
        (AtomAI's).
    hidden : hidden layer widths of the MLP.
    kernel : "matern" (nu = 5/2) or "rbf", scaled, with one lengthscale per embedding dimension.
    lr : Adam learning rate for network and GP hyperparameters jointly.
    seed : torch seed for the weight initialisation.
    dtype : torch.float32 (default) or torch.float64.
    """

    def __init__(self, input_dim: int, *, embed_dim: int | str = "auto", hidden: tuple[int, ...] = (64, 32),
                 kernel: str = "matern", lr: float = 0.01, seed: int = 0, dtype=torch.float32,
                 max_retries: int = 3, threads: int = 1, restart: str = "cold", priors: bool = False,
                 predictor: str = "auto", grid_size: int = 32, max_train: int = 256, predict_threads: int = 0,
                 refit_points: int = 100, warp: str = "log", device: str = "auto", noise: str = "learned"):
        from ..errors import HAEInputError

        try:
            hidden = tuple(hidden) if not isinstance(hidden, (int, float, str)) else (hidden,)
        except TypeError:
            hidden = (hidden,)
        if not all(type(h) is int and h >= 1 for h in hidden):
            raise HAEInputError(f"Model 'dkl': hidden={list(hidden)} is not a list of layer widths >= 1.",
                                "give whole numbers >= 1, e.g. --model-param hidden=[64,32].")
        if type(threads) is not int or threads < 1:
            raise HAEInputError(f"Model 'dkl': threads={threads!r} is not a whole number >= 1.",
                                "use --model-param threads=1 (the same picks whatever the core count) or more.")
        embed_dim = embed_dim_for(None) if embed_dim == "auto" else embed_dim
        if type(embed_dim) is not int or not 1 <= embed_dim <= 16:
            raise HAEInputError(f"Model 'dkl': embed_dim={embed_dim!r} is not 'auto' or a whole number from 1 to 16.",
                                "use --model-param embed_dim=auto (or e.g. embed_dim=8).")
        if predictor not in ("auto", "exact", "grid") or (predictor == "grid" and embed_dim != 2):
            raise HAEInputError(f"Model 'dkl': predictor={predictor!r} is not 'auto', 'exact' or 'grid' (the grid "
                                "needs embed_dim=2).", "use --model-param predictor=auto, exact or grid.")
        MODELS.check_params("dkl", {"kernel": kernel, "restart": restart, "warp": warp, "noise": noise})
        self.threads, self.warp_mode, self.warp = threads, warp, _warp.NONE
        self.noise_mode, self.known = noise, None   # the training targets' known noise (:mod:`.noise`), this fit
        self.device_spec, self.device = str(device), compute.resolve(device)
        self.restart = restart
        self.predictor, self.grid_size, self.max_train = predictor, int(grid_size), int(max_train)
        self.predict_threads, self.refit_points = int(predict_threads), int(refit_points)
        self.last_grid: large.GridReport | None = None   # the grid predictor's measured error, last prediction
        self.priors = bool(priors)
        self.input_dim = int(input_dim)
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.kernel = kernel
        self.lr = float(lr)
        self.seed = int(seed)
        self.dtype = dtype
        self.max_retries = int(max_retries)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.model: _DKLModel | None = None
        self.likelihood: gpytorch.likelihoods.GaussianLikelihood | None = None
        self.y_mean = 0.0
        self.y_std = 1.0
        self.n_fits = 0
        self.n_clipped = 0
        self._factors = None   # exact_predict.TrainingFactors of the current fit
        self._last_fit = None

    @classmethod
    def for_scan(cls, params: dict, n_positions: int) -> dict:
        """``params`` with ``embed_dim="auto"`` written out for a scan of ``n_positions`` (:class:`.base.SizedByScan`:
        the run records the number it ran with); with the grid predictor asked for, the grid's 2."""
        if params.get("embed_dim") == "auto":
            grid = params.get("predictor") == "grid"
            params = {**params, "embed_dim": embed_dim_for(None if grid else n_positions)}
        return params

    def seek(self, fit_index: int) -> None:
        """Position the weights' random stream at fit ``fit_index`` (:class:`.base.Seekable`): the next fresh weights
        are those the ``fit_index``-th fresh start of the stream draws (one draw per fresh start)."""
        self._gen = torch.Generator().manual_seed(self.seed)
        if fit_index > 0:
            torch.randint(0, 2**31 - 1, (int(fit_index),), generator=self._gen, device="cpu")

    # -- construction ---------------------------------------------------------------------------------------
    def _new_extractor(self) -> MLPFeatureExtractor:
        """Fresh weights, drawn on the CPU whatever the device (the same initial network everywhere)."""
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen, device="cpu")))
        with torch.device("cpu"):
            return MLPFeatureExtractor(self.input_dim, self.hidden, self.embed_dim).to(self.device, self.dtype)

    def _build(self, x, y, known: np.ndarray | None = None):
        """A fresh GP on (x, y): one learned noise variance, or ``known`` variances (standardized) plus one."""
        with torch.device("cpu"):
            noise_prior = gpytorch.priors.GammaPrior(1.1, 0.05) if self.priors else None
            learned = {"noise_prior": noise_prior, "noise_constraint": gpytorch.constraints.GreaterThan(1e-4)}
            lik = (gpytorch.likelihoods.GaussianLikelihood(**learned) if known is None else
                   gpytorch.likelihoods.FixedNoiseGaussianLikelihood(torch.as_tensor(known), True, **learned))
            self.model = _DKLModel(x, y, lik, self._new_extractor(), self.embed_dim, self.kernel,
                                   self.priors).to(self.device, self.dtype)
        self.likelihood = lik.to(self.device, self.dtype)

    def _to_device(self, device):
        """Move the model to ``device``; what was computed on the old one is computed again when needed. A device
        that cannot give its tensors back (a crashed GPU) leaves the model to be fitted again on the new one."""
        self.device, self._factors, self._z_cache = device, None, None
        if self.model is not None:
            try:
                self.model.to(device)
                self.likelihood.to(device)
            except RuntimeError:
                self.model = self.likelihood = None

    def _tensor(self, X) -> torch.Tensor:
        X = np.asarray(X)
        X = X.reshape(X.shape[0], -1)
        if X.shape[1] != self.input_dim:
            raise ValueError(f"Expected inputs with {self.input_dim} features, got {X.shape[1]}.")
        return torch.as_tensor(X, dtype=self.dtype, device=self.device)

    # -- fit ------------------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.model is not None

    @property
    def known_noise(self) -> bool:
        """Whether the model wants each target's counting variance with it (``noise="counts"``; base.KnowsNoise)."""
        return self.noise_mode == "counts"

    def fit(self, X, y, *, iterations: int = 100, warm: bool = True, y_var=None) -> FitReport:
        """Train on (X, y) for ``iterations`` Adam steps: from fresh weights, or continuing from the current ones
        when ``warm`` is asked, the model's ``restart`` is "warm" and it was fitted before. Above ``refit_points``
        points a ``warm`` fit between scheduled refits only conditions the posterior on (X, y) (see :mod:`.large`).
        ``y_var``: each target's known (counting) variance in its units, NaN where not known; used with
        ``noise="counts"`` (:mod:`.noise`), else ignored."""
        if self.n_fits == 0 and self.device.type != "cpu":
            self._note(f"The model runs on {compute.describe(self.device)}.")
        self._last_fit = (X, y, iterations, y_var)   # to fit again where a failed GPU kept the model
        with compute.dtype_scope(self.dtype), compute.exact(), compute.threads_scope(self.threads):
            report = self._run_on_device("fit", self._fit_or_condition, X, y, iterations, warm, y_var)
        report.events[:0] = self._device_events()
        return report

    def _fit_or_condition(self, X, y, iterations, warm, y_var) -> FitReport:
        if warm and self._reconditions(len(np.atleast_1d(y))) and self.warp.fits(y):
            return self._recondition(X, y, y_var)
        return self._fit(X, y, iterations, not warm or self.restart == "cold", y_var)

    def _known_noise(self, y, y_var) -> tuple[KnownNoise | None, list[str]]:
        """This fit's known noise (after the warp and standardisation are chosen), and an event when the counting
        noise is wanted but cannot be had, or can again."""
        known = None
        if self.known_noise and y_var is not None:
            if len(np.atleast_1d(y_var)) != len(y):
                raise ValueError(f"{len(y)} targets but {len(np.atleast_1d(y_var))} variances.")
            known = KnownNoise.from_targets(y, y_var, self.warp, self.y_std)
        events, before = [], self.known is not None or not self.n_fits   # a first fit is told when it has none
        if self.known_noise and (known is not None) != before:
            events.append("each value's counting variance is a floor of the model's noise again" if known else
                          "no counting variance for these targets (the spectra are not counts, or several "
                          "objectives): the model learns one noise variance")
        return known, events

    def _fit(self, X, y, iterations, reset, y_var=None) -> FitReport:
        self._factors, self._since_fit = None, 0   # the posterior's training factors belong to the old weights
        x = self._tensor(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(y) != x.shape[0]:
            raise ValueError(f"X has {x.shape[0]} rows but y has {len(y)} values.")
        if not np.all(np.isfinite(y)):
            raise ValueError("Training targets contain NaN or inf; check the scalarizer and the spectra.")
        self.warp, events = _warp.choose(y, self.warp_mode, self.warp if self.n_fits else None)
        y_units = y
        y, self.y_mean, self.y_std, n_clipped = robust_targets(self.warp.forward(y))
        events, self.n_clipped = events + clip_event(n_clipped, self.n_clipped), n_clipped
        known, noise_events = self._known_noise(y_units, y_var)
        events += noise_events
        yt = torch.as_tensor((y - self.y_mean) / self.y_std, dtype=self.dtype, device=self.device)
        x_all, yt_all = x, yt
        sub = large.training_subset(y, self.max_train, self._gen)   # the posterior conditions on all, below
        x, yt = x[sub], yt[sub]
        if self.model is None or reset or (known is None) != (self.known is None):
            self.known = known
            self._build(x, yt, None if known is None else known.train[sub])
        else:
            self.known = known
            self.model.set_train_data(x, yt, strict=False)
            self._set_known(sub)
        report = FitReport(events=events)
        jitter = None
        attempt = 0
        while True:
            snapshot = {k: v.clone() for k, v in self.model.state_dict().items()}
            try:
                self._train_loop(x, yt, iterations, report, jitter)
                break
            except (NotPSDError, NanError, RuntimeError, FloatingPointError) as exc:
                if isinstance(exc, RuntimeError) and not compute.numerical(exc):
                    raise
                attempt += 1
                report.retries += 1
                self.model.load_state_dict(snapshot)
                jitter = (1e-4 if self.dtype == torch.float32 else 1e-6) * 10 ** attempt
                msg = f"GP fit failed ({type(exc).__name__}: {str(exc)[:80]}); retry {attempt} with jitter {jitter:g}"
                if attempt >= 2:
                    self.model.feature_extractor = self._new_extractor()
                    report.resets += 1
                    msg += " and a fresh feature extractor"
                report.events.append(msg)
                log.warning(msg)
                if attempt > self.max_retries:
                    raise RuntimeError(f"DKL fit failed after {self.max_retries} retries: {exc}") from exc
        self.model.set_train_data(x_all, yt_all, strict=False)
        self._set_known(slice(None))
        self.n_fits += 1
        return report

    def _set_known(self, rows) -> None:
        """The known noise of the training rows ``rows`` into the likelihood (it holds one per training point)."""
        if self.known is not None:
            self.likelihood.noise = torch.as_tensor(self.known.train[rows], dtype=self.dtype, device=self.device)

    def _train_loop(self, x, yt, iterations, report, jitter):
        model, lik = self.model, self.likelihood
        model.train()
        lik.train()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        # priors add their log densities to gpytorch's loss; without them the plain-torch loss is the same number
        if self.priors:
            mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
            loss_of = lambda: -mll(model(x), yt)  # noqa: E731
        else:
            loss_of = lambda: model.exact_loss(x, yt)  # noqa: E731
        ctx = (gpytorch.settings.cholesky_jitter(float_value=jitter, double_value=jitter) if jitter
               else contextlib.nullcontext())
        with ctx, warnings.catch_warnings():
            warnings.simplefilter("ignore", gpytorch.utils.warnings.NumericalWarning)
            for _ in range(int(iterations)):
                opt.zero_grad()
                loss = loss_of()
                if not torch.isfinite(loss):
                    raise FloatingPointError("loss is not finite")
                loss.backward()
                opt.step()
                report.losses.append(float(loss.detach()))

    # -- predict --------------------------------------------------------------------------------------------
    def _check_fitted(self):
        if self.model is None:
            raise RuntimeError("The DKL model is not fitted yet: call fit() first.")

    def predict(self, X, batch_size: int | None = 1024, standardized: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of the latent function (no observation noise) at X.

        The training covariance is factorised once per fit; each batch costs one kernel block and one triangular
        solve (:mod:`.exact_predict`).
        """
        # the model's own (the same whatever the core count) on small scans; on large ones the process's (CLI all cores,
        # dock all but one), where prediction is most of a step and differs by ~1e-12 relative between counts
        threads = self.predict_threads or (torch.get_num_threads() if len(X) >= LARGE_SCAN else self.threads)
        with compute.dtype_scope(self.dtype), compute.exact(), compute.threads_scope(threads):
            return self._run_on_device("prediction", self._predict, X, batch_size, standardized)

    def _ensure_fitted(self):
        if self.model is None and self._last_fit is not None:   # moved off a GPU that kept the model
            X, y, iterations, y_var = self._last_fit
            self._fit(X, y, iterations, True, y_var)
        self._check_fitted()

    def _predict(self, X, batch_size, standardized):
        self._ensure_fitted()
        self.model.eval()
        self.likelihood.eval()
        if self._factors is None:   # once per fit: the Cholesky factor of the training covariance
            self._factors = exact_predict.training_factors(self.model, self.likelihood)
        batch = len(X) if not batch_size else int(batch_size)
        if isinstance(X, PatchGrid):   # every position of a scan: the first layer as one convolution
            if X.shape[1] != self.input_dim:
                raise ValueError(f"Expected inputs with {self.input_dim} features, got {X.shape[1]}.")
            z = self._embedded(X)
            if self.predictor == "grid" or (self.predictor == "auto" and self.embed_dim == 2
                                            and len(X) * len(self._factors.alpha) >= GRID_WORK):
                mean, std, self.last_grid = large.grid_posterior(
                    self.model, self._factors, z, self.grid_size, batch, rng=np.random.default_rng(self.n_fits),
                    units=self._in_units)
            else:
                mean, std = exact_predict.predict_embedded(self.model, self._factors, z, batch)
        else:
            mean, std = exact_predict.predict(self.model, self._factors, self._tensor(X), batch)
        return (mean, std) if standardized else self._in_units(mean, std)

    def _in_units(self, mean, std):
        """Standardised mean and std on the model's scale -> median and half the 68% interval in target units."""
        return self.warp.to_units(mean * self.y_std + self.y_mean, std * self.y_std)

    def posterior(self, X) -> Posterior:
        """Posterior at X in standardized units, with the scale to undo them and joint sampling. The noise of a
        new measurement: the learned one, plus with counting noise the variance predicted at each position's median
        (:meth:`.noise.KnownNoise.at`)."""
        mean, std = self.predict(X, standardized=True)
        noise2 = learned_noise(self.likelihood)
        if self.known is not None:
            noise2 = noise2 + self.known.at(self.warp.inverse(mean * self.y_std + self.y_mean))
        return Posterior(mean, std, sample=lambda idx, rng: self.sample(X[idx], rng)[0],
                         offset=self.y_mean, scale=self.y_std, warp=self.warp, noise=np.sqrt(noise2))

    def sample(self, X, rng: np.random.Generator, n_samples: int = 1) -> np.ndarray:
        """Joint posterior samples (n_samples, len(X)) in standardized units (for Thompson sampling)."""
        with compute.dtype_scope(self.dtype), compute.exact(), compute.threads_scope(self.threads), torch.no_grad(), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore", gpytorch.utils.warnings.NumericalWarning)
            mean, cov = self._run_on_device("sampling", self._joint, X)
        cov = 0.5 * (cov + cov.T)
        jitter = 1e-6 * max(float(np.mean(np.diag(cov))), 1e-12)
        for _ in range(6):
            try:
                L = np.linalg.cholesky(cov + jitter * np.eye(len(mean)))
                break
            except np.linalg.LinAlgError:
                jitter *= 10
        else:  # fall back to independent marginals
            L = np.diag(np.sqrt(np.clip(np.diag(cov), 0, None)))
        z = rng.standard_normal((n_samples, len(mean)))
        return mean[None, :] + z @ L.T

    def _joint(self, X):
        self._ensure_fitted()
        self.model.eval()
        post = self.model(self._tensor(X))
        return post.mean.double().cpu().numpy(), post.covariance_matrix.double().cpu().numpy()

    def embed(self, X) -> np.ndarray:
        """Kernel-space embedding (n, embed_dim) of inputs, scaled as the GP sees them."""
        self._check_fitted()
        self.model.eval()
        with compute.dtype_scope(self.dtype), torch.no_grad():
            return self.model.embed(self._tensor(X)).double().cpu().numpy()

    def hyperparameters(self) -> dict:
        self._check_fitted()
        k = self.model.covar_module
        return {
            "outputscale": float(k.outputscale.detach()),
            "lengthscale": k.base_kernel.lengthscale.detach().double().cpu().numpy().ravel().tolist(),
            "noise": learned_noise(self.likelihood),
        }
