import numpy as np
import pytest

from napari_hae.core.data.io import load_spectrum_image, save_spectrum_image_hspy


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


@pytest.mark.slow
def test_real_velox_emd_loads(shared_data):
    d = load_spectrum_image(shared_data / "formats/fei_emd_si.emd")
    assert d.scan_shape == (16, 16) and d.signal_shape[0] > 1000


def test_opening_a_file_imports_no_signal_package(tmp_path):
    """HyperSpy makes each signal of a file as its signal type's class and imports that class's package (exspy
    for EELS/EDS: ~2 s of imports the first time, a frozen napari when a file is opened mid-run). napari-hae uses
    the data, the axes and the signal type only: the file is read without that import, its signal type kept; a
    small file is read into memory without dask (whose first import and compute take ~0.6 s)."""
    import subprocess
    import sys

    import exspy

    s = exspy.signals.EELSSpectrum(np.random.default_rng(0).poisson(5, (4, 5, 30)).astype("int16"))
    e = s.axes_manager.signal_axes[0]
    e.offset, e.scale, e.units = 280.0, 0.5, "eV"
    s.save(tmp_path / "eels.hspy")
    code = ("import sys; from napari_hae.core.data.io import read_data_file; d = read_data_file(sys.argv[1]); "
            "print(d.signal_type, d.spectra.shape, d.energy.offset, d.energy.scale, 'exspy' in sys.modules, "
            "'dask.array' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "eels.hspy")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["EELS", "(4,", "5,", "30)", "280.0", "0.5", "False", "False"]   # small: read without dask
