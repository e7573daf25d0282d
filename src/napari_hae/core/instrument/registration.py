"""Resuming on a live instrument: the structural image is acquired again (shot noise, stage drift), registered to
the recorded one by phase cross-correlation (scikit-image), and the run goes on in the recorded image's frame,
each position sent to where the specimen now is.
"""

from __future__ import annotations

import numpy as np

from ..errors import HAEInputError, InstrumentRefused

MIN_CORRELATION = 0.5   # of the overlapping parts after the shift: below it the images are not the same field
MAX_SHIFT = 0.25        # of the field per axis: a larger drift leaves too little of the run's field to go on


def register(recorded: np.ndarray, new: np.ndarray) -> tuple[tuple[int, int], tuple[float, float], float]:
    """The drift d (pixels) such that what was at pixel p of ``recorded`` is at p + d in ``new``: (whole pixels,
    sub-pixel estimate, correlation of the overlap). Raises :class:`HAEInputError` when they do not register."""
    from skimage.registration import phase_cross_correlation

    a, b = np.asarray(recorded, np.float64), np.asarray(new, np.float64)
    if a.shape != b.shape:
        raise HAEInputError(f"The re-acquired structural image is {b.shape[0]} x {b.shape[1]} pixels; the run's is "
                            f"{a.shape[0]} x {a.shape[1]}.",
                            "acquire it with the run's frame (the same pixels and field of view), then resume.")
    shift, _, _ = phase_cross_correlation(b, a, upsample_factor=10, normalization=None)
    d = tuple(int(round(float(v))) for v in shift)
    corr = _overlap_correlation(a, b, d)
    ny, nx = a.shape
    if not corr >= MIN_CORRELATION or abs(d[0]) > MAX_SHIFT * ny or abs(d[1]) > MAX_SHIFT * nx:
        raise HAEInputError(
            f"The re-acquired structural image could not be registered to the recorded one (best shift (dy, dx) = "
            f"{d} px, correlation {corr:.2f}; needed >= {MIN_CORRELATION} within {MAX_SHIFT:.0%} of the field): "
            "it does not show the run's field. Nothing was measured.",
            "bring the run's region back under the beam (stage position, magnification, rotation) and resume; or "
            "start a new run there.")
    return d, (float(shift[0]), float(shift[1])), corr


def _overlap_correlation(a, b, d) -> float:
    dy, dx = d
    ny, nx = a.shape
    ya, yb = slice(max(0, -dy), ny - max(0, dy)), slice(max(0, dy), ny - max(0, -dy))
    xa, xb = slice(max(0, -dx), nx - max(0, dx)), slice(max(0, dx), nx - max(0, -dx))
    u, v = a[ya, xa].ravel(), b[yb, xb].ravel()
    if u.size < 4 or u.std() == 0 or v.std() == 0:
        return float("nan")
    return float(np.corrcoef(u, v)[0, 1])


class Registered:
    """``microscope`` seen in the recorded image's frame: acquiring at recorded pixel p acquires at p + ``shift``
    on the instrument; positions that drifted out of its field are refused (and avoided by the run)."""

    def __init__(self, microscope, recorded: np.ndarray, shift: tuple[int, int]):
        self.inner, self.recorded, self.shift = microscope, np.asarray(recorded), tuple(shift)

    def structural_image(self) -> np.ndarray:
        return self.recorded

    def reachable(self) -> np.ndarray:
        """(ny, nx) bool: the recorded pixels that are inside the instrument's field now."""
        ny, nx = self.recorded.shape
        y, x = np.mgrid[:ny, :nx]
        y, x = y + self.shift[0], x + self.shift[1]
        return (y >= 0) & (y < ny) & (x >= 0) & (x < nx)

    def acquire(self, y: int, x: int, **kw) -> np.ndarray:
        ny, nx = self.recorded.shape
        qy, qx = int(y) + self.shift[0], int(x) + self.shift[1]
        if not (0 <= qy < ny and 0 <= qx < nx):
            raise InstrumentRefused(f"({y}, {x}) has drifted out of the instrument's field (to ({qy}, {qx}))")
        return self.inner.acquire(qy, qx, **kw)

    def __getattr__(self, name):   # scan shape, energy, blank, abort, last_energy, describe, close...
        return getattr(self.inner, name)
