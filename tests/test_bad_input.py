"""Bad input never produces a silent wrong run: each case raises HAEInputError naming the problem and the fix."""

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.core.data.dataset import EnergyAxis, SpectrumImage
from napari_hae.core.data.io import load_spectrum_image
from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.guard import AcquisitionGuard
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment
from napari_hae.core.targets.scalarizers import Scalarizer

OK_S, OK_A = np.ones((10, 10)), np.ones((10, 10, 5))
DIPOLE = {"name": "band_integral", "params": {"a": 1.2, "b": 2.25}}


def _band(a, b, name="band_integral"):
    return {"scalarizer": {"name": name, "params": {"a": a, "b": b}}}


# -- datasets: shapes, dimensions, dtypes, NaN/inf, calibration ---------------------------------------------------
DATASETS = [
    (dict(structural=OK_S, spectra=np.ones((10, 12, 5))), "different shapes"),
    (dict(structural=np.ones((10,)), spectra=OK_A), "must be 2-D"),
    (dict(structural=np.ones((3, 10, 10)), spectra=OK_A), "must be 2-D"),
    (dict(structural=OK_S, spectra=np.ones((10, 10))), "3-D .* or 4-D"),
    (dict(structural=OK_S, spectra=np.ones(5)), "3-D .* or 4-D"),
    (dict(structural=OK_S, spectra=np.ones((10, 10, 2, 2, 2))), "3-D .* or 4-D"),
    (dict(structural=np.full((10, 10), np.nan), spectra=OK_A), "structural image has 100 non-finite"),
    (dict(structural=OK_S, spectra=np.full((10, 10, 5), np.inf)), "spectrum image has 500 non-finite"),
    (dict(structural=OK_S, spectra=np.ones((10, 10, 5)) * 1j), "non-real dtype"),
    (dict(structural=np.full((10, 10), "a"), spectra=OK_A), "not real numbers"),
    (dict(structural=np.ones((2, 2)), spectra=np.ones((2, 2, 5))), "too small"),
    (dict(structural=OK_S, spectra=np.ones((10, 10, 0))), "empty signal axis"),
    (dict(structural=OK_S, spectra=OK_A, energy=EnergyAxis(4)), "4 channels but the spectra have 5"),
    (dict(structural=OK_S, spectra=OK_A, pixel_size=-1.0), "pixel size"),
]


@pytest.mark.parametrize("kw, match", DATASETS)
def test_bad_dataset(kw, match):
    with pytest.raises(HAEInputError, match=match) as e:
        SpectrumImage(**kw)
    assert "Fix: " in str(e.value)


@pytest.mark.parametrize("kw, match", [
    (dict(size=0), "empty"),
    (dict(size=5, scale=0.0), "calibration is invalid"),
    (dict(size=5, offset=np.nan), "calibration is invalid"),
])
def test_bad_energy_axis(kw, match):
    with pytest.raises(HAEInputError, match=match):
        EnergyAxis(**kw)


def test_uncalibrated_axis_warns_and_uses_channels():
    with pytest.warns(UserWarning, match="uncalibrated"):
        d = SpectrumImage(np.ones((4, 4)), np.ones((4, 4, 7)))
    assert d.energy.units == "channel" and d.energy.limits == (0.0, 6.0)


# -- settings: band, patch size, budget, seeds, policy, scalarizer --------------------------------------------------
SETTINGS = [
    ({"budget": 5000}, "exceed the 2304 scan positions"),
    ({"budget": -1}, "whole number >= 0"),
    ({"seed_mode": "given", "seed_positions": [[1, 1], [1, 1]]}, "duplicates"),
    ({"seed_mode": "given", "seed_positions": [[60, 1]]}, "outside the 48 x 48 scan field"),
    ({"seed_mode": "given", "seed_positions": [[-1, 3]]}, "outside the 48 x 48 scan field"),
    ({"seed_mode": "given", "seed_positions": [[1.5, 3]]}, "whole pixel coordinates"),
    ({"seed_mode": "diagonal"}, "Unknown seed mode"),
    ({"n_seeds": 0}, "At least one seed"),
    ({"patch_size": 64}, "larger than the image"),
    ({"patch_size": 2}, "smaller than 3"),
    ({"patch_size": 7.5}, "not an integer"),
    (_band(9.0, 10.0), "outside the energy axis"),
    (_band(2.25, 1.2), "reversed or empty"),
    (_band(1.2, 1.2), "reversed or empty"),
    (_band(float("nan"), 2.0), "not finite"),
    (_band(1.2001, 1.2002, "peak_max"), "holds no channel"),
    (_band(1.2001, 1.2002), "holds no channel"),
    ({"scalarizer": {"name": "band_ratio", "params": {"a": 1.2, "b": 2.25}}}, "wrong parameters"),
    ({"scalarizer": {"name": "plasmon_magic", "params": {}}}, "Unknown scalarizer"),
    ({"policy": {"name": "ucb", "params": {"xi": 1}}}, "no parameter"),
    ({"policy": {"name": "greedy-ish", "params": {}}}, "Unknown policy"),
    ({"goal": "up"}, "goal"),
]


