"""The monitor renderer process: ``python -m napari_hae._monitor_renderer``, talking over its stdin/stdout.

Started with ``subprocess`` rather than ``multiprocessing``: a spawned multiprocessing child re-imports the
parent's ``__main__``, which in a user's script without an ``if __name__ == "__main__"`` guard would open a second
napari. The child lowers its priority before importing matplotlib, so neither its start nor its drawing takes CPU
from napari's GUI thread or the training worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Connection


class Duplex:
    """``send``/``recv`` over two one-way pipe connections (pickle framing between our own two processes)."""

    def __init__(self, read_fd: int, write_fd: int):
        self._r = Connection(read_fd, writable=False)
        self._w = Connection(write_fd, readable=False)

    def send(self, obj) -> None:
        self._w.send(obj)

    def recv(self):
        return self._r.recv()

    def close(self) -> None:
        for c in (self._r, self._w):
            try:
                c.close()
            except OSError:
                pass


def start() -> tuple[subprocess.Popen, Duplex]:
    """Start the renderer; returns the process and the parent's end of the pipes."""
    proc = subprocess.Popen([sys.executable, "-m", "napari_hae._monitor_renderer"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, close_fds=True)
    conn = Duplex(os.dup(proc.stdout.fileno()), os.dup(proc.stdin.fileno()))
    proc.stdout.close()
    proc.stdin.close()
    return proc, conn


def _child() -> None:
    try:
        os.nice(10)
    except (AttributeError, OSError):
        pass
    read_fd, write_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)            # anything printed by libraries goes to stderr, never into the pipe
    from ._monitor_figure import serve

    serve(Duplex(read_fd, write_fd))


if __name__ == "__main__":
    _child()
