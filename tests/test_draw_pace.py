"""DrawPace (issue 28): a run's steps are drawn so that drawing takes at most a share of napari's GUI thread."""

import pytest

pytest.importorskip("qtpy")

from napari_hae._qt.turns import DrawPace  # noqa: E402


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_the_next_drawing_waits_in_proportion_to_the_last_ones_cost():
    clock = Clock()
    pace = DrawPace(share=0.1, clock=clock)
    assert pace.wait_ms() == 1                   # nothing drawn yet: at once (on a timer of its own)
    pace.drawn(0.15)                             # software OpenGL at 1920 x 1080: a drawing and its repaint
    assert pace.wait_ms() == 1350                # 0.15 s of every 1.5 s
    clock.t += 1.0
    assert pace.wait_ms() == 350
    clock.t += 0.5
    assert pace.wait_ms() == 1
    pace.drawn(0.02)                             # with a GPU: every step of a run (0.3-0.5 s apart) is drawn
    assert pace.wait_ms() == 180
    pace.drawn(0.6)                              # one slow drawing (shaders built): not 6.9 s without a drawing
    assert pace.wait_ms() == 2000
    pace.reset()
    assert pace.wait_ms() == 1


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\]"):
        DrawPace(share=share)
