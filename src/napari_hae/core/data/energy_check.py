"""Is the energy axis calibrated? Features of the mean spectrum (EDS peaks, EELS edge onsets) against known lines.

A shifted axis silently moves every band: the SiO2 EDS file of ../shared/data has O K at 551 eV and Si K at
1775 eV (tabulated 525 and 1740), so a band typed from a table misses part of its peak. The check finds the most
prominent features of the mean spectrum, matches each to the nearest tabulated line within ``TOLERANCE_EV``, and
when two or more matches agree on a shift larger than the axis can be trusted to (2 channels, at least 10 eV),
says so with the lines it used. It only warns: the data are not changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# X-ray lines (Kα, Lα, Mα; eV), from the usual tables (e.g. exspy's elements database, rounded to 1 eV)
EDS_LINES = {
    "C K": 277, "N K": 392, "O K": 525, "F K": 677, "Na K": 1041, "Mg K": 1254, "Al K": 1487, "Si K": 1740,
    "P K": 2013, "S K": 2307, "Cl K": 2622, "Ar K": 2957, "K K": 3313, "Ca K": 3691, "Ti K": 4511, "V K": 4952,
    "Cr K": 5415, "Mn K": 5899, "Fe K": 6404, "Co K": 6930, "Ni K": 7478, "Cu K": 8048, "Zn K": 8639,
    "Ga K": 9252, "Ge K": 9886, "Cu L": 930, "Zn L": 1012, "Ga L": 1098, "Ge L": 1188, "Fe L": 705,
    "Ni L": 852, "Co L": 776, "Mn L": 637, "Cr L": 573, "Ti L": 452, "Mo L": 2293, "Ag L": 2984, "Sn L": 3444,
    "Pt M": 2048, "Au M": 2123, "Pb M": 2346, "W M": 1775, "Ta M": 1710, "Hf M": 1645,
}
# EELS edge thresholds (eV)
EELS_EDGES = {
    "Li K": 55, "Al L2,3": 73, "Si L2,3": 99, "B K": 188, "C K": 284, "N K": 401, "Ti L2,3": 456, "O K": 532,
    "V L2,3": 513, "Cr L2,3": 575, "Mn L2,3": 640, "F K": 685, "Fe L2,3": 708, "Co L2,3": 779, "Ni L2,3": 855,
    "Cu L2,3": 931, "Zn L2,3": 1020, "Ga L2,3": 1115, "Ge L2,3": 1217, "Mg K": 1305, "Al K": 1560, "Si K": 1839,
}
TOLERANCE_EV = 60.0
MAX_FEATURES = 8


@dataclass
class EnergyCheck:
    kind: str                      # "eds" (peaks) or "eels" (edges), whichever matched more lines
    shift_ev: float                # median (feature - line); nan without matches
    matches: list[tuple[str, float, float]] = field(default_factory=list)   # (line, tabulated eV, found eV)
    warning: str | None = None


def _features(energy: np.ndarray, mean: np.ndarray, kind: str) -> np.ndarray:
    """Energies of the most prominent peaks (EDS) or steepest rises of the log-spectrum (EELS edges)."""
    from scipy.signal import find_peaks

    e = np.asarray(energy, dtype=np.float64)
    y = np.asarray(mean, dtype=np.float64)
    if kind == "eels":
        y = np.gradient(np.log(np.clip(y, max(float(y.max()) * 1e-9, 1e-12), None)), e)
    prom = np.ptp(y) * 0.02 if np.ptp(y) > 0 else 1.0
    idx, props = find_peaks(y, prominence=prom)
    if kind == "eds":   # a peak falls back to the level it rose from; an edge's local maximum does not
        k = max(3, int(round(50.0 / (e[1] - e[0]))))
        i0, i1, i2 = np.maximum(idx - 2 * k, 0), np.maximum(idx - k, 0), np.minimum(idx + k, len(y) - 1)
        ly = np.log(np.clip(y, max(float(y.max()) * 1e-9, 1e-12), None))
        with np.errstate(divide="ignore", invalid="ignore"):   # the trend before, extrapolated past the feature
            slope = np.where(i1 > i0, (ly[i1] - ly[i0]) / (e[i1] - e[i0]), 0.0)
        trend = np.exp(ly[i1] + slope * (e[i2] - e[i1]))
        peak = y[i2] - trend < 0.5 * props["prominences"]
        idx, props = idx[peak], {"prominences": props["prominences"][peak]}
    keep = idx[np.argsort(props["prominences"])[::-1][:MAX_FEATURES]]
    if kind == "eels":   # the rise is centred between the channels either side of the steepest slope
        return e[keep] - 0.5 * (e[1] - e[0])
    return e[keep]


def _matches(found: np.ndarray, table: dict[str, float], shift: float, tight: float) -> list[tuple[str, float,
                                                                                                  float]]:
    """Features within ``tight`` of a tabulated line moved by ``shift`` (each line used once)."""
    out, used = [], set()
    for f in found if table else ():
        name, line = min(table.items(), key=lambda kv: abs(kv[1] + shift - f))
        if abs(line + shift - f) <= tight and name not in used:
            used.add(name)
            out.append((name, float(line), float(f)))
    return out


def _best_shift(found, table, search: float, tight: float) -> tuple[float, list, list]:
    """The shift within +-``search`` that lines up the most features with tabulated lines (the smallest such
    shift on a tie: no shift wins unless a shift explains more features), its matches, and the matches of no
    shift."""
    shifts = np.arange(-search, search + tight / 4, tight / 4)
    shifts = shifts[np.argsort(np.abs(shifts), kind="stable")]
    unshifted = _matches(found, table, 0.0, tight)
    best = (0.0, unshifted)
    for sh in shifts:
        m = _matches(found, table, float(sh), tight)
        if len(m) > len(best[1]):
            best = (float(sh), m)
    return best[0], best[1], unshifted


def check_energy_calibration(energy: np.ndarray, mean_spectrum: np.ndarray) -> EnergyCheck:
    """Compare the mean spectrum's features with tabulated EDS lines and EELS edges (energies in eV)."""
    e = np.asarray(energy, dtype=np.float64)
    step = float(e[1] - e[0]) if len(e) > 1 else 1.0
    tight = max(2 * step, 10.0)            # how well a calibrated axis places a feature
    search = max(TOLERANCE_EV, 4 * step)   # the largest shift looked for
    best = None
    for kind, table in (("eds", EDS_LINES), ("eels", EELS_EDGES)):
        table = {n: v for n, v in table.items() if e[0] <= v <= e[-1]}   # only lines the axis covers
        shift, m, unshifted = _best_shift(_features(e, mean_spectrum, kind), table, search, tight)
        if best is None or len(m) > len(best[2]):
            best = (kind, shift, m, unshifted)
    kind, shift, matches, unshifted = best
    if not matches:
        return EnergyCheck(kind, float("nan"))
    offsets = np.array([f - line for _, line, f in matches])
    check = EnergyCheck(kind, float(np.median(offsets)), matches)
    if len(matches) >= 2 and len(matches) > len(unshifted) and abs(check.shift_ev) > tight:
        what = "peaks" if kind == "eds" else "edges"
        lines = ", ".join(f"{n} at {f:.0f} eV (tabulated {line:.0f})" for n, line, f in matches)
        sh = check.shift_ev
        check.warning = (f"The energy axis looks shifted by {sh:+.0f} eV: the spectrum's {what} {lines}. "
                         f"Bands typed from a table will miss part of their signal. Fix: recalibrate the axis "
                         f"(offset {-sh:+.0f} eV, e.g. in HyperSpy: s.axes_manager[-1].offset "
                         f"{'-' if sh > 0 else '+'}= {abs(sh):.0f}) "
                         f"or place the bands on the measured {what}.")
    return check


def energy_check(data) -> dict | None:
    """The check of a :class:`SpectrumImage`'s calibrated 1-D energy axis, as a dict to record with a run (None
    for 4D-STEM data or an uncalibrated axis). Reads the spectra once (row blocks)."""
    if data.energy is None or not data.energy.calibrated or len(data.signal_shape) != 1 or data.energy.size < 8:
        return None
    c = check_energy_calibration(data.energy.values, data.mean_spectrum())
    return {"kind": c.kind, "shift_ev": c.shift_ev, "matches": [list(m) for m in c.matches], "warning": c.warning}
