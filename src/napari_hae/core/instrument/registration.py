"""Resuming on a live instrument: the structural image is acquired again (shot noise, stage drift), registered to
the recorded one by phase cross-correlation (scikit-image), and the run goes on in the recorded image's frame,
each position sent to where the specimen now is. During a run the same is done every ``drift_every`` acquisitions
(:meth:`Registered.track`, :func:`tracking`): the instrument acquires its image again and later positions follow.

Only a shift is followed. A re-acquired image that is rotated or magnified against the recorded one (scan rotation,
magnification changed) is refused: the recorded image is rotated and scaled over a grid of candidates (every 2
degrees to +-16, x0.8 to x1.25), each registered by a shift, and a candidate that correlates better than the
shift alone names what changed when it removes :data:`TRANSFORM_GAIN` or more of the misfit the shift leaves
(1 - correlation). A pure shift of such an image correlates well enough to pass (0.93 for 10 degrees on a real
map) and put spectra where they were not measured. Log-polar registration (scikit-image's example) found 10
degrees as 2.7 on a 50 x 40 map: too coarse for these fields.

Both images are smoothed (a Gaussian of :data:`SMOOTH_PX`) before the search: a rotated copy is interpolated,
which averages its shot noise, and on two noisy images of one field that alone correlated 0.02-0.09 better than
the unrotated copy (a fresh nion-usim HAADF was refused as "rotated by about 2 degrees").
"""

from __future__ import annotations

import collections
import math

import numpy as np

from ..errors import HAEInputError, InstrumentRefused, sentence
from .capabilities import ReacquiresImage, takes_fractions

MIN_CORRELATION = 0.5   # of the overlapping parts after the shift: below it the images are not the same field
MAX_SHIFT = 0.25        # of the field per axis: a larger drift leaves too little of the run's field to go on
TRANSFORM_GAIN = 0.25   # of the shift's misfit removed by a rotation or scale: the field has turned
MIN_GAIN = 0.005        # and at least this much correlation (two near-identical images: rounding, not a turn)
SMOOTH_PX = 1.0         # Gaussian sigma (search pixels) both images are smoothed by before the search
EDGE_PX = 3             # then cut from each side: 3 sigma, where the smoothing padded the image
ANGLES = np.arange(-16.0, 17.0, 2.0)                      # degrees tried
SCALES = (0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25)           # magnifications tried
SEARCH_PIXELS = 256     # the transform search bins larger fields to at most this many pixels a side


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
    _refuse_rotation_or_scale(a, b)
    ny, nx = a.shape
    if not corr >= MIN_CORRELATION or abs(d[0]) > MAX_SHIFT * ny or abs(d[1]) > MAX_SHIFT * nx:
        raise HAEInputError(
            f"The re-acquired structural image could not be registered to the recorded one (best shift (dy, dx) = "
            f"{d} px, correlation {corr:.2f}; needed >= {MIN_CORRELATION} within {MAX_SHIFT:.0%} of the field): "
            "it does not show the run's field. Nothing was measured.",
            "bring the run's region back under the beam (stage position, magnification, rotation) and resume; or "
            "start a new run there.")
    return d, (float(shift[0]), float(shift[1])), corr


