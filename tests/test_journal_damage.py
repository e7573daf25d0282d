"""Class 1 of the reliability issue: damaged journals are salvaged past the damage, exactly what was lost is
reported, and nothing on disk is truncated, overwritten or deleted."""

import json
import os
import re
import sys

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.record.journal import MAGIC, JournalWriteError, read_records
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment


def make_journal(path, n_seeds=4, n_steps=6, maps=False):
    """A journal written the way a run writes it (header, seed points, one record per policy step), without a
    model: fast and exact. Returns the in-memory trace it mirrors."""
    from napari_hae.core.run.settings import ExperimentSettings

    rng = np.random.default_rng(0)
    t = Trace(structural=rng.random((12, 12)), settings=ExperimentSettings(budget=n_steps).to_dict(),
              dataset={"name": "synthetic"})
    t.attach_journal(path)
    for i in range(n_seeds):
        t.add_point((i, 0), rng.random(16), float(i), "seed", -1)
    t.set_rng_state({"s": 1})
    for k in range(n_steps):
        point = {"position": (k, 5), "spectrum": rng.random(16), "value": 10.0 + k, "kind": "policy", "step": k}
        m = {n: rng.random((12, 12)) for n in ("mean", "std", "acq")} if maps else None
        t.add_step({"position": (k, 5), "policy": "ucb", "scalarizer": "s", "acq_value": 1.0 * k}, m,
                   point=point, rng={"s": 2 + k})
    t.close_journal()
    return t


def positions(t):
    return [tuple(p) for p in t.positions]


def test_a_clean_journal_reads_whole_with_consecutive_sequence_numbers(tmp_path):
    j = tmp_path / "trace.journal"
    t = make_journal(j)
    c = read_records(j)
    assert c.intact and c.missing == [] and c.size == j.stat().st_size
    assert [m["seq"] for m, _ in c.records] == list(range(len(c.records)))
    r = Trace.load(j)
    assert positions(r) == positions(t) and r.values == t.values and r.rng_state == {"s": 7}
    assert r.run_id == t.run_id and not r.damaged


def test_one_flipped_byte_mid_file_loses_only_that_record(tmp_path):
    j = tmp_path / "trace.journal"
    t = make_journal(j)
    raw = bytearray(j.read_bytes())
    offs = [i for i in range(len(raw)) if raw[i:i + 4] == MAGIC]
    third_step = offs[1 + 4 + 1 + 2]          # header, 4 seeds, rng, then steps 0, 1, [2]
    raw[third_step + 40] ^= 0x01                       # inside its JSON meta
    j.write_bytes(bytes(raw))
    c = read_records(j)
    assert not c.intact and c.missing == [8] and len(c.records) == len(offs) - 1
    r = Trace.load(j)
    lost = (2, 5)
    assert positions(r) == [p for p in positions(t) if p != lost]   # everything after the damage is salvaged
    assert r.n_steps == t.n_steps - 1 and r.rng_state == t.rng_state
    assert r.damaged and "1 records lost" in r.events[-1]["message"]


def test_garbage_inserted_between_records_loses_nothing(tmp_path):
    j = tmp_path / "trace.journal"
    t = make_journal(j)
    raw = j.read_bytes()
    offs = [i for i in range(len(raw)) if raw[i:i + 4] == MAGIC]
    cut = offs[3]
    j.write_bytes(raw[:cut] + b"\x00garbage" + MAGIC + b"\xff" * 30 + raw[cut:])
    c = read_records(j)
    assert c.missing == [] and len(c.skipped) == 1 and c.skipped[0][1] - c.skipped[0][0] == 8 + 4 + 30
    r = Trace.load(j)
    assert positions(r) == positions(t) and "no whole record lost" in r.events[-1]["message"]


def test_a_zeroed_block_over_two_records_reports_both_lost(tmp_path):
    j = tmp_path / "trace.journal"
    t = make_journal(j)
    raw = bytearray(j.read_bytes())
    offs = [i for i in range(len(raw)) if raw[i:i + 4] == MAGIC]
    a, b = offs[7] + 10, offs[9] - 5                  # from inside step 1 to inside step 2
    raw[a:b] = bytes(b - a)
    j.write_bytes(bytes(raw))
    c = read_records(j)
    assert c.missing == [7, 8]
    r = Trace.load(j)
    assert r.n_steps == t.n_steps - 2 and positions(r)[-3:] == positions(t)[-3:]


