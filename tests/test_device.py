"""The model's device (issue 15): 'auto' takes a CUDA GPU when torch sees one, names what it cannot use, and a GPU
that fails under 'auto' moves the run to the CPU without losing a step. The GPU's own results are compared with the
CPU's where a GPU is present (CI has none: those tests skip)."""

import numpy as np
import pytest
import torch

from napari_hae.core.data.patches import PatchGrid, extract_patches
from napari_hae.core.errors import HAEInputError
from napari_hae.core.model import compute, exact_predict
from napari_hae.core.model.base import make_model
from napari_hae.core.model.dkl import DKLRegressor

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch on this machine")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:52]
    image = np.sin(yy / 4.0) * np.cos(xx / 6.0) + 0.3 * rng.standard_normal((40, 52))
    p = extract_patches(image, 6).reshape(image.size, -1)
    y = np.exp(1.5 * p.mean(1)) + 0.5   # positive, the default log scale applies
    idx = np.random.default_rng(0).choice(image.size, 60, replace=False)
    return image, PatchGrid(image, 6), idx, y


def test_auto_takes_the_gpu_exactly_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute.resolve("auto") == torch.device("cpu") and compute.resolve(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert compute.resolve("auto") == torch.device("cuda:0")
    assert compute.resolve("cuda:1") == torch.device("cuda:1") and compute.resolve("cuda") == torch.device("cuda:0")
    with pytest.raises(HAEInputError, match=r"torch sees 2 CUDA GPU\(s\), numbered from 0\. Fix: use"):
        compute.resolve("cuda:2")


@pytest.mark.parametrize("spec, problem", [
    ("gpu", "Model device 'gpu' is not 'auto', 'cpu', 'cuda' or 'cuda:N'. Fix: use --model-param device=auto"),
    ("cuda:x", "Model device 'cuda:x' is not 'auto', 'cpu', 'cuda' or 'cuda:N'."),
    ("cuda", "Model device 'cuda' was asked for, but torch sees no CUDA GPU"),
])
def test_a_device_it_cannot_use_is_named_with_a_fix(spec, problem, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HAEInputError) as err:
        make_model({"name": "dkl", "params": {"device": spec}}, 36)
    assert problem in str(err.value) and "Fix: " in str(err.value)
    with pytest.raises(HAEInputError, match="is not 'auto'|no CUDA GPU"):
        make_model({"name": "dkl_ensemble", "params": {"device": spec}}, 36)


def test_device_is_a_model_parameter_of_the_cli_and_the_dock():
    from napari_hae.core.model.base import MODELS

    for name in ("dkl", "dkl_ensemble"):
        spec = {s.name: s for s in MODELS.get(name).params}["device"]
        assert spec.default == "auto" and "cuda:N" in spec.help
    assert make_model({"name": "dkl", "params": {"device": "cpu"}}, 36).device == torch.device("cpu")


@pytest.mark.parametrize("predictor, max_train", [("grid", 256), ("exact", 20)])
def test_every_tensor_the_model_makes_follows_its_device_not_torchs_default(data, predictor, max_train):
    """On a GPU, a tensor made without the model's device lands on torch's default device (the CPU), and the first
    operation mixing it with the model's tensors fails. Here torch's default device is 'meta' (tensors without
    data) while the model is on the CPU: the same calls give the same numbers only if every tensor the model makes
    (fit, training subset, conditioning steps, both predictors, samples, embedding) follows the model's device."""
    _, grid, idx, y = data
    more = np.union1d(idx, [0, 1, 2])

    def calls():
        model = DKLRegressor(36, hidden=(16, 8), seed=0, device="cpu", predictor=predictor, max_train=max_train,
                             refit_points=10)
        out = [model.fit(grid[idx], y[idx], iterations=20, warm=False).final_loss, *model.predict(grid)]
        assert model.fit(grid[more], y[more], iterations=20).losses == []   # a conditioning step, not a fit
        out += [*model.predict(grid), *model.predict(np.asarray(grid)[:50]), model.posterior(grid).noise,
                model.sample(np.asarray(grid)[:5], np.random.default_rng(0)), model.embed(np.asarray(grid)[:5]),
                model.hyperparameters()["lengthscale"]]
        return out

    expected = calls()
    torch.set_default_device("meta")
    try:
        got = calls()
    finally:
        torch.set_default_device(None)
    assert len(got) == len(expected) == 11
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _pretend_gpu(model):
    """A model whose device is not the CPU: torch's 'meta' device, which computes no numbers and cannot give its
    tensors back, the way a crashed GPU fails."""
    model.device = torch.device("meta")
    return model


def test_a_gpu_that_fails_a_fit_under_auto_moves_the_model_to_the_cpu_and_fits_there(data):
    _, grid, idx, y = data
    model = _pretend_gpu(DKLRegressor(36, hidden=(16, 8), seed=0))
    report = model.fit(grid[idx], y[idx], iterations=60, warm=False)
    assert model.device == torch.device("cpu")
    assert report.events[0] == "The model runs on meta."
    assert report.events[1].startswith("The model's fit failed on meta (NotImplementedError: ")
    assert report.events[1].endswith("the model runs on the CPU from here on.")
    mean, std = model.predict(grid)
    assert np.all(np.isfinite(mean)) and np.all(std > 0)
    assert np.corrcoef(mean[idx], y[idx])[0, 1] > 0.9          # a real fit, not a placeholder
    assert model.fit(grid[idx], y[idx], iterations=5).events == []   # said once


def test_a_gpu_that_fails_a_prediction_under_auto_gives_the_same_prediction_on_the_cpu(data, monkeypatch):
    _, grid, idx, y = data
    model = DKLRegressor(36, hidden=(16, 8), seed=0, predictor="exact")
    model.fit(grid[idx], y[idx], iterations=60, warm=False)
    expected = model.predict(grid)
    model._factors = None
    real = exact_predict.training_factors
    calls = []

    def fails_once(*a):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*a)

    monkeypatch.setattr(exact_predict, "training_factors", fails_once)
    _pretend_gpu(model)
    got = model.predict(grid)
    assert model.device == torch.device("cpu") and len(calls) == 2
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    (event,) = model.fit(grid[idx], y[idx], iterations=5).events   # said with the next fit, into the trace
    assert event.startswith("The model's prediction failed on meta (OutOfMemoryError: CUDA out of memory.")


