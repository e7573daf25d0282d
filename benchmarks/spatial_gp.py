"""A GP on the scan coordinates alone (kriging): the baseline that knows nothing of the image, only where it measured.

``benchmarks/image_information.py`` found that on the hard tasks the image's look does not say where the top 1% is;
a run can then find it only by measuring near what it measured. This model does only that: an exact GP with one
Matern 5/2 lengthscale per scan axis on (row, column), with the DKL's log warp, standardisation, noise, retries and
prediction (:class:`~napari_hae.core.model.dkl.DKLRegressor`, whose network is replaced by the identity on the
coordinates). The run hands a model patches; each is found again by its position in the scan (``policy
spatial_gp`` of ``benchmarks/discovery.py``; a benchmark baseline, not a product model).
"""

from __future__ import annotations

import numpy as np
import torch

from napari_hae.core.data.patches import PatchGrid
from napari_hae.core.model.dkl import DKLRegressor


class SpatialGP(DKLRegressor):
    """Exact GP on each position's (row, column), found from the patch the run gives (``structural``, ``patch``)."""

    def __init__(self, structural, patch: int, *, seed: int = 0, warp: str = "log"):
        super().__init__(2, embed_dim=2, hidden=(), kernel="matern", lr=0.05, seed=seed, threads=1, warp=warp,
                         device="cpu", predictor="exact")
        grid = PatchGrid(structural, patch)
        rows, cols = np.divmod(np.arange(len(grid)), grid.scan_shape[1])
        self.coords = np.stack([rows, cols], axis=1).astype(float)
        self._where = {row.tobytes(): i for i, row in enumerate(np.asarray(grid))}   # patch -> its position

    def _positions(self, X) -> np.ndarray:
        if isinstance(X, PatchGrid):
            return self.coords
        X = np.asarray(X, np.float32).reshape(len(X), -1)
        if X.shape[1] == 2:   # coordinates already
            return X
        return self.coords[[self._where[row.tobytes()] for row in X]]

    def _new_extractor(self) -> torch.nn.Sequential:
        torch.randint(0, 2**31 - 1, (1,), generator=self._gen, device="cpu")   # one draw a fresh start (seek)
        layer = torch.nn.Linear(2, 2)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
        layer.requires_grad_(False)
        return torch.nn.Sequential(layer).to(self.device, self.dtype)

    def fit(self, X, y, **kw):
        return super().fit(self._positions(X), y, **kw)

    def predict(self, X, *args, **kw):
        return super().predict(self._positions(X), *args, **kw)

    def sample(self, X, *args, **kw):
        return super().sample(self._positions(X), *args, **kw)


def factory(structural, patch: int):
    """``model_factory`` of an :class:`~napari_hae.core.run.experiment.Experiment`."""
    return lambda input_dim, settings: SpatialGP(structural, patch, seed=settings.random_seed)
