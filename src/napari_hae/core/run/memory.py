"""Giving freed memory back to the operating system during a long run.

The model's n x n arrays grow a little every step; glibc's allocator serves them from its heap once its dynamic
mmap threshold has risen and keeps the freed heap, so a 1,000-step run's resident memory grew 161 MiB without a
leak (docs/performance.md, issue 15). ``malloc_trim(0)`` returns the free heap; elsewhere (Windows, macOS,
musl) there is nothing to call and this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

TRIM_EVERY = 25   # steps between trims: each costs ~1 ms against a step of 50 ms or more

_trim = None


def _malloc_trim():
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _trim = libc.malloc_trim   # glibc only
                _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                _trim = False
    return _trim


def release_free_memory() -> bool:
    """Return the allocator's free heap to the OS where glibc allows it; True when something was called."""
    trim = _malloc_trim()
    if not trim:
        return False
    trim(0)
    return True


def after_step(step: int) -> None:
    """Called after step ``step`` of a run: a trim every :data:`TRIM_EVERY` steps."""
    if step > 0 and step % TRIM_EVERY == 0:
        release_free_memory()