def test_thompson_samples_survive_a_gpu_fault_under_auto(data):
    _, grid, idx, y = data
    model = DKLRegressor(36, hidden=(16, 8), seed=0)
    model.fit(grid[idx], y[idx], iterations=60, warm=False)
    X = np.asarray(grid)[:40]
    expected = model.sample(X, np.random.default_rng(5), n_samples=3)
    real, calls = model._tensor, []

    def faulty(x):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(x)

    model._tensor = faulty
    _pretend_gpu(model)
    np.testing.assert_array_equal(model.sample(X, np.random.default_rng(5), n_samples=3), expected)
    assert model.device == torch.device("cpu") and len(calls) == 2
    assert model._device_events()[0].startswith("The model's sampling failed on meta (RuntimeError: CUDA error")


def test_an_explicit_gpu_is_not_left_silently(data):
    _, grid, idx, y = data
    model = DKLRegressor(36, hidden=(16, 8), seed=0, device="cpu")
    model.device_spec = "cuda:0"
    _pretend_gpu(model)
    with pytest.raises(NotImplementedError):
        model.fit(grid[idx], y[idx], iterations=5, warm=False)


def test_a_numerical_failure_is_not_taken_for_the_devices(data, monkeypatch):
    _, grid, idx, y = data
    model = _pretend_gpu(DKLRegressor(36, hidden=(16, 8), seed=0))
    monkeypatch.setattr(DKLRegressor, "_fit_or_condition",
                        lambda *a: (_ for _ in ()).throw(RuntimeError("DKL fit failed after 3 retries: cholesky")))
    with pytest.raises(RuntimeError, match="cholesky"):
        model.fit(grid[idx], y[idx], iterations=5)
    assert model.device == torch.device("meta")


def test_a_run_whose_gpu_fails_keeps_every_measurement_and_records_why(small_sample, tmp_path, monkeypatch):
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.experiment import Experiment

    monkeypatch.setattr(compute, "resolve", lambda spec: torch.device("meta"))
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3), journal=tmp_path / "j")
    exp.run()
    exp.close()
    trace = Trace.load(tmp_path / "j")
    assert len(trace.values) == 6 + 3 and len(trace.steps["position"]) == 3 and trace.point_steps[-3:] == [0, 1, 2]
    messages = [e["message"] for e in trace.events]
    assert sum("the model runs on the CPU from here on" in m for m in messages) == 1


