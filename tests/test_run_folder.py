"""Class 2 (the output folder as shared state) and class 4 (resume that listens) of the reliability issue: one
writer per run folder, a new run never replaces another unasked, resume starts from the most complete record on
disk, and options given with --resume become recorded interventions or a clear refusal."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.cli import main
from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.record.folder import prepare_new_run, run_files
from napari_hae.core.record.journal import read_records
from napari_hae.core.record.lock import LOCK_NAME, RunLock, read_lock
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment

HOLDER = ("import sys, time; from napari_hae.core.record.lock import RunLock; "
          "l = RunLock(sys.argv[1]); print('held', flush=True); time.sleep(120)")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path / 'run'``."""
    folder = tmp_path / "run"
    folder.mkdir()
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    yield folder, p
    p.kill()
    p.wait()


def test_a_second_process_is_refused_while_the_first_lives_and_allowed_after_it_dies(holder):
    folder, p = holder
    with pytest.raises(HAEInputError, match=rf"being written by another napari-hae process \(pid {p.pid}\).*Fix:"):
        RunLock(folder)
    p.kill()
    p.wait()
    lock = RunLock(folder)                               # stale: its process is gone
    assert "stale lock of process" in lock.note and read_lock(folder)["pid"] == os.getpid()
    lock.release()
    assert read_lock(folder) is None


def test_a_new_journal_is_refused_in_a_folder_another_process_writes(holder):
    folder, p = holder
    t = Trace(structural=np.zeros((4, 4)))
    with pytest.raises(HAEInputError, match="being written by another napari-hae process"):
        t.attach_journal(folder / "trace.journal")
    assert not (folder / "trace.journal").exists()


def test_overwrite_never_moves_a_run_that_is_being_written(holder, capsys):
    folder, p = holder
    (folder / "trace.journal").write_bytes(b"HAE1 pretend this is a live journal")
    before = (folder / "trace.journal").read_bytes()
    rc = main(["run", "--sample", "nanoparticles", "--out", str(folder), "--overwrite", "-q"])
    assert rc == 2 and "being written by another napari-hae process" in capsys.readouterr().err
    assert (folder / "trace.journal").read_bytes() == before and not list(folder.glob("previous-*"))


def test_a_lock_from_another_host_is_refused_naming_the_host(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "beamline-pc-7", "time": 0}))
    with pytest.raises(HAEInputError, match="process 1 on host 'beamline-pc-7'.*Fix: wait.*delete"):
        RunLock(tmp_path)


def test_an_unreadable_lock_is_refused_with_the_fix(tmp_path):
    (tmp_path / LOCK_NAME).write_text("{not json")
    with pytest.raises(HAEInputError, match="unreadable lock file.*Fix: if no napari-hae process"):
        RunLock(tmp_path)


