"""Scalarizers measured against known answers on noisy data (Poisson counts), and the power-law background
against exspy's own fit on the real CuZn core-loss data."""

import numpy as np
import pytest

from napari_hae.core.targets.scalarizers import Scalarizer, band_weights, fit_power_law, subtract_power_law

SIGMA = 0.12
FWHM = 2 * np.sqrt(2 * np.log(2)) * SIGMA


@pytest.fixture(scope="module")
def poisson_peaks():
    """400 Gaussian peaks (sigma 0.12 eV, 200 counts) on a flat 20-count baseline, sampled at 0.05 eV."""
    rng = np.random.default_rng(1)
    e = np.arange(0.0, 4.0, 0.05)
    mus = rng.uniform(1.8, 2.2, 400)
    lam = 20 + 200 * np.exp(-0.5 * ((e[None] - mus[:, None]) / SIGMA) ** 2)
    return e, mus, rng.poisson(lam).astype(float)


def test_peak_position_fit_beats_the_highest_channel_on_poisson_data(poisson_peaks):
    e, mus, s = poisson_peaks
    pos = Scalarizer("peak_position", {"a": 1.0, "b": 3.0})(s, e)
    band = np.flatnonzero((e >= 1.0) & (e <= 3.0))
    argmax = e[band[np.argmax(s[:, band], axis=1)]]
    err, err_argmax = np.median(np.abs(pos - mus)), np.median(np.abs(argmax - mus))
    assert err_argmax == pytest.approx(0.02, abs=0.004)   # a quarter of the 0.05 eV channel, as expected
    assert err < 0.4 * err_argmax                          # the 3-point refinement was worse than the argmax


def test_fwhm_is_measured_above_the_baseline(poisson_peaks):
    e, _, s = poisson_peaks
    f = Scalarizer("peak_fwhm", {"a": 1.0, "b": 3.0})(s, e)
    assert np.median(f) == pytest.approx(FWHM, rel=0.03)


def test_fwhm_of_a_noise_free_peak_on_a_sloping_baseline():
    e = np.arange(0.0, 4.0, 0.002)
    s = 50 + 10 * e + 100 * np.exp(-0.5 * ((e - 2.0) / SIGMA) ** 2)
    assert Scalarizer("peak_fwhm", {"a": 1.0, "b": 3.0})(s, e) == pytest.approx(FWHM, rel=2e-3)
    assert Scalarizer("peak_position", {"a": 1.0, "b": 3.0})(s, e) == pytest.approx(2.0, abs=2e-4)


def test_peak_scalarizers_refuse_a_band_too_short_for_a_peak():
    from napari_hae.core.errors import HAEInputError

    e = np.arange(0.0, 4.0, 0.5)
    with pytest.raises(HAEInputError, match=r"holds 2 channel\(s\); a peak needs at least 3"):
        Scalarizer("peak_fwhm", {"a": 1.0, "b": 1.5})(np.ones(len(e)), e)


def _edge_data(dose, rng):
    e = np.arange(300.0, 800.0, 5.0)
    edge = np.where(e >= 600, 4e4 * (e / 600.0) ** -4.0, 0.0)
    lam = dose * (3e12 * e**-3.5 + edge)
    return e, rng.poisson(np.broadcast_to(lam, (2000, len(e)))).astype(float), dose * edge


def test_power_law_is_a_poisson_fit_that_survives_low_dose():
    """At low dose many pre-edge channels hold 0 or 1 counts; the unweighted log-log fit it replaces took log of
    1e-12 for an empty channel, and a few pixels came out at -5e4 counts (recorded on the CuZn data at 0.1%
    dose). Every pixel's edge signal must stay within a few Poisson standard deviations of the truth."""
    rng = np.random.default_rng(0)
    e, s, edge = _edge_data(0.002, rng)
    band = (e >= 600) & (e <= 700)
    signal = subtract_power_law(s, e, (450.0, 590.0))[:, band].sum(-1)
    truth = edge[band].sum()
    counts = s[:, band].sum(-1)
    z = (signal - truth) / np.sqrt(counts.mean())
    assert np.all(np.isfinite(signal))
    assert np.max(np.abs(z)) < 12
    assert abs(np.median(signal) - truth) < 0.1 * truth


