"""Class 5 (silent wrong numbers) and the data-source half of class 4 of the reliability issue: a value napari-hae
stores or reports is right, or there is a clear error or a recorded, visible event, never a quiet wrong number."""

import time

import numpy as np
import pytest

from conftest import fast_settings, gaussian
from napari_hae.core.data.dataset import EnergyAxis, SpectrumImage
from napari_hae.core.errors import HAEInputError, ModelFitError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.run.experiment import Experiment
from napari_hae.core.targets.scalarizers import Scalarizer, register_scalarizer


def _peaks(descending=False):
    e = np.linspace(1.0, 3.0, 201)
    rng = np.random.default_rng(0)
    amp = rng.uniform(1, 5, (6, 6))
    spectra = amp[..., None] * gaussian(e, 1.0, 2.0, 0.1)[None, None, :] + 0.5
    axis = EnergyAxis(201, 1.0, 0.01, "eV")
    if descending:
        spectra, axis = spectra[..., ::-1].copy(), EnergyAxis(201, 3.0, -0.01, "eV")
    return SpectrumImage(structural=amp, spectra=spectra, energy=axis, name="peaks"), amp


def test_a_descending_energy_axis_is_reversed_with_a_note_and_gives_the_ascending_answer():
    asc, amp = _peaks()
    with pytest.warns(UserWarning, match="energy axis descended.*reversed"):
        desc, _ = _peaks(descending=True)
    assert desc.energy.scale == pytest.approx(0.01) and desc.energy.offset == pytest.approx(1.0)
    sc = Scalarizer("band_integral", {"a": 1.7, "b": 2.3})
    v_desc, v_asc = sc(desc.spectra, desc.energies), sc(asc.spectra, asc.energies)
    np.testing.assert_allclose(v_desc, v_asc, rtol=1e-12)
    # and against the known answer: amp * sqrt(2 pi) sigma * erf-window + 0.5 * width
    from scipy.special import erf

    window = erf(0.3 / (0.1 * np.sqrt(2)))
    np.testing.assert_allclose(v_asc, amp * np.sqrt(2 * np.pi) * 0.1 * window + 0.5 * 0.6, rtol=2e-4)
    assert "descended" in desc.describe()["notes"][0]


@pytest.mark.parametrize("name,params", [("band_integral", {"a": 1.5, "b": 2.5}), ("peak_fwhm", {"a": 1.5, "b": 2.5}),
                                         ("peak_max", {"a": 1.5, "b": 2.5})])
def test_a_scalarizer_refuses_a_descending_energy_array(name, params):
    e = np.linspace(3.0, 1.0, 50)
    with pytest.raises(HAEInputError, match="does not increase channel by channel.*Fix: reverse the channels"):
        Scalarizer(name, params)(np.ones((2, 50)), e)


def test_a_band_between_channels_is_a_clear_error():
    e = np.arange(10, dtype=float)         # channels at whole eV
    with pytest.raises(HAEInputError, match=r"holds no channel.*Fix: widen the band"):
        Scalarizer("peak_max", {"a": 3.2, "b": 3.8})(np.ones((1, 10)), e)


def test_a_band_typed_in_kev_on_an_ev_axis_is_a_clear_error(small_sample):
    with pytest.raises(HAEInputError, match=r"lies outside the energy axis.*Fix: choose limits inside"):
        Scalarizer("band_integral", {"a": 1.64e-3, "b": 1.84e-3}).validate(small_sample.energies,
                                                                            small_sample.signal_shape)


_bad = {"raise": set(), "nan": set(), "huge": set()}


@register_scalarizer("flaky_test_target", vectorized=False)
def _flaky(spectrum, energy, *, how="raise"):
    """Sum of the spectrum, but fails on spectra whose first channel marks them (tests only)."""
    key = round(float(spectrum[0]), 9)
    if key in _bad["raise"] and how == "raise":
        raise ZeroDivisionError("division by zero in the user's function")
    if key in _bad["nan"] and how == "nan":
        return float("nan")
    if key in _bad["huge"] and how == "huge":
        return 10 ** 400                     # an int float() cannot hold
    return float(np.sum(spectrum))


