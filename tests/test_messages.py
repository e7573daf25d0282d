"""Class 8 of the reliability issue: where a person needs a sentence there is one. Each case is bad input on the
command line; the answer is exit status 2 and a message naming the problem with a "Fix:", never a traceback."""

import os
import sys

import numpy as np
import pytest

from napari_hae.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.settings import ExperimentSettings

    folder = tmp_path_factory.mktemp("finished")
    t = Trace(structural=np.random.default_rng(0).random((16, 16)), settings=ExperimentSettings(budget=0).to_dict())
    t.add_point((1, 1), np.ones(8), 1.0, "seed", -1)
    t.save(folder / "trace.h5")
    return folder


def _damaged_h5(folder, tmp_path):
    raw = bytearray((folder / "trace.h5").read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 400] = bytes(400)
    (tmp_path / "trace.h5").write_bytes(bytes(raw))
    return tmp_path / "trace.h5"


def _loop(tmp_path):
    if sys.platform == "win32":
        pytest.skip("symbolic links need administrator rights on Windows")
    a, b = tmp_path / "loop_a", tmp_path / "loop_b"
    os.symlink(b, a)
    os.symlink(a, b)
    return a


def _npz_4d(tmp_path):
    np.savez(tmp_path / "d4.npz", spectra=np.random.rand(8, 8, 4, 4), structural=np.random.rand(8, 8))
    return tmp_path / "d4.npz"


def _table(tmp_path, text):
    (tmp_path / "results.csv").write_text(text)
    return tmp_path


def _sweep_table_with_torn_middle(tmp_path):
    from napari_hae.core.analysis.sweep import COLUMNS

    header = ",".join(dict.fromkeys(["run_id", *COLUMNS]))
    n = len(header.split(","))
    good = ",".join(["r1"] + ["1"] * (n - 1))
    return _table(tmp_path, f"{header}\n{good}\nr2,1,2\n{good.replace('r1', 'r3')}\n")


CASES = {
    "report: unknown figure extension": (lambda f, t: ["report", str(f), "--out", str(t / "r.xyz")],
                                         ".xyz is not a figure format"),
    "report: missing folder": (lambda f, t: ["report", str(t / "nope")], "does not exist"),
    "report: folder without a run": (lambda f, t: ["report", str(t)], "holds no trace.journal or trace.h5"),
    "report: damaged HDF5 trace": (lambda f, t: ["report", str(_damaged_h5(f, t)), "--no-truth"],
                                   "is damaged"),
    "report: looping symbolic link": (lambda f, t: ["report", str(_loop(t))], "broken or looping symbolic link"),
    "sweep-report: not a results table": (lambda f, t: ["sweep-report", str(_table(t, "a,b\n1,"))],
                                          "is not a napari-hae results table"),
    "sweep-report: damaged row in the middle": (lambda f, t: ["sweep-report", str(_sweep_table_with_torn_middle(t))],
                                                "has damaged rows (line(s) [3])"),
    "run: spectrum path is a symlink loop": (lambda f, t: ["run", "--spectrum", str(_loop(t)), "--out",
                                                           str(t / "o")], "cannot be resolved"),
    "run: 4-D data with a band scalarizer": (lambda f, t: ["run", "--spectrum", str(_npz_4d(t)), "--out",
                                                           str(t / "o")], "use --scalarizer com_magnitude"),
    "run: spectrum is a folder": (lambda f, t: ["run", "--spectrum", str(t), "--out", str(t / "o")],
                                  "is a folder, not a data file"),
    "run: spectrum file missing": (lambda f, t: ["run", "--spectrum", str(t / "no.hspy"), "--out", str(t / "o")],
                                   "does not exist"),
    "run: model layer width 0 is a settings error": (
        lambda f, t: ["run", "--sample", "nanoparticles", "--model-param", "hidden=[0]", "--out", str(t / "o")],
        "hidden=[0] is not a list of layer widths >= 1"),
    "run: unknown kernel": (lambda f, t: ["run", "--sample", "nanoparticles", "--model-param", "kernel=cosine",
                                          "--out", str(t / "o")],
                            "The model 'dkl' got kernel='cosine'. Fix: use one of ['matern', 'rbf']"),
    "run: malformed microscope address": (lambda f, t: ["run", "--microscope", "remote:address=tcp://host",
                                                        "--out", str(t / "o")], "has no valid host and port"),
    "run: --out inside a file": (lambda f, t: ["run", "--sample", "nanoparticles", "--out",
                                               str(f / "trace.h5" / "sub")], "Cannot create the output folder"),
    "run: unknown sample": (lambda f, t: ["run", "--sample", "nosuch", "--out", str(t / "o")],
                            "Unknown sample dataset 'nosuch'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_a_sentence_and_a_fix(case, finished_run, tmp_path, capsys):
    make_args, expect = CASES[case]
    rc = main(make_args(finished_run, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expect in err and "Fix:" in err and "Traceback" not in err


@pytest.mark.parametrize("argv,expect", [
    (["run", "--sample", "nanoparticles", "--random-seed", "-1"], "-1 is below the minimum 0"),
    (["sweep", "--sample", "nanoparticles", "--workers", "0"], "0 is below the minimum 1"),
    (["sweep", "--sample", "nanoparticles", "--random-seeds", "0"], "0 is below the minimum 1"),
    (["serve", "--sample", "nanoparticles", "--port", "-5"], "-5 is not a TCP port"),
])
def test_out_of_range_numbers_are_refused_by_the_parser(argv, expect, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and expect in capsys.readouterr().err


def test_a_torn_last_row_of_a_sweep_table_is_dropped_and_run_again(tmp_path):
    from napari_hae.core.analysis.sweep import COLUMNS, finished_runs

    header = ",".join(dict.fromkeys(["run_id", *COLUMNS]))
    n = len(header.split(","))
    good = ",".join(["r1"] + ["1"] * (n - 1))
    (tmp_path / "results.csv").write_text(f"{header}\n{good}\nr2,1,2")
    assert finished_runs(tmp_path / "results.csv") == {"r1"}
