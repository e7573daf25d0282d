import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
warnings.filterwarnings("ignore", category=FutureWarning)

pytest_plugins = ("quiet_gate",)   # tests that measure time run alone on several processes

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def small_sample():
    """A 48 x 48 nanoparticle dataset: fast enough for loop tests."""
    from napari_hae.core.data.samples.nanoparticles import make_nanoparticles

    return make_nanoparticles(shape=(48, 48), n_clusters=6, seed=3)


@pytest.fixture(scope="session")
def sample():
    from napari_hae.core.data.samples import load_sample

    return load_sample("nanoparticles")


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real data not found at {SHARED_DATA} (only present beside a developer/CI checkout)")
    return SHARED_DATA


def fast_settings(**kw):
    from napari_hae.core.run.experiment import ExperimentSettings

    base = dict(patch_size=8, n_seeds=6, budget=6, fit_iterations_first=60, fit_iterations=10,
                model={"name": "dkl", "params": {"hidden": [32, 16]}}, random_seed=0)
    base.update(kw)
    return ExperimentSettings(**base)


def saved_trace(data, tmp_path, budget=3):
    """A finished run of ``budget`` steps on ``data``, saved to ``tmp_path/old.h5``: (trace, path)."""
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    exp = Experiment(SimulatedMicroscope(data), fast_settings(budget=budget),
                     dataset_info={**data.describe(), "fingerprint": data.fingerprint()})
    exp.run()
    return exp.trace, exp.trace.save(tmp_path / "old.h5")


def gaussian(e, a, mu, sigma):
    return a * np.exp(-0.5 * ((e - mu) / sigma) ** 2)


def assert_traces_equal(a, b):
    """Every recorded array and record of two traces is identical (NaN equals NaN)."""
    np.testing.assert_array_equal(a.structural, b.structural)
    assert a.positions == b.positions and a.kinds == b.kinds and a.point_steps == b.point_steps
    assert a.values == b.values
    np.testing.assert_array_equal(a.spectra_array(), b.spectra_array())
    np.testing.assert_equal(a.steps, b.steps)
    assert a.map_steps == b.map_steps
    for k in a.maps:
        assert len(a.maps[k]) == len(b.maps[k])
        for m1, m2 in zip(a.maps[k], b.maps[k]):
            np.testing.assert_array_equal(m1, m2)
    assert a.settings == b.settings and a.dataset == b.dataset and a.interventions == b.interventions
    assert a.events == b.events and a.rng_state == b.rng_state
    assert len(a.objects) == len(b.objects)
    for o1, o2 in zip(a.objects, b.objects):
        assert o1["mode"] == o2["mode"] and o1["label"] == o2["label"]
        np.testing.assert_array_equal(o1["mask"], o2["mask"])
    assert a.versions == b.versions


def start_cli_run(folder, steps_before: int = 2, budget: int = 400):
    """A ``napari-hae run`` process on the sample writing ``folder``, returned once its journal holds
    ``steps_before`` policy steps (the process keeps running: ``budget`` is far more steps than a test needs, so
    that a loaded machine cannot finish the run before the test acts on it)."""
    import os
    import subprocess
    import sys
    import time

    from napari_hae.core.errors import HAEInputError
    from napari_hae.core.record.journal import read_records

    cmd = [sys.executable, "-m", "napari_hae.cli", "run", "--sample", "nanoparticles", "--steps", str(budget),
           "--patch", "8", "--fit-iterations", "5", "--out", str(folder), "-q"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    t0 = time.time()
    while time.time() - t0 < 120 and p.poll() is None:
        j = folder / "trace.journal"
        try:
            if j.exists() and sum(m["kind"] == "step" for m, _ in read_records(j).records) >= steps_before:
                break
        except HAEInputError:   # read while the process was still writing the journal's header: look again
            pass
        time.sleep(0.1)
    return p


# -- the GUI suite: one check for OpenGL, and no cascade after one GUI test fails ---------------------------------

_GL_PROBE = """
from qtpy.QtWidgets import QApplication
app = QApplication([])
from napari._vispy.utils.gl import get_gl_extensions
ext = get_gl_extensions()
print("GL-OK" if ext else "GL-EMPTY")
"""


def _gl_problem() -> str | None:
    """Why napari's canvas cannot get an OpenGL context here (None: it can), checked once in a child process."""
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "the OpenGL probe did not answer within 120 s"
    if "GL-OK" in out.stdout:
        return None
    last = (out.stderr.strip().splitlines() or ["no extensions"])[-1]
    return f"no working OpenGL context for napari's canvas ({last}); run under Xvfb with Mesa (see .ci/run)"


def _opens_a_viewer(fixturenames) -> bool:
    """Whether a test is a GUI test: one that opens a napari viewer."""
    return "make_napari_viewer" in fixturenames


def pytest_collection_modifyitems(config, items):
    """GUI tests skip with the reason when there is no OpenGL context, instead of failing one by one."""
    gui = [item for item in items if _opens_a_viewer(getattr(item, "fixturenames", ()))]
    if not gui:
        return
    problem = _gl_problem()
    if problem is not None:
        for item in gui:
            item.add_marker(pytest.mark.skip(reason=problem))


def _gl_answer_cached():
    """napari's cached answer to 'which OpenGL extensions?' in this process: None if not asked yet, '' if the query
    had no context (napari caches that too)."""
    from napari._vispy.utils import gl

    if gl.get_gl_extensions.cache_info().currsize == 0:
        return None
    return gl.get_gl_extensions() or ""


def _forget_gl_answers():
    from napari._vispy.utils import gl

    gl.get_gl_extensions.cache_clear()
    gl.get_max_texture_sizes.cache_clear()


@pytest.fixture(autouse=True)
def _opengl_in_this_process(request):
    """napari asks OpenGL for its extensions and texture sizes once per process and caches the answers
    (``lru_cache``), even an empty one from a moment without a context; every later image layer of the process then
    failed ('texture_float' not in None): one worker's cascade under load. So: ask before the first viewer, with no
    canvas open (skip with the reason if OpenGL does not answer), and forget an empty answer after each GUI test."""
    if not _opens_a_viewer(request.fixturenames):
        yield
        return
    if _gl_answer_cached() is None:
        from napari._vispy.utils import gl

        if not gl.get_gl_extensions():
            _forget_gl_answers()
            pytest.skip("this test process got no OpenGL context for napari's canvas (no GL extensions answered)")
        gl.get_max_texture_sizes()
    yield
    if _gl_answer_cached() == "":
        _forget_gl_answers()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """napari's viewer fixture reads ``rep_call`` in its teardown, which a test that skipped or errored in setup
    never gets: it then errored in teardown ('Function' object has no attribute 'rep_call') and left its viewers
    behind, and napari's leak check failed every later GUI test. A setup that did not pass stands for the call."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "setup" and not rep.passed:
        item.rep_call = rep

