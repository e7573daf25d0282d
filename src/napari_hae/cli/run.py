"""``napari-hae run``: an automated experiment on pre-acquired data, a networked microscope, or resumed."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

from ..core.data.energy_check import energy_check
from ..core.data.io import load_source
from ..core.errors import HAEInputError, HAERunError, sentence
from ..core.record.folder import SUMMARY_NAME, prepare_new_run, save_somewhere
from ..core.record.journal import make_folder
from ..core.record.lock import RunLock
from ..core.record.trace import JOURNAL_NAME, TRACE_NAME
from . import _options as opt


def add_parser(sub) -> None:
    from ..core.run.settings import SEED_MODES

    d = opt.defaults()
    r = sub.add_parser("run", help="run an automated experiment (simulated on pre-acquired data, or remote)")
    opt.add_source(r, extra=[
        (("--resume",), dict(metavar="RUN", help="continue an interrupted run from its output folder, trace.journal "
                                                 "or trace.h5, with its settings, model and interventions")),
    ])
    opt.add_microscope(r)
    opt.add_target(r)
    r.add_argument("--also", action="append", metavar="NAME:PARAM=V,...",
                   help="a further objective for multi-objective mode, e.g. band_integral:a=3.45,b=4.05 "
                        "(repeatable); the summary then lists the Pareto set")
    opt.add_policy(r)
    opt.add_model(r)
    r.add_argument("--patch", type=int, default=d.patch_size, help=f"patch size in pixels (default {d.patch_size})")
    r.add_argument("--n-seeds", type=int, default=d.n_seeds, help=f"number of seed points (default {d.n_seeds})")
    r.add_argument("--seed-mode", choices=SEED_MODES, default=d.seed_mode,
                   help="where the first spectra are measured: random, a centred grid, the structural image's "
                        "brightest places (half a patch apart), mixed: half bright, half random, or cover: over "
                        "what the image shows, the most different places first (default: %(default)s)")
    r.add_argument("--seed-at", nargs=2, type=int, action="append", metavar=("Y", "X"),
                   help="a seed position in pixels (repeat for several); overrides --n-seeds/--seed-mode")
    r.add_argument("--steps", type=int, default=d.budget, help=f"policy steps after the seeds (default {d.budget})")
    r.add_argument("--random-seed", type=opt.at_least(0), default=d.random_seed,
                   help="seed of the run's random generator")
    r.add_argument("--noise", choices=("none", "poisson"), default="none",
                   help="re-draw Poisson noise at each acquisition (default: replay stored spectra)")
    r.add_argument("--fit-iterations", type=int, default=d.fit_iterations,
                   help=f"training iterations per step after the first (default {d.fit_iterations}; from fresh "
                        "weights with the default model)")
    r.add_argument("--out", default="runs/latest", help="output folder for trace.h5, summary.json, summary.png")
    r.add_argument("--no-maps", action="store_true", help="do not store per-step maps in the trace")
    r.add_argument("--map-every", type=int, default=d.map_every, metavar="K",
                   help="store per-step maps every K steps and at the last (default 0: every step up to 256 x 256 "
                        "positions, every 16th at 1024 x 1024)")
    r.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds an unfinished run (its measurements are discarded)")
    _add_instrument_options(r, d)
    r.add_argument("--feature-space", action="store_true",
                   help="train AtomAI's rVAE on all patches and draw the trajectory in its latent plane")
    r.add_argument("--complete-model", action="store_true",
                   help="train the model on every position too, and compare the live model with it")
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=cmd_run)


def _add_instrument_options(r, d) -> None:
    """How the instrument is driven: timeouts, retries, dwell, blanking, pipelining, drift tracking."""
    r.add_argument("--acquire-timeout", type=float, default=d.acquire_timeout,
                   help=f"seconds per acquisition (default {d.acquire_timeout:g})")
    r.add_argument("--acquire-retries", type=int, default=d.acquire_retries,
                   help=f"retries of a failed acquisition (default {d.acquire_retries})")
    r.add_argument("--dwell", type=float, default=None, metavar="S",
                   help="seconds per spectrum, set on the instrument and recorded per point (default: its own)")
    r.add_argument("--no-blank", action="store_true",
                   help="leave the beam on between acquisitions (default: blanked while the model fits)")
    r.add_argument("--pipeline", type=int, choices=(0, 1), default=None, metavar="DEPTH",
                   help="1: choose the next point while the current one is measured; 0: measure, learn, then choose "
                        "(default: 1 on a live instrument with a dwell of 0.1 s or more, else 0; recorded)")
    r.add_argument("--drift-every", type=int, default=0, metavar="N",
                   help="follow the specimen's drift: acquire the structural image again every N acquisitions, "
                        "register it to the run's and send later positions where the specimen now is (a live "
                        "instrument that can; default 0: off; the image's beam time is recorded)")
    r.add_argument("--no-recalibrate", action="store_true",
                   help="draw the model's own predictive spread (default: wider where the run's last measurements "
                        "missed their predicted intervals more often than a calibrated model would)")
    r.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds to wait for each answer of a remote microscope (default 10)")


def settings(args, sc):
    from ..core.run.settings import ExperimentSettings

    return ExperimentSettings(
        patch_size=args.patch, scalarizer=sc.to_dict(), policy=opt.policy(args), model=opt.model(args),
        goal=args.goal, n_seeds=args.n_seeds, seed_mode="given" if args.seed_at else args.seed_mode,
        seed_positions=args.seed_at, budget=args.steps, random_seed=args.random_seed,
        fit_iterations=args.fit_iterations, record_maps=not args.no_maps, map_every=args.map_every,
        acquire_timeout=args.acquire_timeout, acquire_retries=args.acquire_retries, dwell=args.dwell,
        blank_between=not args.no_blank, pipeline_depth=args.pipeline, drift_every=args.drift_every,
        recalibrate=not args.no_recalibrate,
        objectives=[opt.objective_text(t) for t in args.also] if args.also else None)


def cmd_run(args) -> int:
    from ..core.instrument.adapters import make_microscope
    from ..core.run.experiment import Experiment

    if args.resume:
        return _resume(args)
    adapter, params = opt.microscope(args)
    data = opt.replay_data(args, adapter, "use --sample nanoparticles, --spectrum FILE [--image FILE], --microscope "
                                          "NAME for a live instrument, or --resume RUN_FOLDER.")
    mic = make_microscope(adapter, data, seed=args.random_seed, **params)
    out = Path(args.out)
    with _released_if_refused(mic):
        info, sc = _describe_new_run(args, adapter, params, data, mic)
        s = settings(args, sc)
        lock = RunLock(make_folder(out))
    with lock:   # no other process writes (or moves) this run while it is held
        with _released_if_refused(mic):
            moved = prepare_new_run(out, args.overwrite)
            if moved is not None and not args.quiet:
                print(f"The previous run in {out} was moved to {moved}.", file=sys.stderr)
            exp = Experiment(mic, s, scalarizer=sc, dataset_info=info, journal=out / JOURNAL_NAME)
        return drive(exp, data, out, args)


def _describe_new_run(args, adapter: str, params: dict, data, mic) -> tuple[dict, object]:
    """(the dataset's description recorded in the trace, the scalarizer) of a new run."""
    from ..core.instrument.adapters import recorded_params

    source = {**(opt.source(args, params.get("noise", "none")) if data is not None else {}),
              "microscope": adapter, "microscope_params": recorded_params(adapter, params)}
    if data is not None:
        name, energy = data.name, data.energy
        info = {**data.describe(), "source": source, "fingerprint": data.fingerprint()}
        check = energy_check(data)
        if check is not None:
            info["energy_check"] = check
            if check.get("warning"):
                print(f"warning: {check['warning']}", file=sys.stderr)
    else:
        name, energy = getattr(mic, "name", adapter), mic.energy
        info = {"name": name, "scan_shape": list(mic.scan_shape), "signal_shape": list(mic.signal_shape),
                "energy": None if mic.energy is None else mic.energy.to_dict(), "source": source,
                **(mic.describe() if callable(getattr(mic, "describe", None)) else {})}   # geometry (nm)
    return info, opt.scalarizer(args, name, energy, data)


@contextlib.contextmanager
def _released_if_refused(mic):
    """Close ``mic`` (blank the beam, stop its cameras and their threads) when the run is refused before it starts:
    a live instrument's acquisition threads would keep the command from exiting. ``drive`` closes it otherwise."""
    from ..core.instrument.adapters import close_microscope

    try:
        yield
    except BaseException:
        close_microscope(mic)
        raise


# options that define a run (its data, instrument, seeds, model): they cannot change when it is resumed
_FIXED_ON_RESUME = {"sample": "--sample", "spectrum": "--spectrum", "image": "--image", "microscope": "--microscope",
                    "n_seeds": "--n-seeds", "seed_mode": "--seed-mode", "seed_at": "--seed-at", "goal": "--goal",
                    "random_seed": "--random-seed", "model": "--model", "model_param": "--model-param",
                    "also": "--also", "noise": "--noise", "no_maps": "--no-maps", "map_every": "--map-every",
                    "overwrite": "--overwrite",
                    "fit_iterations": "--fit-iterations", "acquire_timeout": "--acquire-timeout",
                    "acquire_retries": "--acquire-retries", "dwell": "--dwell", "no_blank": "--no-blank",
                    "pipeline": "--pipeline", "drift_every": "--drift-every", "no_recalibrate": "--no-recalibrate",
                    "out": "--out"}
_SCALARIZER_OPTIONS = {"scalarizer", "band", "band2", "background", "scalarizer_param"}


def _resume(args) -> int:
    from ..core.record.trace import Trace
    from ..core.run.experiment import Experiment

    path = Path(args.resume)
    if not path.exists():
        raise HAEInputError(f"--resume {str(path)!r} does not exist.",
                            "give the run's output folder (or its trace.journal / trace.h5).")
    out = path if path.is_dir() else path.parent
    given = getattr(args, "explicit", set())
    model_params = opt._json_params(args.model_param, "--model-param device=cpu")
    if "model_param" in given and set(model_params) == {"device"}:
        given = given - {"model_param"}   # where the model computes: this machine's matter (a GPU gone)
    fixed = sorted(flag for dest, flag in _FIXED_ON_RESUME.items() if dest in given)
    if "out" in given and Path(args.out).resolve() == out.resolve():
        fixed.remove("--out")
    if fixed:
        raise HAEInputError(f"{', '.join(fixed)} cannot change when a run is resumed: they define the run "
                            f"(its data, instrument, seeds, model and output).",
                            "drop them; --steps, --policy (and its parameters), the scalarizer options and --patch "
                            "may be given with --resume: they are recorded as interventions (and --model-param "
                            "device=..., where the model computes on this machine).")
    with RunLock(out):   # a stale lock taken over here is recorded by the run's journal (the lock is re-entrant)
        trace = Trace.load(out)   # the most complete record in the folder
        data, mic = recorded_microscope(trace, opt.token(args), args.request_timeout)
        with _released_if_refused(mic):
            exp = Experiment.resume(trace, mic, journal=out / JOURNAL_NAME, append_journal=True,
                                    device=model_params.get("device"))
            changes = _resume_changes(args, given, exp)
            for change in changes:   # all checked first: a refused option leaves the run as it was
                change.check(exp)
            for change in changes:
                exp.intervene(change)
        if not args.quiet:
            print(f"Resuming {out}: {trace.n_points} spectra and {trace.n_steps} of {exp.settings.budget} steps on "
                  "disk." + (f" Changes: {', '.join(c.kind for c in changes)}." if changes else ""), file=sys.stderr)
        if exp.done and not changes:
            print(f"The run in {out} is complete ({exp.settings.budget} steps); nothing to do. Give --steps N to "
                  "extend it.", file=sys.stderr)
        return drive(exp, data, out, args)


def _resume_changes(args, given: set, exp) -> list:
    """The interventions that the options given with --resume ask for (checked by ``Experiment.intervene``)."""
    from ..core.run import interventions as iv
    from ..core.targets.scalarizers import Scalarizer

    s = exp.settings
    changes = []
    if given & _SCALARIZER_OPTIONS:
        rec = s.scalarizer.to_dict()
        name = args.scalarizer if "scalarizer" in given else rec["name"]
        params = dict(rec["params"]) if name == rec["name"] else {}
        if "band" in given:
            params.update(a=args.band[0], b=args.band[1])
        if "band2" in given:
            params.update(a2=args.band2[0], b2=args.band2[1])
        params.update(opt._json_params(args.scalarizer_param, "--scalarizer-param center=[31.5,31.5]"))
        bg = tuple(args.background) if "background" in given else rec.get("background")
        new = Scalarizer(name, params, None if bg is None else tuple(bg))
        if new.to_dict() != Scalarizer.from_dict(rec).to_dict():
            changes.append(iv.ChangeScalarizer(new))
    pol_opts = {d for d in given if d == "policy" or d.startswith("policy_")}
    if pol_opts:
        rec = s.policy.to_dict()
        name = args.policy if "policy" in given else rec["name"]
        ns = argparse.Namespace(**{**vars(args), "policy": name})
        spec = opt.policy(ns)
        params = {**(rec["params"] if name == rec["name"] else {}), **spec["params"]}
        if {"name": name, "params": params} != {"name": rec["name"], "params": rec["params"]}:
            changes.append(iv.ChangePolicy({"name": name, "params": params}))
    if "patch" in given and args.patch != exp.patch_size:
        changes.append(iv.ChangePatchSize(args.patch))
    if "steps" in given and args.steps != s.budget:
        changes.append(iv.ChangeBudget(args.steps))
    return changes


def recorded_microscope(trace, token: str | None = None, request_timeout: float = 10.0):
    """(data, microscope) of the run ``trace`` recorded: the same adapter with the same parameters (a token is
    never recorded: it is given again), on the same data source."""
    from ..core.instrument.adapters import make_microscope

    src = trace.dataset.get("source", {})
    adapter, params = src.get("microscope", "simulator"), dict(src.get("microscope_params") or {})
    if adapter.startswith("tcp://"):   # written before adapters were named
        adapter, params = "remote", {"address": adapter}
    if adapter == "simulator":
        params.setdefault("noise", src.get("noise", "none"))
    if adapter == "remote":
        params["timeout"] = request_timeout
        if token:
            params["token"] = token
    data = load_source(src) if (src.get("sample") or src.get("spectrum")) else None
    if data is not None:
        data.check_same_source(trace.dataset.get("fingerprint"), "The run being resumed")
    seed = int(trace.settings.get("random_seed", 0)) + trace.n_points
    return data, make_microscope(adapter, data, seed=seed, **params)


def drive(exp, data, out: Path, args) -> int:
    """Run ``exp`` to its budget with the run driver and a progress bar; whatever happens, write the trace and
    the summary."""
    from tqdm import tqdm

    from ..core.analysis.summary import summarize
    from ..core.instrument.adapters import close_microscope
    from ..core.plots.report import summary_figure
    from ..core.run.driver import RunDriver
    from ..core.run.experiment import StepResult

    t0 = time.perf_counter()
    err = None
    driver = RunDriver(exp)
    try:
        with _ctrl_c_stops(driver, out, quiet=args.quiet), \
                tqdm(total=exp.settings.budget, initial=exp.step_index, desc="hAE", unit="step",
                     disable=args.quiet) as bar:
            for item in driver.events():
                if isinstance(item, StepResult):
                    bar.set_postfix(value=f"{item.value:.4g}", best=f"{item.record['best_so_far']:.4g}")
                    bar.update(1)
    except KeyboardInterrupt as exc:
        err = exc
        print("Interrupted: saving the trace measured so far.", file=sys.stderr)
    except HAERunError as exc:
        err = exc
        print(f"Run paused at step {exp.step_index}: {exc}", file=sys.stderr)
    except Exception as exc:  # never lose what was measured
        err = exc
        print(f"Run failed at step {exp.step_index}: {sentence(exc)} Saving the trace measured so far.",
              file=sys.stderr)
    if driver.stopped and err is None and not exp.done:
        err = KeyboardInterrupt()
    wall = time.perf_counter() - t0
    exp.close()
    close_microscope(exp.microscope)   # the beam blanked, cameras stopped
    trace_path = _save_or_rescue(exp.trace, out)   # first, before anything else can fail
    if trace_path is None:
        return 3
    truth = data.scalarize(exp.scalarizer) if data is not None and exp.trace.n_points else None
    name = data.name if data is not None else exp.trace.dataset.get("name", "remote")
    if exp.trace.n_points:
        monitors(exp.trace, truth, args, quiet=args.quiet)
        try:
            trace_path = exp.trace.save(out / TRACE_NAME)   # now with the monitors
        except OSError as exc:   # held open meanwhile (Windows): every measurement is in the one saved above
            print(f"warning: the monitors were not added to the trace: {exc}", file=sys.stderr)
    summary = summarize(exp.trace, truth, wall)
    if exp.objectives and exp.trace.n_points:
        pos, vals = exp.pareto_set()
        summary["pareto_set"] = [{"position": [int(c) for c in p], "values": [float(x) for x in v]}
                                 for p, v in zip(pos, vals)]
        summary["objectives"] = exp.objective.labels()
    summary.update(scalarizer=exp.scalarizer.label(), policy=exp.policy.label(), model=exp.settings.model.name,
                   patch_size=exp.patch_size, dataset=name, trace=str(trace_path), complete=exp.done)
    _write_beside(out / SUMMARY_NAME, lambda p: p.write_text(json.dumps(summary, indent=2, default=float)))
    if exp.trace.n_points:
        title = f"{name}: {exp.scalarizer.label()}, {exp.policy.label()}, patch {exp.patch_size}"
        _write_beside(out / "summary.png", lambda p: summary_figure(exp.trace, p, truth, title=title))
    if not args.quiet:
        print_summary(summary, out)
    if err is not None:
        if isinstance(err, KeyboardInterrupt):
            return 130
        if isinstance(err, HAERunError):
            return 3
        raise err
    return 0


def _write_beside(path: Path, write) -> None:
    """``write(p)`` to a new file beside ``path`` that then replaces it; where another program holds ``path`` open
    (a viewer on Windows) it is said, and the new file kept: the trace is saved, only this view of it is not."""
    from ..core.record.files import FileInUse, replace_file

    new = path.with_name(f"{path.stem}.new{path.suffix}")
    write(new)
    try:
        replace_file(new, path)
    except FileInUse as exc:
        print(f"warning: {exc}", file=sys.stderr)


def _save_or_rescue(trace, out: Path) -> Path | None:
    """``out/trace.h5``; where the folder's disk is full (or not writable), a rescue copy elsewhere that holds every
    measurement, the ones the journal could not take too (None, and said, when it did not go in the folder)."""
    try:
        path, failed = save_somewhere(trace, out)
    except OSError as exc:
        print(f"error: could not write the trace anywhere ({exc}). Everything journaled before is in "
              f"{out / JOURNAL_NAME}. Fix: free disk space or fix the folder's permissions, then "
              f"napari-hae run --resume {out}.", file=sys.stderr)
        return None
    if failed:
        print(f"error: could not write {out / TRACE_NAME} ({'; '.join(failed)}). Every measurement, the ones the "
              f"journal could not take too, is saved in {path}. Fix: free disk space, move {path} to "
              f"{out / TRACE_NAME}, then napari-hae run --resume {out}.", file=sys.stderr)
        return None
    return path


@contextlib.contextmanager
def _ctrl_c_stops(driver, out: Path, quiet: bool = False):
    """The first Ctrl-C stops the run cleanly after the step in progress (its spectrum is kept); a second one
    interrupts at once. Only in the main thread (signals are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if driver.stopped:
            raise KeyboardInterrupt
        driver.stop()
        print(f"\nCtrl-C: stopping after the step in progress (its spectrum is kept); resume with "
              f"napari-hae run --resume {out}. Press Ctrl-C again to stop at once.", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def monitors(trace, truth, args, quiet=False) -> dict:
    """Model error against truth / complete / final model and, if asked, the rVAE latent plane; kept in
    ``trace.monitors``."""
    from ..core.analysis.summary import compute_monitors
    from ..core.run.interventions import settings_after

    complete = fs = None
    s = settings_after(trace)
    if getattr(args, "complete_model", False) and truth is not None:
        from ..core.analysis.monitors import complete_model

        if not quiet:
            print("Training the complete model on every position...", file=sys.stderr)
        complete, _ = complete_model(trace.structural, truth, s.patch_size, s)
    elif "complete_mean" in trace.monitors:
        complete = trace.monitors["complete_mean"]
    if getattr(args, "feature_space", False):
        from ..core.analysis.feature_space import fit_feature_space

        def progress(e, n, loss):
            if not quiet:
                print(f"\rrVAE epoch {e}/{n}, loss {loss:.4g}", end="", file=sys.stderr)

        fs = fit_feature_space(trace.structural, s.patch_size, progress=progress)
        if not quiet:
            print(file=sys.stderr)
    return compute_monitors(trace, truth, complete, fs)


def print_summary(s: dict, out: Path | None) -> None:
    best = "maximum" if s.get("goal", "max") == "max" else "minimum"
    name = s.get("scalarizer", "value")
    lines = [f"steps: {s['policy_steps']} (+{s['seeds']} seeds), {s['points_measured']} spectra measured",
             f"best {name} ({best}): {s['best_value']:.4g} at (y, x) = {tuple(s['best_position'])}"
             if s["best_value"] is not None else f"best {name}: none (no measured spectrum has a value under it)"]
    if s.get("truth_note"):
        lines.append(f"note: {s['truth_note']}")
    if s.get("truth_best") is None and "truth_best" in s:
        lines.append(f"ground truth: no position has a value under {name}")
    elif "truth_best" in s:
        frac = s["best_fraction_of_truth_best"]
        lines.append(f"ground-truth {best}: {s['truth_best']:.4g}"
                     + ("" if frac is None else f" ({100 * frac:.1f}% reached)" if
                        s.get("best_fraction_counted_as") != "range" else
                        f" ({100 * frac:.1f}% of the way from the worst value)")
                     + f"; steps to top 1%: {s['steps_to_top1pct']}, to top 5%: {s['steps_to_top5pct']}")
    lines.append(f"travel distance: {s['travel_distance_px']:.1f} px = {s['travel_distance_units']:.3g} "
                 f"{s['pixel_units']}")
    if s["median_step_time_s"] is not None and "wall_time_s" in s:
        lines.append(f"wall time: {s['wall_time_s']:.1f} s, median {s['median_step_time_s']:.3f} s per step")
    dose = s.get("dose") or {}
    if dose.get("beam_on_s") is not None:
        unknown = dose["points_without_beam_time"]
        lines.append(f"beam on: {dose['beam_on_s']:.3g} s ({dose['median_beam_on_per_point_s']:.3g} s per point), "
                     f"{100 * dose['fraction_of_full_grid']:.2g}% of a full {dose['full_grid_positions']}-position "
                     "scan at that time per point" + (f"; {unknown} points without a beam time" if unknown else ""))
    if dose.get("structural_images"):
        lines.append(f"beam on for {dose['structural_images']} structural images (drift checks): "
                     f"{dose['structural_images_beam_on_s']:.3g} s")
    if out is not None:
        lines.append(f"written: {out / 'trace.h5'}, {out / 'summary.json'}, {out / 'summary.png'}")
    print("\n".join(lines))