def test_a_recycled_pid_does_not_keep_a_lock_alive(tmp_path):
    """The lock names this very pid, but from before this process started: a previous process's lock."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": 1.0}))
    lock = RunLock(tmp_path)
    assert "stale" in lock.note
    lock.release()


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_last_holder(tmp_path):
    a = RunLock(tmp_path)
    b = RunLock(tmp_path)
    b.release()
    assert read_lock(tmp_path)["pid"] == os.getpid()
    a.release()
    assert not (tmp_path / LOCK_NAME).exists()


def _run(data, folder, budget=4, steps=2):
    exp = Experiment(SimulatedMicroscope(data), fast_settings(budget=budget),
                     dataset_info={**data.describe(), "source": {"sample": "nanoparticles", "noise": "none"}},
                     journal=folder / "trace.journal")
    exp.run(steps)
    exp.close()
    return exp


@pytest.mark.parametrize("content", ["trace.h5 only", "damaged journal header", "finished run", "user file"])
def test_a_new_run_is_refused_in_a_folder_that_holds_anything(tmp_path, content):
    folder = tmp_path / "out"
    folder.mkdir()
    if content == "trace.h5 only":
        Trace(structural=np.zeros((3, 3)), settings={"budget": 0}).save(folder / "trace.h5")
    elif content == "damaged journal header":
        (folder / "trace.journal").write_bytes(b"HAE1" + bytes(100))
    elif content == "finished run":
        t = Trace(structural=np.zeros((3, 3)), settings={"budget": 0})
        t.attach_journal(folder / "trace.journal")
        t.close_journal()
    else:
        (folder / "notes.txt").write_text("my notes")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(HAEInputError, match="Fix:") as e:
        prepare_new_run(folder)
    expect = {"trace.h5 only": "holds a finished run", "damaged journal header": "record cannot be read",
              "finished run": "holds a finished run", "user file": "is not empty (it holds notes.txt)"}[content]
    assert expect in str(e.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before          # nothing touched


def test_overwrite_moves_the_old_run_aside_and_leaves_the_users_files(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    Trace(structural=np.zeros((3, 3)), settings={"budget": 5}).save(folder / "trace.h5")
    (folder / "summary.json").write_text("{}")
    (folder / "notes.txt").write_text("mine")
    moved = prepare_new_run(folder, overwrite=True)
    assert sorted(p.name for p in moved.iterdir()) == ["summary.json", "trace.h5"]
    assert (folder / "notes.txt").read_text() == "mine" and run_files(folder) == []


def test_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["run", "--sample", "nanoparticles", "--out", str(f), "-q"]) == 2
    assert "is a file, not a folder. Fix:" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_out_is_refused_before_anything_is_measured(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert main(["run", "--sample", "nanoparticles", "--out", str(ro / "run"), "-q"]) == 2
    assert "Cannot create the output folder" in capsys.readouterr().err


def test_resume_from_trace_h5_keeps_a_newer_journal(small_sample, tmp_path):
    """--resume RUN/trace.h5 when the journal holds more: the journal is used, nothing is re-measured."""
    folder = tmp_path / "run"
    exp = _run(small_sample, folder, budget=5, steps=2)
    exp.trace.save(folder / "trace.h5")
    more = Experiment.resume(folder / "trace.journal", SimulatedMicroscope(small_sample),
                             journal=folder / "trace.journal", append_journal=True)
    more.run(1)
    more.close()                                       # the journal now has 3 steps, trace.h5 has 2
    assert Trace.load(folder / "trace.h5").n_steps == 2
    t = Trace.load(folder)
    assert t.n_steps == 3 and t.positions == more.trace.positions


def test_resume_when_trace_h5_is_the_more_complete_sets_the_journal_aside(small_sample, tmp_path):
    folder = tmp_path / "run"
    exp = _run(small_sample, folder, budget=5, steps=3)
    exp.trace.save(folder / "trace.h5")
    raw = (folder / "trace.journal").read_bytes()
    (folder / "trace.journal").write_bytes(raw[: len(raw) // 2])      # a journal that lost its second half
    t = Trace.load(folder)
    assert t.n_steps == 3 and t.recovery is None                         # read from trace.h5
    res = Experiment.resume(t, SimulatedMicroscope(small_sample), journal=folder / "trace.journal",
                            append_journal=True)
    res.close()
    (kept,) = folder.glob("trace.journal.damaged-*")
    assert kept.read_bytes() == raw[: len(raw) // 2]
    assert Trace.load(folder / "trace.journal").n_steps == 3 and read_records(folder / "trace.journal").intact


def test_a_journal_of_another_run_is_not_appended_to(small_sample, tmp_path):
    folder = tmp_path / "run"
    exp = _run(small_sample, folder, budget=5, steps=1)
    other = tmp_path / "other"
    _run(small_sample, other, budget=5, steps=2)
    t = Trace.load(other)
    res = Experiment.resume(t, SimulatedMicroscope(small_sample), journal=folder / "trace.journal",
                            append_journal=True)
    res.close()
    (kept,) = folder.glob("trace.journal.superseded-*")
    assert Trace.load(kept).run_id == exp.trace.run_id and Trace.load(folder / "trace.journal").run_id == t.run_id


def test_run_id_is_kept_by_trace_h5_and_journal(small_sample, tmp_path):
    exp = _run(small_sample, tmp_path / "run", steps=1)
    exp.trace.save(tmp_path / "run" / "trace.h5")
    ids = {Trace.load(tmp_path / "run" / n).run_id for n in ("trace.h5", "trace.journal")}
    assert ids == {exp.trace.run_id} and len(exp.trace.run_id) == 32


# -- class 4: options given with --resume ---------------------------------------------------------------------

@pytest.fixture
def died(tmp_path):
    """A CLI-recorded run on the sample that died after 1 of its 3 steps."""
    from napari_hae.core.data.samples import load_sample

    data = load_sample("nanoparticles")
    folder = tmp_path / "died"
    exp = Experiment(SimulatedMicroscope(data), fast_settings(budget=3, n_seeds=4),
                     dataset_info={**data.describe(), "source": {"sample": "nanoparticles", "noise": "none"}},
                     journal=folder / "trace.journal")
    exp.run(1)
    exp.close()
    return folder


@pytest.mark.slow
def test_resume_options_become_recorded_interventions(died, capsys):
    rc = main(["run", "--resume", str(died), "--steps", "4", "--policy", "mu", "--band", "3.4", "4.1",
               "--patch", "6", "-q"])
    assert rc == 0
    t = Trace.load(died / "trace.h5")
    kinds = {d["kind"]: d for d in t.interventions}
    assert set(kinds) == {"scalarizer", "policy", "patch_size", "budget"}
    assert all(d["step"] == 1 for d in t.interventions)
    assert kinds["budget"]["old"] == 3 and kinds["budget"]["new"] == 4 and t.n_steps == 4
    assert kinds["policy"]["new"]["name"] == "mu" and kinds["patch_size"]["new"] == 6
    assert kinds["scalarizer"]["new"]["params"] == {"a": 3.4, "b": 4.1}
    assert t.steps["patch_size"][1:] == [6.0, 6.0, 6.0] and t.steps["policy"][1] == "mu"


def test_resume_with_an_option_that_defines_the_run_is_refused(died, capsys):
    for extra, flag in ((["--n-seeds", "9"], "--n-seeds"), (["--goal", "min"], "--goal"),
                        (["--sample", "nanoparticles"], None), (["--random-seed", "3"], "--random-seed")):
        rc = main(["run", "--resume", str(died), *extra, "-q"]) if flag else None
        if flag is None:   # --sample and --resume are exclusive in the parser itself
            with pytest.raises(SystemExit):
                main(["run", "--resume", str(died), *extra, "-q"])
            continue
        err = capsys.readouterr().err
        assert rc == 2 and f"{flag} cannot change when a run is resumed" in err and "Fix: drop them" in err
    assert Trace.load(died).n_steps == 1                      # nothing ran


def test_resume_below_the_steps_taken_is_refused(died, capsys):
    assert main(["run", "--resume", str(died), "--steps", "0", "-q"]) == 2
    assert "Budget 0 is below the 1 steps already taken. Fix:" in capsys.readouterr().err


def test_resume_of_a_folder_that_does_not_exist(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nope"), "-q"]) == 2
    assert "does not exist. Fix: give the run's output folder" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_on_one_folder(tmp_path):
    """The acceptance's concurrency test, through the CLI: the second is refused while the first lives, allowed
    (as a resume) after it was killed; no point is measured twice."""
    from conftest import start_cli_run

    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = start_cli_run(folder)
    second = subprocess.run([sys.executable, "-m", "napari_hae.cli", "run", "--resume", str(folder), "-q"], env=env,
                            capture_output=True, text=True)
    assert second.returncode == 2 and f"(pid {first.pid})" in second.stderr
    first.kill()   # SIGKILL on POSIX, TerminateProcess on Windows
    first.wait()
    n_before = Trace.load(folder).n_steps
    third = subprocess.run([sys.executable, "-m", "napari_hae.cli", "run", "--resume", str(folder), "--steps",
                            str(n_before + 2), "-q"], env=env, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr
    t = Trace.load(folder)
    assert t.n_steps == n_before + 2 and len(set(t.positions)) == t.n_points
    assert any("stale lock" in e["message"] for e in t.events)


def test_resume_options_are_all_checked_before_any_is_applied(died, capsys):
    """A refused option leaves the run as it was: no other option of the same command is recorded."""
    assert main(["run", "--resume", str(died), "--policy", "mu", "--steps", "0", "-q"]) == 2
    assert "Budget 0 is below" in capsys.readouterr().err
    assert Trace.load(died).interventions == []


@pytest.mark.slow   # subprocess runs / a real window: the full suite
def test_a_journal_of_another_run_in_the_folder_is_set_aside_and_never_replaces_its_trace(tmp_path, capsys):
    """Issue 30, class 2: another run's journal copied into a finished run's folder, then --resume: the folder's
    trace.h5 was rewritten with the other run ("nothing to do") and this folder's spectra were gone."""
    common = ["--sample", "nanoparticles", "--n-seeds", "4", "--patch", "8", "--fit-iterations", "3", "-q"]
    assert main(["run", *common, "--steps", "2", "--out", str(tmp_path / "mine")]) == 0
    assert main(["run", *common, "--steps", "4", "--random-seed", "7", "--out", str(tmp_path / "other")]) == 0
    mine = Trace.load(tmp_path / "mine" / "trace.h5")
    foreign = (tmp_path / "other" / "trace.journal").read_bytes()
    (tmp_path / "mine" / "trace.journal").write_bytes(foreign)       # the other run's journal, more complete
    assert Trace.load(tmp_path / "mine").run_id == mine.run_id          # the folder's run is read, not the other
    assert main(["run", "--resume", str(tmp_path / "mine"), "--steps", "3", "-q"]) == 0
    after = Trace.load(tmp_path / "mine" / "trace.h5")
    assert after.run_id == mine.run_id and after.positions[:mine.n_points] == mine.positions
    assert after.n_steps == 3
    kept = [p for p in (tmp_path / "mine").iterdir() if p.name.startswith("trace.journal.")]
    assert len(kept) == 1 and kept[0].read_bytes() == foreign           # set aside whole, never deleted


