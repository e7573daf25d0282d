"""Class 6 of the reliability issue: a spectrum image is not read into memory whole. .npy files are memory-mapped,
large HyperSpy files read lazily (dask), every whole-array pass goes in row blocks, and what must be loaded whole
but does not fit is refused with the estimate."""

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_hae.core.data import io
from napari_hae.core.data.dataset import BLOCK_BYTES, SpectrumImage, is_lazy, row_blocks
from napari_hae.core.errors import HAEInputError
from napari_hae.core.targets.scalarizers import Scalarizer


def test_npy_spectra_are_memory_mapped_and_give_the_in_memory_answers(small_sample, tmp_path):
    np.save(tmp_path / "s.npy", small_sample.spectra.astype(np.float32))
    np.save(tmp_path / "i.npy", small_sample.structural)
    d = io.load_spectrum_image(tmp_path / "s.npy", tmp_path / "i.npy")
    assert isinstance(d.spectra, np.memmap) and is_lazy(d.spectra)
    eager = SpectrumImage(small_sample.structural, np.asarray(d.spectra), d.energy)
    sc = Scalarizer("band_integral", {"a": 3.45, "b": 4.05})
    np.testing.assert_array_equal(d.scalarize(sc), sc(eager.spectra, eager.energies))
    np.testing.assert_allclose(d.total_intensity(), eager.spectra.sum(-1, dtype=np.float64))
    np.testing.assert_allclose(d.mean_spectrum(), eager.spectra.reshape(-1, d.signal_shape[0]).mean(0), rtol=1e-6)
    assert d.fingerprint() == eager.fingerprint()     # the digest does not depend on how the data is held


def test_row_blocks_cover_every_row_once_in_the_files_dtype():
    a = np.arange(7 * 5 * 3, dtype=np.int16).reshape(7, 5, 3)
    blocks = list(row_blocks(a, block_bytes=2 * 5 * 3 * 2))
    assert [(i0, i1) for i0, i1, _ in blocks] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert all(b.dtype == np.int16 for _, _, b in blocks)
    np.testing.assert_array_equal(np.concatenate([b for _, _, b in blocks]), a)


def test_a_large_hyperspy_file_stays_lazy(small_sample, tmp_path, monkeypatch):
    io.save_spectrum_image_hspy(small_sample, tmp_path / "s.hspy", tmp_path / "i.hspy")
    monkeypatch.setattr(io, "EAGER_BYTES", 1000)         # "large": more than 1000 bytes
    d = io.load_spectrum_image(tmp_path / "s.hspy", tmp_path / "i.hspy")
    assert hasattr(d.spectra, "compute")
    sc = Scalarizer("band_integral", {"a": 3.45, "b": 4.05})
    np.testing.assert_allclose(d.scalarize(sc), sc(small_sample.spectra, small_sample.energies), rtol=1e-12)
    np.testing.assert_array_equal(d.spectrum(3, 4), small_sample.spectra[3, 4])


def test_an_npz_that_does_not_fit_in_memory_is_refused_with_the_estimate(small_sample, tmp_path, monkeypatch):
    import collections

    import psutil

    np.savez(tmp_path / "d.npz", spectra=small_sample.spectra, structural=small_sample.structural)
    vm = collections.namedtuple("vm", "available")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm(100_000))
    with pytest.raises(HAEInputError, match=r"needs about 0\.0 GiB of memory; 0\.0 GiB is available.*Fix: save the "
                                            r"spectrum image as \.npy \(memory-mapped\)"):
        io.load_spectrum_image(tmp_path / "d.npz")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory read from /proc (Linux)")
def test_peak_memory_of_a_run_does_not_grow_with_the_spectrum_image(tmp_path):
    """The acceptance figure at a quarter of its size (benchmarks/memory.py does 2 GiB): a 0.5 GiB spectrum image
    run peaks within 1.5 x the patches' size of the same run on a tiny file (the fixed overhead)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import memory

    (tmp_path / "big").mkdir()
    (tmp_path / "tiny").mkdir()
    big = memory.write_data(tmp_path / "big", 128, 8192)             # 0.5 GiB float32
    tiny = memory.write_data(tmp_path / "tiny", 32, 64)
    rss_tiny, _ = memory.run(*tiny, tmp_path / "run_tiny", 3, 16)
    rss_big, _ = memory.run(*big, tmp_path / "run_big", 3, 16)
    patches_gib = 128 * 128 * 16 * 16 * 4 / 2**30
    # the fixed overhead beyond the tiny run: the work buffers of one row block (the block, its float64 copy in
    # the scalarizer, masks): a few BLOCK_BYTES, whatever the file's size (a whole-file read would add 0.5 GiB)
    buffers_gib = 6 * BLOCK_BYTES / 2**30
    assert rss_big - rss_tiny < 1.5 * patches_gib + buffers_gib, (rss_big, rss_tiny)
