"""Issue 27: a counting noise model. Each measured value's variance from its spectrum's counts (Poisson redraws)
is a floor of the GP's noise; a position not measured gets the variance its predicted value would have."""

import numpy as np
import pytest

from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.model.dkl import DKLRegressor
from napari_hae.core.model.noise import KnownNoise
from napari_hae.core.model.warp import LOG, NONE
from napari_hae.core.run.experiment import Experiment
from napari_hae.core.targets.noise import are_counts, counting_variance
from napari_hae.core.targets.objective import Objective
from napari_hae.core.targets.scalarizers import Scalarizer, band_weights

ENERGY = np.linspace(0.0, 10.0, 51)   # 0.2 eV channels


def _counts(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.uniform(2.0, 40.0, size=(n, ENERGY.size))).astype(np.float64)


def test_counts_are_whole_numbers_at_least_zero():
    assert are_counts(np.array([[0, 3, 7]], dtype=np.uint16))
    assert are_counts(np.array([[0.0, 3.0, 7.0]], dtype=np.float32))       # counts stored as floats
    assert not are_counts(np.array([[0.0, 3.5, 7.0]]))                      # divided by a dose or a gain
    assert not are_counts(np.array([[0, -1, 7]], dtype=np.int16))            # background-subtracted
    assert not are_counts(np.array([[0.0, np.nan]]))
    assert not are_counts(np.zeros((0, 3)))


def test_a_band_integrals_counting_variance_is_its_weighted_counts():
    """Band integral I = sum w_c s_c of Poisson counts: var I = sum w_c^2 s_c (the known answer)."""
    spectra = _counts()
    band = Scalarizer("band_integral", {"a": 2.1, "b": 6.3})                 # fractional edge channels
    exact = (band_weights(ENERGY, 2.1, 6.3) ** 2 * spectra).sum(-1)
    many = counting_variance(lambda s: band(s, ENERGY), spectra, draws=4000)
    np.testing.assert_allclose(many, exact, rtol=0.08)
    few = counting_variance(lambda s: band(s, ENERGY), spectra)               # the default 32 redraws
    assert np.all((few / exact > 0.4) & (few / exact < 1.8))                 # chi-square(31) / 31: 0.5-1.6 at 99.9%


def test_a_values_variance_depends_on_its_spectrum_and_index_alone():
    """A run is its records: spectrum i's variance is the same computed alone (a step), or with the others (a
    resume), however the spectra are batched."""
    spectra = _counts(8)
    band = Scalarizer("band_integral", {"a": 2.0, "b": 6.0}, background=(0.4, 1.8))
    f = lambda s: band(s, ENERGY, errors="nan")  # noqa: E731
    together = counting_variance(f, spectra)
    apart = np.concatenate([counting_variance(f, spectra[:3]), counting_variance(f, spectra[3:], first_index=3)])
    np.testing.assert_array_equal(together, apart)
    assert np.all(np.isfinite(together)) and np.all(together > 0)
    assert not np.array_equal(counting_variance(f, spectra[3:]), together[3:])   # the index names the stream


def test_a_value_undefined_in_most_redraws_has_no_variance():
    spectra = np.zeros((2, ENERGY.size))
    spectra[1] = 50.0
    v = counting_variance(lambda s: s[:, 10:20].sum(-1) / s[:, 30:40].sum(-1), spectra)   # a user's ratio
    assert np.isnan(v[0]) and np.isfinite(v[1])                                # 0 / 0 in every redraw


def test_the_objective_gives_no_variance_where_it_is_not_defined():
    spectra = _counts(3)
    band = {"name": "band_integral", "params": {"a": 2.0, "b": 6.0}}
    one = Objective.from_dicts(band)
    assert one.counting_variance(spectra, ENERGY).shape == (3,)
    assert Objective.from_dicts(band, goal="min").counting_variance(spectra, ENERGY) == pytest.approx(
        one.counting_variance(spectra, ENERGY))                               # the sign does not change it
    assert one.counting_variance(spectra / 3.0, ENERGY) is None               # not counts
    assert Objective.from_dicts(band, [band]).counting_variance(spectra, ENERGY) is None   # several objectives


def test_the_variance_line_and_its_scale():
    y = np.array([10.0, 20.0, 40.0, 80.0])
    known = KnownNoise.from_targets(y, 3.0 + 2.0 * y, NONE, y_std=2.0)
    assert (known.a, known.b) == pytest.approx((3.0, 2.0))
    np.testing.assert_allclose(known.train, (3.0 + 2.0 * y) / 4.0)
    np.testing.assert_allclose(known.at(np.array([-50.0, 50.0])), (3.0 + 100.0) / 4.0)   # the magnitude
    # on the log scale var(log y) = var(y) / y^2; a variance not known is the line's
    logged = KnownNoise.from_targets(y, np.array([23.0, np.nan, 83.0, 163.0]), LOG, y_std=0.5)
    np.testing.assert_allclose(logged.train, (3.0 + 2.0 * y) / y ** 2 / 0.25)


