"""The target a run starts with (issue 14, defects 2 and 4): bands on the spectra's features, a background window
for a core-loss edge, bands typed in keV on EDS data, and a clear error for a band between two channels."""

import argparse

import numpy as np
import pytest

from napari_hae.core.data.dataset import EnergyAxis, SpectrumImage
from napari_hae.core.errors import HAEInputError
from napari_hae.core.targets.scalarizers import Scalarizer
from napari_hae.core.targets.suggest import band_units, suggest_target


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _eds(seed=0):
    """EDS-like data: a strong peak at 277 eV spread evenly over the scan (a carbon film) and a weaker one at
    1740 eV only on a disc (particles), on a bremsstrahlung slope; Poisson counts."""
    rng = np.random.default_rng(seed)
    e = np.arange(2048) * 10.0
    yy, xx = np.mgrid[:40, :40]
    disc = ((yy - 20) ** 2 + (xx - 14) ** 2 < 80).astype(float)
    film = np.exp(-0.5 * ((e - 277) / 40) ** 2) * 3.0
    si = np.exp(-0.5 * ((e - 1740) / 55) ** 2) * 2.5
    brems = 0.3 * np.exp(-e / 4000)
    lam = film + disc[..., None] * si + brems
    return SpectrumImage(structural=disc + 0.1, spectra=rng.poisson(lam).astype(np.float32),
                         energy=EnergyAxis(2048, 0.0, 10.0), name="eds", signal_type="EDS_TEM"), disc


def test_eds_band_goes_on_the_structured_peak_not_the_strongest_one():
    data, disc = _eds()
    sug = suggest_target(data)
    a, b = sug.band
    assert a < 1740 < b and b - a == pytest.approx(160.0, abs=10.1)
    assert sug.background is None
    assert sug.reason.startswith("the Si K peak at 1.7")
    values = data.scalarize(Scalarizer("band_integral", {"a": a, "b": b}))
    assert _corr(values, disc) > 0.9


def test_band_units_follow_the_signal_type():
    assert band_units("EDS_TEM") == ("keV", 1000.0)
    assert band_units("EDS_SEM") == ("keV", 1000.0)
    assert band_units("EELS") == ("eV", 1.0)
    assert band_units("") == ("eV", 1.0)


def test_unknown_signal_type_keeps_the_middle_third_and_says_so():
    data, _ = _eds()
    data.signal_type = ""
    sug = suggest_target(data)
    assert sug.band == pytest.approx((20470 / 3, 2 * 20470 / 3))
    assert sug.reason == "the middle third of the energy axis"


def test_a_band_typed_in_kev_on_an_ev_axis_is_refused_with_the_ev_band():
    data, _ = _eds()
    with pytest.raises(HAEInputError) as err:
        Scalarizer("band_integral", {"a": 1.64, "b": 1.84}).validate(data.energies, data.signal_shape)
    msg = str(err.value)
    assert "holds no channel" in msg and "If you meant keV, that is [1640, 1840] eV" in msg and "Fix:" in msg


def test_cuzn_core_loss_gets_the_cu_edge_with_a_background_window(shared_data):
    """On the CuZn EELS map the raw Cu L2,3 band integral correlates 0.21 with the Cu signal; the
    suggested target (edge band after a pre-edge power law) follows the signal the README's run targets."""
    from napari_hae.core.data.io import load_spectrum_image

    d = shared_data / "cuzn_eels"
    data = load_spectrum_image(d / "CuZn_EELS_mapping_tutorial.hspy", d / "CuZn_HAADF.hspy")
    assert data.signal_type == "EELS" and data.describe()["signal_type"] == "EELS"
    sug = suggest_target(data)
    (a, b), (c, d_) = sug.band, sug.background
    assert 900 <= a <= 931 < b <= 980 and 790 <= c < d_ <= a
    assert sug.reason.startswith("the Cu L2,3 edge at")
    reference = data.scalarize(Scalarizer("band_integral", {"a": 920, "b": 960}, (800, 900)))
    suggested = data.scalarize(Scalarizer("band_integral", {"a": a, "b": b}, sug.background))
    raw = data.scalarize(Scalarizer("band_integral", {"a": 920, "b": 960}))   # the edge without its background
    assert _corr(suggested, reference) > 0.95
    assert _corr(raw, reference) < 0.3


def test_sio2_eds_gets_si_k_in_kev(shared_data):
    from napari_hae.core.data.io import load_spectrum_image

    d = shared_data / "sio2_eds"
    data = load_spectrum_image(d / "SiO2_EDS_Spectrum_Image.hspy", d / "SiO2_HAADF_Image.hspy")
    assert band_units(data.signal_type) == ("keV", 1000.0)
    sug = suggest_target(data)
    assert sug.band[0] < 1775 < sug.band[1] and sug.reason.startswith("the Si K peak at 1.77 keV")


def test_cli_without_band_uses_the_suggestion_and_says_so(capsys):
    from napari_hae.cli import _options as opt

    data, _ = _eds()
    args = argparse.Namespace(scalarizer="band_integral", scalarizer_param=[], band=None, band2=None,
                              background=None, quiet=False)
    sc = opt.scalarizer(args, data.name, data.energy, data)
    assert sc.params["a"] < 1740 < sc.params["b"] and sc.background is None
    err = capsys.readouterr().err
    assert "target: band" in err and "Si K" in err and "Fix: give --band A B" in err
    args.band = [100.0, 300.0]
    assert opt.scalarizer(args, data.name, data.energy, data).params == {"a": 100.0, "b": 300.0}
