"""The DKL with its network pretrained on the structural image alone, and a GP on the image's principal components.

Issue 27 asks the model to use what the image gives for free. Here every patch of the structural image (up to
4,096 of them) is unlabelled training data: the DKL's network (same layers as the product's) is first trained to
reproduce the patches' top principal-component scores (whitened), and each of the run's fits starts from those
weights instead of random ones (the product's cold restart: the same start at every step). Three variants, as
policies of ``benchmarks/discovery.py`` (the default policy on these models):

- ``pretrained_dkl``: the pretrained network, trained further with the GP at the DKL's learning rate;
- ``pretrained_dkl_slow``: the same, the network at a twentieth of that rate (stays near the image's embedding);
- ``pca_gp``: the pretrained network frozen: a GP on the patches' principal components, the issue's "plain GP on
  patch features (e.g. PCA of patches)".
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from napari_hae.core.data.patches import PatchGrid
from napari_hae.core.model.base import MODELS
from napari_hae.core.model.dkl import DKLRegressor, MLPFeatureExtractor

PRETRAIN_PATCHES = 4096
PRETRAIN_ITERATIONS = 300
VARIANTS = {"pretrained_dkl": 1.0, "pretrained_dkl_slow": 0.05, "pca_gp": 0.0}   # the network's share of the lr


def pretrained_network(structural, patch: int, hidden: tuple[int, ...], embed_dim: int) -> MLPFeatureExtractor:
    """The DKL's network trained to give each patch's top ``embed_dim`` principal-component scores (whitened)."""
    X = np.asarray(PatchGrid(structural, patch), dtype=np.float32)
    if len(X) > PRETRAIN_PATCHES:
        X = X[np.random.default_rng(0).choice(len(X), PRETRAIN_PATCHES, replace=False)]
    centred = X - X.mean(axis=0)
    components = np.linalg.svd(centred, full_matrices=False)[2][:embed_dim]
    scores = centred @ components.T
    scores /= scores.std(axis=0)
    torch.manual_seed(0)
    net = MLPFeatureExtractor(X.shape[1], hidden, embed_dim)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, target = torch.as_tensor(X), torch.as_tensor(scores, dtype=torch.float32)
    for _ in range(PRETRAIN_ITERATIONS):
        opt.zero_grad()
        loss = ((net(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    return net


class PretrainedDKL(DKLRegressor):
    """The product's DKL whose every fresh start is ``network`` (pretrained), trained at ``network_share`` of
    the learning rate (0: frozen)."""

    def __init__(self, input_dim: int, network: MLPFeatureExtractor, network_share: float, **params):
        super().__init__(input_dim, **params)
        self._network, self.network_share = network, float(network_share)

    def _new_extractor(self):
        torch.randint(0, 2**31 - 1, (1,), generator=self._gen, device="cpu")   # one draw a fresh start (seek)
        net = copy.deepcopy(self._network).to(self.device, self.dtype)
        net.requires_grad_(self.network_share > 0)
        return net

    def _train_loop(self, x, yt, iterations, report, jitter):
        if self.network_share in (0.0, 1.0):   # frozen (no gradients) or the product's loop as it is
            return super()._train_loop(x, yt, iterations, report, jitter)
        model = self.model
        model.train()
        self.likelihood.train()
        net = list(model.feature_extractor.parameters())
        rest = [p for p in model.parameters() if all(p is not q for q in net)]
        opt = torch.optim.Adam([{"params": net, "lr": self.lr * self.network_share}, {"params": rest, "lr": self.lr}])
        for _ in range(int(iterations)):
            opt.zero_grad()
            loss = model.exact_loss(x, yt)
            loss.backward()
            opt.step()
            report.losses.append(float(loss.detach()))


def factory(variant: str, structural, patch: int):
    """``model_factory`` of an :class:`~napari_hae.core.run.experiment.Experiment`: the settings' DKL parameters,
    its network pretrained on ``structural`` once per process and shape."""
    networks: dict = {}

    def make(input_dim, settings):
        params = DKLRegressor.for_scan(MODELS.with_defaults("dkl", dict(settings.model.params)), structural.size)
        hidden = tuple(params.pop("hidden"))
        key = (hidden, params["embed_dim"])
        if key not in networks:
            networks[key] = pretrained_network(structural, patch, hidden, params["embed_dim"])
        return PretrainedDKL(input_dim, networks[key], VARIANTS[variant], hidden=hidden,
                             seed=settings.random_seed, **params)

    return make
