"""A run's output folder: what belongs to a run, and starting a new run in a folder that is not empty.

A folder holds one run: its journal, its trace.h5, the summary and report figures, and journals kept aside after
damage. A new run never replaces another: it is refused unless asked, and then the old run's files are moved into
``previous-YYYYmmdd-HHMMSS/`` inside the folder (nothing is deleted). The caller holds the folder's
:class:`~napari_hae.core.record.lock.RunLock` first, so a run still being written is never moved.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..errors import HAEInputError
from .files import FileInUse, replace_file
from .lock import LOCK_NAME
from .trace import JOURNAL_NAME, TRACE_NAME, Trace

SUMMARY_NAME = "summary.json"
RUN_FILES = (JOURNAL_NAME, TRACE_NAME, SUMMARY_NAME, "summary.png", "report.png", TRACE_NAME + ".tmp")
_KEPT_ASIDE = re.compile(rf"^({re.escape(JOURNAL_NAME)}|{re.escape(TRACE_NAME)})\.(damaged|superseded)-")


def run_files(folder) -> list[Path]:
    """The files of the run in ``folder`` (not the lock, not files the user put there)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.name in RUN_FILES or _KEPT_ASIDE.match(p.name)))


def describe_run(folder) -> tuple[str, bool]:
    """(what the folder's run is, in words; whether it is unfinished and could be resumed)."""
    folder = Path(folder)
    try:
        t = Trace.load(folder)
    except HAEInputError as exc:
        return f"a run whose record cannot be read ({exc.problem})", False
    budget = int(t.settings.get("budget", 0))
    state = "an unfinished run" if t.n_steps < budget else "a finished run"
    damaged = " (damaged: see its journal)" if t.damaged else ""
    return f"{state} ({t.n_steps} of {budget} steps, {t.n_points} spectra){damaged}", t.n_steps < budget


def prepare_new_run(folder, overwrite: bool = False) -> Path | None:
    """Make ``folder`` ready for a new run. A folder holding anything is refused unless ``overwrite``; then the
    previous run's files are moved to ``previous-<time>/`` (returned) and anything else is left where it is."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise HAEInputError(f"--out {str(folder)!r} is a file, not a folder.", "give a folder for the run's output.")
    files = run_files(folder)
    others = [p for p in (folder.iterdir() if folder.is_dir() else [])
              if p not in files and not p.name.startswith(LOCK_NAME) and not p.name.startswith("previous-")]
    if not files and not others:
        return None
    if not overwrite:
        if files:
            what, unfinished = describe_run(folder)
            resume = f"continue it with --resume {folder}, or " if unfinished else ""
            raise HAEInputError(f"{str(folder)!r} holds {what}.",
                                f"{resume}pass --overwrite (the old run is moved into {folder.name}/previous-.../, "
                                "nothing is deleted), or choose another --out.")
        names = ", ".join(sorted(p.name for p in others)[:5])
        raise HAEInputError(f"{str(folder)!r} is not empty (it holds {names}).",
                            "choose an empty or new --out folder, or pass --overwrite to write the run beside "
                            "those files (they are left as they are).")
    if not files:
        return None
    dest = folder / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
    k = 0
    while dest.exists():
        k += 1
        dest = folder / f"previous-{time.strftime('%Y%m%d-%H%M%S')}-{k}"
    dest.mkdir()
    for i, p in enumerate(files):
        try:
            replace_file(p, dest / p.name, moving=True)
        except FileInUse as exc:
            moved = ", ".join(q.name for q in files[:i]) or "no file"
            raise HAEInputError(f"{p.name} in {str(folder)!r} could not be moved into {dest.name}/ ({exc.__cause__}): "
                                f"another program may hold it open. {moved} moved there, the rest stayed where they "
                                "were; nothing is deleted.",
                                f"close the program that holds {p.name}, then run again with --overwrite.") from exc
    return dest


def save_somewhere(trace: Trace, folder) -> tuple[Path, list[str]]:
    """Save ``trace`` as ``folder/trace.h5``, or where that fails (a full disk, no permission) in a rescue folder:
    the system's temporary folder, then the user's home. Returns the path written and what failed before; raises
    OSError only when no place takes it. Nothing measured is lost while any disk has room."""
    import tempfile

    tried = []
    name = f"napari-hae-rescue-{trace.run_id or 'run'}"
    for place in (Path(folder), Path(tempfile.gettempdir()) / name, Path.home() / name):
        try:
            return trace.save(place / TRACE_NAME), tried
        except OSError as exc:
            tried.append(f"{place / TRACE_NAME}: {exc.strerror or exc}")
    raise OSError("no place could take the trace: " + "; ".join(tried))
