import numpy as np
import pytest

from conftest import gaussian
from napari_hae.core.errors import HAEInputError
from napari_hae.core.targets.scalarizers import (
    SCALARIZERS,
    Scalarizer,
    band_weights,
    register_scalarizer,
    subtract_power_law,
)

E = np.arange(0.0, 6.0, 0.01)


def test_band_integral_of_gaussian_matches_analytic():
    s = gaussian(E, 3.0, 2.5, 0.2)
    v = Scalarizer("band_integral", {"a": 1.0, "b": 4.0})(s, E)
    assert v == pytest.approx(3.0 * 0.2 * np.sqrt(2 * np.pi), rel=1e-5)


def test_band_integral_exact_for_linear_spectrum_with_off_grid_edges():
    s = 2.0 * E + 1.0
    a, b = 0.333, 1.777
    exact = (b**2 + b) - (a**2 + a)
    assert Scalarizer("band_integral", {"a": a, "b": b})(s, E) == pytest.approx(exact, rel=1e-12)
    w = band_weights(E, a, b)
    assert w.sum() == pytest.approx(b - a)  # integrating 1 gives the band width


def test_scalarizers_are_vectorised_over_scan_axes():
    amps = np.array([[1.0, 2.0], [3.0, 4.0]])
    s = gaussian(E[None, None], amps[..., None], 2.0, 0.1)
    v = Scalarizer("peak_max", {"a": 1.5, "b": 2.5})(s, E)
    assert v.shape == (2, 2)
    np.testing.assert_allclose(v, amps, rtol=1e-12)


def test_band_ratio():
    s = gaussian(E, 2.0, 1.5, 0.1) + gaussian(E, 1.0, 4.0, 0.1)
    v = Scalarizer("band_ratio", {"a": 1.0, "b": 2.0, "a2": 3.5, "b2": 4.5})(s, E)
    assert v == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("mu", [2.013, 2.5, 3.0071])
def test_peak_position_sub_channel_exact_for_gaussian(mu):
    e = np.arange(0.0, 6.0, 0.02)
    s = gaussian(e, 5.0, mu, 0.15)
    assert Scalarizer("peak_position", {"a": 1.0, "b": 4.0})(s, e) == pytest.approx(mu, abs=1e-9)


def test_peak_fwhm_of_gaussian():
    e = np.arange(0.0, 6.0, 0.001)
    s = gaussian(e, 5.0, 3.0, 0.2)
    assert Scalarizer("peak_fwhm", {"a": 2.0, "b": 4.0})(s, e) == pytest.approx(2 * np.sqrt(2 * np.log(2)) * 0.2,
                                                                                  abs=1e-4)


def test_com_magnitude_of_point_pattern():
    p = np.zeros((2, 9, 9))
    p[0, 3, 5] = 1.0          # offset (-1, +1) from the centre (4, 4)
    p[1, 4, 4] = 2.0          # centred
    v = Scalarizer("com_magnitude")(p, None)
    np.testing.assert_allclose(v, [np.sqrt(2), 0.0])


def test_power_law_background_subtraction_recovers_edge_integral():
    e = np.arange(300.0, 800.0, 1.0)
    edge = gaussian(e, 50.0, 600.0, 10.0)
    s = 1e9 * e**-3.0 + edge
    bg_sub = subtract_power_law(s, e, (400.0, 500.0))
    np.testing.assert_allclose(bg_sub[:200], 0.0, atol=1e-6)  # 300-500 eV, before the edge
    sc = Scalarizer("band_integral", {"a": 550.0, "b": 650.0}, background=(400.0, 500.0))
    assert sc(s, e) == pytest.approx(50.0 * 10.0 * np.sqrt(2 * np.pi), rel=1e-4)


def test_user_scalarizer_by_registration_and_by_callable():
    @register_scalarizer("test_mean_in_band")
    def mean_in_band(spectra, energy, *, a, b):
        return spectra[..., (energy >= a) & (energy <= b)].mean(-1)

    try:
        s = np.ones((3, len(E))) * np.array([[1.0], [2.0], [3.0]])
        np.testing.assert_allclose(Scalarizer("test_mean_in_band", {"a": 1, "b": 2})(s, E), [1, 2, 3])
        sc = Scalarizer.from_callable(lambda spec: float(spec[10] * 2), name="double_10")
        np.testing.assert_allclose(sc(s, E), [2, 4, 6])
    finally:
        SCALARIZERS.pop("test_mean_in_band")


@pytest.mark.parametrize("params, match", [
    ({"a": 3.0, "b": 2.0}, "reversed or empty"),
    ({"a": 2.0, "b": 2.0}, "reversed or empty"),
    ({"a": 7.0, "b": 9.0}, "outside the energy axis"),
    ({"a": 5.0, "b": 9.0}, "extends beyond the energy axis"),
])
def test_band_errors_name_problem_and_fix(params, match):
    with pytest.raises(HAEInputError, match=match) as info:
        Scalarizer("band_integral", params)(np.ones(len(E)), E)
    assert "Fix:" in str(info.value)


def test_unknown_scalarizer_lists_choices():
    with pytest.raises(HAEInputError, match="band_integral"):
        Scalarizer("no_such_thing")