@pytest.mark.parametrize("kw, match", SETTINGS)
def test_bad_settings(small_sample, kw, match):
    with pytest.raises(HAEInputError, match=match) as e:
        exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(**kw))
        exp.start()
        exp.step()
    assert "Fix: " in str(e.value)


# -- objects of interest and interventions ---------------------------------------------------------------------
@pytest.mark.parametrize("mask, mode, match", [
    (np.ones((10, 10), bool), "avoid", "differs from the scan shape"),
    (np.zeros((48, 48), bool), "avoid", "covers no scan position"),
    (np.ones((48, 48), bool), "ignore", "not 'visit' or 'avoid'"),
])
def test_bad_objects(small_sample, mask, mode, match):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings())
    with pytest.raises(HAEInputError, match=match):
        exp.add_object(mask, mode)
    assert exp.trace.objects == [] and exp.trace.interventions == []


@pytest.mark.parametrize("call, match", [
    (lambda e: e.set_patch_size(1), "smaller than 3"),
    (lambda e: e.set_policy("ei", beta=2), "no parameter"),
    (lambda e: e.set_scalarizer(Scalarizer("band_integral", {"a": 3.0, "b": 1.0})), "reversed"),
])
def test_bad_interventions_change_nothing(small_sample, call, match):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings())
    before = exp.settings.to_dict()
    with pytest.raises(HAEInputError, match=match):
        call(exp)
    assert exp.settings.to_dict() == before and exp.trace.interventions == []


# -- microscope -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda d: SimulatedMicroscope(d, noise="gaussian"), "Unknown noise model"),
    (lambda d: SimulatedMicroscope(d, noise="poisson", dose=0), "must be > 0"),
    (lambda d: SimulatedMicroscope(d).acquire(48, 0), "outside the scan field"),
    (lambda d: AcquisitionGuard(SimulatedMicroscope(d), retries=-1), "negative"),
    (lambda d: AcquisitionGuard(SimulatedMicroscope(d), timeout=0), "not positive"),
])
def test_bad_microscope_use(small_sample, make, match):
    with pytest.raises(HAEInputError, match=match):
        make(small_sample)


# -- files ------------------------------------------------------------------------------------------------------
def _write(tmp_path, name, content: bytes):
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize("make, match", [
    (lambda t: t / "missing.hspy", "does not exist"),
    (lambda t: _write(t, "x.xyz", b"?"), "Unknown file format"),
    (lambda t: _write(t, "trunc.hspy", b"\x89HDF\r\n\x1a\n" + b"\0" * 20), "could not read"),
    (lambda t: _write(t, "text.dm4", b"this is not a dm4 file"), "could not read"),
    (lambda t: _write(t, "bad.npz", b"PK\x03\x04 truncated zip"), "could not be read as a numpy file"),
])
def test_unreadable_spectrum_files(tmp_path, make, match):
    with pytest.raises(HAEInputError, match=match):
        load_spectrum_image(make(tmp_path))


def test_npz_with_wrong_keys_and_npy_without_image(tmp_path):
    np.savez(tmp_path / "k.npz", data=np.ones((4, 4, 3)))
    with pytest.raises(HAEInputError, match="not 'spectra' and 'structural'"):
        load_spectrum_image(tmp_path / "k.npz")
    np.save(tmp_path / "a.npy", np.ones((4, 4, 3)))
    with pytest.raises(HAEInputError, match="needs its structural image"):
        load_spectrum_image(tmp_path / "a.npy")
    with pytest.raises(HAEInputError, match="does not exist"):
        load_spectrum_image(tmp_path / "a.npy", tmp_path / "no_image.npy")
    np.save(tmp_path / "s.npy", np.ones((5, 5)))
    with pytest.raises(HAEInputError, match="different shapes"):
        load_spectrum_image(tmp_path / "a.npy", tmp_path / "s.npy")


@pytest.mark.parametrize("make, match", [
    (lambda t: t / "none.h5", "does not exist"),
    (lambda t: _write(t, "junk.h5", b"not hdf5 at all"), "not a readable HDF5 trace"),
    (lambda t: t, "holds no trace.journal or trace.h5"),
])
def test_unreadable_traces(tmp_path, make, match):
    with pytest.raises(HAEInputError, match=match):
        Trace.load(make(tmp_path))


def test_hdf5_that_is_not_a_trace(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(HAEInputError, match="not a napari-hae trace"):
        Trace.load(tmp_path / "other.h5")
