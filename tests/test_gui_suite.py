"""The GUI suite stays green for the right reasons: a GUI test that skips in setup (real data absent) does not error
in napari's teardown, and without an OpenGL context the GUI tests skip with the reason instead of failing one after
another."""

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

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
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_gui=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1, errors=0)


@pytest.mark.slow
def test_without_opengl_the_gui_tests_skip_with_the_reason(pytester):
    pytester.makeconftest(CONFTEST.replace("ext = get_gl_extensions()", "raise RuntimeError('no GL here')"))
    pytester.makepyfile(test_gui=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=2, errors=0)
    result.stdout.fnmatch_lines(["*no working OpenGL context for napari's canvas (RuntimeError: no GL here)*"])
