"""Feature space of the structural image: AtomAI's rotationally invariant VAE (rVAE) over all patches.

Each patch maps to 2 latent content dimensions (plus an angle and, with ``translation``, a shift), so patches that
differ only by rotation land together. The measured trajectory drawn in this latent plane shows which kinds of
structure a run has visited; the kernel density of visited points and its local maxima ("aggregation points")
show where it keeps coming back to.

Training is ordinary AtomAI (``atomai.models.rVAE``: ``compile_trainer`` + ``train_epoch``), driven epoch by
epoch here so that a caller (napari's worker) can report progress and stop. AtomAI changes torch's process-wide
default dtype; it is restored after every call into it. Results are cached per image and patch size.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data.patches import extract_patches
from ..errors import HAEInputError


@contextlib.contextmanager
def _atomai_guard():
    """Restore torch's default dtype (AtomAI sets it globally) and keep AtomAI's files out of the cwd."""
    import torch

    prev = torch.get_default_dtype()
    try:
        with tempfile.TemporaryDirectory(prefix="hae-rvae-") as tmp:
            yield tmp
    finally:
        torch.set_default_dtype(prev)


@dataclass
class FeatureSpace:
    """A trained rVAE's view of every patch.

    ``latent`` (n, 2): content coordinates of each patch (row-major positions); ``angle`` (n,): encoded rotation
    (radians); ``losses``: training loss (-ELBO) per epoch; ``manifold`` (k*N, k*N): decoded patches on a k x k grid
    spanning the latent range (the "latent manifold" image), ``manifold_extent`` its (z1 min, z1 max, z2 min,
    z2 max).
    """

    latent: np.ndarray
    angle: np.ndarray
    losses: list
    manifold: np.ndarray
    manifold_extent: tuple
    patch_size: int
    key: str = ""

    def of_positions(self, positions, scan_shape) -> np.ndarray:
        """Latent coordinates (m, 2) of scan positions (m, 2) in pixels."""
        pos = np.asarray(positions, dtype=int).reshape(-1, 2)
        return self.latent[pos[:, 0] * int(scan_shape[1]) + pos[:, 1]]


_CACHE: dict[str, FeatureSpace] = {}


def cache_key(image: np.ndarray, patch_size: int, **params) -> str:
    h = hashlib.sha1(np.ascontiguousarray(image, dtype=np.float64).tobytes())
    h.update(repr((int(patch_size), sorted(params.items()))).encode())
    return h.hexdigest()[:16]


class TrainingCancelled(Exception):
    """The rVAE training was cancelled (``cancel()`` returned True); nothing is cached."""


def fit_feature_space(image: np.ndarray, patch_size: int, epochs: int = 15, batch_size: int = 128,
                      hidden: int = 64, lr: float = 1e-3, translation: bool = False,
                      rotation_prior: float = 0.1, seed: int = 0, max_patches: int | None = None,
                      progress: Callable[[int, int, float], bool | None] | None = None,
                      use_cache: bool = True, cancel: Callable[[], bool] | None = None) -> FeatureSpace:
    """Train an rVAE on every patch of ``image`` (patch size in pixels) and encode them all.

    ``progress(epoch, epochs, loss)`` is called after every epoch; returning ``False`` stops training early.
    ``cancel()`` is asked before every batch; True raises :class:`TrainingCancelled` within one batch (an epoch
    at patch 16 took ~65 s on a loaded machine: too long to wait for when napari closes).
    ``max_patches`` trains on a random subset (all patches are still encoded). Cached in memory per image, patch
    size and parameters (``use_cache=False`` retrains).
    """
    params = dict(epochs=epochs, batch_size=batch_size, hidden=hidden, lr=lr, translation=translation,
                  rotation_prior=rotation_prior, seed=seed, max_patches=max_patches)
    key = cache_key(image, patch_size, **params)
    if use_cache and key in _CACHE:
        return _CACHE[key]
    fs = train_rvae(extract_patches(image, patch_size), progress=progress, cancel=cancel, **params)
    fs.key = key
    if use_cache:
        _CACHE[key] = fs
    return fs


def train_rvae(patches: np.ndarray, epochs: int = 15, batch_size: int = 128, hidden: int = 64, lr: float = 1e-3,
               translation: bool = False, rotation_prior: float = 0.1, seed: int = 0,
               max_patches: int | None = None,
               progress: Callable[[int, int, float], bool | None] | None = None,
               cancel: Callable[[], bool] | None = None) -> FeatureSpace:
    """Train an rVAE on ``patches`` (n, N, N) and encode them all (see :func:`fit_feature_space`)."""
    import torch

    if int(epochs) < 1:
        raise HAEInputError(f"epochs={epochs} trains nothing.", "use at least 1 epoch (typical 10-50).")
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise HAEInputError(f"Patches of shape {patches.shape} are not a stack of square images.",
                            "pass an (n, N, N) array.")
    n, N, _ = patches.shape
    X = patches
    if max_patches is not None and max_patches < n:
        X = patches[np.random.default_rng(seed).choice(n, int(max_patches), replace=False)]
    with _atomai_guard() as tmp:
        from atomai.models import rVAE

        torch.manual_seed(seed)
        rv = rVAE((N, N), latent_dim=2, translation=translation, seed=seed, numlayers_encoder=2,
                  numlayers_decoder=2, numhidden_encoder=hidden, numhidden_decoder=hidden)
        rv.dx_prior = 0.1
        rv.kdict_["phi_prior"] = float(rotation_prior)
        rv.loss = "mse"
        rv.compile_trainer((X, None), None, training_cycles=int(epochs), batch_size=int(batch_size),
                           filename=f"{tmp}/rvae")
        for g in rv.optim.param_groups:
            g["lr"] = float(lr)
        if cancel is not None:
            step = rv.forward_compute_elbo   # what atomai's train_epoch calls on every batch

            def checked(*args):
                if cancel():
                    raise TrainingCancelled("rVAE training cancelled")
                return step(*args)

            rv.forward_compute_elbo = checked
        losses = []
        for e in range(int(epochs)):
            rv.current_epoch = e
            losses.append(-float(rv.train_epoch()))   # atomai returns the ELBO; we report -ELBO
            if progress is not None and progress(e + 1, int(epochs), losses[-1]) is False:
                break
        z_mean, _ = rv.encode(patches, num_batches=max(1, n // 2048))
        off = 3 if translation else 1
        latent = np.asarray(z_mean[:, off:off + 2], dtype=np.float64)
        angle = np.asarray(z_mean[:, 0], dtype=np.float64)
        manifold, extent = _manifold(rv, latent, N)
    return FeatureSpace(latent, angle, losses, manifold, extent, N)


def _manifold(rv, latent: np.ndarray, N: int, k: int = 8) -> tuple[np.ndarray, tuple]:
    """Decode a k x k grid over the central 98% of the latent range into one (k*N, k*N) image."""
    lo = np.quantile(latent, 0.01, axis=0)
    hi = np.quantile(latent, 0.99, axis=0)
    z1 = np.linspace(lo[0], hi[0], k)
    z2 = np.linspace(hi[1], lo[1], k)          # image rows go down, z2 goes up
    grid = np.array([[a, b] for b in z2 for a in z1], dtype=np.float32)
    imgs = np.asarray(rv.decode(grid)).reshape(k, k, N, N)
    return imgs.transpose(0, 2, 1, 3).reshape(k * N, k * N), (float(lo[0]), float(hi[0]), float(lo[1]),
                                                              float(hi[1]))


def density_maxima(points: np.ndarray, extent: tuple | None = None, grid: int = 96, bandwidth=None,
                   min_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Kernel density (scipy's Gaussian KDE) of 2-D ``points`` on a grid, and its local maxima.

    Returns ``(density (grid, grid) with rows along the 2nd coordinate, maxima (m, 2) in point coordinates
    sorted by density, extent (x0, x1, y0, y1))``. Maxima below ``min_fraction`` of the highest are dropped.
    """
    from scipy.ndimage import maximum_filter
    from scipy.stats import gaussian_kde

    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) < 3:
        raise HAEInputError(f"A density needs at least 3 points; got {len(p)}.", "measure a few more points.")
    if extent is None:
        pad = 0.1 * (p.max(0) - p.min(0) + 1e-9)
        extent = (p[:, 0].min() - pad[0], p[:, 0].max() + pad[0], p[:, 1].min() - pad[1], p[:, 1].max() + pad[1])
    xs = np.linspace(extent[0], extent[1], grid)
    ys = np.linspace(extent[2], extent[3], grid)
    X, Y = np.meshgrid(xs, ys)
    jitter = 1e-9 * np.random.default_rng(0).standard_normal(p.shape)   # a degenerate (collinear) set
    kde = gaussian_kde((p + jitter).T, bw_method=bandwidth)
    dens = kde(np.vstack([X.ravel(), Y.ravel()])).reshape(grid, grid)
    peaks = (dens == maximum_filter(dens, size=5, mode="nearest")) & (dens >= min_fraction * dens.max())
    iy, ix = np.nonzero(peaks)
    order = np.argsort(-dens[iy, ix])
    maxima = np.stack([xs[ix[order]], ys[iy[order]]], axis=1)
    return dens, maxima, tuple(float(v) for v in extent)
