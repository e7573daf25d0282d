"""Append-only, flushed record log that makes a trace crash-safe, and a reader that salvages damaged logs.

Every record is written whole and pushed to the disk (``flush`` + ``os.fsync``) before the call returns, so a
process killed at any moment loses at most the record being written. Each record starts with a marker and carries
a sequence number and a CRC-32; the reader checks every record and, where one is damaged (a flipped byte, a torn
write, garbage), skips forward to the next marker whose record checks out. Nothing after a damaged record is lost,
and the gap in sequence numbers says exactly how many records were.

Record layout (little endian)::

    b"HAE1" | u32 meta length | u64 data length | u32 crc32(meta + data) | meta (JSON, UTF-8) | data

``meta`` holds ``{"kind": ..., "seq": n, ...fields..., "arrays": [[name, dtype, shape], ...]}``; ``data`` is the
raw bytes of those arrays, in order. No pickle: a journal from an untrusted source cannot run code. (Journals
written before sequence numbers read the same; their losses are counted in bytes only.)

Never truncated, never rewritten: a journal that is not intact is kept aside under a new name and a fresh one is
written from what was recovered (:func:`set_aside`).
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HAEInputError, HAERunError
from .files import replace_file
from .lock import RunLock

MAGIC = b"HAE1"
_HEAD = struct.Struct("<4sIQI")
_MAX_META = 1 << 26          # a meta block larger than this is damage, not a record

# Fault injection for the crash tests (never set in normal use): "MODE:N" with MODE in torn (write half of the
# N-th record, then SIGKILL), before / after (SIGKILL just before / after the N-th record), sigint (SIGINT just after
# the N-th record). Counted per process over all journals.
FAULT_ENV = "NAPARI_HAE_FAULT"
_writes = 0


class JournalWriteError(HAERunError):
    """A record could not be written (disk full, read-only, removed). What was measured is kept in memory."""


def _encode(kind: str, fields: dict, arrays: dict[str, np.ndarray] | None, seq: int) -> bytes:
    arrays = arrays or {}
    descr, chunks = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        descr.append([name, a.dtype.str, list(a.shape)])
        chunks.append(a.tobytes())
    meta = json.dumps({"kind": kind, "seq": seq, **fields, "arrays": descr}, default=_json_default,
                      allow_nan=True).encode()
    data = b"".join(chunks)
    crc = zlib.crc32(data, zlib.crc32(meta))
    return _HEAD.pack(MAGIC, len(meta), len(data), crc) + meta + data


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _fault(stage: str, f, blob: bytes) -> None:
    """The crash tests' pause points (see ``FAULT_ENV``); a no-op unless that variable is set."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    mode, _, n = spec.partition(":")
    if int(n) != _writes:
        return
    import signal

    kill = getattr(signal, "SIGKILL", signal.SIGTERM)   # Windows: SIGTERM is TerminateProcess (no clean-up either)
    if stage == "before" and mode in ("before", "torn"):
        if mode == "torn":
            f.write(blob[: max(1, len(blob) // 2)])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), kill)
    if stage == "after" and mode == "after":
        os.kill(os.getpid(), kill)
    if stage == "after" and mode == "sigint":
        os.kill(os.getpid(), signal.SIGINT)


class Journal:
    """Writer. ``Journal(path)`` starts a new file (refusing to overwrite one: it holds measurements);
    ``Journal.append_to(path)`` continues an intact one. Either holds the run folder's :class:`RunLock` until
    closed, so no second process writes the same run."""

    def __init__(self, path, _mode: str = "xb", _next_seq: int = 0):
        self.path = Path(path)
        self.lock = RunLock(make_folder(self.path.parent))
        try:
            self._f = open(self.path, _mode)
        except FileExistsError:
            self.lock.release()
            raise HAEInputError(f"A journal already exists at {str(self.path)!r}; it holds a run's measurements.",
                                "resume that run (--resume), or choose another output folder.") from None
        except OSError as exc:
            self.lock.release()
            raise HAEInputError(f"Cannot write the run's journal {str(self.path)!r} ({exc.strerror or exc}).",
                                "choose an output folder you can write to (--out); nothing was measured.") from None
        self.n_records = 0
        self.seq = _next_seq

    @classmethod
    def append_to(cls, path, contents: JournalContents | None = None) -> Journal:
        """Continue ``path``, which must be intact (a damaged journal is set aside and rewritten instead)."""
        path = Path(path)
        contents = contents or read_records(path)
        if not contents.intact:
            raise HAEInputError(f"Journal {str(path)!r} is damaged ({contents.describe()}); it is not appended to.",
                                "resume from it: the damaged file is kept aside and a fresh journal is written.")
        return cls(path, _mode="ab", _next_seq=contents.next_seq)

    def write(self, kind: str, fields: dict | None = None, arrays: dict | None = None) -> None:
        global _writes
        blob = _encode(kind, fields or {}, arrays, self.seq)
        _writes += 1
        _fault("before", self._f, blob)
        try:
            self._f.write(blob)
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            raise JournalWriteError(
                f"Could not write to the run's journal {str(self.path)!r} ({exc.strerror or exc}). The "
                "measurement is kept in memory but is not on disk.",
                "free disk space or fix the folder's permissions, then save the trace (Save trace / the run "
                "writes trace.h5 when it stops).") from exc
        self.seq += 1
        self.n_records += 1
        _fault("after", self._f, blob)

    def close(self) -> None:
        """Close the file and release the folder. A close that fails (the disk filled up: the buffered tail of a
        record that could not be written) is not an error here: every record before it is on disk, a torn last
        record is dropped when the journal is read, and what was measured is still in memory to be saved."""
        try:
            if not self._f.closed:
                self._f.close()
        except OSError as exc:
            self.close_error = exc
        finally:
            self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@dataclass
class JournalContents:
    """What a journal holds: its intact records and, if it is damaged, what was skipped."""

    records: list = field(default_factory=list)          # (meta, arrays), in file order
    size: int = 0                                        # bytes in the file
    skipped: list = field(default_factory=list)          # (start, end) byte ranges holding no intact record
    missing: list = field(default_factory=list)          # sequence numbers absent between intact records

    @property
    def intact(self) -> bool:
        return not self.skipped

    @property
    def torn_tail_only(self) -> bool:
        """The only damage is an unfinished last record (a crash while writing it)."""
        return len(self.skipped) == 1 and self.skipped[0][1] == self.size and not self.missing

    @property
    def next_seq(self) -> int:
        seqs = [m.get("seq") for m, _ in self.records if m.get("seq") is not None]
        return (max(seqs) + 1) if seqs else len(self.records)

    def describe(self) -> str:
        if self.intact:
            return f"intact, {len(self.records)} records"
        if self.torn_tail_only:
            return (f"{len(self.records)} records recovered; an unfinished last record "
                    f"({self.size - self.skipped[0][0]} bytes) dropped")
        nbytes = sum(b - a for a, b in self.skipped)
        lost = f"{len(self.missing)} records lost between intact ones" if self.missing else \
            "no whole record lost between intact ones"
        tail = " and an unfinished last record" if self.skipped[-1][1] == self.size else ""
        return (f"damaged: {len(self.records)} records recovered, {lost}{tail}; {nbytes} bytes in "
                f"{len(self.skipped)} damaged region(s) skipped")


def _parse_at(raw: bytes, pos: int):
    """The record starting at ``pos`` as ``(meta, arrays, end)`` if it is whole and its CRC checks, else None."""
    if pos + _HEAD.size > len(raw):
        return None
    magic, lm, ld, crc = _HEAD.unpack_from(raw, pos)
    end = pos + _HEAD.size + lm + ld
    if magic != MAGIC or lm > _MAX_META or end > len(raw):
        return None
    meta_b = raw[pos + _HEAD.size: pos + _HEAD.size + lm]
    data = raw[pos + _HEAD.size + lm: end]
    if zlib.crc32(data, zlib.crc32(meta_b)) != crc:
        return None
    try:
        meta = json.loads(meta_b)
        arrays, off = {}, 0
        for name, dt, shape in meta.pop("arrays"):
            dt = np.dtype(dt)
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            arrays[name] = np.frombuffer(data, dtype=dt, count=n // dt.itemsize if dt.itemsize else 0,
                                         offset=off).reshape(shape).copy()
            off += n
    except (ValueError, TypeError, KeyError):   # a CRC collision on garbage: not a record
        return None
    return meta, arrays, end


def read_records(path) -> JournalContents:
    """Every intact record of the journal at ``path``, resynchronising past damaged ones."""
    path = Path(path)
    if not path.exists():
        raise HAEInputError(f"Journal {str(path)!r} does not exist.", "check the path (a run's trace.journal).")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HAEInputError(f"Cannot read the journal {str(path)!r} ({exc.strerror or exc}).",
                            "check the file's permissions, or copy the run folder somewhere readable.") from None
    if raw[:4] != MAGIC and raw.find(MAGIC) < 0:
        raise HAEInputError(f"{str(path)!r} is not a napari-hae journal.",
                            "pass the trace.journal written by a napari-hae run, or its trace.h5.")
    out = JournalContents(size=len(raw))
    pos = 0
    while pos < len(raw):
        rec = _parse_at(raw, pos)
        if rec is not None:
            meta, arrays, end = rec
            out.records.append((meta, arrays))
            pos = end
            continue
        nxt = pos
        while True:   # resynchronise: the next marker at which an intact record starts
            nxt = raw.find(MAGIC, nxt + 1)
            if nxt < 0 or _parse_at(raw, nxt) is not None:
                break
        end = len(raw) if nxt < 0 else nxt
        out.skipped.append((pos, end))
        pos = end
    seqs = [m.get("seq") for m, _ in out.records]
    if all(s is not None for s in seqs) and seqs:
        have = set(seqs)
        out.missing = [s for s in range(seqs[0], max(seqs)) if s not in have]
        if seqs[0] != 0 and out.skipped and out.skipped[0][0] == 0:
            out.missing = list(range(0, seqs[0])) + out.missing
    return out


def bytes_needed(settings, signal_shape, n_positions: int) -> int:
    """About how many bytes a run's records take on disk (seeds + budget points, maps if stored), with a margin
    for the header and trace.h5 (written beside the journal)."""
    s = settings
    n_seed = s.n_seed_points
    per_point = int(np.prod(signal_shape)) * 8 + 2048
    per_step = per_point + (3 * 4 * n_positions // s.maps_every(n_positions) if s.record_maps else 0)
    return 2 * (n_seed * per_point + s.budget * per_step + 8 * n_positions)


def make_folder(folder) -> Path:
    """Create the run folder ``folder`` (and its parents), or say clearly why it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise HAEInputError(f"--out {str(folder)!r} is a file, not a folder.",
                            "give a folder for the run's output.") from None
    except OSError as exc:
        raise HAEInputError(f"Cannot create the output folder {str(folder)!r} ({exc.strerror or exc}).",
                            "choose a folder you can write to (--out), on a disk with free space.") from None
    return folder


def check_free_space(folder, need: int, hint: str = "") -> None:
    """Refuse (before anything is measured) a run whose records will not fit on the disk of ``folder``."""
    import shutil

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if free < need:
        mib = 1 << 20
        raise HAEInputError(f"The run needs about {need / mib:.0f} MiB on disk for its records, and {str(folder)!r} "
                            f"has {free / mib:.0f} MiB free; spectra measured later could not be saved.",
                            f"free disk space or choose an output folder on another disk{hint}.")


def set_aside(path, why: str) -> Path:
    """Rename ``path`` to ``NAME.WHY-YYYYmmdd-HHMMSS[-k]`` beside it and return the new path; nothing is deleted."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    k, new = 0, path.with_name(f"{path.name}.{why}-{stamp}")
    while new.exists():
        k += 1
        new = path.with_name(f"{path.name}.{why}-{stamp}-{k}")
    replace_file(path, new, moving=True)
    return new
