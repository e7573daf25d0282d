"""What makes the DKL's cost follow the work instead of the scan (issue 15): the network's first layer over every
position as one convolution of the image, the posterior on a grid in the 2-D embedding space interpolated to every
position, and a bounded training subset.

* **Embedding every position.** A patch's first MLP layer is ``W @ patch + b``; over all positions that is the
  cross-correlation of the standardised, reflect-padded image with the layer's rows seen as N x N filters. It is
  computed in row blocks (the patches are never held: :class:`~napari_hae.core.data.patches.PatchGrid`), the
  other layers act on each position's ``hidden[0]`` features.
* **The posterior on a grid.** The kernel sees only the embedding z (2-D by default), so the exact posterior is a
  smooth function of z: it is computed exactly on a ``size`` x ``size`` grid spanning the embedded positions
  (one kernel block and one triangular solve per grid batch, :mod:`.exact_predict`) and interpolated (bilinear) to
  every position, except where a policy decides: the 256 highest by mean, by std and by mean + 2 std are computed
  exactly. The interpolation's error against the exact posterior is measured each time on a fixed-size random
  sample of positions (:class:`GridReport`).
* **Bounded training subset.** Network and hyperparameters train on at most ``max_train`` points (the most recent
  half, the highest quarter, the rest drawn at random); the posterior conditions on all of them.
* **Refit schedule.** Above ``refit_points`` points (default 100) one new point hardly moves the fit, so the
  network and hyperparameters are refitted every ``ceil(n / refit_points)`` steps (every 2nd at n = 200, every
  20th at n = 2,000); in between, the posterior is conditioned on all points with the last fit (no training, so
  nothing overtrains), and the embedding of every position is reused (:class:`ScalableFit`). Runs of up to 100
  points (the benchmarks of issue 16: 60 steps after 10 seeds) are fitted at every step as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import exact_predict
from .base import FitReport, robust_targets
from .noise import KnownNoise


def embed_positions(extractor: torch.nn.Sequential, grid, dtype, rows_per_block: int | None = None) -> torch.Tensor:
    """The extractor's output at every position of ``grid`` (a :class:`PatchGrid`), (ny * nx, embed_dim)."""
    first, rest = extractor[0], torch.nn.Sequential(*list(extractor)[1:])
    n = grid.patch_size
    ny, nx = grid.scan_shape
    h = first.out_features
    weight = first.weight.detach().reshape(h, 1, n, n).to(dtype)
    bias = first.bias.detach().to(dtype)
    if rows_per_block is None:   # ~32 MiB of first-layer features per block
        rows_per_block = max(1, (32 << 20) // (4 * h * nx))
    padded = torch.as_tensor(grid.padded, dtype=dtype, device=weight.device)
    out = []
    with torch.no_grad():
        for r0 in range(0, ny, rows_per_block):
            r1 = min(ny, r0 + rows_per_block)
            block = padded[r0:r1 + n - 1][None, None]
            feats = torch.nn.functional.conv2d(block, weight, bias)[0]           # (h, rows, nx)
            out.append(rest(feats.reshape(h, -1).T))
    return torch.cat(out)


@dataclass
class GridReport:
    """How the grid posterior compares with the exact one on ``n_checked`` random positions (standardised units;
    ``*_units``: the same differences of the median and std in scalarizer units, through the model's warp)."""
    n_checked: int
    mean_rms: float     # RMS difference of the mean
    std_rms: float      # RMS difference of the std
    std_scale: float    # RMS of the exact std there, to read std_rms against
    mean_units: float = float("nan")
    std_units: float = float("nan")


def grid_posterior(model, factors, z: torch.Tensor, size: int, batch_size: int, exact_at: np.ndarray | None = None,
                   n_check: int = 256, rng: np.random.Generator | None = None, exact_top: int = 256,
                   units=None):
    """Posterior mean and std (standardised) at embedded positions ``z`` (n, 2) from a ``size`` x ``size`` grid;
    positions ``exact_at`` (flat indices) and the ``exact_top`` highest by mean, by std and by mean + 2 std
    computed exactly. Returns (mean, std, :class:`GridReport` of the interpolation at random positions, also in
    scalarizer units when ``units(mean, std)`` turns standardised values into them)."""
    from scipy.ndimage import map_coordinates

    zz = z.double()
    lo, hi = zz.min(0).values, zz.max(0).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    axes = [torch.linspace(float(lo[d]), float(lo[d] + span[d]), size, dtype=torch.float64, device=z.device)
            for d in range(2)]
    g0, g1 = torch.meshgrid(*axes, indexing="ij")
    nodes = torch.stack([g0.ravel(), g1.ravel()], 1).to(z.dtype)
    gm, gs = exact_predict.predict_embedded(model, factors, nodes, batch_size)
    coords = ((zz - lo) / span * (size - 1)).cpu().numpy().T                                # (2, n) in grid units
    mean = map_coordinates(gm.reshape(size, size), coords, order=1, mode="nearest")
    # the variance is interpolated, not the std: it is the smoother of the two near the measured points
    std = np.sqrt(np.clip(map_coordinates((gs ** 2).reshape(size, size), coords, order=1, mode="nearest"), 0, None))
    rng = rng or np.random.default_rng(0)
    check = rng.choice(len(z), size=min(n_check, len(z)), replace=False)   # the interpolation's own error
    em, es = exact_predict.predict_embedded(model, factors, z[check], batch_size)
    report = GridReport(len(check), float(np.sqrt(np.mean((mean[check] - em) ** 2))),
                        float(np.sqrt(np.mean((std[check] - es) ** 2))), float(np.sqrt(np.mean(es ** 2))))
    if units is not None:
        (gm_u, gs_u), (em_u, es_u) = units(mean[check], std[check]), units(em, es)
        report.mean_units = float(np.sqrt(np.mean((gm_u - em_u) ** 2)))
        report.std_units = float(np.sqrt(np.mean((gs_u - es_u) ** 2)))
    # exact where a policy decides: the highest mean, std and mean + 2 std (the argmax of UCB, MU, EI lies there
    # unless the interpolation misplaced it by more than these candidates' spread)
    picks = [np.argpartition(-v, exact_top)[:exact_top] for v in (mean, std, mean + 2 * std)] \
        if 0 < exact_top < len(z) else [np.arange(len(z))] if exact_top else []
    idx = np.union1d(np.concatenate(picks, dtype=int) if picks else np.zeros(0, int),
                     np.zeros(0, int) if exact_at is None else np.asarray(exact_at, dtype=int))
    if len(idx):
        mean[idx], std[idx] = exact_predict.predict_embedded(model, factors, z[idx], batch_size)
    return mean, std, report


class ScalableFit:
    """The refit schedule and the cached embedding, for :class:`~napari_hae.core.model.dkl.DKLRegressor`."""

    _since_fit = 0
    _z_cache = None   # (the PatchGrid, the fit it was embedded with, z)

    def _reconditions(self, n: int) -> bool:
        """Whether this fit may condition on the new points instead of training (see the module docstring)."""
        every = self.refit_points
        return self.model is not None and every > 0 and n > every and self._since_fit + 1 < -(-n // every)

    def _recondition(self, X, y, y_var=None) -> FitReport:
        """All points as the posterior's data, with the last fit's network, hyperparameters, standardisation and
        noise (with counting noise: each point's known variance, :mod:`.noise`)."""

        x = self._tensor(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(y) != x.shape[0] or not np.all(np.isfinite(y)):
            raise ValueError(f"{x.shape[0]} inputs for {len(y)} targets, or targets that are not finite.")
        yt = (robust_targets(self.warp.forward(y))[0] - self.y_mean) / self.y_std
        self.model.set_train_data(x, torch.as_tensor(yt, dtype=self.dtype, device=self.device), strict=False)
        if self.known is not None:   # the kind of noise stays the last fit's until the next fit
            line = self.known.a + self.known.b * np.abs(y)   # no variances given: the last fit's line
            self.known = KnownNoise.from_targets(y, line if y_var is None else y_var, self.warp, self.y_std)
            self._set_known(slice(None))
        self._factors = None
        self._since_fit += 1
        return FitReport()

    def _embedded(self, grid) -> torch.Tensor:
        """Every position of ``grid`` embedded by the current network (computed once per fit)."""
        cache = self._z_cache
        if cache is None or cache[0] is not grid or cache[1] != self.n_fits:
            self.model.eval()   # in training mode the embedding's scaling would take these points' bounds
            with torch.no_grad():
                z = self.model.scale_to_bounds(embed_positions(self.model.feature_extractor, grid, self.dtype))
            self._z_cache = cache = (grid, self.n_fits, z)
        return cache[2]


def training_subset(y: np.ndarray, max_train: int, gen: torch.Generator) -> np.ndarray:
    """Indices (sorted) of at most ``max_train`` of ``len(y)`` points in measurement order: the most recent half,
    the highest quarter of the others, the rest at random (the model's generator: reproducible)."""
    n = len(y)
    if n <= max_train:
        return np.arange(n)
    recent = np.arange(n - max_train // 2, n)
    older = np.arange(n - max_train // 2)
    top = older[np.argsort(-np.asarray(y)[older], kind="stable")[: max_train // 4]]
    rest = np.setdiff1d(older, top)
    k = max_train - len(recent) - len(top)
    drawn = rest[torch.randperm(len(rest), generator=gen, device="cpu")[:k].numpy()]
    return np.sort(np.concatenate([recent, top, drawn]))