@CUDA
@pytest.mark.parametrize("predictor", ["exact", "grid"])
def test_on_a_gpu_the_posterior_is_the_cpus_within_float32_rounding(data, predictor):
    """Tolerance: the same seed trains the same network on both devices; 60 Adam steps in float32 with other
    reduction orders leave the standardised posterior within 1e-2 (mean) and 1e-2 (std) of the CPU's."""
    _, grid, idx, y = data
    out = {}
    for device in ("cpu", "cuda"):
        model = DKLRegressor(36, hidden=(16, 8), seed=0, device=device, predictor=predictor)
        report = model.fit(grid[idx], y[idx], iterations=60, warm=False)
        out[device] = model.predict(grid, standardized=True), report
    (m_c, s_c), _ = out["cpu"]
    (m_g, s_g), rep = out["cuda"]
    assert rep.events[0].startswith("The model runs on cuda:0 (")
    np.testing.assert_allclose(m_g, m_c, atol=1e-2)
    np.testing.assert_allclose(s_g, s_c, atol=1e-2)


@CUDA
def test_a_run_on_the_gpu_records_where_it_ran(small_sample):
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    model = {"name": "dkl", "params": {"hidden": [32, 16], "device": "cuda"}}
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3, model=model))
    exp.run()
    assert len(exp.trace.values) == 9
    assert [e["message"] for e in exp.trace.events if "runs on" in e["message"]][0].startswith("The model runs on cuda")


def test_a_run_started_on_a_gpu_resumes_on_a_machine_without_one(tmp_path, capsys, monkeypatch):
    """The device is where the model computes, not what the run is: ``--model-param device=...`` is the one model
    parameter that may be given with --resume; a recorded GPU this machine lacks is named before anything runs."""
    from napari_hae.cli import main
    from napari_hae.core.data.samples import load_sample
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.experiment import Experiment, ExperimentSettings

    out, data = tmp_path / "gpu-run", load_sample("nanoparticles")
    with monkeypatch.context() as m:   # the microscope PC, whose GPU the run asked for by name
        m.setattr(compute, "resolve", lambda spec: torch.device("cpu"))
        exp = Experiment(SimulatedMicroscope(data), ExperimentSettings(
            patch_size=8, n_seeds=5, budget=3, fit_iterations_first=30, fit_iterations=10,
            model={"name": "dkl", "params": {"hidden": [16, 8], "device": "cuda"}}),
            dataset_info={**data.describe(), "source": {"sample": "nanoparticles", "noise": "none"}},
            journal=out / "trace.journal")
        exp.run(2)
        exp.close()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # the analysis PC
    before = (out / "trace.journal").read_bytes()
    assert main(["run", "--resume", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Model device 'cuda' was asked for, but torch sees no CUDA GPU" in err
    assert "Fix: use --model-param device=auto or device=cpu" in err
    assert (out / "trace.journal").read_bytes() == before                # refused before anything was touched
    assert main(["run", "--resume", str(out), "--model-param", "device=cpu", "--model-param", "lr=0.1"]) == 2
    assert "--model-param cannot change when a run is resumed" in capsys.readouterr().err
    assert main(["run", "--resume", str(out), "--model-param", "device=auto", "-q"]) == 0
    final = Trace.load(out / "trace.h5")
    assert final.n_steps == 3 and final.positions[:7] == exp.trace.positions
    assert "the model's device is 'auto' from here on (the run started with 'cuda')" in \
        [e["message"] for e in final.events]


def test_a_plug_in_models_own_device_parameter_is_not_judged_by_these_rules(small_sample, tmp_path):
    """A registered model may take a ``device`` of its own kind ("mps" here): resuming its run neither refuses
    it nor replaces it (only the DKL models' devices are checked)."""
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.model import MODELS, register_model
    from napari_hae.core.run.experiment import Experiment

    @register_model("test_own_device")
    class OwnDevice:
        """A model that computes where it says."""

        def __init__(self, input_dim, *, device: str = "mps", seed: int = 0):
            self.where, self.inner = device, DKLRegressor(input_dim, hidden=(8,), seed=seed, device="cpu")

        def fit(self, X, y, *, iterations, warm):
            return self.inner.fit(X, y, iterations=iterations, warm=warm)

        def posterior(self, X):
            return self.inner.posterior(X)

    try:
        model = {"name": "test_own_device", "params": {"device": "mps"}}
        exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=3, model=model),
                         journal=tmp_path / "trace.journal")
        exp.run(2)
        exp.close()
        assert compute.usable(exp.trace.settings["model"]) is None
        assert compute.usable({"name": "dkl", "params": {"device": "cuda:7"}}) == "auto"
        again = Experiment.resume(tmp_path / "trace.journal", SimulatedMicroscope(small_sample))
        again.run()
        assert again.model.where == "mps" and again.trace.n_steps == 3
    finally:
        MODELS.pop("test_own_device")
