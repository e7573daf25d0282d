"""EXPERIMENT: a deep kernel plus the plain GP's kernel, added: k = s1 k(g(x)) + s2 k(blocks(x))."""

from __future__ import annotations

import math

import gpytorch
import numpy as np
import torch

from ..registry import ParamSpec
from .base import register_model
from .dkl import KERNELS, NOISES, DKLRegressor, MLPFeatureExtractor
from .gp import pooling


class _Both(torch.nn.Module):
    def __init__(self, mlp, pool):
        super().__init__()
        self.branches = torch.nn.ModuleList([mlp, torch.nn.Sequential(pool)])

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=-1)


@register_model("dkl_blocks", params=(
    ParamSpec("pool", None, "", 1, 8, "blocks per patch side"),
    ParamSpec("embed_dim", None, "", 1, 16, "embedding dimension"),
    ParamSpec("kernel", None, "", help="matern or rbf", choices=tuple(KERNELS)),
    ParamSpec("noise", None, "", help="learned or counts", choices=NOISES),
    ParamSpec("threads", None, "", 1, 256, "threads"),
))
class DKLWithBlocks(DKLRegressor):
    def __init__(self, input_dim: int, *, pool: int = 4, embed_dim: int = 2, kernel: str = "matern",
                 seed: int = 0, threads: int = 1, noise: str = "learned", device: str = "auto"):
        self.pool, self.learned_dim = pool, embed_dim
        super().__init__(input_dim, embed_dim=embed_dim + pool * pool, kernel=kernel, seed=seed, threads=threads,
                         predictor="exact", noise=noise, device=device)

    def _new_extractor(self):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen, device="cpu")))
        side = math.isqrt(self.input_dim)
        with torch.device("cpu"):
            mlp = MLPFeatureExtractor(self.input_dim, self.hidden, self.learned_dim)
            layer = torch.nn.Linear(self.input_dim, self.pool * self.pool)
            with torch.no_grad():
                layer.weight.copy_(torch.as_tensor(pooling(side, self.pool)))
                layer.bias.zero_()
            layer.requires_grad_(False)
            return _Both(mlp, layer).to(self.device, self.dtype)

    def _build(self, x, y, known: np.ndarray | None = None):
        super()._build(x, y, known)
        e, p = self.learned_dim, self.pool * self.pool
        k1 = KERNELS[self.kernel](ard_num_dims=e, active_dims=tuple(range(e)))
        k2 = KERNELS[self.kernel](ard_num_dims=p, active_dims=tuple(range(e, e + p)))
        self.model.covar_module = gpytorch.kernels.AdditiveKernel(
            gpytorch.kernels.ScaleKernel(k1), gpytorch.kernels.ScaleKernel(k2)).to(self.device, self.dtype)

    def _optimizer(self):
        blocks = set(map(id, self.model.covar_module.kernels[1].parameters()))
        rest = [q for q in self.model.parameters() if id(q) not in blocks]
        return torch.optim.Adam([{"params": rest, "lr": self.lr},
                                 {"params": list(self.model.covar_module.kernels[1].parameters()), "lr": 0.05}])

    def hyperparameters(self) -> dict:
        from .noise import learned_noise

        self._check_fitted()
        k1, k2 = self.model.covar_module.kernels
        return {"outputscale": [float(k1.outputscale.detach()), float(k2.outputscale.detach())],
                "lengthscale": k1.base_kernel.lengthscale.detach().double().cpu().numpy().ravel().tolist()
                + k2.base_kernel.lengthscale.detach().double().cpu().numpy().ravel().tolist(),
                "noise": learned_noise(self.likelihood)}


@register_model("dkl_pooled", params=(
    ParamSpec("pool", None, "", 1, 8, "blocks per patch side"),
    ParamSpec("embed_dim", None, "", 1, 16, "embedding dimension"),
    ParamSpec("hidden", None, "", help="hidden"),
    ParamSpec("threads", None, "", 1, 256, "threads"),
))
class DKLPooled(DKLRegressor):
    """EXPERIMENT: the network reads the patch's block means (the plain GP's features), not its pixels."""

    def __init__(self, input_dim: int, *, pool: int = 4, embed_dim: int = 2, hidden=(64, 32), seed: int = 0,
                 threads: int = 1, device: str = "auto"):
        self.pool = pool
        super().__init__(input_dim, embed_dim=embed_dim, hidden=hidden, seed=seed, threads=threads, device=device)

    def _new_extractor(self):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._gen, device="cpu")))
        side = math.isqrt(self.input_dim)
        with torch.device("cpu"):
            layer = torch.nn.Linear(self.input_dim, self.pool * self.pool)
            with torch.no_grad():
                layer.weight.copy_(torch.as_tensor(pooling(side, self.pool)))
                layer.bias.zero_()
            layer.requires_grad_(False)
            mlp = MLPFeatureExtractor(self.pool * self.pool, self.hidden, self.embed_dim)
            return torch.nn.Sequential(layer, *mlp).to(self.device, self.dtype)
