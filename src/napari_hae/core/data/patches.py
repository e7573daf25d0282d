"""Patches of the structural image centred on every scan position.

A patch of size N at position (y, x) covers rows ``y - N//2 .. y - N//2 + N - 1`` (same for columns), so for odd
N it is symmetric about the position and for even N the position is the lower of the two central pixels. Borders
are padded by reflection. The image is standardised once (zero mean, unit std over the whole image) so that
patches keep their absolute contrast relative to each other.
"""

from __future__ import annotations

import numpy as np

from ..errors import HAEInputError


def check_patch_size(patch_size, scan_shape) -> int:
    """Validate a patch size (pixels) for an image of ``scan_shape``; returns it as int."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)):
        raise HAEInputError(f"Patch size {patch_size!r} is not an integer.", "give a whole number of pixels, e.g. 16.")
    n = int(patch_size)
    if n < 3:
        raise HAEInputError(f"Patch size {n} is smaller than 3 pixels; the model would see no structure.",
                            "use a patch size of at least 3 pixels (typical: 8-24).")
    if n > min(scan_shape):
        raise HAEInputError(
            f"Patch size {n} is larger than the image {tuple(scan_shape)}.",
            f"use a patch size of at most {min(scan_shape)} pixels.",
        )
    return n


def standardize_image(image: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-std copy of ``image`` (float32); a constant image maps to zeros."""
    img = np.asarray(image, dtype=np.float64)
    std = img.std()
    out = (img - img.mean()) / (std if std > 0 else 1.0)
    return out.astype(np.float32)


def _padded(img: np.ndarray, n: int) -> np.ndarray:
    """``img`` reflect-padded so that every pixel has an N x N patch around it (see the module docstring)."""
    before = n // 2
    return np.pad(img, ((before, n - 1 - before), (before, n - 1 - before)), mode="reflect")


def extract_patches(image: np.ndarray, patch_size: int, positions: np.ndarray | None = None,
                    normalize: bool = True) -> np.ndarray:
    """Patches of ``image`` (ny, nx) centred on ``positions`` (n, 2) or on every pixel (row-major).

    Returns an (n, N, N) float32 array; with ``positions=None`` n = ny * nx and patch ``i`` belongs to
    position ``divmod(i, nx)``.
    """
    image = np.asarray(image)
    n = check_patch_size(patch_size, image.shape)
    padded = _padded(standardize_image(image) if normalize else image.astype(np.float32), n)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (n, n))  # (ny, nx, n, n) view
    if positions is None:
        return np.ascontiguousarray(windows.reshape(-1, n, n))
    pos = np.asarray(positions, dtype=int).reshape(-1, 2)
    return np.ascontiguousarray(windows[pos[:, 0], pos[:, 1]])


class PatchGrid:
    """The patches of every scan position without holding them: the standardised, reflect-padded image and a
    patch size. It behaves as the (ny * nx, N * N) float32 array :func:`extract_patches` would return
    (``shape``, ``len``, indexing by flat positions, ``np.asarray``), so any model can take it; a model that knows
    it (the DKL) computes its first layer over every position as one convolution of the image instead.

    Held: the padded image (4 bytes a pixel); a 1024 x 1024 scan at patch 16 held 1 GiB of patches before.
    """

    def __init__(self, image: np.ndarray, patch_size: int):
        image = np.asarray(image)
        self.patch_size = n = check_patch_size(patch_size, image.shape)
        self.scan_shape = tuple(int(v) for v in image.shape)
        self.padded = _padded(standardize_image(image), n)
        self.shape = (self.scan_shape[0] * self.scan_shape[1], n * n)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _windows(self) -> np.ndarray:
        return np.lib.stride_tricks.sliding_window_view(self.padded, (self.patch_size,) * 2)

    def __getitem__(self, index) -> np.ndarray:
        """Patches (flattened) of flat position(s) ``index``: an int, a slice, an integer or boolean array."""
        flat = np.arange(self.shape[0])[index]
        y, x = np.divmod(np.atleast_1d(flat), self.scan_shape[1])
        out = np.ascontiguousarray(self._windows()[y, x].reshape(len(y), -1))
        return out[0] if np.ndim(flat) == 0 else out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Patches of scan rows ``start:stop`` ((stop - start) * nx, N * N), for batched passes."""
        return np.ascontiguousarray(self._windows()[start:stop].reshape(-1, self.shape[1]))

    def __array__(self, dtype=None, copy=None):
        out = self.rows(0, self.scan_shape[0])
        return out if dtype is None else out.astype(dtype)

    def reshape(self, *shape):
        return np.asarray(self).reshape(*shape)


def flat_index(positions: np.ndarray, scan_shape) -> np.ndarray:
    """Row-major flat indices of (n, 2) integer positions (y, x)."""
    pos = np.asarray(positions, dtype=int).reshape(-1, 2)
    return pos[:, 0] * int(scan_shape[1]) + pos[:, 1]


def positions_of(flat: np.ndarray, scan_shape) -> np.ndarray:
    """(n, 2) positions (y, x) of row-major flat indices."""
    y, x = np.divmod(np.asarray(flat, dtype=int), int(scan_shape[1]))
    return np.stack([y, x], axis=-1)


def step_lengths(positions) -> np.ndarray:
    """Euclidean length (pixels) of each move between consecutive positions (n-1,)."""
    p = np.asarray(positions, dtype=float).reshape(-1, 2)
    return np.hypot(*np.diff(p, axis=0).T) if len(p) > 1 else np.zeros(0)


def travel_distance(positions, pixel_size: float = 1.0) -> np.ndarray:
    """Cumulative travel distance after each move (n-1,), in pixels times ``pixel_size``."""
    return np.cumsum(step_lengths(positions)) * float(pixel_size)
