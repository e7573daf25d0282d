"""Kernels of the DKL's Gaussian process."""

from __future__ import annotations

import math

import gpytorch
import torch

EXP_FLOOR = -30.0   # exp(-30) = 9e-14: below float32's resolution next to 1, far above its subnormal range


class FloorRBFKernel(gpytorch.kernels.RBFKernel):
    """RBF kernel whose exponent is floored at EXP_FLOOR.

    As training shrinks a lengthscale, most of the kernel's ``exp`` arguments become very negative; torch's exp
    takes a slow path there (20x slower for results in the subnormal range, 4x for large arguments; flushing
    subnormals to zero does not help), and the triangular solves of the prediction then crawl through
    subnormal products. In the soak benchmark prediction time grew 60-120% over 400-600 steps with a fixed-size
    model (``exp_`` 10 -> 124 ms, ``cholesky_solve`` 30 -> 59 ms per prediction). Flooring changes only kernel
    values below 9e-14, which float32 cannot resolve next to the diagonal's 1 anyway.
    """

    def forward(self, x1, x2, diag=False, **params):
        x1_ = x1.div(self.lengthscale)
        x2_ = x2.div(self.lengthscale)
        d = self.covar_dist(x1_, x2_, square_dist=True, diag=diag, **params)
        return d.div_(-2.0).clamp_(min=EXP_FLOOR).exp_()   # in place, as gpytorch's own RBF


class FloorMaternKernel(gpytorch.kernels.MaternKernel):
    """Matern 5/2 kernel whose distance is capped where exp(-sqrt(5) d) reaches exp(EXP_FLOOR), for the same
    reason as :class:`FloorRBFKernel` (kernel values below ~3e-11 are one constant). gpytorch's formula otherwise,
    without its centring on the first argument's mean: the embedding is already scaled to [-1, 1], and centring
    made a point's kernel values depend on the other points of its batch (the grid predictor's exact candidates
    differed from the exact posterior by 3e-6 relative)."""

    CAP = -EXP_FLOOR / math.sqrt(5.0)

    def __init__(self, **kwargs):
        super().__init__(nu=2.5, **kwargs)

    def forward(self, x1, x2, diag=False, **params):
        d = self.covar_dist(x1.div(self.lengthscale), x2.div(self.lengthscale), diag=diag, **params).clamp(max=self.CAP)
        return (math.sqrt(5.0) * d).add(1).add(5.0 / 3.0 * d**2) * torch.exp(-math.sqrt(5.0) * d)
