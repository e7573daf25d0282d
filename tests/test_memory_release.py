"""Freed memory is given back to the OS during long runs (glibc's malloc_trim; a no-op elsewhere)."""

import sys

import numpy as np
import psutil
import pytest

from napari_hae.core.run import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_a_freed_heap_goes_back_to_the_os():
    proc = psutil.Process()
    # many mid-sized blocks (below the mmap threshold: served from the heap), all but the last freed
    blocks = [np.ones(16_000) for _ in range(3_000)]   # ~380 MB
    keep = blocks[-1]
    del blocks
    before = proc.memory_info().rss
    assert memory.release_free_memory() is True
    after = proc.memory_info().rss
    assert before - after > 150 * 2**20, (before / 2**20, after / 2**20)
    assert keep.sum() == 16_000


def test_the_driver_trims_every_few_steps(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    for step in range(0, 101):
        memory.after_step(step)
    assert len(calls) == 100 // memory.TRIM_EVERY


def test_without_glibc_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(memory, "_trim", False)
    assert memory.release_free_memory() is False