@pytest.mark.parametrize("how,why", [("raise", "raised ZeroDivisionError"), ("nan", "gave nan"),
                                     ("huge", "raised OverflowError")])
def test_a_spectrum_the_scalarizer_cannot_value_is_kept_visible_and_not_trained_on(small_sample, how, why):
    data = small_sample
    seeds = [[5, 5], [40, 8], [24, 24], [10, 40], [30, 30]]
    exp = Experiment(SimulatedMicroscope(data), fast_settings(budget=3, seed_mode="given", seed_positions=seeds),
                     scalarizer=Scalarizer("flaky_test_target", {"how": how}))
    y, x = 24, 24
    _bad[how].add(round(float(data.spectra[y, x, 0]), 9))
    exp.run()
    i = exp.trace.positions.index((int(y), int(x)))
    assert np.isnan(exp.trace.values[i])                              # stored as NaN: no made-up value
    np.testing.assert_array_equal(exp.trace.spectra[i], data.spectra[y, x])   # the spectrum itself is kept
    assert any(why in e["message"] and "left out of training" in e["message"] for e in exp.trace.events)
    others = [v for j, v in enumerate(exp.trace.values) if j != i]
    assert np.isfinite(others).all() and exp.trace.n_steps == 3
    _bad[how].clear()


def test_a_scalarizer_that_values_nothing_stops_with_a_clear_error_and_keeps_the_spectra(small_sample):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2, n_seeds=4),
                     scalarizer=Scalarizer.from_callable(lambda s: float("nan"), name="always_nan"))
    with pytest.raises(ModelFitError, match="None of the 4 measured spectra has a finite value.*Fix: check the "
                                            "scalarizer"):
        exp.step()
    assert exp.trace.n_points == 4 and all(np.isfinite(s).all() for s in exp.trace.spectra)


def test_the_fingerprint_tells_changed_spectra_calibration_and_image(small_sample):
    rec = small_sample.fingerprint()
    small_sample.check_same_source(rec)                    # the same data passes
    changed = SpectrumImage(small_sample.structural, small_sample.spectra.copy(), small_sample.energy,
                            name=small_sample.name)
    changed.spectra[3, 4, 10] += 1.0
    with pytest.raises(HAEInputError, match=r"spectra \(content differs\).*Fix: point it at the data"):
        changed.check_same_source(rec)
    shifted = SpectrumImage(small_sample.structural, small_sample.spectra,
                            EnergyAxis(small_sample.energy.size, small_sample.energy.offset + 5,
                                       small_sample.energy.scale, "eV"), name=small_sample.name)
    with pytest.raises(HAEInputError, match="energy calibration"):
        shifted.check_same_source(rec)
    image = SpectrumImage(small_sample.structural + 1, small_sample.spectra, small_sample.energy)
    with pytest.raises(HAEInputError, match=r"structural image \(content differs\)"):
        image.check_same_source(rec)


