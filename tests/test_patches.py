import numpy as np
import pytest

from napari_hae.core.data.patches import extract_patches, flat_index, positions_of
from napari_hae.core.errors import HAEInputError

IMG = np.arange(7 * 9, dtype=float).reshape(7, 9)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_patch_is_centred_on_its_position(n):
    p = extract_patches(IMG, n, normalize=False)
    assert p.shape == (63, n, n)
    for y, x in [(3, 4), (4, 5)]:  # interior for every n tested
        patch = p[y * 9 + x]
        assert patch[n // 2, n // 2] == IMG[y, x]
        y0, x0 = y - n // 2, x - n // 2
        np.testing.assert_array_equal(patch, IMG[y0:y0 + n, x0:x0 + n])


def test_borders_are_reflected():
    p = extract_patches(IMG, 3, positions=np.array([[0, 0], [6, 8]]), normalize=False)
    np.testing.assert_array_equal(p[0], IMG[[1, 0, 1]][:, [1, 0, 1]])
    np.testing.assert_array_equal(p[1], IMG[[5, 6, 5]][:, [7, 8, 7]])


def test_normalisation_is_global_and_keeps_relative_contrast():
    p = extract_patches(IMG, 3)
    full = (IMG - IMG.mean()) / IMG.std()
    np.testing.assert_allclose(p[4 * 9 + 4], full[3:6, 3:6], rtol=1e-6)
    assert p.dtype == np.float32


def test_flat_index_round_trip():
    pos = np.array([[0, 0], [6, 8], [3, 2]])
    np.testing.assert_array_equal(positions_of(flat_index(pos, IMG.shape), IMG.shape), pos)


@pytest.mark.parametrize("n, match", [(2, "smaller than 3"), (8, "larger than the image"), (4.5, "not an integer")])
def test_bad_patch_sizes(n, match):
    with pytest.raises(HAEInputError, match=match):
        extract_patches(IMG, n)
