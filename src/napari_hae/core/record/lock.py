"""One writer per run folder: a lock file naming the process (pid, host) that writes the run.

The lock is taken by the run's journal (so by the CLI, the dock and the Python API alike) and released when the
journal closes. A lock whose process is gone (same host, pid not alive, or a pid now used by a process started
after the lock) is stale and taken over, with a note. A lock held from another host cannot be checked from here:
it is refused with the host named, and the user decides. Within one process the lock is re-entrant, so a run's
journal and the CLI around it share one lock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from ..errors import HAEInputError
from .files import replace_file

LOCK_NAME = "run.lock"
_held: dict[Path, list] = {}         # folder -> [how many holders in this process, the note of the first]
_guard = threading.Lock()


def _alive(pid: int, started: float | None) -> bool:
    try:
        import psutil
    except ImportError:   # pragma: no cover - psutil is a dependency
        return True
    try:
        p = psutil.Process(pid)
        # a recycled pid belongs to a process created after the lock was taken
        return started is None or p.create_time() <= started + 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def read_lock(folder) -> dict | None:
    """The lock's record ``{"pid", "host", "time"}`` of ``folder``, None if it has none ({} if unreadable)."""
    path = Path(folder) / LOCK_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


class RunLock:
    """Hold ``folder``'s lock (raises :class:`HAEInputError` naming the holder when another process has it)."""

    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_NAME
        self.note = None      # set when a stale lock was taken over
        self._released = False
        with _guard:
            if self.folder in _held:   # re-entrant: every holder sees whether a stale lock was taken over
                _held[self.folder][0] += 1
                self.note = _held[self.folder][1]
                return
            self._take()
            _held[self.folder] = [1, self.note]

    def _take(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                self._check_holder()
                continue
            except OSError as exc:
                raise HAEInputError(f"Cannot write in the run folder {str(self.folder)!r} ({exc.strerror or exc}).",
                                    "choose an output folder you can write to (--out).") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return
        raise HAEInputError(f"Could not take the lock of run folder {str(self.folder)!r}.",
                            "make sure no other napari-hae process is writing it, then try again.")

    def _check_holder(self) -> None:
        """Raise if the lock's holder may still be alive; remove the lock if it is stale."""
        info = read_lock(self.folder)
        if info is None:
            return
        host, pid = info.get("host"), info.get("pid")
        if not info or not isinstance(pid, int):
            raise HAEInputError(f"Run folder {str(self.folder)!r} has an unreadable lock file {LOCK_NAME!r}.",
                                f"if no napari-hae process is writing this folder, delete {str(self.path)!r}.")
        if host != socket.gethostname():
            raise HAEInputError(f"Run folder {str(self.folder)!r} is being written by process {pid} on host "
                                f"{host!r} (its lock file {LOCK_NAME!r}).",
                                f"wait for that run to end; if it is no longer running on {host}, delete "
                                f"{str(self.path)!r}.")
        if _alive(pid, info.get("time")):
            raise HAEInputError(f"Run folder {str(self.folder)!r} is being written by another napari-hae process "
                                f"(pid {pid}).",
                                "wait for that run to end or stop it, or choose another output folder.")
        stale = self.path.with_name(f"{LOCK_NAME}.stale")
        try:
            replace_file(self.path, stale, moving=True)   # kept (overwritten by the next stale one): the note says
                                                          # whose it was
        except FileNotFoundError:
            return
        self.note = f"took over a stale lock of process {pid} on {host} (it is no longer running)"

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _guard:
            n = _held.get(self.folder, [0])[0] - 1
            if n > 0:
                _held[self.folder][0] = n
                return
            _held.pop(self.folder, None)
            try:
                self.path.unlink()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False
