"""An ensemble of DKL members: different initialisations and bootstrap resamples, mixture mean and variance.

One DKL's uncertainty is the GP's given its learned embedding; when the embedding is wrong (overtrained, or
collapsing different structures onto one point) nothing in that one model says so. Members trained from other
initial weights on resampled data embed differently; where they disagree, the mixture variance
(mean of the members' variances + variance of their means) grows. Targets are standardised once here, so every
member predicts in the same units.
"""

from __future__ import annotations

import numpy as np

from ..registry import ParamSpec
from .base import FitReport, Posterior, clip_event, register_model, robust_targets
from .dkl import RESTARTS, DKLRegressor


@register_model("dkl_ensemble", params=(
    ParamSpec("members", None, "", 2, 32, "number of DKL members"),
    ParamSpec("bootstrap", None, "", help="train each member on a bootstrap resample of the measured points"),
    ParamSpec("restart", None, "", help="'cold': members start from fresh weights every fit; 'warm': continue",
              choices=RESTARTS),
    ParamSpec("hidden", None, "", help="hidden layer widths of each member's MLP"),
    ParamSpec("embed_dim", None, "", 1, 16, "dimension of each member's embedding"),
    ParamSpec("lr", None, "", 1e-5, 1.0, "Adam learning rate"),
    ParamSpec("threads", None, "", 1, 256, "torch threads (fixed: picks do not depend on the machine)"),
    ParamSpec("device", None, "", help="'auto' (a CUDA GPU when torch sees one), 'cpu', 'cuda' or 'cuda:N'"),
))
class DKLEnsemble:
    """Ensemble of DKL members (initialisations and bootstrap resamples): mixture mean and variance."""

    device_param = True   # its ``device`` is the members' (model/compute.py)

    def __init__(self, input_dim: int, *, members: int = 4, bootstrap: bool = True, restart: str = "cold",
                 hidden=(64, 32), embed_dim: int = 2, lr: float = 0.01, threads: int = 1, seed: int = 0,
                 device: str = "auto"):
        from ..errors import HAEInputError

        if type(members) is not int or members < 2:
            raise HAEInputError(f"Model 'dkl_ensemble': members={members!r} is not a whole number >= 2.",
                                "use --model-param members=4 (or the plain 'dkl' model for one member).")
        self.members = [DKLRegressor(input_dim, hidden=hidden, embed_dim=embed_dim, lr=lr, threads=threads,
                                     restart=restart, seed=seed * 1009 + j, warp="none",
                                     device=device) for j in range(members)]
        self.bootstrap = bool(bootstrap)
        self._seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self.y_mean, self.y_std, self.n_clipped = 0.0, 1.0, 0

    def seek(self, fit_index: int) -> None:
        """Each member's weights stream at fit ``fit_index``, and the bootstrap resamples of that fit."""
        for m in self.members:
            m.seek(fit_index)
        self._rng = np.random.default_rng([self._seed, int(fit_index)])

    def fit(self, X, y, *, iterations: int, warm: bool) -> FitReport:
        y = np.asarray(y, dtype=np.float64).ravel()
        y, self.y_mean, self.y_std, n_clipped = robust_targets(y)
        events, self.n_clipped = clip_event(n_clipped, self.n_clipped), n_clipped
        yt = (y - self.y_mean) / self.y_std
        X = np.asarray(X)
        report = FitReport(events=events)
        for j, m in enumerate(self.members):
            idx = self._resample(len(y)) if self.bootstrap else np.arange(len(y))
            rep = m.fit(X[idx], yt[idx], iterations=iterations, warm=warm)
            report.retries += rep.retries
            report.resets += rep.resets
            report.events += [f"member {j}: {e}" for e in rep.events]
            report.losses.append(rep.final_loss)
        report.losses = [float(np.mean(report.losses))]
        return report

    def _resample(self, n: int) -> np.ndarray:
        """A bootstrap resample that keeps at least 3 distinct points (a GP on one repeated point learns nothing)."""
        while True:
            idx = self._rng.integers(0, n, n)
            if len(np.unique(idx)) >= min(3, n):
                return np.sort(idx)

    def _member_predictions(self, X):
        preds = [m.predict(X) for m in self.members]   # in the ensemble's standardized units
        noise2 = np.mean([m.hyperparameters()["noise"] * m.y_std ** 2 for m in self.members])
        return np.array([p[0] for p in preds]), np.array([p[1] for p in preds]), float(noise2)

    def posterior(self, X) -> Posterior:
        means, stds, noise2 = self._member_predictions(X)
        mean = means.mean(0)
        std = np.sqrt(np.mean(stds ** 2, 0) + means.var(0))

        def sample(idx, rng):   # Thompson: a joint sample from one member, chosen at random
            m = self.members[int(rng.integers(len(self.members)))]
            return m.sample(X[idx], rng)[0] * m.y_std + m.y_mean

        return Posterior(mean, std, sample=sample, offset=self.y_mean, scale=self.y_std, noise=float(np.sqrt(noise2)))

    def predict(self, X, standardized: bool = False):
        post = self.posterior(X)
        return (post.mean, post.std) if standardized else post.in_units()
