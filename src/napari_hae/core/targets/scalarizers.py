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

from ..errors import HAEInputError
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

def _check_band(energy: np.ndarray, a: float, b: float, what: str = "band") -> tuple[float, float]:
    if energy is None:
        raise HAEInputError(f"The {what} scalarizer needs an energy axis, but the data has none.",
                            "use a 1-D spectrum image with a calibrated energy axis.")
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        raise HAEInputError(f"The {what} [{a}, {b}] is not finite: its limits must be numbers.",
                            "give finite band limits in eV.") from None
    e = np.asarray(energy, dtype=np.float64)
    if e.size > 1 and not np.all(np.diff(e) > 0):
        raise HAEInputError(f"The energy axis does not increase channel by channel ({e[0]:g} to {e[-1]:g} eV); "
                            f"a {what} on it would be wrong (integrals 0, negative widths).",
                            "reverse the channels so that energies increase (napari-hae does this when it reads "
                            "a file with a negative dispersion), or fix the calibration.")
    lo, hi = float(np.min(e)), float(np.max(e))
    if not (np.isfinite(a) and np.isfinite(b)):
        raise HAEInputError(f"The {what} [{a}, {b}] is not finite.", "give finite band limits in eV.")
    if a >= b:
        raise HAEInputError(f"The {what} [{a}, {b}] eV is reversed or empty (start must be below end).",
                            f"give the lower energy first, e.g. [{min(a, b)}, {max(a, b)}].")
    if b <= lo or a >= hi:
        raise HAEInputError(
            f"The {what} [{a:g}, {b:g}] eV lies outside the energy axis [{lo:g}, {hi:g}] eV.",
            f"choose limits inside [{lo:g}, {hi:g}] eV.",
        )
    if a < lo or b > hi:
        raise HAEInputError(
            f"The {what} [{a:g}, {b:g}] eV extends beyond the energy axis [{lo:g}, {hi:g}] eV.",
            f"clip the band to [{max(a, lo):g}, {min(b, hi):g}] eV.",
        )
    return a, b


def band_weights(energy: np.ndarray, a: float, b: float) -> np.ndarray:
    """Weights w with ``spectra @ w`` = exact integral over [a, b] of the piecewise-linear interpolant (eV*counts)."""
    e = np.asarray(energy, dtype=np.float64)
    a, b = _check_band(e, a, b)
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


def band_mask(energy: np.ndarray, a: float, b: float) -> np.ndarray:
    a, b = _check_band(energy, a, b)
    m = (energy >= a) & (energy <= b)
    if not m.any():
        raise HAEInputError(f"The band [{a:g}, {b:g}] eV contains no channel of the energy axis.",
                            "widen the band to include at least one channel.")
    return m


def subtract_power_law(spectra: np.ndarray, energy: np.ndarray, fit_window: tuple[float, float]) -> np.ndarray:
    """Subtract a power-law background ``A * E**-r`` fitted (log-log least squares) in ``fit_window`` (eV).

    The standard pre-edge background for core-loss EELS. Returns the background-subtracted spectra.
    """
    m = band_mask(energy, *fit_window)
    if m.sum() < 2:
        raise HAEInputError("The background fit window holds fewer than 2 channels.",
                            "widen the pre-edge window (typically 30-100 eV before the edge).")
    if np.any(energy[m] <= 0):
        raise HAEInputError("The power-law background window includes energies <= 0 eV.",
                            "place the pre-edge window at positive energies before the edge.")
    spectra = np.asarray(spectra, dtype=np.float64)
    lx = np.log(energy[m])
    ly = np.log(np.clip(spectra[..., m], 1e-12, None))
    lx_c = lx - lx.mean()
    slope = (ly * lx_c).sum(-1) / (lx_c**2).sum()
    intercept = ly.mean(-1) - slope * lx.mean()
    with np.errstate(over="ignore"):
        bg = np.exp(intercept[..., None] + slope[..., None] * np.log(np.clip(energy, 1e-12, None)))
    return spectra - bg


