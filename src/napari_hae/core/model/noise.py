"""Known measurement noise: each target's counting variance as a floor of the GP's noise (heteroscedastic).

With ``noise="counts"`` a model is given each training target's variance from counting statistics
(:mod:`..targets.noise`). The GP's noise at training point i is that variance plus one learned variance (what the
counts do not explain: gain, drift, the scalarizer's own scatter), so the network cannot fit counting noise as
structure. A position not measured has no spectrum yet: its counting variance is predicted from the value the model
predicts there, by the line ``variance = a + b * |value|`` fitted to the measured targets (non-negative least
squares: a band of counts has variance ~ its value times the channel width, a background-subtracted one adds a
constant; the magnitude, as a difference of two bands or a goal of "min" gives values below 0). Variances live
in scalarizer units here and are carried onto the model's warped, standardized scale with the warp's Jacobian
(``var(log y) ~ var(y) / y^2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls

from .warp import Warp

MAX_STANDARDIZED = 1e6   # a value with (almost) no information: its log of one count, say; kept finite
MIN_STANDARDIZED = 1e-6  # a band without counts has none: gpytorch rounds a fixed noise up to this (and warns)


def _on_scale(var_units, value_units, warp: Warp, y_std: float) -> np.ndarray:
    """Variances in scalarizer units at ``value_units`` -> on the warp's scale, standardized by ``y_std``."""
    with np.errstate(all="ignore"):
        out = np.asarray(var_units, dtype=np.float64) * np.exp(2.0 * warp.log_jacobian(value_units)) / y_std ** 2
    return np.clip(np.nan_to_num(out, nan=MAX_STANDARDIZED, posinf=MAX_STANDARDIZED), MIN_STANDARDIZED,
                   MAX_STANDARDIZED)


@dataclass(frozen=True)
class KnownNoise:
    """The training targets' known variances (standardized, on the model's scale) and the line predicting the
    variance in scalarizer units from a value: ``a + b * |value|``."""

    train: np.ndarray
    a: float
    b: float
    warp: Warp
    y_std: float

    @classmethod
    def from_targets(cls, y, y_var, warp: Warp, y_std: float) -> KnownNoise:
        """From the targets ``y`` (scalarizer units, signed) and their variances ``y_var`` (NaN: not known, given
        the line's variance at that value)."""
        y, v = np.asarray(y, dtype=np.float64).ravel(), np.asarray(y_var, dtype=np.float64).ravel()
        if y.shape != v.shape:
            raise ValueError(f"{len(y)} targets but {len(v)} variances.")
        known = np.isfinite(v) & (v >= 0)
        a, b = 0.0, 0.0
        if known.any():
            design = np.column_stack([np.ones(known.sum()), np.abs(y[known])])
            (a, b), _ = nnls(design, v[known])
        v = np.where(known, v, a + b * np.abs(y))
        return cls(_on_scale(v, y, warp, y_std), float(a), float(b), warp, float(y_std))

    def at(self, value_units) -> np.ndarray:
        """The predicted counting variance (standardized, on the model's scale) of a measurement whose value is
        ``value_units`` (the model's median there, scalarizer units)."""
        value = np.asarray(value_units, dtype=np.float64)
        return _on_scale(self.a + self.b * np.abs(value), value, self.warp, self.y_std)


def with_noise(cov: torch.Tensor, likelihood) -> torch.Tensor:
    """``cov`` (n, n) plus the GP's noise variance at each training point: the learned one times the identity (a
    Gaussian likelihood: the arithmetic of the fits before counting noise, to the last bit), or each point's known
    variance plus the learned one on the diagonal (gpytorch's fixed-noise likelihood, learning a second noise)."""
    noise = likelihood.noise.to(cov.dtype)
    if noise.numel() == 1:
        return cov + noise.reshape(()) * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    return cov + torch.diag(noise.reshape(-1))


def learned_noise(likelihood) -> float:
    """The learned (homoscedastic) part of the noise variance, standardized."""
    learned = getattr(likelihood, "second_noise", None)
    return float((likelihood.noise if learned is None else learned).detach().double().ravel()[0])
