"""The DKL workflow of AtomAI's dklGPR active-learning examples, behind napari-hae's regressor interface.

Each step builds a fresh ``atomai.models.dklGPR`` (its defaults: MLP [1000, 500, 50] -> 2-D embedding, KISS-GP
RBF kernel on a 50-point grid, float64, Adam lr 0.01) and fits it from scratch for ``training_cycles`` epochs,
then predicts on all candidates with ``batch_size=len(X)``, as in the dklGPR docstring and example notebooks.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


class _Report:
    def __init__(self, losses):
        self.losses = losses
        self.events = []

    @property
    def final_loss(self):
        return self.losses[-1] if self.losses else float("nan")


class AtomaiDKL:
    def __init__(self, input_dim, training_cycles=200, hidden=None, precision="double", seed=0):
        self.input_dim = input_dim
        self.training_cycles = training_cycles
        self.hidden = hidden
        self.precision = precision
        self.seed = seed
        self.model = None
        self.y_mean, self.y_std = 0.0, 1.0

    def fit(self, X, y, *, iterations=None, warm=False):
        """dklGPR refits from scratch every step (its workflow): ``iterations`` and ``warm`` are ignored."""
        import torch

        prev = torch.get_default_dtype()   # dklGPR sets the process-wide default tensor type: restore it
        try:
            return self._fit(X, y)
        finally:
            torch.set_default_dtype(prev)

    def _fit(self, X, y):
        import atomai as aoi

        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        y = np.asarray(y, dtype=np.float64)
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        kw = {"precision": self.precision, "seed": self.seed}
        self.model = aoi.models.dklGPR(self.input_dim, embedim=2, **kw)
        fit_kw = {}
        if self.hidden is not None:  # dklGPR builds fcFeatureExtractor(indim, embedim) itself: pass our widths
            from atomai.nets.gp import fcFeatureExtractor

            hidden = list(self.hidden)
            fit_kw["feature_extractor"] = lambda i, e: fcFeatureExtractor(i, e, hidden_dim=list(hidden))
        with contextlib.redirect_stdout(io.StringIO()):
            self.model.fit(X, (y - self.y_mean) / self.y_std, training_cycles=self.training_cycles, **fit_kw)
        return _Report([float(v) for v in getattr(self.model, "train_loss", [])])

    def predict(self, X, standardized=False):
        import torch

        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        prev = torch.get_default_dtype()
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                mean, var = self.model.predict(X, batch_size=len(X))
            finally:
                torch.set_default_dtype(prev)
        std = np.sqrt(np.clip(var, 0, None))
        if standardized:
            return mean, std
        return mean * self.y_std + self.y_mean, std * self.y_std

    def posterior(self, X):
        """The SurrogateModel interface of napari-hae's run loop."""
        from napari_hae.core.model import Posterior

        mean, std = self.predict(X, standardized=True)
        return Posterior(mean, std, sample=lambda idx, rng: self.sample(np.asarray(X)[idx], rng)[0],
                         offset=self.y_mean, scale=self.y_std)

    def sample(self, X, rng, n_samples=1):
        mean, std = self.predict(X, standardized=True)
        return mean[None] + std[None] * rng.standard_normal((n_samples, len(mean)))
