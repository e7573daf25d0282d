"""The counting noise of a value: how much a scalarizer's value would vary if its spectrum were measured again.

A spectrum of counts (electrons on an EELS camera, X-ray photons on an EDS detector: whole numbers >= 0) is a
Poisson draw. The variance of a value made from it is estimated by applying the scalarizer to ``DRAWS`` Poisson
redraws of the spectrum (a parametric bootstrap), whatever the scalarizer does: a band integral, a power-law
background subtracted first, a ratio, a user function. For a plain band integral this is the sum of the band's
counts times the channel width squared (``tests/test_counting_noise.py`` checks it).

Each spectrum's redraws come from a random stream named by the spectrum's index in the run and nothing else, so a
value's variance is the same live, on resume and in replay, computed one spectrum at a time or all at once (a run
is its records: the variance is a function of the recorded spectra).

Why: on a sparse real EDS map (SiO2, a median of 20 counts a spectrum) the pixel-to-pixel scatter of the C K line
(38 count-eV) is its Poisson noise (36), which a model fitted on 50 points underestimated (1-sigma coverage of the
map 0.38-0.51): its network could fit part of the noise. With each value's counting variance as a floor of its
noise the model cannot explain counting noise as structure (``noise="counts"``, an option of the models; issue
27, ``docs/performance.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DRAWS = 32          # redraws per spectrum: the variance to about +-25% (chi-square, 31 degrees of freedom)
STREAM = 0x5EED     # the redraws' stream: (STREAM, spectrum index)


def are_counts(spectra) -> bool:
    """Whether ``spectra`` hold counts: finite whole numbers >= 0 (a detector's electrons or photons). Spectra in
    calibrated units (divided by a dose or gain, background-subtracted) are not."""
    s = np.asarray(spectra)
    if s.size == 0:
        return False
    if np.issubdtype(s.dtype, np.integer):
        return bool(np.all(s >= 0))
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(s)) and np.all(s >= 0) and np.all(s == np.round(s)))


def counting_variance(value_of: Callable[[np.ndarray], np.ndarray], spectra, first_index: int = 0,
                      draws: int = DRAWS) -> np.ndarray:
    """The variance of ``value_of`` (spectra (k, ...) -> values (k,), NaN where undefined) at each of ``spectra``
    (n, ...) counts, over ``draws`` Poisson redraws of each; NaN where fewer than half the redraws have a value.
    Spectrum ``i`` is the run's ``first_index + i``-th (its redraws' stream)."""
    s = np.asarray(spectra)
    out = np.full(len(s), np.nan)
    for i, spectrum in enumerate(s):
        rng = np.random.default_rng([STREAM, int(first_index) + i])
        redrawn = rng.poisson(np.asarray(spectrum, dtype=np.float64), size=(int(draws), *spectrum.shape))
        with np.errstate(all="ignore"):
            values = np.asarray(value_of(redrawn.astype(np.float64)), dtype=np.float64).ravel()
        finite = values[np.isfinite(values)]
        if finite.size >= max(2, draws // 2):
            out[i] = float(np.var(finite, ddof=1))
    return out
