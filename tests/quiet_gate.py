"""Tests that measure time run alone: under pytest-xdist, a test marked ``quiet`` waits until every other worker is
between tests, and the other workers start no test while it runs.

Why: the suite runs on two processes (half the wall time on two cores), but a test that asserts an event-loop gap
or a pipelined step's time measured the other worker's load (a worst gap of 0.29 s against 0.25 s beside it).
xdist has no exclusive mode, so the workers agree through files in a folder of their own run (``testrunuid``),
which works on every platform: ``quiet.lock`` (made with ``O_EXCL``: one quiet test at a time) and ``idle-<worker>``
(there while that worker runs no test); the controller removes the folder when the session ends. A worker
deletes its idle file *before* it looks for the lock, and a quiet test makes the lock *before* it looks at the idle
files, so one of the two always sees the other.

A pytest plug-in (``pytest_plugins`` in ``tests/conftest.py``); on one process it does nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

POLL_S = 0.05
WAIT_FOR_OTHERS_S = 300.0   # longer than the slowest test (~60 s beside another worker); then it runs anyway


def run_folder(testrunuid: str, root: Path | None = None) -> Path:
    """The folder the workers of one run (xdist's ``testrunuid``) agree through."""
    return (Path(tempfile.gettempdir()) if root is None else root) / f"napari-hae-quiet-{testrunuid}"


class QuietGate:
    """The gate of one xdist worker (``workerinput``: xdist's ``workerid``, ``workercount`` and ``testrunuid``)."""

    def __init__(self, workerinput: dict, root: Path | None = None):
        self.me = workerinput["workerid"]
        self.count = int(workerinput["workercount"])
        self.folder = run_folder(workerinput["testrunuid"], root)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = self.folder / "quiet.lock"
        self.idle()

    def _idle_file(self, worker: str) -> Path:
        return self.folder / f"idle-{worker}"

    def idle(self) -> None:
        """This worker runs no test (between tests, and once it has run its last)."""
        self._idle_file(self.me).touch()

    def busy(self) -> None:
        self._idle_file(self.me).unlink(missing_ok=True)

    def enter(self, quiet: bool) -> str | None:
        """Wait until this worker may run its next test; a message if a quiet test stopped waiting for the others."""
        if not quiet:
            while True:
                self.busy()
                if not self.lock.exists():
                    return None
                self.idle()   # a quiet test runs: wait between tests
                while self.lock.exists():
                    time.sleep(POLL_S)
        while True:   # one quiet test at a time, across the workers (this one counts as idle while it waits)
            try:
                os.close(os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                time.sleep(POLL_S)
        others = [self._idle_file(f"gw{i}") for i in range(self.count) if f"gw{i}" != self.me]
        end = time.monotonic() + WAIT_FOR_OTHERS_S
        while not all(f.exists() for f in others):
            if time.monotonic() > end:
                self.busy()
                return f"quiet test: other workers still busy after {WAIT_FOR_OTHERS_S:.0f} s; measured beside them"
            time.sleep(POLL_S)
        self.busy()
        return None

    def leave(self, quiet: bool) -> None:
        if quiet:
            self.lock.unlink(missing_ok=True)
        self.idle()


_GATE = pytest.StashKey()
_RUN_FOLDER = pytest.StashKey()
MAX_WORKERS = 4   # each worker holds napari, torch and an X server's OpenGL: ~1 GB


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the suite's default, pyproject.toml): one worker per CPU this process may use, at most
    ``MAX_WORKERS``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)   # set by pytest-xdist in its workers only
    if workerinput is not None:
        config.stash[_GATE] = QuietGate(workerinput)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """(xdist's controller, for each worker it starts) the folder of this run, removed when the session ends."""
    node.config.stash[_RUN_FOLDER] = run_folder(node.workerinput["testrunuid"])


def pytest_sessionfinish(session):
    """(the controller, after its workers have stopped) no folder left behind in the temporary directory."""
    folder = session.config.stash.get(_RUN_FOLDER, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    gate = item.config.stash.get(_GATE, None)
    if gate is None:
        yield
        return
    quiet = item.get_closest_marker("quiet") is not None
    said = gate.enter(quiet)
    if said:
        item.warn(pytest.PytestWarning(said))
    try:
        yield
    finally:
        gate.leave(quiet)
