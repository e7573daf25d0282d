"""The monitor renderer process: ``python -m napari_hae._monitor_renderer``, talking over its stdin/stdout.

Started with ``subprocess`` rather than ``multiprocessing``: a spawned multiprocessing child re-imports the
parent's ``__main__``, which in a user's script without an ``if __name__ == "__main__"`` guard would open a second
napari. The child lowers its priority before importing matplotlib, so neither its start nor its drawing takes CPU
from napari's GUI thread or the training worker.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys

_HEADER = struct.Struct("<Q")   # the length of each pickled message


class Duplex:
    """``send``/``recv`` of pickled messages, each prefixed by its length, over two binary file objects (the
    child's stdin and stdout). Plain files work the same on Windows and POSIX (a ``multiprocessing`` Connection
    over pipe file descriptors is POSIX-only: on Windows its first send failed and the monitors stayed blank)."""

    def __init__(self, reader, writer):
        self._r, self._w = reader, writer

    def send(self, obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self._w.write(_HEADER.pack(len(data)) + data)
        self._w.flush()

    def recv(self):
        (n,) = _HEADER.unpack(self._read(_HEADER.size))
        return pickle.loads(self._read(n))

    def _read(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = self._r.read(left)
            if not chunk:
                raise EOFError("the other end closed the pipe")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for f in (self._r, self._w):
            try:
                f.close()
            except OSError:
                pass


def start() -> tuple[subprocess.Popen, Duplex]:
    """Start the renderer; returns the process and the parent's end of the pipes."""
    proc = subprocess.Popen([sys.executable, "-m", "napari_hae._monitor_renderer"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, close_fds=True)
    return proc, Duplex(proc.stdout, proc.stdin)


def _binary(fd: int) -> int:
    if sys.platform == "win32":   # no newline translation on the pipe
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)
    return fd


def _child() -> None:
    try:
        os.nice(10)
    except (AttributeError, OSError):
        pass
    reader = os.fdopen(_binary(os.dup(0)), "rb")
    writer = os.fdopen(_binary(os.dup(1)), "wb")
    os.dup2(2, 1)            # anything printed by libraries goes to stderr, never into the pipe
    from ._monitor_figure import serve

    serve(Duplex(reader, writer))


if __name__ == "__main__":
    _child()