def test_saving_a_trace_over_another_runs_trace_keeps_that_one(tmp_path, small_sample):
    a = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1))
    a.run()
    b = Experiment(SimulatedMicroscope(small_sample), fast_settings(budget=1, random_seed=3))
    b.run()
    a.trace.save(tmp_path / "trace.h5")
    b.trace.save(tmp_path / "trace.h5")                                  # another run's trace: a's is kept aside
    assert Trace.load(tmp_path / "trace.h5").run_id == b.trace.run_id
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("trace.h5.")]
    assert len(kept) == 1 and Trace.load(kept[0]).run_id == a.trace.run_id
    b.trace.save(tmp_path / "trace.h5")                                  # the same run again: replaced in place
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("trace.h5.")]) == 1


@pytest.mark.slow   # subprocess runs / a real window: the full suite
def test_disk_full_mid_run_keeps_every_measurement_on_disk_somewhere_to_resume_from(tmp_path, monkeypatch, capsys):
    """Issue 30, class 4: the disk filled up mid-run; the message said the measurement was kept in memory, then
    closing the journal raised OSError, the run exited 1 without trace.h5 and that spectrum was lost."""
    import errno

    from napari_hae.core.record import hdf5
    from napari_hae.core.record.journal import Journal, JournalWriteError

    out = tmp_path / "run"
    write, calls = Journal.write, []

    def full_disk(self, kind, fields=None, arrays=None):
        calls.append(kind)
        if kind == "step" and calls.count("step") == 2:   # the second step's record: the disk is full
            self._f.write(b"\\x00" * 7)                     # a torn tail left in the file's buffer
            raise JournalWriteError("Could not write to the run's journal (No space left on device).", "free it.")
        return write(self, kind, fields, arrays)

    real_write = hdf5.write

    def no_room_in_the_folder(trace, path):
        if Path(path).parent == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(trace, path)

    monkeypatch.setattr(Journal, "write", full_disk)
    monkeypatch.setattr(hdf5, "write", no_room_in_the_folder)
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    rc = main(["run", "--sample", "nanoparticles", "--steps", "4", "--n-seeds", "4", "--patch", "8",
               "--fit-iterations", "3", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 3 and "Every measurement, the ones the journal could not take too, is saved in" in err, err
    rescued = list((tmp_path / "tmp").glob("napari-hae-rescue-*/trace.h5"))
    assert len(rescued) == 1
    t = Trace.load(rescued[0])
    assert t.n_steps == 2 and t.n_points == 6                            # the unjournaled second step is there
    assert len(read_records(out / "trace.journal").records) < len(list(t.records())) + 1
    assert not (out / "run.lock").exists()                               # the folder was released


def test_a_journal_whose_close_fails_releases_the_folder_and_says_nothing_is_lost(tmp_path):
    from napari_hae.core.record.journal import Journal

    j = Journal(tmp_path / "trace.journal")
    j.write("event", {"event": {"step": 0, "message": "x"}})

    class Full:
        closed = False

        def close(self):
            raise OSError(28, "No space left on device")

    real, j._f = j._f, Full()
    j.close()                                  # raised OSError, and left the run folder locked
    real.close()
    assert isinstance(j.close_error, OSError) and not (tmp_path / LOCK_NAME).exists()
    assert len(read_records(tmp_path / "trace.journal").records) == 1


# -- Windows: a run's file held open by another program (issue 29) --------------------------------------------------
SHARING_VIOLATION = "The process cannot access the file because it is being used by another process"


@pytest.fixture
def held(monkeypatch):
    """Files whose name is a key of ``held`` cannot be replaced (Windows' sharing violation) for ``held[name]``
    more tries (None: while the test runs); the real os.replace otherwise. No waits between tries."""
    from napari_hae.core.record import files

    held, real = {}, os.replace

    def replace(src, dst):
        name = Path(dst).name if Path(dst).name in held else Path(src).name
        if held.get(name, 0) is None or held.get(name, 0) > 0:
            if held[name] is not None:
                held[name] -= 1
            raise PermissionError(13, SHARING_VIOLATION)
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    monkeypatch.setattr(files, "WAITS", (0.0,) * len(files.WAITS))
    return held


def test_a_trace_held_open_for_a_moment_is_replaced_and_one_held_open_is_kept_beside_it(tmp_path, held):
    from napari_hae.core.record.files import FileInUse

    old = Trace(structural=np.zeros((3, 3)), settings={"budget": 5})
    old.save(tmp_path / "trace.h5")
    new = Trace(structural=np.ones((3, 3)), settings={"budget": 7})
    new.run_id = old.run_id                                            # the same run, saved again
    held["trace.h5"] = 2                                               # a virus scanner lets go
    new.save(tmp_path / "trace.h5")
    assert Trace.load(tmp_path / "trace.h5").settings["budget"] == 7
    held["trace.h5"] = None                                            # HDFView keeps it open
    newer = Trace(structural=np.ones((3, 3)), settings={"budget": 9})
    newer.run_id = old.run_id
    with pytest.raises(FileInUse, match=r"trace\.h5' could not be replaced \(" + SHARING_VIOLATION + r"\): another "
                                        r"program may hold it open .* kept in .*trace\.h5\.tmp'\. Fix: close the "
                                        r"program that holds trace\.h5 and try again\."):
        newer.save(tmp_path / "trace.h5")
    assert Trace.load(tmp_path / "trace.h5").settings["budget"] == 7     # the one open elsewhere: untouched
    assert Trace.load(tmp_path / "trace.h5.tmp").settings["budget"] == 9  # the new one: kept, whole


def test_overwrite_with_a_file_held_open_says_what_moved_and_deletes_nothing(tmp_path, held):
    folder = tmp_path / "out"
    folder.mkdir()
    Trace(structural=np.zeros((3, 3)), settings={"budget": 5}).save(folder / "trace.h5")
    (folder / "summary.png").write_bytes(b"png")
    held["trace.h5"] = None
    with pytest.raises(HAEInputError, match=r"trace\.h5 in .* could not be moved into previous-.*/ \(.*being used by "
                                            r"another process\): another program may hold it open\. .* moved there, "
                                            r"the rest stayed where they were; nothing is deleted\. Fix: close the "
                                            r"program that holds trace\.h5, then run again with --overwrite\."):
        prepare_new_run(folder, overwrite=True)
    everything = sorted(p.relative_to(folder).name for p in folder.rglob("*") if p.is_file())
    assert everything == ["summary.png", "trace.h5"]                   # each file somewhere, whole


@pytest.mark.slow
def test_a_summary_held_open_is_said_and_the_run_still_ends_well(tmp_path, held, capsys):
    out = tmp_path / "run"
    held["summary.png"] = None                                         # the last run's figure open in a viewer
    assert main(["run", "--sample", "nanoparticles", "--steps", "1", "--n-seeds", "2", "--fit-iterations", "5",
                 "--out", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"warning: '{out / 'summary.png'}' could not be replaced" in err and "summary.new.png" in err
    assert (out / "summary.new.png").stat().st_size > 0 and Trace.load(out / "trace.h5").n_steps == 1


@pytest.mark.slow
def test_a_trace_opened_elsewhere_between_its_two_saves_keeps_every_measurement(tmp_path, monkeypatch, capsys):
    """The CLI saves the trace, then again with the monitors: held open in between (a viewer opened it), the second
    save is said and the first, holding every measurement, stays."""
    from napari_hae.core.record.files import FileInUse

    real, calls = Trace.save, []

    def save(self, path, *a, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise FileInUse(Path(f"{path}.tmp"), Path(path), SHARING_VIOLATION)
        return real(self, path, *a, **kw)

    monkeypatch.setattr(Trace, "save", save)
    out = tmp_path / "run"
    assert main(["run", "--sample", "nanoparticles", "--steps", "1", "--n-seeds", "2", "--fit-iterations", "5",
                 "--out", str(out), "-q"]) == 0
    assert "warning: the monitors were not added to the trace: " in capsys.readouterr().err
    assert len(calls) == 2 and Trace.load(out / "trace.h5").n_points == 3