def test_power_law_parameters_are_recovered_at_high_dose():
    rng = np.random.default_rng(3)
    e = np.arange(300.0, 600.0, 2.0)
    s = rng.poisson(np.broadcast_to(3e12 * e**-3.5, (200, len(e)))).astype(float)
    log_a, slope = fit_power_law(s, e, (300.0, 598.0))
    assert np.median(slope) == pytest.approx(-3.5, abs=0.01)
    assert np.median(log_a) == pytest.approx(np.log(3e12), abs=0.05)


def test_power_law_of_an_empty_window_is_zero():
    e = np.arange(300.0, 600.0, 2.0)
    s = np.zeros((2, len(e)))
    s[1, 200:] = 5.0
    np.testing.assert_array_equal(subtract_power_law(s, e, (300.0, 400.0)), s)


@pytest.mark.slow
def test_cu_signal_agrees_with_exspy_least_squares_fit(shared_data):
    """The Cu L2,3 signal (920-960 eV after a 800-900 eV power law) against exspy's remove_background
    (fast=False: non-linear least squares), on the real CuZn spectrum image."""
    import hyperspy.api as hs

    s = hs.load(shared_data / "cuzn_eels/CuZn_EELS_mapping_tutorial.hspy")
    e = s.axes_manager.signal_axes[0].axis
    ref_sub = s.remove_background(signal_range=(800.0, 900.0), background_type="PowerLaw", fast=False,
                                  show_progressbar=False)
    ref = ref_sub.data @ band_weights(e, 920.0, 960.0)   # the same band integral over exspy's subtraction
    ours = Scalarizer("band_integral", {"a": 920.0, "b": 960.0}, background=(800.0, 900.0))(s.data, e)
    scale = np.percentile(ref, 99)
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.98
    assert np.median(np.abs(ours - ref)) < 0.04 * scale    # measured 0.032 (the log-log fit: 0.033)
    assert np.max(np.abs(ours - ref)) < 0.25 * scale       # measured 0.17 (0.20)
    # HyperSpy's own band (whole channels, binned: summed) over exspy's subtraction, against band_sum over ours:
    # the positions in the top 1% (what a run looks for; 20 of 2,000). Measured: 15 of 20 shared (the interpolant's
    # 17 of 20); exspy's fast and least-squares fits share 12 of 20 with each other; on this map's 8 eV channels
    # the two band conventions share 14 of 20 over the same subtraction
    from napari_hae.core.analysis.metrics import top_mask

    hs_band = ref_sub.isig[920.0:960.0].integrate1D(-1).data
    ours_sum = Scalarizer("band_sum", {"a": 920.0, "b": 960.0}, background=(800.0, 900.0))(s.data, e)
    top_hs, top_ours = top_mask(hs_band, 0.01), top_mask(ours_sum, 0.01)
    assert (top_hs & top_ours).sum() / top_hs.sum() >= 0.75
    assert np.corrcoef(ours_sum.ravel(), hs_band.ravel())[0, 1] > 0.97   # measured 0.977


@pytest.mark.parametrize("a, b", [(2.0, 3.0), (2.05, 2.95), (2.01, 2.99), (0.21, 0.51), (1.25, 5.75),
                                  (0.2, 6.18)])
def test_band_sum_is_hyperspys_whole_channel_integral(a, b):
    """HyperSpy's convention (issue 27): ``s.isig[a:b].integrate1D(-1)`` on a binned (EELS) axis sums the channels
    from the one nearest a to the one nearest b, b's excluded. ``band_sum`` is that, to the last digit; the default
    ``band_integral`` is the exact integral of the piecewise-linear spectrum over [a, b] (counts x eV)."""
    import hyperspy.api as hs

    rng = np.random.default_rng(3)
    data = rng.poisson(50, (4, 5, 300)).astype(float)
    s = hs.signals.Signal1D(data)
    ax = s.axes_manager.signal_axes[0]
    ax.offset, ax.scale, ax.is_binned = 0.2, 0.02, True
    ref = s.isig[a:b].integrate1D(-1).data
    np.testing.assert_allclose(Scalarizer("band_sum", {"a": a, "b": b})(data, ax.axis), ref, rtol=1e-12)
    # the interpolant's integral is the same signal in counts x eV: within a channel's worth at each end
    ours = Scalarizer("band_integral", {"a": a, "b": b})(data, ax.axis) / ax.scale
    assert np.all(np.abs(ours - ref) <= 2 * data.max())
