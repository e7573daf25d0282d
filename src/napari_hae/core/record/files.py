"""Replacing a run's files where another program may hold them open.

On Windows (microscope PCs) a file open in another program (trace.h5 in HDFView, summary.png in an image viewer,
a folder a sync client or a virus scanner is reading) cannot be replaced or moved: ``os.replace`` raises
PermissionError ("being used by another process"). A scanner lets go within a moment, so the rename is tried again
for about 1.5 s; a program that keeps the file open gets :class:`FileInUse`, which names both files: nothing is
lost, the new content stays where it was written.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

WAITS = (0.05, 0.1, 0.2, 0.4, 0.8)   # seconds between tries of a refused rename (about 1.5 s in all)


class FileInUse(PermissionError):
    """``source`` could not be renamed to ``target`` (one of them held open by another program, or the folder not
    writable); both are left as they were. ``moving``: ``source`` is the file in question (set aside, moved), else
    ``target`` (replaced by a new version, kept in ``source``)."""

    def __init__(self, source: Path, target: Path, reason: str, moving: bool = False):
        self.source, self.target = Path(source), Path(target)
        held = self.source if moving else self.target
        why = "another program may hold it open (a viewer, a sync client) or the folder may not be writable"
        if moving:
            said = (f"{str(held)!r} could not be moved to {str(self.target)!r} ({reason}): {why}. It is left where "
                    "it was.")
        else:
            said = (f"{str(held)!r} could not be replaced ({reason}): {why}. What was to replace it is kept in "
                    f"{str(self.source)!r}.")
        super().__init__(f"{said} Fix: close the program that holds {held.name} and try again.")


def replace_file(source, target, moving: bool = False) -> None:
    """``os.replace(source, target)``, tried again after each of :data:`WAITS` when refused; then
    :class:`FileInUse` (``moving``: as there)."""
    for wait in (*WAITS, None):
        try:
            os.replace(source, target)
            return
        except PermissionError as exc:
            if wait is None:
                raise FileInUse(source, target, exc.strerror or str(exc), moving) from exc
            time.sleep(wait)
