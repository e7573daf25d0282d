"""The GUI suite stays green for the right reasons: a GUI test that skips in setup (real data absent) does not error
in napari's teardown, and without an OpenGL context the GUI tests skip with the reason instead of failing one after
another."""

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()


def _suite_conftest(pytester, text=CONFTEST):
    """The suite's conftest, with the plug-in it loads, in ``pytester``'s folder."""
    pytester.makepyfile(quiet_gate=(Path(__file__).parent / "quiet_gate.py").read_text())
    pytester.makeconftest(text)

TESTS = """
import pytest

@pytest.fixture
def absent():
    pytest.skip("shared real data not found")

def test_skips_after_the_viewer_fixture(make_napari_viewer, absent):
    pass

def test_opens_a_viewer(make_napari_viewer):
    make_napari_viewer().add_image(__import__("numpy").zeros((4, 4)))
"""


@pytest.mark.slow
def test_a_gui_test_skipped_in_setup_does_not_error_in_teardown(pytester):
    _suite_conftest(pytester)
    pytester.makepyfile(test_gui=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1, errors=0)


@pytest.mark.slow
def test_without_opengl_the_gui_tests_skip_with_the_reason(pytester):
    _suite_conftest(pytester, CONFTEST.replace("ext = get_gl_extensions()", "raise RuntimeError('no GL here')"))
    pytester.makepyfile(test_gui=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=2, errors=0)
    result.stdout.fnmatch_lines(["*no working OpenGL context for napari's canvas (RuntimeError: no GL here)*"])


ONE_LOST_CONTEXT = """
import numpy as np

def test_a_moment_without_a_context(make_napari_viewer, monkeypatch):
    # what a worker saw under load: one query of napari's cached GL facts answered None (no context at that moment)
    from napari._vispy.utils import gl
    monkeypatch.setattr(gl.gl, "glGetParameter", lambda *_: None)
    gl.get_gl_extensions.cache_clear()
    assert gl.get_gl_extensions() is None

def test_the_next_viewer(make_napari_viewer):
    make_napari_viewer().add_image(np.zeros((4, 4), dtype=np.float32))
"""


@pytest.mark.slow
def test_one_moment_without_opengl_does_not_fail_every_later_gui_test(pytester):
    """napari caches its OpenGL queries for the process (``lru_cache``): one answered without a context (None) made
    every later image layer of that pytest process fail ('texture_float' not in None), the cascade seen on the
    suite's workers under load. The suite forgets a failed answer after each GUI test."""
    _suite_conftest(pytester)
    pytester.makepyfile(test_gui=ONE_LOST_CONTEXT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-rs")
    result.assert_outcomes(passed=2, errors=0)
