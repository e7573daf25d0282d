"""Scalarizers: physics targets P(A) computed from a spectrum A(E).

A scalarizer function takes ``spectra`` of shape (..., n_channels) (or (..., ky, kx) for 4D-STEM), the channel
energies (eV, or ``None``) and keyword parameters, and returns an array of shape (...). Register your own with
:func:`register_scalarizer`::

    @register_scalarizer("my_target")
    def my_target(spectra, energy, *, a, b):
        return spectra[..., (energy >= a) & (energy <= b)].std(axis=-1)

A plain function of one spectrum returning a float works too (``vectorized=False``), and so does any callable
passed to :meth:`Scalarizer.from_callable`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import HAEInputError, sentence
from ..registry import Entry, ParamSpec, Registry, specs_from_signature

# band limits are energies: a parameter of these names is in the energy axis' units
ENERGY_PARAMS = ("a", "b", "a2", "b2")


def _entry(func, name: str, vectorized: bool = True, signal_ndim: int = 1) -> Entry:
    specs = tuple(ParamSpec(p.name, p.default, "eV" if p.name in ENERGY_PARAMS else p.unit, p.low, p.high, p.help)
                  for p in specs_from_signature(func, keyword_only=True))
    doc = (inspect.getdoc(func) or "").split("\n")[0]
    return Entry(name, func, specs, doc, {"vectorized": vectorized, "signal_ndim": signal_ndim})


SCALARIZERS = Registry("scalarizer", "napari_hae.scalarizers",
                       describe=lambda obj, name: _entry(obj, name))


def register_scalarizer(name: str, *, vectorized: bool = True, signal_ndim: int = 1):
    """Decorator adding ``func(spectra, energy, **params)`` to the registry under ``name``."""

    def deco(func):
        SCALARIZERS.add(_entry(func, name, vectorized, signal_ndim))
        return func

    return deco


def available_scalarizers() -> dict[str, str]:
    """Registered names with their one-line descriptions."""
    return {e.name: e.doc for e in SCALARIZERS.entries()}


# ----------------------------------------------------------------------------------------------------------------
# helpers

def check_band(energy: np.ndarray, a: float, b: float, what: str = "band", units: str = "eV",
               per_unit: float = 1.0) -> tuple[float, float]:
    """``(a, b)`` (eV) as floats, or HAEInputError saying what is wrong with the band on this axis. Messages give
    energies in ``units`` (``per_unit`` eV each: the dock shows keV for EDS)."""
    if energy is None:
        raise HAEInputError(f"The {what} scalarizer needs an energy axis, but the data has none.",
                            "use a 1-D spectrum image with a calibrated energy axis.")
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        raise HAEInputError(f"The {what} [{a}, {b}] is not finite: its limits must be numbers.",
                            f"give finite band limits in {units}.") from None
    e = np.asarray(energy, dtype=np.float64)
    u = units

    def f(*vs) -> str:   # energies (eV) as the user reads them
        return ", ".join(f"{v / per_unit:g}" for v in vs)

    if e.size > 1 and not np.all(np.diff(e) > 0):
        raise HAEInputError(f"The energy axis does not increase channel by channel ({f(e[0])} to {f(e[-1])} {u}); "
                            f"a {what} on it would be wrong (integrals 0, negative widths).",
                            "reverse the channels so that energies increase (napari-hae does this when it reads "
                            "a file with a negative dispersion), or fix the calibration.")
    lo, hi = float(np.min(e)), float(np.max(e))
    if not (np.isfinite(a) and np.isfinite(b)):
        raise HAEInputError(f"The {what} [{a}, {b}] is not finite.", f"give finite band limits in {u}.")
    if a >= b:
        raise HAEInputError(f"The {what} [{f(a, b)}] {u} is reversed or empty (start must be below end).",
                            f"give the lower energy first, e.g. [{f(min(a, b), max(a, b))}] {u}.")
    if b <= lo or a >= hi:
        raise HAEInputError(
            f"The {what} [{f(a, b)}] {u} lies outside the energy axis [{f(lo, hi)}] {u}.",
            f"choose limits inside [{f(lo, hi)}] {u}.",
        )
    if a < lo or b > hi:
        raise HAEInputError(
            f"The {what} [{f(a, b)}] {u} extends beyond the energy axis [{f(lo, hi)}] {u}.",
            f"clip the {what} to [{f(max(a, lo), min(b, hi))}] {u}.",
        )
    if e.size > 1 and not np.any((e >= a) & (e <= b)):
        step = float(e[1] - e[0])
        kev = (f" If you meant keV, that is [{a * 1000:g}, {b * 1000:g}] eV."
               if per_unit == 1.0 and lo <= a * 1000 and b * 1000 <= hi else "")
        raise HAEInputError(
            f"The {what} [{f(a, b)}] {u} holds no channel of the energy axis (a channel every {f(step)} {u} from "
            f"{f(lo)} to {f(hi)} {u}): its value would be interpolated from the two channels around it.{kev}",
            f"widen the {what} to at least one channel ({f(step)} {u}).",
        )
    return a, b



def band_weights(energy: np.ndarray, a: float, b: float) -> np.ndarray:
    """Weights w with ``spectra @ w`` = exact integral over [a, b] of the piecewise-linear interpolant (eV*counts)."""
    e = np.asarray(energy, dtype=np.float64)
    a, b = check_band(e, a, b)
    w = np.zeros_like(e)
    e0, e1 = e[:-1], e[1:]
    h = e1 - e0
    lo = np.clip(a, e0, e1)
    hi = np.clip(b, e0, e1)
    t0 = (lo - e0) / h
    t1 = (hi - e0) / h
    right = h * (t1**2 - t0**2) / 2.0          # integral of t
    left = h * (t1 - t0) - right               # integral of (1 - t)
    np.add.at(w, np.arange(len(e0)), left)
    np.add.at(w, np.arange(1, len(e)), right)
    return w


def band_mask(energy: np.ndarray, a: float, b: float, what: str = "band") -> np.ndarray:
    a, b = check_band(energy, a, b, what)
    return (energy >= a) & (energy <= b)   # not empty: check_band refuses a band between two channels


POWER_LAW_ITERATIONS = 6


def fit_power_law(spectra: np.ndarray, energy: np.ndarray, fit_window: tuple[float, float]) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """Fit ``A * E**-r`` to counts in ``fit_window`` (eV) by Poisson maximum likelihood; returns ``(log A, -r)``.

    A log-linear Poisson model (log mu = c + s log E) fitted by iteratively reweighted least squares: the first
    iteration is the counts-weighted log-log fit (var(log y) ~ 1/y), later ones reweight by the fitted mean, so
    channels with few or zero counts pull the fit no more than their statistics allow. The unweighted log-log fit
    it replaces let one near-empty channel swing the background by orders of magnitude (at low dose a few pixels
    came out at -2e6 counts). Spectra with no positive counts in the window get a zero background.
    """
    m = band_mask(energy, *fit_window, what="background fit window")
    if m.sum() < 2:
        raise HAEInputError("The background fit window holds fewer than 2 channels.",
                            "widen the pre-edge window (typically 30-100 eV before the edge).")
    if np.any(energy[m] <= 0):
        raise HAEInputError("The power-law background window includes energies <= 0 eV.",
                            "place the pre-edge window at positive energies before the edge.")
    y = np.clip(np.asarray(spectra, dtype=np.float64)[..., m], 0.0, None)
    lx = np.log(np.asarray(energy, dtype=np.float64)[m])
    mu = np.maximum(y, 0.5)   # start: counts-weighted log-log fit (empty channels at half a count)
    eta = np.log(mu)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(POWER_LAW_ITERATIONS):
            z = eta + (y - mu) / mu                       # working response of the log link
            sw = mu.sum(-1, keepdims=True)
            mx = (mu * lx).sum(-1, keepdims=True) / sw
            mz = (mu * z).sum(-1, keepdims=True) / sw
            slope = (mu * (lx - mx) * (z - mz)).sum(-1) / (mu * (lx - mx) ** 2).sum(-1)
            icpt = mz[..., 0] - slope * mx[..., 0]
            eta = np.clip(icpt[..., None] + slope[..., None] * lx, -700.0, 700.0)
            mu = np.maximum(np.exp(eta), 1e-300)
    empty = ~(y.sum(-1) > 0) | ~np.isfinite(icpt) | ~np.isfinite(slope)
    return np.where(empty, -np.inf, icpt), np.where(empty, 0.0, slope)


def subtract_power_law(spectra: np.ndarray, energy: np.ndarray, fit_window: tuple[float, float]) -> np.ndarray:
    """Subtract a power-law background ``A * E**-r`` fitted in ``fit_window`` (eV) (:func:`fit_power_law`).

    The standard pre-edge background for core-loss EELS. Returns the background-subtracted spectra.
    """
    spectra = np.asarray(spectra, dtype=np.float64)
    icpt, slope = fit_power_law(spectra, energy, fit_window)
    with np.errstate(over="ignore"):
        bg = np.exp(icpt[..., None] + slope[..., None] * np.log(np.clip(energy, 1e-12, None)))
    return spectra - bg


# ----------------------------------------------------------------------------------------------------------------
# built-in scalarizers

@register_scalarizer("band_integral")
def band_integral(spectra, energy, *, a, b):
    """Integrated intensity over the band [a, b] eV (counts * eV): the exact integral of the piecewise-linear spectrum,
    partial channels at the ends included (``band_sum``: HyperSpy's whole channels)."""
    return np.asarray(spectra, dtype=np.float64) @ band_weights(energy, a, b)


def band_channels(energy: np.ndarray, a: float, b: float) -> slice:
    """The channels HyperSpy's ``s.isig[a:b]`` selects on a uniform axis: from the channel nearest ``a`` to the one
    nearest ``b``, that one excluded (nearest as its ``value2index``: half-way rounds toward the lower index above
    0 eV, away from it below)."""
    e = np.asarray(energy, dtype=np.float64)
    a, b = check_band(e, a, b)
    offset, scale = float(e[0]), float(e[-1] - e[0]) / (len(e) - 1)

    def nearest(value: float) -> int:
        x = np.trunc((value - offset) / scale * 1e12) / 1e12
        return int(np.ceil(x - 0.5) if value >= 0 else np.floor(x + 0.5))

    i0, i1 = nearest(a), min(nearest(b), len(e))
    if i1 <= i0:
        raise HAEInputError(f"The band {a:g}-{b:g} eV holds no whole channel (channels of {scale:g} eV).",
                            "widen the band to at least one channel.")
    return slice(i0, i1)


@register_scalarizer("band_sum")
def band_sum(spectra, energy, *, a, b):
    """Counts summed over the whole channels of [a, b) eV, HyperSpy's convention (``isig[a:b].integrate1D`` on EELS)."""
    return np.asarray(spectra, dtype=np.float64)[..., band_channels(energy, a, b)].sum(axis=-1)


@register_scalarizer("peak_max")
def peak_max(spectra, energy, *, a, b):
    """Maximum intensity within the band [a, b] eV (counts)."""
    return np.asarray(spectra)[..., band_mask(energy, a, b)].max(axis=-1).astype(np.float64)


@register_scalarizer("band_ratio")
def band_ratio(spectra, energy, *, a, b, a2, b2):
    """Ratio of integrated intensities, band [a, b] over band [a2, b2] (dimensionless)."""
    num = band_integral(spectra, energy, a=a, b=b)
    den = band_integral(spectra, energy, a=a2, b=b2)
    tiny = 1e-12 * max(float(np.max(np.abs(den))), 1.0)
    return num / np.where(np.abs(den) < tiny, np.copysign(tiny, den + 0.0), den)


def _baseline(row: np.ndarray, e: np.ndarray) -> np.ndarray:
    """A straight line through the means of the band's outermost channels (3 at each end, fewer in short bands):
    the level a peak stands on."""
    k = max(1, min(3, len(row) // 6))
    y0, y1 = float(row[:k].mean()), float(row[-k:].mean())
    x0, x1 = float(e[:k].mean()), float(e[-k:].mean())
    return y0 + (y1 - y0) * (e - x0) / (x1 - x0) if x1 != x0 else np.full(len(e), y0)


def _run_above(y: np.ndarray, k: int, level: float) -> tuple[int, int]:
    """First and last index of the run of channels above ``level`` that holds channel ``k`` (``k`` itself either
    way)."""
    lo, hi = k, k
    while lo > 0 and y[lo - 1] > level:
        lo -= 1
    while hi < len(y) - 1 and y[hi + 1] > level:
        hi += 1
    return lo, hi


def _peak_fit(row: np.ndarray, e: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(position, height above baseline, baseline) of the highest peak of one band.

    A Gaussian fitted to the channels above half the peak's height (weighted least squares of the log-counts,
    weights = counts, since var(log y) ~ 1/y): exact for a Gaussian, and on Poisson data it uses every channel
    of the peak, not the 3 around the maximum, whose refinement was worse than the plain argmax. A peak the
    fit cannot describe (flat, or not concave) falls back to the highest channel.
    """
    base = _baseline(row, e)
    y = row - base
    k = int(np.argmax(y))
    lo, hi = _run_above(y, k, y[k] / 2.0)
    lo, hi = max(0, min(lo, k - 1)), min(len(y) - 1, max(hi, k + 1))
    xs, ys = e[lo:hi + 1], y[lo:hi + 1]
    ok = ys > 0
    if ok.sum() >= 3 and y[k] > 0:
        x0 = e[k]
        sc = max(float(np.ptp(xs)), 1e-300)
        t = (xs[ok] - x0) / sc
        w = np.sqrt(ys[ok])
        A = np.stack([np.ones_like(t), t, t * t], 1) * w[:, None]
        c0, c1, c2 = np.linalg.lstsq(A, np.log(ys[ok]) * w, rcond=None)[0]
        if c2 < 0:
            tm = -c1 / (2 * c2)
            if (xs[0] - x0) / sc <= tm <= (xs[-1] - x0) / sc:
                return float(x0 + tm * sc), float(np.exp(c0 - c1 * c1 / (4 * c2))), base
    return float(e[k]), float(max(y[k], 0.0)), base


def _per_band(spectra, energy, a, b, func) -> np.ndarray:
    s = np.asarray(spectra, dtype=np.float64)
    m = band_mask(energy, a, b)
    if m.sum() < 3:
        raise HAEInputError(f"The band [{a:g}, {b:g}] eV holds {m.sum()} channel(s); a peak needs at least 3.",
                            "widen the band to cover the whole peak and some baseline on either side.")
    e = np.asarray(energy, dtype=np.float64)[m]
    sb = s[..., m]
    flat = sb.reshape(-1, sb.shape[-1])
    return np.array([func(row, e) for row in flat], dtype=np.float64).reshape(sb.shape[:-1])


@register_scalarizer("peak_position")
def peak_position(spectra, energy, *, a, b):
    """Energy of the highest peak in [a, b] eV above a linear baseline, by a Gaussian fit to the channels above
    half its height (eV)."""
    return _per_band(spectra, energy, a, b, lambda row, e: _peak_fit(row, e)[0])


def _fwhm(row: np.ndarray, e: np.ndarray) -> float:
    pos, height, base = _peak_fit(row, e)
    y = row - base
    half = height / 2.0
    k = int(np.clip(np.searchsorted(e, pos), 0, len(e) - 1))
    k = k if y[k] >= half or k == 0 else k - 1
    left = right = k
    if y[k] > half:   # the channels just outside the run above half height (or the band's ends)
        lo, hi = _run_above(y, k, half)
        left, right = max(lo - 1, 0), min(hi + 1, len(y) - 1)
    el = e[left] if y[left] > half else np.interp(half, [y[left], y[left + 1]], [e[left], e[left + 1]])
    er = e[right] if y[right] > half else np.interp(half, [y[right], y[right - 1]], [e[right], e[right - 1]])
    return float(er - el)


@register_scalarizer("peak_fwhm")
def peak_fwhm(spectra, energy, *, a, b):
    """Full width at half maximum (eV) of the highest peak in [a, b] eV: half of its fitted height above a linear
    baseline (see ``peak_position``), crossings interpolated linearly."""
    return _per_band(spectra, energy, a, b, _fwhm)


@register_scalarizer("com_magnitude", signal_ndim=2)
def com_magnitude(patterns, energy=None, *, center=None):
    """Centre-of-mass shift magnitude of 4D-STEM diffraction patterns from ``center`` (pattern pixels)."""
    p = np.asarray(patterns, dtype=np.float64)
    if p.ndim < 2:
        raise HAEInputError("The com_magnitude scalarizer needs 2-D diffraction patterns (ky, kx).",
                            "load 4D-STEM data with shape (y, x, ky, kx).")
    ky, kx = p.shape[-2:]
    cy, cx = ((ky - 1) / 2.0, (kx - 1) / 2.0) if center is None else center
    tot = p.sum(axis=(-2, -1))
    tot = np.where(tot == 0, 1.0, tot)
    yy, xx = np.arange(ky), np.arange(kx)
    com_y = (p.sum(-1) * yy).sum(-1) / tot
    com_x = (p.sum(-2) * xx).sum(-1) / tot
    return np.hypot(com_y - cy, com_x - cx)


# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Scalarizer:
    """A registered scalarizer with its parameters, e.g. ``Scalarizer("band_integral", {"a": 1.0, "b": 2.1})``.

    ``background=(c, d)`` subtracts a power-law background fitted in [c, d] eV before scalarizing (core-loss EELS).
    """

    name: str
    params: dict = field(default_factory=dict)
    background: tuple[float, float] | None = None
    _callable: Callable | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self._callable is None:
            SCALARIZERS.get(self.name)   # raises, naming the registered ones
        if self.background is not None:
            self.background = (float(self.background[0]), float(self.background[1]))
        self.params = dict(self.params)

    @classmethod
    def from_callable(cls, func: Callable, name: str | None = None) -> Scalarizer:
        """Wrap any ``func(spectrum_1d) -> float`` (no registration needed; not restorable from a saved trace)."""
        if not callable(func):
            raise HAEInputError(f"Scalarizer.from_callable needs a function; got {type(func).__name__} {func!r:.60}.",
                                "pass a function of one spectrum, e.g. Scalarizer.from_callable(lambda s: s[40:60].sum"
                                "()).")
        return cls(name=name or getattr(func, "__name__", "custom"), _callable=func)

    @property
    def _entry(self) -> Entry:
        if self._callable is not None:
            return Entry(self.name, lambda s, e, **kw: self._callable(s), (), "user callable",
                         {"vectorized": False, "signal_ndim": 1})
        return SCALARIZERS.get(self.name)

    def validate(self, energy: np.ndarray | None, signal_shape: tuple[int, ...]) -> None:
        """Raise HAEInputError if this scalarizer cannot run on data of this energy axis and signal shape."""
        ndim = self._entry.extra["signal_ndim"]
        if len(signal_shape) != ndim:
            raise HAEInputError(
                f"Scalarizer {self.name!r} expects {ndim}-D signals but the data's signals "
                f"are {len(signal_shape)}-D {signal_shape}.",
                "pick a scalarizer for this kind of data (com_magnitude for 4D-STEM, band scalarizers for spectra).",
            )
        probe = np.ones((1, *signal_shape))
        self(probe, energy)

    def __call__(self, spectra: np.ndarray, energy: np.ndarray | None, errors: str = "raise") -> np.ndarray:
        """Scalar value(s) for ``spectra`` (..., *signal) -> (...), float64. ``errors="nan"``: a spectrum for which
        the scalarizer raises or overflows gets NaN instead of failing the others (the loop's training targets)."""
        entry = self._entry
        s = np.asarray(spectra, dtype=np.float64)
        if self.background is not None:
            s = subtract_power_law(s, energy, self.background)
        sig_nd = entry.extra["signal_ndim"]
        if entry.extra["vectorized"]:
            try:
                out = entry.obj(s, energy, **self.params)
            except TypeError as exc:
                raise HAEInputError(f"Scalarizer {self.name!r} got wrong parameters {self.params}: {sentence(exc)}",
                                    f"give exactly the parameters of {self.name}: "
                                    f"{entry.param_names()}.") from exc
            return self._checked(out, s.shape[: s.ndim - sig_nd])
        lead = s.shape[: s.ndim - sig_nd]
        flat = s.reshape(-1, *s.shape[s.ndim - sig_nd:])
        out = np.empty(len(flat))
        for i, row in enumerate(flat):
            try:
                out[i] = float(entry.obj(row, energy, **self.params))
            except Exception:
                if errors != "nan":
                    raise
                out[i] = np.nan
        return out.reshape(lead)

    def _checked(self, out, lead: tuple) -> np.ndarray:
        """A vectorised scalarizer's output: one number per spectrum, or a clear error naming the scalarizer (a
        wrong shape ended in numpy's broadcast traceback)."""
        try:
            arr = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise HAEInputError(f"Scalarizer {self.name!r} returned {type(out).__name__}, not numbers ({exc}).",
                                "return one number per spectrum (an array of the spectra's leading shape).") from None
        if arr.shape != tuple(lead):
            if arr.size == int(np.prod(lead)) and arr.ndim <= 1 + len(lead):
                return arr.reshape(lead)
            raise HAEInputError(f"Scalarizer {self.name!r} returned shape {arr.shape} for spectra of leading shape "
                                f"{tuple(lead)}: one number per spectrum was expected.",
                                "return spectra[..., band].sum(axis=-1)-like values: one per spectrum (reduce the "
                                "energy axis, keep the others).")
        return arr

    def to_dict(self) -> dict:
        return {"name": self.name, "params": self.params,
                "background": None if self.background is None else list(self.background)}

    @classmethod
    def from_dict(cls, d: dict) -> Scalarizer:
        bg = d.get("background")
        return cls(d["name"], dict(d.get("params", {})), None if bg is None else tuple(bg))

    def label(self) -> str:
        ps = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({ps})"