def test_a_damaged_length_field_does_not_swallow_the_rest(tmp_path):
    j = tmp_path / "trace.journal"
    t = make_journal(j)
    raw = bytearray(j.read_bytes())
    offs = [i for i in range(len(raw)) if raw[i:i + 4] == MAGIC]
    raw[offs[2] + 4: offs[2] + 8] = (2**31).to_bytes(4, "little")   # meta length of seed 1: 2 GiB
    j.write_bytes(bytes(raw))
    c = read_records(j)
    assert c.missing == [2] and len(c.records) == len(offs) - 1
    assert Trace.load(j).n_steps == t.n_steps


def test_a_torn_tail_is_reported_as_such(tmp_path):
    j = tmp_path / "trace.journal"
    make_journal(j)
    full = j.read_bytes()
    j.write_bytes(full[:-7])
    c = read_records(j)
    assert c.torn_tail_only and c.missing == []
    r = Trace.load(j)
    assert "unfinished last record" in r.events[-1]["message"] and r.n_steps == 5


def test_a_damaged_header_is_a_clear_error(tmp_path):
    j = tmp_path / "trace.journal"
    make_journal(j)
    raw = bytearray(j.read_bytes())
    raw[30] ^= 0xFF
    j.write_bytes(bytes(raw))
    with pytest.raises(HAEInputError, match="no intact header record.*Fix: load the run's trace.h5"):
        Trace.from_journal(j)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    p = tmp_path / "notes.journal"
    p.write_bytes(b"just some text, no records")
    with pytest.raises(HAEInputError, match="is not a napari-hae journal.*Fix:"):
        read_records(p)


def test_journals_without_sequence_numbers_still_read(tmp_path):
    """Journals written before sequence numbers (format of the previous release) read as before."""
    import struct
    import zlib

    def old_encode(kind, fields, arrays):   # the previous release's encoder: the same layout, no "seq"
        descr = [[n, a.dtype.str, list(a.shape)] for n, a in arrays.items()]
        meta = json.dumps({"kind": kind, **fields, "arrays": descr}).encode()
        data = b"".join(a.tobytes() for a in arrays.values())
        return struct.pack("<4sIQI", MAGIC, len(meta), len(data), zlib.crc32(data, zlib.crc32(meta))) + meta + data

    j = tmp_path / "trace.journal"
    j.write_bytes(old_encode("header", {"settings": {}, "dataset": {}, "versions": {}},
                             {"structural": np.zeros((3, 3))})
                  + old_encode("point", {"position": [1, 2], "value": 3.0, "point_kind": "seed", "step": -1},
                               {"spectrum": np.ones(4)}))
    t = Trace.load(j)
    assert t.positions == [(1, 2)] and t.values == [3.0] and not t.damaged