def _transformed(image: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """``image`` rotated by ``angle`` degrees and magnified ``scale`` times about its centre."""
    from skimage.transform import AffineTransform, warp

    c = np.array(image.shape[::-1], dtype=float) / 2 - 0.5
    t = AffineTransform(translation=-c) + AffineTransform(rotation=np.deg2rad(angle), scale=scale) + \
        AffineTransform(translation=c)
    return warp(image, t.inverse, mode="edge", order=1)


def _binned(image: np.ndarray, f: int) -> np.ndarray:
    ny, nx = (n // f * f for n in image.shape)
    return image[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))


def _shift_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The correlation of ``a`` and ``b`` where they overlap, ``a`` moved onto ``b`` by its sub-pixel shift: the
    fraction interpolated (as a rotated or scaled candidate is: a whole-pixel baseline lost to any interpolated
    candidate on a diagonal drift, "rotated by about 2 degrees"), the whole pixels by the overlap."""
    from scipy.ndimage import shift as moved
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(b, a, upsample_factor=10, normalization=None)
    whole = np.round(shift)
    return _overlap_correlation(moved(a, shift - whole, order=1, mode="nearest"), b,
                                tuple(int(v) for v in whole))


def _refuse_rotation_or_scale(a: np.ndarray, b: np.ndarray) -> None:
    """Raise :class:`HAEInputError` when ``b`` is ``a`` rotated or magnified (see the module's text)."""
    from scipy.ndimage import gaussian_filter

    f = -(-max(a.shape) // SEARCH_PIXELS)   # large fields are searched binned (a rotation shows at any size)
    if f > 1:
        a, b = _binned(a, f), _binned(b, f)
    a, b = gaussian_filter(a, SMOOTH_PX, mode="nearest"), gaussian_filter(b, SMOOTH_PX, mode="nearest")
    m = EDGE_PX   # the smoothing's edge: padded in one image where the other, shifted, has the specimen
    a, b = a[m:-m, m:-m], b[m:-m, m:-m]
    shift_corr = _shift_correlation(a, b)
    base = shift_corr if np.isfinite(shift_corr) else -1.0
    best = (base, 0.0, 1.0)
    for angle in ANGLES:
        for scale in SCALES:
            if angle == 0.0 and scale == 1.0:
                continue
            c = _shift_correlation(_transformed(a, float(angle), scale), b)
            if c > best[0]:
                best = (c, float(angle), scale)
    corr, angle, scale = best
    gain = corr - base
    if gain < max(TRANSFORM_GAIN * (1.0 - base), MIN_GAIN) or not corr >= MIN_CORRELATION:   # no better, or
        return                                                                                   # another field
    what = " and ".join(w for w in (f"rotated by about {angle:g} degrees" if angle else "",
                                    f"magnified about {scale:g}x" if scale != 1.0 else "") if w)
    raise HAEInputError(
        f"The re-acquired structural image is {what} against the recorded one (correlation {corr:.3f} with that "
        f"transform, {shift_corr:.3f} with a shift alone, both smoothed by {SMOOTH_PX:g} px): the run's positions "
        "would land on other pixels. Nothing was measured.",
        "set the scan rotation and the field of view (magnification) the run was recorded with, acquire the image "
        "again and resume.")


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
    on the instrument (p + ``subpixel``, the sub-pixel estimate, where the instrument takes fractional positions);
    positions that drifted out of its field are refused (and avoided by the run)."""

    def __init__(self, microscope, recorded: np.ndarray, shift: tuple[int, int],
                 subpixel: tuple[float, float] | None = None):
        self.inner, self.recorded = microscope, np.asarray(recorded)
        self._follow(shift, subpixel)
        self.every, self._since, self._failed = 0, 0, False
        # (shift before, shift, sub-pixel shift, correlation, image beam seconds) of each check, for the run to record
        self.drift_notes: collections.deque = collections.deque()

    def _follow(self, shift, subpixel) -> None:
        self.shift = tuple(int(v) for v in shift)
        self.subpixel = tuple(float(v) for v in subpixel) if subpixel is not None and \
            takes_fractions(self.inner) else None

    def track(self, every: int) -> None:
        """Follow drift during the run: after every ``every`` acquisitions (:attr:`drift_due`) the run calls
        :meth:`check_drift`, before it decides where to measure next."""
        self.every, self._since, self._failed = int(every), 0, False

    @property
    def drift_due(self) -> bool:
        return bool(self.every) and self._since >= self.every

    def check_drift(self) -> None:
        """The instrument acquires its structural image again (:class:`ReacquiresImage`); it is registered to the
        recorded one and positions are sent by the new shift; the check is queued in :attr:`drift_notes` for the
        run to record. An image that does not register (turned, another field) raises InstrumentRefused, and
        every acquisition is refused until a check succeeds: nothing is measured elsewhere."""
        new = np.asarray(self.inner.acquire_structural_image(), dtype=np.float64)
        beam = float(getattr(self.inner, "last_image_beam_on_s", math.nan))
        try:
            shift, sub, corr = register(self.recorded, new)
        except HAEInputError as exc:
            self._failed = True
            raise InstrumentRefused(f"the drift check's image does not register to the run's ({sentence(exc)}) "
                                    "Nothing is measured elsewhere") from exc
        before = self.shift
        self._follow(shift, sub)
        self._since, self._failed = 0, False
        self.drift_notes.append((before, self.shift, tuple(float(v) for v in sub), float(corr), beam))

    def structural_image(self) -> np.ndarray:
        return self.recorded

    def reachable(self) -> np.ndarray:
        """(ny, nx) bool: the recorded pixels that are inside the instrument's field now."""
        ny, nx = self.recorded.shape
        y, x = np.mgrid[:ny, :nx]
        y, x = y + self.shift[0], x + self.shift[1]
        return (y >= 0) & (y < ny) & (x >= 0) & (x < nx)

    def acquire(self, y: int, x: int, **kw) -> np.ndarray:
        if self._failed:   # the last drift check did not register: only a new one that does lets it measure
            self.check_drift()
        self._since += 1
        ny, nx = self.recorded.shape
        qy, qx = int(y) + self.shift[0], int(x) + self.shift[1]
        if not (0 <= qy < ny and 0 <= qx < nx):
            raise InstrumentRefused(f"({y}, {x}) has drifted out of the instrument's field (to ({qy}, {qx}))")
        if self.subpixel is not None:   # the probe where the specimen is, between pixel centres if need be
            fy, fx = int(y) + self.subpixel[0], int(x) + self.subpixel[1]
            return self.inner.acquire(min(max(fy, 0.0), ny - 1.0), min(max(fx, 0.0), nx - 1.0), **kw)
        return self.inner.acquire(qy, qx, **kw)

    @property
    def last_beam_on_s(self) -> float:
        """The instrument's figure (the guard resets it before each acquisition: on the instrument, not on a copy
        of ours that would hide the instrument's from then on)."""
        return self.inner.last_beam_on_s

    @last_beam_on_s.setter
    def last_beam_on_s(self, value: float) -> None:
        self.inner.last_beam_on_s = value

    def __getattr__(self, name):   # scan shape, energy, blank, abort, last_energy, describe, close...
        if name == "acquire_many":   # the inner instrument's would acquire at unshifted positions: one by one here
            raise AttributeError(name)
        return getattr(self.inner, name)


def tracking(microscope, recorded: np.ndarray, every: int):
    """``microscope`` following drift every ``every`` acquisitions (unchanged with 0): a :class:`Registered` on the
    recorded image (the one a resume registered already, or a new one at no shift). Refused for an instrument that
    cannot acquire its image again."""
    if not every:
        return microscope
    if not isinstance(microscope, ReacquiresImage):
        raise HAEInputError(f"drift_every={every}: {type(microscope).__name__} cannot acquire its structural image "
                            "again during a run (no acquire_structural_image()).",
                            "leave drift tracking off (--drift-every 0) on this instrument (pre-acquired data does "
                            "not drift); a resume still registers a re-acquired image.")
    reg = microscope if isinstance(microscope, Registered) else Registered(microscope, recorded, (0, 0), (0.0, 0.0))
    reg.track(every)
    return reg
