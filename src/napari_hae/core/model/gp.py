"""A plain Gaussian process on fixed patch features: the model baseline without a neural network.

Each patch is averaged over ``pool`` x ``pool`` blocks (its coarse picture: 16 numbers with pool 4) and an exact GP
with one lengthscale per feature (Matern 5/2 or RBF, scaled) is fitted by marginal likelihood; the warp,
standardisation, retries and prediction are the DKL's (:class:`~.dkl.DKLRegressor`, whose network is replaced by
this fixed, untrained layer). What it lacks is the learned embedding: a run with it shows what the deep kernel adds
(``--model gp``; issue 27's "plain GP" baseline in ``benchmarks/discovery.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import HAEInputError
from ..registry import ParamSpec
from . import warp as _warp
from .base import register_model
from .dkl import KERNELS, NOISES, DKLRegressor


def pooling(side: int, pool: int) -> np.ndarray:
    """(pool * pool, side * side): row b averages block b of a side x side patch (blocks as even as they split)."""
    edges = [np.asarray(part) for part in np.array_split(np.arange(side), pool)]
    weight = np.zeros((pool * pool, side * side))
    for i, rows in enumerate(edges):
        for j, cols in enumerate(edges):
            block = (rows[:, None] * side + cols[None, :]).ravel()
            weight[i * pool + j, block] = 1.0 / block.size
    return weight


@register_model("gp", params=(
    ParamSpec("pool", None, "", 1, 8, "blocks per patch side each patch is averaged over (pool x pool features)"),
    ParamSpec("kernel", None, "", help="'matern' (5/2) or 'rbf', one lengthscale per feature",
              choices=tuple(KERNELS)),
    ParamSpec("lr", None, "", 1e-5, 1.0, "Adam learning rate of the GP's hyperparameters"),
    ParamSpec("warp", None, "", help="'log': the GP models log(target) while every target is > 0; 'none'",
              choices=_warp.MODES),
    ParamSpec("threads", None, "", 1, 256, "torch threads (fixed: picks do not depend on the machine)"),
    ParamSpec("noise", None, "", help="'counts': each value's counting variance a floor of its noise (as the "
                                         "DKL's); 'learned'", choices=NOISES),
    ParamSpec("device", None, "", help="'auto' (a CUDA GPU when torch sees one), 'cpu', 'cuda' or 'cuda:N'"),
))
class PlainGP(DKLRegressor):
    """Exact GP on the block means of each patch (no learned features)."""

    def __init__(self, input_dim: int, *, pool: int = 4, kernel: str = "matern", lr: float = 0.05, seed: int = 0,
                 threads: int = 1, warp: str = "log", device: str = "auto", noise: str = "learned"):
        side = math.isqrt(int(input_dim))
        if side * side != int(input_dim) or type(pool) is not int or not 1 <= pool <= side:
            raise HAEInputError(f"Model 'gp': pool={pool!r} does not fit patches of {side} x {side} pixels.",
                                f"give a whole number of blocks from 1 to {side} (--model-param pool=4).")
        self.pool = pool
        super().__init__(input_dim, embed_dim=pool * pool, hidden=(), kernel=kernel, lr=lr, seed=seed,
                         threads=threads, warp=warp, device=device, predictor="exact", noise=noise)

    def _new_extractor(self) -> torch.nn.Sequential:
        torch.randint(0, 2**31 - 1, (1,), generator=self._gen, device="cpu")   # one draw a fresh start (seek)
        side = math.isqrt(self.input_dim)
        layer = torch.nn.Linear(self.input_dim, self.pool * self.pool)
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(pooling(side, self.pool)))
            layer.bias.zero_()
        layer.requires_grad_(False)
        return torch.nn.Sequential(layer).to(self.device, self.dtype)