def test_resume_from_a_damaged_journal_keeps_the_original_aside(small_sample, tmp_path):
    from conftest import fast_settings
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.run.experiment import Experiment

    j = tmp_path / "trace.journal"
    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=4), journal=j)
    exp.run(3)
    exp.close()
    raw = bytearray(j.read_bytes())
    offs = [i for i in range(len(raw)) if raw[i:i + 4] == MAGIC]
    raw[offs[-2] + 100] ^= 0x10                        # damage step 2's record (not the last)
    damaged = bytes(raw)
    j.write_bytes(damaged)
    res = Experiment.resume(j, SimulatedMicroscope(small_sample), journal=j, append_journal=True)
    kept = sorted(tmp_path.glob("trace.journal.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged     # the damaged original, byte for byte
    assert read_records(j).intact                                  # a fresh, intact journal
    assert any("original is kept as" in e["message"] for e in res.trace.events)
    before = set(res.trace.positions)
    res.run()
    res.close()
    t = Trace.load(j)
    assert t.n_steps == 4 and len(set(t.positions)) == t.n_points      # nothing measured twice
    assert before <= set(t.positions)


def test_report_says_the_trace_is_damaged(tmp_path, capsys):
    from napari_hae.cli import main

    j = tmp_path / "trace.journal"
    make_journal(j)
    raw = bytearray(j.read_bytes())
    offs = [i for i in range(len(raw)) if raw[i:i + 4] == MAGIC]
    raw[offs[8] + 30] ^= 0x04
    j.write_bytes(bytes(raw))
    before = j.read_bytes()
    assert main(["report", str(j), "--no-truth", "-q"]) == 0
    err = capsys.readouterr().err
    assert "damaged" in err and "records recovered" in err and "1 records lost" in err
    assert j.read_bytes() == before                                # report never touches the journal


def test_a_write_that_fails_keeps_the_measurement_in_memory(tmp_path):
    j = tmp_path / "trace.journal"
    t = Trace(structural=np.zeros((4, 4)))
    t.attach_journal(j)

    class Full:
        closed = False

        def write(self, b):
            raise OSError(28, "No space left on device")

        def close(self):
            self.closed = True

    t.journal._f = Full()
    with pytest.raises(JournalWriteError, match="No space left on device.*kept in memory.*Fix: free disk space"):
        t.add_point((1, 1), np.ones(3), 2.0, "seed", -1)
    assert t.positions == [(1, 1)] and t.values == [2.0]
    t.journal.lock.release()


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_journal_is_a_clear_error(tmp_path):
    j = tmp_path / "trace.journal"
    make_journal(j)
    j.chmod(0)
    with pytest.raises(HAEInputError, match="Cannot read the journal.*Permission denied.*Fix:"):
        read_records(j)


def test_journal_meta_is_plain_json(tmp_path):
    """No pickle anywhere: every record's meta is JSON a person can read."""
    j = tmp_path / "trace.journal"
    make_journal(j)
    for meta, _ in read_records(j).records:
        json.dumps(meta)


def test_a_flipped_byte_anywhere_in_trace_h5_is_an_error_not_a_wrong_number(tmp_path):
    """trace.h5 is checksummed (Fletcher-32 datasets, checksummed metadata): damage fails loudly."""
    t = make_journal(tmp_path / "trace.journal", maps=True)
    t.save(tmp_path / "trace.h5")
    raw = (tmp_path / "trace.h5").read_bytes()
    rng = np.random.default_rng(1)
    silent = 0
    for pos in rng.integers(2048, len(raw), 40):
        b = bytearray(raw)
        b[pos] ^= 0x20
        (tmp_path / "bad.h5").write_bytes(bytes(b))
        try:
            r = Trace.load(tmp_path / "bad.h5")
        except HAEInputError as exc:
            assert "Fix:" in str(exc)
            continue
        same = (r.positions == t.positions and r.values == t.values
                and np.array_equal(r.spectra_array(), t.spectra_array())
                and all(np.array_equal(a, c) for a, c in zip(r.maps["mean"], t.maps["mean"])))
        silent += not same
    assert silent == 0


@pytest.mark.slow   # subprocesses / a real window / several runs: the full suite
@pytest.mark.parametrize("craft, said", [
    (lambda t: t.positions.__setitem__(2, (-1, -1)), "point #2 at (y, x) = (-1, -1) lies outside the"),
    (lambda t: t.positions.__setitem__(2, (400, 3)), "point #2 at (y, x) = (400, 3) lies outside the"),
    (lambda t: t.spectra.__setitem__(3, t.spectra[3][:-5]), "point #3's spectrum has shape"),
    (lambda t: t.positions.__setitem__(4, t.positions[1]), "point #4 at (y, x) = "),
])
def test_a_crafted_trace_is_refused_naming_the_bad_record_by_report_and_resume(small_sample, tmp_path, craft, said,
                                                                              capsys):
    """Issue 30, class 7: a recorded point outside the scan, a negative one, a spectrum of the wrong length,
    duplicates: report and resume ended in tracebacks, and resume took (-1, -1) into its positions."""
    from napari_hae.cli import main

    exp = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=2))
    exp.run()
    t = exp.trace
    craft(t)
    path = t.attach_journal(tmp_path / "crafted.journal")   # written record by record, as a journal holds them
    t.close_journal()
    with pytest.raises(HAEInputError, match="holds a damaged or crafted record: " + re.escape(said)):
        Trace.load(path)
    with pytest.raises(HAEInputError, match=re.escape(said)):
        Experiment.resume(path, SimulatedMicroscope(small_sample))
    assert main(["report", str(path), "--out", str(tmp_path / "r.svg")]) == 2
    err = capsys.readouterr().err
    assert said in err and "Fix:" in err and "Traceback" not in err
