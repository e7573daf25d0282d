import numpy as np
import pytest

from napari_hae.core.dataset import EnergyAxis, SpectrumImage
from napari_hae.core.errors import HAEInputError
from napari_hae.core.io import load_spectrum_image, save_spectrum_image_hspy


def test_hspy_round_trip_keeps_data_and_calibration(small_sample, tmp_path):
    save_spectrum_image_hspy(small_sample, tmp_path / "si.hspy", tmp_path / "haadf.hspy")
    d = load_spectrum_image(tmp_path / "si.hspy", tmp_path / "haadf.hspy")
    np.testing.assert_array_equal(d.spectra, small_sample.spectra)
    np.testing.assert_array_equal(d.structural, small_sample.structural)
    assert d.energy.offset == pytest.approx(small_sample.energy.offset)
    assert d.energy.scale == pytest.approx(small_sample.energy.scale)
    assert d.pixel_units == "nm"


def test_npz_pair(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", spectra=rng.random((5, 6, 20)), structural=rng.random((5, 6)),
             energy_offset=100.0, energy_scale=0.5)
    d = load_spectrum_image(tmp_path / "d.npz")
    assert d.energy.limits == (100.0, 109.5)


def test_real_eels_and_eds_data_load_with_calibrated_axes(shared_data):
    eels = load_spectrum_image(shared_data / "cuzn_eels/CuZn_EELS_mapping_tutorial.hspy",
                               shared_data / "cuzn_eels/CuZn_HAADF.hspy")
    assert eels.scan_shape == (50, 40) and eels.signal_shape == (162,)
    assert eels.energy.limits == pytest.approx((700.0, 700.0 + 161 * 8.0))
    eds = load_spectrum_image(shared_data / "sio2_eds/SiO2_EDS_Spectrum_Image.hspy",
                              shared_data / "sio2_eds/SiO2_HAADF_Image.hspy")
    assert eds.energy.units == "eV" and eds.energy.scale == pytest.approx(10.0, rel=1e-6)  # keV converted to eV
    bcf = load_spectrum_image(shared_data / "formats/test_TEM.bcf")      # HAADF + EDS in one file
    assert bcf.scan_shape == (64, 64)


def test_real_velox_emd_loads(shared_data):
    d = load_spectrum_image(shared_data / "formats/fei_emd_si.emd")
    assert d.scan_shape == (16, 16) and d.signal_shape[0] > 1000


@pytest.mark.parametrize("kw, match", [
    (dict(structural=np.ones((10, 10)), spectra=np.ones((10, 12, 5))), "different shapes"),
    (dict(structural=np.ones((10,)), spectra=np.ones((10, 10, 5))), "must be 2-D"),
    (dict(structural=np.ones((10, 10)), spectra=np.ones((10, 10))), "3-D .* or 4-D"),
    (dict(structural=np.ones((10, 10)), spectra=np.ones((10, 10, 2, 2, 2))), "3-D .* or 4-D"),
    (dict(structural=np.full((10, 10), np.nan), spectra=np.ones((10, 10, 5))), "non-finite"),
    (dict(structural=np.ones((10, 10)), spectra=np.full((10, 10, 5), np.inf)), "non-finite"),
    (dict(structural=np.ones((2, 2)), spectra=np.ones((2, 2, 5))), "too small"),
    (dict(structural=np.ones((10, 10)), spectra=np.ones((10, 10, 5)), energy=EnergyAxis(4)), "4 channels"),
    (dict(structural=np.ones((10, 10)), spectra=np.ones((10, 10, 5)), pixel_size=-1.0), "pixel size"),
])
def test_bad_datasets_are_clear_errors(kw, match):
    with pytest.raises(HAEInputError, match=match):
        SpectrumImage(**kw)


def test_uncalibrated_axis_warns_and_uses_channels():
    with pytest.warns(UserWarning, match="uncalibrated"):
        d = SpectrumImage(np.ones((4, 4)), np.ones((4, 4, 7)))
    assert d.energy.units == "channel" and d.energy.limits == (0.0, 6.0)


def test_file_errors(tmp_path):
    with pytest.raises(HAEInputError, match="does not exist"):
        load_spectrum_image(tmp_path / "missing.hspy")
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(HAEInputError, match="Unknown file format"):
        load_spectrum_image(tmp_path / "x.xyz")
    (tmp_path / "trunc.hspy").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(HAEInputError, match="could not read"):
        load_spectrum_image(tmp_path / "trunc.hspy")