# ----------------------------------------------------------------------------------------------------------------
# built-in scalarizers

@register_scalarizer("band_integral")
def band_integral(spectra, energy, *, a, b):
    """Integrated intensity over the band [a, b] eV (counts * eV)."""
    return np.asarray(spectra, dtype=np.float64) @ band_weights(energy, a, b)


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


def _peak_index(s, m):
    idx = np.flatnonzero(m)
    k = np.argmax(s[..., m], axis=-1)
    return idx[k], idx


@register_scalarizer("peak_position")
def peak_position(spectra, energy, *, a, b):
    """Energy of the highest peak in [a, b] eV, refined to sub-channel by a Gaussian (log-parabola) fit (eV)."""
    s = np.asarray(spectra, dtype=np.float64)
    m = band_mask(energy, a, b)
    i, idx = _peak_index(s, m)
    im = np.clip(i - 1, idx[0], idx[-1])
    ip = np.clip(i + 1, idx[0], idx[-1])
    y0 = np.take_along_axis(s, im[..., None], -1)[..., 0]
    y1 = np.take_along_axis(s, i[..., None], -1)[..., 0]
    y2 = np.take_along_axis(s, ip[..., None], -1)[..., 0]
    positive = (y0 > 0) & (y1 > 0) & (y2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        l0, l1, l2 = (np.log(np.where(positive, v, 1.0)) for v in (y0, y1, y2))
        f0, f1, f2 = (np.where(positive, lv, v) for lv, v in ((l0, y0), (l1, y1), (l2, y2)))
        denom = f0 - 2 * f1 + f2
        delta = np.where((denom < 0) & (im != i) & (ip != i), 0.5 * (f0 - f2) / denom, 0.0)
    delta = np.clip(delta, -0.5, 0.5)
    e = np.asarray(energy, dtype=np.float64)
    step = e[1] - e[0] if len(e) > 1 else 0.0
    return e[i] + delta * step


@register_scalarizer("peak_fwhm")
def peak_fwhm(spectra, energy, *, a, b):
    """Full width at half maximum of the highest peak in [a, b] eV (linear interpolation of crossings, eV)."""
    s = np.asarray(spectra, dtype=np.float64)
    m = band_mask(energy, a, b)
    e = np.asarray(energy, dtype=np.float64)[m]
    sb = s[..., m]
    flat = sb.reshape(-1, sb.shape[-1])
    out = np.empty(flat.shape[0])
    for r, row in enumerate(flat):
        k = int(np.argmax(row))
        half = row[k] / 2.0
        left = k
        while left > 0 and row[left] > half:
            left -= 1
        right = k
        while right < len(row) - 1 and row[right] > half:
            right += 1
        el = e[left] if row[left] > half else np.interp(half, [row[left], row[left + 1]], [e[left], e[left + 1]])
        er = e[right] if row[right] > half else np.interp(half, [row[right], row[right - 1]], [e[right], e[right - 1]])
        out[r] = er - el
    return out.reshape(sb.shape[:-1])


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
                raise HAEInputError(f"Scalarizer {self.name!r} got wrong parameters {self.params}: {exc}.",
                                    f"give exactly the parameters of {self.name}: "
                                    f"{entry.param_names()}.") from exc
            return np.asarray(out, dtype=np.float64)
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


def default_bands(dataset_name: str, energy) -> tuple[tuple[float, float], tuple[float, float]]:
    """The bands a new run starts with (eV): the sample's dipole and bulk-plasmon bands, else the middle third of
    the energy axis and the part below it. ``energy`` is an :class:`~napari_hae.core.data.dataset.EnergyAxis`."""
    if dataset_name == "nanoparticles":
        from ..data.samples.nanoparticles import BANDS

        return tuple(BANDS["dipole"]), tuple(BANDS["bulk"])
    lo, hi = energy.limits
    a, b = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
    return (a, b), (lo, a)