def test_a_point_the_counts_say_is_noise_does_not_pull_the_model():
    """Two measurements at the same patch: one precise, one with a huge counting variance. With counting noise the
    posterior follows the precise one; with one learned noise it averages them."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 16))
    y = 100.0 + 10.0 * np.tanh(X[:, 0])
    X = np.vstack([X, X[:1]])
    y = np.append(y, y[0] + 300.0)                                           # the same place, 300 higher
    var = np.append(np.full(30, 1.0), 1e6)
    counted = DKLRegressor(16, seed=0, hidden=(16,), noise="counts", warp="none")
    report = counted.fit(X, y, iterations=80, warm=False, y_var=var)
    assert report.events == []
    learned = DKLRegressor(16, seed=0, hidden=(16,), warp="none")
    learned.fit(X, y, iterations=80, warm=False)
    at = X[:1]
    assert abs(counted.predict(at)[0][0] - y[0]) < 15.0                   # 5% of the way to the noisy one
    assert abs(learned.predict(at)[0][0] - y[0]) > 100.0                   # a third of the way or more
    post = counted.posterior(X)
    assert np.shape(post.noise) == (31,)
    # the noise of a new measurement: the learned part plus the line's variance at the predicted value
    learned_part = counted.hyperparameters()["noise"]
    expected = np.sqrt(learned_part + counted.known.at(post.in_units()[0]))
    np.testing.assert_allclose(post.noise, expected, rtol=1e-9)
    assert post.measurement(0)["noise_std"] == pytest.approx(expected[0] * post.scale, rel=1e-9)


def test_counting_noise_wanted_but_not_given_is_said_once():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 16)), rng.uniform(5, 50, 20)
    model = DKLRegressor(16, seed=0, hidden=(8,), noise="counts")
    first = model.fit(X, y, iterations=5, warm=False)
    assert first.events == ["no counting variance for these targets (the spectra are not counts, or several "
                            "objectives): the model learns one noise variance"]
    assert model.fit(X, y, iterations=5, warm=False).events == []
    assert model.fit(X, y, iterations=5, warm=False, y_var=y).events == [
        "each value's counting variance is a floor of the model's noise again"]
    with pytest.raises(ValueError, match="20 targets but 3 variances"):
        model.fit(X, y, iterations=5, warm=False, y_var=y[:3])


def test_a_run_with_counting_noise_trains_on_the_recorded_spectras_variances(tmp_path):
    """The bundled sample's spectra are counts: the run gives the model each value's counting variance, the same
    live and after a resume from the journal (the next decision is the same)."""
    from napari_hae.core.data.samples.nanoparticles import make_nanoparticles

    data = make_nanoparticles(shape=(32, 32), n_clusters=4, seed=3)
    assert are_counts(data.spectra)
    settings = {"patch_size": 6, "budget": 4, "n_seeds": 5, "fit_iterations_first": 20, "fit_iterations": 10,
                "scalarizer": {"name": "band_integral", "params": {"a": 1.2, "b": 2.25}},
                "model": {"name": "dkl", "params": {"noise": "counts", "hidden": [8]}}, "record_maps": False}
    journal = tmp_path / "run.journal"
    live = Experiment(SimulatedMicroscope(data), settings, journal=journal)
    live.start()
    for _ in range(2):
        live.step()
    assert live.model.known is not None
    spectra = np.stack(live.trace.spectra)
    exact = (band_weights(data.energy.values, 1.2, 2.25) ** 2 * spectra).sum(-1)
    ratio = live._counting_variances() / exact
    assert np.all((ratio > 0.4) & (ratio < 1.8))
    resumed = Experiment.resume(journal, SimulatedMicroscope(data))
    a, b = live.decide(), resumed.decide()
    assert (a.step, a.position) == (b.step, b.position)
    np.testing.assert_array_equal(a.maps["acq"], b.maps["acq"])
    live.close()
    resumed.close()


def test_a_trace_from_before_counting_noise_is_rebuilt_with_one_learned_noise():
    from napari_hae.core.record.schema import migrate_settings

    for name in ("dkl", "gp"):
        old = migrate_settings({"model": {"name": name, "params": {"restart": "cold", "warp": "log"}}})
        assert old["model"]["params"]["noise"] == "learned"
        recorded = {"model": {"name": name, "params": {"noise": "counts"}}}
        assert migrate_settings(recorded)["model"]["params"]["noise"] == "counts"