def test_the_fingerprint_is_read_once_and_again_for_other_arrays(small_sample, monkeypatch):
    """Hashing a large spectrum image takes seconds (0.23 s for the 128 x 128 x 2048 SiO2 map): the dock computes it
    when the data is chosen, off the GUI thread, and Start takes that one. Threads asking at once share one."""
    import threading

    from napari_hae.core.data import dataset

    data = SpectrumImage(small_sample.structural, small_sample.spectra.copy(), small_sample.energy)
    reads, real = [], dataset.row_blocks

    def counting(a, *args, **kw):
        reads.append(a is data.spectra)
        time.sleep(0.05)   # a slow disk: the second thread arrives while the first reads
        return real(a, *args, **kw)

    monkeypatch.setattr(dataset, "row_blocks", counting)
    got = []
    threads = [threading.Thread(target=lambda: got.append(data.fingerprint())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] == got[1] == small_sample.fingerprint() and reads.count(True) == 1
    assert data.fingerprint() == got[0] and reads.count(True) == 1          # asked again: not read again
    data.spectra = data.spectra.copy()
    data.spectra[0, 0, 0] += 1.0                                             # other arrays: read again
    assert data.fingerprint()["spectra"] != got[0]["spectra"] and reads.count(True) == 2


def _npz_run(tmp_path, data):
    from napari_hae.cli import main

    f = tmp_path / "data.npz"
    np.savez(f, spectra=data.spectra, structural=data.structural, energy_offset=data.energy.offset,
             energy_scale=data.energy.scale)
    out = tmp_path / "run"
    assert main(["run", "--spectrum", str(f), "--steps", "1", "--n-seeds", "4", "--patch", "6",
                 "--fit-iterations", "3", "--out", str(out), "-q"]) == 0
    return f, out


@pytest.mark.slow
def test_resume_and_report_refuse_replaced_spectra(small_sample, tmp_path, capsys):
    from napari_hae.cli import main
    from napari_hae.core.record.trace import Trace

    f, out = _npz_run(tmp_path, small_sample)
    spectra = small_sample.spectra.copy()
    spectra[10:20] *= 3.0                                  # somebody re-exported the file with other data
    np.savez(f, spectra=spectra, structural=small_sample.structural, energy_offset=small_sample.energy.offset,
             energy_scale=small_sample.energy.scale)
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--steps", "3", "-q"]) == 2
    assert "spectra (content differs)" in capsys.readouterr().err
    assert Trace.load(out).n_steps == 1                    # nothing was measured on the wrong data
    assert main(["report", str(out), "-q"]) == 0
    assert "no ground truth" in capsys.readouterr().err and "spectra (content differs)"


def test_an_image_given_beside_an_npz_that_has_one_is_said(small_sample, tmp_path):
    from napari_hae.core.data.io import load_spectrum_image

    f = tmp_path / "d.npz"
    np.savez(f, spectra=small_sample.spectra, structural=small_sample.structural)
    img = tmp_path / "haadf.npy"
    np.save(img, small_sample.structural * 2)
    with pytest.warns(UserWarning, match="Using the structural image .*haadf.npy.* instead of the 'structural'"):
        d = load_spectrum_image(f, img)
    np.testing.assert_array_equal(d.structural, small_sample.structural * 2)


@pytest.mark.parametrize("goal, truth, best, expected, kind", [
    ("max", [1.0, 2.0, 4.0], 4.0, 1.0, "ratio"),
    ("max", [1.0, 2.0, 4.0], 2.0, 0.5, "ratio"),
    ("min", [1.0, 2.0, 4.0], 2.0, 0.5, "ratio"),
    ("max", [-5.0, -3.0, -1.87], -2.0, (-2.0 + 5.0) / (-1.87 + 5.0), "range"),   # it said 107%
    ("min", [-5.0, -3.0, 1.0], -3.0, (3.0 + 1.0) / (5.0 + 1.0), "range"),
    ("max", [-1.0, 0.0, 1.0], 1.0, 1.0, "range"),
])
def test_the_fraction_of_the_best_is_defined_for_every_goal_and_sign(goal, truth, best, expected, kind):
    """Issue 30, class 8: with negative targets the summary reported 107% of the best reached."""
    from napari_hae.core.targets.objective import Objective
    from napari_hae.core.targets.scalarizers import Scalarizer

    frac, counted = Objective([Scalarizer("band_integral", {"a": 1.0, "b": 2.0})], goal).fraction_of_best(best, truth)
    assert counted == kind and frac == pytest.approx(expected) and 0.0 <= frac <= 1.0


def test_messages_that_pointed_the_wrong_way(tmp_path):
    """Issue 30, class 8: a zero-byte .h5 was reported as 'multiple file readers', Scalarizer.from_callable on a
    non-callable raised a raw TypeError."""
    from napari_hae.core.data.io import load_spectrum_image
    from napari_hae.core.targets.scalarizers import Scalarizer

    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(HAEInputError, match=r"is empty \(0 bytes\): it holds no data\. Fix: copy or export"):
        load_spectrum_image(tmp_path / "empty.h5")
    with pytest.raises(HAEInputError, match=r"from_callable needs a function; got int 3\. Fix: pass a function"):
        Scalarizer.from_callable(3)
