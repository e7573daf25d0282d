"""The target a new run starts with: bands (and a background window) placed on what the data show.

The middle third of the axis is a meaningless default for real data: on the CuZn core-loss EELS file it is a
band on the smooth power-law tail, whose raw integral correlates 0.21 with the Cu L2,3 signal. So the starting
target follows the spectrum's own features, named from the tables of :mod:`..data.energy_check`:

* core-loss EELS: the steepest edge of the mean spectrum, a band from its onset, and a power-law background
  fitted in a window just below it (when the axis leaves room for one);
* EDS: the most prominent X-ray peak, a band of +-``EDS_HALF_WIDTH_EV`` around it (no power law: it does not
  describe bremsstrahlung);
* the bundled sample: its dipole and bulk-plasmon bands; anything else: the middle third of the axis, said so.

Band units: EDS users think in keV, EELS users in eV; :func:`band_units` says which, the data stay in eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.energy_check import _features, check_energy_calibration
from .scalarizers import subtract_power_law

EDS_HALF_WIDTH_EV = 80.0            # about one detector FWHM (~130 eV at Mn K) either side of the peak
EELS_BAND_EV = 40.0                 # from the onset: the near-edge part of an L2,3 or K edge
EELS_WINDOW_EV = 100.0              # the pre-edge background window
CORE_LOSS_FROM_EV = 50.0            # an EELS axis starting here or above holds no zero-loss peak
MAX_POSITIONS = 4096                # spectra read to rank the features
EDS_MIN_PEAK_EV = 200.0             # below: the detector's zero-energy noise peak, not a line


@dataclass(frozen=True)
class TargetSuggestion:
    band: tuple[float, float]                  # eV
    band2: tuple[float, float]                 # eV: a second feature, or the part of the axis below the band
    background: tuple[float, float] | None     # power-law fit window (eV), or None
    reason: str                                # one sentence for the user: where the band came from


def band_units(signal_type: str) -> tuple[str, float]:
    """(unit, eV per unit) in which a user types bands: keV for EDS, eV otherwise."""
    return ("keV", 1000.0) if str(signal_type).upper().startswith("EDS") else ("eV", 1.0)


def _clip(a: float, b: float, lo: float, hi: float) -> tuple[float, float]:
    return float(max(a, lo)), float(min(b, hi))


def fallback_target(name: str, energy) -> TargetSuggestion:
    """Without spectra to look at (a live instrument before its first spectrum): the sample's bands, else the
    middle third of the axis."""
    if name == "nanoparticles":
        from ..data.samples.nanoparticles import BANDS

        return TargetSuggestion(tuple(BANDS["dipole"]), tuple(BANDS["bulk"]), None,
                                "the sample's dipole band (its bulk plasmon as band 2)")
    lo, hi = energy.limits if energy is not None else (0.0, 1.0)
    third = (lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3)
    return TargetSuggestion(third, (lo, third[0]), None, "the middle third of the energy axis")


def _sample_positions(data, most: int = MAX_POSITIONS) -> np.ndarray:
    """Spectra at a regular sub-grid of at most ~``most`` positions, (n, channels) float64 (one strided read)."""
    ny, nx = data.scan_shape
    stride = max(1, int(np.ceil(np.sqrt(ny * nx / most))))
    sub = data.spectra[::stride, ::stride]
    sub = np.asarray(sub.compute() if hasattr(sub, "compute") else sub, dtype=np.float64)
    return sub.reshape(-1, sub.shape[-1])


def _structure(spectra: np.ndarray, energy: np.ndarray, band, background) -> float:
    """How much a band's signal varies over the scan beyond counting noise: var(signal) / mean(raw counts in the
    band) (about 1 for Poisson noise on a uniform signal, larger where the map has structure)."""
    m = (energy >= band[0]) & (energy <= band[1])
    raw = spectra[:, m].sum(1)
    s = subtract_power_law(spectra, energy, background) if background else spectra
    sig = s[:, m].sum(1)
    return float(np.var(sig) / max(float(np.mean(raw)), 1e-12))


def suggest_target(data, mean_spectrum=None) -> TargetSuggestion:
    """The starting bands for a :class:`~..data.dataset.SpectrumImage` (``mean_spectrum`` if already computed).

    Among the features of the mean spectrum (up to 8 peaks or edges), the one whose band varies most over the
    scan beyond counting noise (:func:`_structure`, on at most ~4096 positions) is chosen: on the SiO2 EDS file
    that is Si K, not the carbon film's C K; on the CuZn EELS file an edge, not noise at the end of the axis."""
    energy, kind = data.energy, str(data.signal_type).upper()
    fallback = fallback_target(data.name, energy)
    if data.name == "nanoparticles" or energy is None:
        return fallback
    lo, hi = energy.limits
    step = abs(float(energy.scale))
    if energy.size < 16 or not energy.calibrated or not (kind.startswith("EDS") or kind == "EELS"):
        return fallback
    e = energy.values
    mean = data.mean_spectrum() if mean_spectrum is None else np.asarray(mean_spectrum, dtype=np.float64)
    names = {f: n for n, _, f in check_energy_calibration(e, mean).matches}   # lines named as the check names them
    candidates = []   # (band, background, what)
    if kind.startswith("EDS"):
        hw = max(EDS_HALF_WIDTH_EV, 3 * step)
        for p in _features(e, mean, "eds"):
            if p >= max(lo, EDS_MIN_PEAK_EV):
                nm = names.get(float(p))
                candidates.append((_clip(p - hw, p + hw, lo, hi), None,
                                   f"the {nm + ' ' if nm else ''}peak at {p / 1000:.2f} keV"))
    elif lo >= CORE_LOSS_FROM_EV:
        gap, width = max(2 * step, 10.0), max(EELS_WINDOW_EV, 10 * step)
        for x in _features(e, mean, "eels"):
            c, d = max(lo, x - gap - width), x - gap
            if d - c < 5 * step or x > hi - 5 * step:
                continue   # no room for a background window below it, or no band above it
            nm = names.get(float(x))
            candidates.append((_clip(x - step, x + max(EELS_BAND_EV, 5 * step), lo, hi), (float(c), float(d)),
                               f"the {nm + ' ' if nm else ''}edge at {x:.0f} eV"))
    if not candidates:
        return fallback
    spectra = _sample_positions(data)
    scores = [_structure(spectra, e, band, bg) for band, bg, _ in candidates]
    order = np.argsort(scores)[::-1]
    band, background, what = candidates[order[0]]
    band2 = candidates[order[1]][0] if len(order) > 1 else (lo, band[0])
    if background:
        what += f" after a power-law background fitted at {background[0]:.0f}-{background[1]:.0f} eV"
    return TargetSuggestion(band, band2, background, what + " (the feature with the most structure in the scan)")
