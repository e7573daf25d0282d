"""The energy-calibration check: known shifts found, calibrated data left alone, the warning shown and recorded."""

import json

import numpy as np
import pytest

from conftest import gaussian
from napari_hae.core.data.energy_check import check_energy_calibration


def _eds(shift, e=np.arange(0.0, 10000.0, 10.0)):
    s = 5 + 200 * np.exp(-e / 1500)
    for line, a in ((525, 80), (1740, 300), (8048, 40)):   # O K, Si K, Cu K
        s = s + gaussian(e, a, line + shift, 45.0)
    return e, s


def _eels(shift, e=np.arange(700.0, 1990.0, 4.0)):
    s = 1e12 * e ** -3.0
    for edge, a in ((931, 0.3), (1020, 0.2)):   # Cu L2,3, Zn L2,3: jumps on the power law
        s = s * (1 + a * (e >= edge + shift))
    return e, s


@pytest.mark.parametrize("shift", [35.0, -40.0])
def test_a_shifted_eds_axis_is_found_with_its_lines(shift):
    c = check_energy_calibration(*_eds(shift))
    assert c.kind == "eds"
    assert c.shift_ev == pytest.approx(shift, abs=10.0)
    assert {m[0] for m in c.matches} >= {"O K", "Si K", "Cu K"}
    assert c.warning.startswith(f"The energy axis looks shifted by {c.shift_ev:+.0f} eV: the spectrum's peaks")
    assert "Si K at" in c.warning and "Fix: recalibrate the axis" in c.warning
    assert f"offset {'-' if shift > 0 else '+'}= {abs(c.shift_ev):.0f})" in c.warning


def test_a_calibrated_eds_axis_gets_no_warning():
    c = check_energy_calibration(*_eds(0.0))
    assert c.warning is None and abs(c.shift_ev) <= 10.0 and len(c.matches) >= 3


def test_a_shifted_eels_axis_is_found_from_its_edges():
    c = check_energy_calibration(*_eels(-32.0))
    assert c.kind == "eels" and c.shift_ev == pytest.approx(-32.0, abs=8.0)
    assert "edges Cu L2,3 at" in c.warning
    assert check_energy_calibration(*_eels(0.0)).warning is None


def test_low_loss_data_are_not_matched_to_core_loss_lines(small_sample):
    c = check_energy_calibration(small_sample.energy.values, small_sample.mean_spectrum())
    assert c.warning is None and not c.matches


@pytest.mark.slow
def test_the_real_sio2_eds_file_is_found_shifted_and_cuzn_is_not(shared_data):
    from napari_hae.core.data.energy_check import energy_check
    from napari_hae.core.data.io import load_spectrum_image

    eds = energy_check(load_spectrum_image(shared_data / "sio2_eds/SiO2_EDS_Spectrum_Image.hspy"))
    assert 25 <= eds["shift_ev"] <= 41 and "O K at 550 eV" in eds["warning"]
    eels = energy_check(load_spectrum_image(shared_data / "cuzn_eels/CuZn_EELS_mapping_tutorial.hspy"))
    assert eels["warning"] is None and {"Cu L2,3", "Zn L2,3"} <= {m[0] for m in eels["matches"]}


@pytest.mark.slow
def test_cli_run_warns_about_a_shifted_axis_and_records_the_check(tmp_path, capsys):
    from napari_hae.cli import main

    e, s = _eds(40.0)
    rng = np.random.default_rng(0)
    amp = rng.uniform(0.5, 2.0, (12, 12))
    f = tmp_path / "shifted.npz"
    np.savez(f, spectra=amp[..., None] * s, structural=amp, energy_offset=e[0], energy_scale=e[1] - e[0])
    rc = main(["run", "--spectrum", str(f), "--band", "1700", "1800", "--steps", "1", "--n-seeds", "4",
               "--patch", "4", "--out", str(tmp_path / "run"), "-q", "--fit-iterations", "5"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "warning: The energy axis looks shifted by +4" in err and "Si K at 1780 eV (tabulated 1740)" in err
    from napari_hae.core.record.trace import Trace

    recorded = Trace.load(tmp_path / "run").dataset["energy_check"]
    assert recorded["kind"] == "eds" and 35 <= recorded["shift_ev"] <= 45
    json.dumps(recorded)   # recorded as plain JSON
