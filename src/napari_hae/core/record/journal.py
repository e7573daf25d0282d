"""Append-only, flushed record log that makes a trace crash-safe.

Every record is written whole and pushed to the disk (``flush`` + ``os.fsync``) before the call returns, so a
process killed at any moment loses at most the record being written. A torn last record is detected by its
length and CRC-32 and dropped on reading; everything before it is intact.

Record layout (little endian)::

    b"HAE1" | u32 meta length | u64 data length | u32 crc32(meta + data) | meta (JSON, UTF-8) | data

``meta`` holds ``{"kind": ..., ...fields..., "arrays": [[name, dtype, shape], ...]}``; ``data`` is the raw bytes
of those arrays, in order. No pickle: a journal from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import HAEInputError

MAGIC = b"HAE1"
_HEAD = struct.Struct("<4sIQI")


def _encode(kind: str, fields: dict, arrays: dict[str, np.ndarray] | None) -> bytes:
    arrays = arrays or {}
    descr, chunks = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        descr.append([name, a.dtype.str, list(a.shape)])
        chunks.append(a.tobytes())
    meta = json.dumps({"kind": kind, **fields, "arrays": descr}, default=_json_default).encode()
    data = b"".join(chunks)
    crc = zlib.crc32(data, zlib.crc32(meta))
    return _HEAD.pack(MAGIC, len(meta), len(data), crc) + meta + data


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Journal:
    """Writer. ``Journal(path)`` starts a new file (refusing to overwrite one: it holds measurements);
    ``Journal.append_to(path)`` continues an existing one after dropping a torn tail."""

    def __init__(self, path, _mode: str = "xb"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._f = open(self.path, _mode)
        except FileExistsError:
            raise HAEInputError(f"A journal already exists at {str(self.path)!r}; it holds a run's measurements.",
                                "resume that run (--resume), or choose another output folder.") from None
        self.n_records = 0

    @classmethod
    def append_to(cls, path) -> Journal:
        path = Path(path)
        _, good_bytes, _ = read_records(path)
        with open(path, "r+b") as f:   # drop a torn last record before appending after it
            f.truncate(good_bytes)
        return cls(path, _mode="ab")

    def write(self, kind: str, fields: dict | None = None, arrays: dict | None = None) -> None:
        self._f.write(_encode(kind, fields or {}, arrays))
        self._f.flush()
        os.fsync(self._f.fileno())
        self.n_records += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def read_records(path) -> tuple[list[tuple[dict, dict]], int, int]:
    """All intact records as ``(meta, arrays)``; also the byte length of the intact part and the number of
    trailing bytes dropped (a record torn by a crash)."""
    path = Path(path)
    if not path.exists():
        raise HAEInputError(f"Journal {str(path)!r} does not exist.", "check the path (a run's trace.journal).")
    raw = path.read_bytes()
    if raw[:4] != MAGIC:
        raise HAEInputError(f"{str(path)!r} is not a napari-hae journal.",
                            "pass the trace.journal written by a napari-hae run, or its trace.h5.")
    records, pos = [], 0
    while pos + _HEAD.size <= len(raw):
        magic, lm, ld, crc = _HEAD.unpack_from(raw, pos)
        end = pos + _HEAD.size + lm + ld
        if magic != MAGIC or end > len(raw):
            break
        meta_b = raw[pos + _HEAD.size: pos + _HEAD.size + lm]
        data = raw[pos + _HEAD.size + lm: end]
        if zlib.crc32(data, zlib.crc32(meta_b)) != crc:
            break
        meta = json.loads(meta_b)
        arrays, off = {}, 0
        for name, dt, shape in meta.pop("arrays"):
            dt = np.dtype(dt)
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            arrays[name] = np.frombuffer(data, dtype=dt, count=n // dt.itemsize if dt.itemsize else 0,
                                         offset=off).reshape(shape).copy()
            off += n
        records.append((meta, arrays))
        pos = end
    return records, pos, len(raw) - pos
