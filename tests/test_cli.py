import json

import pytest

from napari_hae.cli import main


def test_cli_run_writes_trace_summary_and_figure(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--sample", "nanoparticles", "--steps", "3", "--n-seeds", "5", "--patch", "8",
               "--policy", "ei", "--xi", "0.05", "--map-every", "3", "--out", str(out), "-q"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["policy_steps"] == 3 and s["points_measured"] == 8 and s["policy"] == "ei(xi=0.05)"
    assert s["scalarizer"] == "band_integral(a=1.2, b=2.25)"
    assert 0 < s["best_fraction_of_truth_best"] <= 1.0
    assert (out / "summary.png").stat().st_size > 10_000
    from napari_hae.core.record.trace import Trace

    trace = Trace.load(out / "trace.h5")
    assert trace.n_points == 8 and trace.map_steps == [0, 2]              # every 3rd step's maps, and the last


def test_cli_bad_band_exits_2_with_fix(tmp_path, capsys):
    rc = main(["run", "--sample", "nanoparticles", "--band", "9", "10", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "outside the energy axis" in err and "Fix:" in err


@pytest.mark.slow
def test_cli_on_real_eels_data(shared_data, tmp_path):
    out = tmp_path / "cuzn"
    rc = main(["run", "--spectrum", str(shared_data / "cuzn_eels/CuZn_EELS_mapping_tutorial.hspy"),
               "--image", str(shared_data / "cuzn_eels/CuZn_HAADF.hspy"), "--band", "920", "960",
               "--background", "800", "900", "--steps", "3", "--n-seeds", "5", "--patch", "8", "--out", str(out), "-q"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["points_measured"] == 8 and s["pixel_units"] == "nm"


@pytest.mark.slow
def test_cli_given_seed_positions(tmp_path):
    out = tmp_path / "given"
    rc = main(["run", "--sample", "nanoparticles", "--steps", "1", "--seed-at", "3", "4", "--seed-at", "50", "60",
               "--patch", "8", "--out", str(out), "-q"])
    assert rc == 0
    from napari_hae.core.record.trace import Trace

    tr = Trace.load(out / "trace.h5")
    assert tr.positions[:2] == [(3, 4), (50, 60)] and tr.kinds[:2] == ["seed", "seed"]


@pytest.mark.slow
def test_cli_refuses_to_overwrite_an_unfinished_run_and_resumes_it(tmp_path, capsys):
    from napari_hae.core.data.samples import load_sample
    from napari_hae.core.instrument.microscope import SimulatedMicroscope
    from napari_hae.core.record.trace import Trace
    from napari_hae.core.run.experiment import Experiment, ExperimentSettings

    out = tmp_path / "run"
    args = ["run", "--sample", "nanoparticles", "--steps", "4", "--n-seeds", "5", "--patch", "8", "--out", str(out),
            "-q"]
    assert main(args) == 0
    first = (out / "trace.h5").read_bytes()
    capsys.readouterr()
    assert main(args) == 2                      # a finished run is not replaced without being asked
    assert "holds a finished run (4 of 4 steps, 9 spectra)" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0    # asked: the old run is moved aside, not deleted
    (previous,) = out.glob("previous-*")
    assert (previous / "trace.h5").read_bytes() == first and (previous / "trace.journal").exists()
    # a run that died after 2 of its 4 steps, journaled in another folder
    out = tmp_path / "died"
    args[args.index("--out") + 1] = str(out)
    data = load_sample("nanoparticles")
    exp = Experiment(SimulatedMicroscope(data), ExperimentSettings(patch_size=8, n_seeds=5, budget=4),
                     dataset_info={**data.describe(), "source": {"sample": "nanoparticles", "noise": "none"}},
                     journal=out / "trace.journal")
    exp.run(2)
    exp.close()
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "unfinished run (2 of 4 steps, 7 spectra)" in err and "--resume" in err
    assert main(["run", "--resume", str(out), "-q"]) == 0
    final = Trace.load(out / "trace.h5")
    assert final.n_steps == 4 and final.positions[:7] == exp.trace.positions and len(set(final.positions)) == 9


@pytest.mark.slow
def test_cli_report_redraws_monitors_from_a_saved_trace(tmp_path, capsys):
    import numpy as np

    from napari_hae.core.record.trace import Trace

    out = tmp_path / "run"
    assert main(["run", "--sample", "nanoparticles", "--steps", "4", "--n-seeds", "5", "--patch", "8",
                 "--out", str(out), "-q"]) == 0
    t = Trace.load(out / "trace.h5")
    # monitors written into the trace: live-model error against truth and against the final model
    assert t.monitors["error_vs_truth"].shape == (4,) and np.isfinite(t.monitors["error_vs_truth"]).all()
    assert t.monitors["error_vs_final"][-1] == 0.0 and len(t.steps["travel_px"]) == 4
    rc = main(["report", str(out), "--out", str(tmp_path / "r.svg"), "--step", "1"])
    printed = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "r.svg").stat().st_size > 20_000 and '"policy_steps": 4' in printed
    assert main(["report", str(tmp_path / "nowhere"), "-q"]) == 2


@pytest.mark.slow
def test_cli_multi_objective_summary_lists_the_pareto_set(tmp_path):
    out = tmp_path / "mo"
    assert main(["run", "--sample", "nanoparticles", "--steps", "3", "--n-seeds", "5", "--patch", "8",
                 "--also", "band_integral:a=3.45,b=4.05", "--out", str(out), "-q"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["objectives"] == ["band_integral(a=1.2, b=2.25)", "band_integral(a=3.45, b=4.05)"]
    assert len(s["pareto_set"]) >= 1 and all(len(p["values"]) == 2 for p in s["pareto_set"])


@pytest.mark.slow   # subprocesses / a real window / several runs: the full suite
def test_version_module_entry_completion_and_verbosity(tmp_path):
    """The manners of a command: --version, python -m napari_hae, a completion script, -v/-q."""
    import logging
    import subprocess
    import sys

    import napari_hae
    from napari_hae.cli import _log_level, build_parser

    out = subprocess.run([sys.executable, "-m", "napari_hae", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"napari-hae {napari_hae.__version__}"
    out = subprocess.run([sys.executable, "-m", "napari_hae", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "check-microscope" in out.stdout and "--print-completion" in out.stdout
    out = subprocess.run([sys.executable, "-m", "napari_hae", "--print-completion", "bash"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "complete" in out.stdout and "napari-hae" in out.stdout
    levels = [_log_level(build_parser().parse_args([*flags, "report", "x"])) for flags in
              ([], ["-v"], ["-vv"], ["-q"])]
    assert levels == [logging.WARNING, logging.INFO, logging.DEBUG, logging.ERROR]


@pytest.mark.slow   # subprocesses / a real window / several runs: the full suite
def test_importing_the_package_changes_nothing_in_the_host_process():
    """napari's process (or a notebook's) keeps its environment and warning filters when the plugin is imported."""
    import subprocess
    import sys

    code = ("import os, warnings, torch, gpytorch, scipy.special, scipy.spatial, h5py, pydantic; "   # theirs
            "before = (dict(os.environ), list(warnings.filters)); "
            "import napari_hae, napari_hae.cli, napari_hae.core.run.experiment; "
            "print(dict(os.environ) == before[0], list(warnings.filters) == before[1])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["True", "True"]
