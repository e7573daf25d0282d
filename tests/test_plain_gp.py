"""The plain GP (issue 27's model baseline): an exact GP on fixed patch features (each patch averaged over pool x pool
blocks), the DKL's machinery without the learned network."""

import numpy as np
import pytest
import torch

from conftest import fast_settings
from napari_hae.core.data.patches import PatchGrid
from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.model import make_model
from napari_hae.core.run.experiment import Experiment


def test_its_features_are_block_means_and_nothing_of_them_is_trained():
    model = make_model({"name": "gp", "params": {"pool": 2}}, 16, seed=0)
    patch = np.arange(16, dtype=np.float32).reshape(4, 4)
    extractor = model._new_extractor()
    got = extractor(torch.as_tensor(patch.reshape(1, -1))).detach().numpy().ravel()
    np.testing.assert_allclose(got, [patch[:2, :2].mean(), patch[:2, 2:].mean(), patch[2:, :2].mean(),
                                     patch[2:, 2:].mean()], rtol=1e-6)
    assert not any(p.requires_grad for p in extractor.parameters())
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 16)).astype(np.float32), rng.uniform(1, 2, 12)
    model.fit(X, y, iterations=30)
    np.testing.assert_array_equal(model.model.feature_extractor[0].weight.detach().numpy(),
                                  extractor[0].weight.detach().numpy())   # the GP's hyperparameters only


def test_it_learns_a_smooth_function_of_the_patch_features():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 64)).astype(np.float32)

    def f(x):   # a function of the mean of one quarter of the patch
        return np.exp(x.reshape(-1, 8, 8)[:, :4, :4].mean(axis=(1, 2)))

    model = make_model({"name": "gp", "params": {"pool": 2, "warp": "none"}}, 64, seed=0)
    model.fit(X[:120], f(X[:120]), iterations=150)
    mean, std = model.predict(X[120:])
    truth = f(X[120:])
    assert np.corrcoef(mean, truth)[0, 1] > 0.95
    assert 0.5 < np.mean(np.abs(mean - truth) <= 2 * std + 0.05) <= 1.0


def test_it_runs_as_a_run_model_on_every_position_of_a_scan(small_sample):
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(model={"name": "gp", "params": {}}, budget=3))
    exp.run()
    assert exp.trace.n_steps == 3 and np.isfinite(exp.trace.step_array("next_mean")).all()
    grid = PatchGrid(small_sample.structural, 8)
    mean, std = exp.model.predict(grid)
    np.testing.assert_allclose(mean[:50], exp.model.predict(grid[np.arange(50)])[0], rtol=1e-4, atol=1e-6)
    assert exp.trace.settings["model"]["name"] == "gp"
    exp.close()


@pytest.mark.parametrize("pool, dim, said", [
    (6, 16, r"Model 'gp': pool=6 does not fit patches of 4 x 4 pixels\. Fix: give a whole number of blocks from 1 "
            r"to 4"),
    (9, 256, r"The model 'gp' got pool=9, which is not <= 8"),
    (0, 64, r"The model 'gp' got pool=0, which is not >= 1"),
])
def test_a_pool_that_does_not_fit_the_patch_is_refused(pool, dim, said):
    with pytest.raises(HAEInputError, match=said):
        make_model({"name": "gp", "params": {"pool": pool}}, dim, seed=0)


def test_dkl_or_gp_uses_the_model_whose_recorded_predictions_scored_better():
    """Issue 27: the choice between the DKL and the plain GP is made from the recorded log scores alone: the
    higher sum over the steps both models scored; the DKL before any and on a tie; NaN steps left out."""
    from napari_hae.core.model.choice import DKLOrGP

    m = DKLOrGP(64, embed_dim=2)
    m.choose(np.empty((0, 2)))
    assert m.chosen == 0
    m.choose([[-3.0, -2.0], [-4.0, -4.5]])                 # -7.0 against -6.5
    assert m.chosen == 1 and m.n_scored == 2
    m.choose([[-3.0, -2.0], [-4.0, -4.5], [np.nan, -9.0], [-1.0, -1.5]])   # the NaN step is not counted
    assert m.chosen == 0 and m.n_scored == 3 and list(m.totals) == [-8.0, -8.0]   # a tie: the DKL


def test_a_run_with_dkl_or_gp_records_both_scores_and_resumes_choosing_as_live(small_sample, tmp_path):
    """Each step records the log score each model gave the measured value before it was measured, the one in use
    is the step's own log_score; a run resumed from its journal picks what the uninterrupted run picked."""
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    s = fast_settings(budget=6, model={"name": "dkl_or_gp", "params": {"hidden": [16]}}, recalibrate=False)
    whole = Experiment(SimulatedMicroscope(small_sample), s)
    whole.run()
    scores = np.column_stack([whole.trace.step_array(f) for f in ("dkl_log_score", "gp_log_score")])
    assert np.all(np.isfinite(scores))
    used = [int(np.sum(scores[:k, 1]) > np.sum(scores[:k, 0])) for k in range(6)]   # the rule, from the records
    np.testing.assert_allclose(whole.trace.step_array("log_score"), scores[np.arange(6), used])
    assert 1 in used, "the plain GP is never chosen on this sample: the test would not see the choice resumed"
    part = Experiment(SimulatedMicroscope(small_sample), s, journal=tmp_path / "j")
    part.run(3)
    part.close()
    again = Experiment.resume(tmp_path / "j", SimulatedMicroscope(small_sample))
    again.run()
    again.close()
    np.testing.assert_array_equal(again.trace.positions_array(), whole.trace.positions_array())
    np.testing.assert_allclose(again.trace.step_array("gp_log_score"), whole.trace.step_array("gp_log_score"))


def test_dkl_or_gp_predicts_the_unused_model_at_the_pick_alone(small_sample):
    """The unused model's prediction is scored only where the step measures, so it is made there alone, at
    decision time (a map of it cost ~35 ms of a 0.4 s step on 128 x 128): each step predicts one model everywhere
    and the other at one position, and the records score both."""
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    s = fast_settings(budget=4, model={"name": "dkl_or_gp", "params": {"hidden": [16]}}, recalibrate=False)
    exp = Experiment(SimulatedMicroscope(small_sample), s)
    sizes = []
    for member in exp.model.members:
        member.posterior = lambda X, own=member.posterior: (sizes.append(len(X)), own(X))[1]
    exp.run()
    n = exp.patches.shape[0]
    assert sorted(sizes) == [1] * 4 + [n] * 4
    assert all(sorted(sizes[2 * k:2 * k + 2]) == [1, n] for k in range(4))
    scores = np.column_stack([exp.trace.step_array(f) for f in ("dkl_log_score", "gp_log_score")])
    assert np.all(np.isfinite(scores))
