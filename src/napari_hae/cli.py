"""Headless command line: ``napari-hae run ...`` runs an experiment on the same core as the napari plugin."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .core.data.io import load_source
from .core.record.trace import JOURNAL_NAME, TRACE_NAME


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-hae", description="Human-in-the-loop automated STEM experiments.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a simulated automated experiment on pre-acquired data")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--sample", help="bundled sample dataset, e.g. 'nanoparticles'")
    src.add_argument("--spectrum", help="spectrum image file read by HyperSpy (.dm3/.dm4/.emd/.hspy/.bcf/.npz)")
    src.add_argument("--microscope", metavar="tcp://HOST:PORT",
                     help="drive a microscope served by 'napari-hae serve' (or a vendor adapter) over the network")
    src.add_argument("--resume", metavar="TRACE",
                     help="continue an interrupted run from its output folder, trace.journal or trace.h5, with its "
                          "settings and interventions (the data source is taken from the trace)")
    r.add_argument("--image", help="structural (HAADF) image file on the same scan grid")
    r.add_argument("--scalarizer", default="band_integral", help="registered scalarizer (default band_integral)")
    r.add_argument("--band", nargs=2, type=float, metavar=("A", "B"),
                   help="energy band [A, B] in eV (default: the sample's dipole band, else the middle third)")
    r.add_argument("--band2", nargs=2, type=float, metavar=("A2", "B2"), help="second band for band_ratio (eV)")
    r.add_argument("--background", nargs=2, type=float, metavar=("C", "D"),
                   help="power-law background fit window (eV) subtracted first (core-loss EELS)")
    r.add_argument("--also", action="append", metavar="NAME:PARAM=V,...",
                   help="a further objective for multi-objective mode, e.g. band_integral:a=3.45,b=4.05 "
                        "(repeatable); the summary then lists the Pareto set")
    r.add_argument("--goal", choices=("max", "min"), default="max")
    r.add_argument("--policy", default="ucb", help="acquisition: ei, ucb, pi, mu, thompson, random (default ucb)")
    r.add_argument("--xi", type=float, help="EI/PI exploration margin (standardized units)")
    r.add_argument("--beta", type=float, help="UCB exploration weight")
    r.add_argument("--patch", type=int, default=16, help="patch size in pixels (default 16)")
    r.add_argument("--seeds", type=int, default=10, help="number of seed points (default 10)")
    r.add_argument("--seed-mode", choices=("random", "grid"), default="random")
    r.add_argument("--seed-at", nargs=2, type=int, action="append", metavar=("Y", "X"),
                   help="a seed position in pixels (repeat for several); overrides --seeds/--seed-mode")
    r.add_argument("--steps", type=int, default=60, help="policy steps after the seeds (default 60)")
    r.add_argument("--random-seed", type=int, default=0)
    r.add_argument("--noise", choices=("none", "poisson"), default="none",
                   help="re-draw Poisson noise at each acquisition (default: replay stored spectra)")
    r.add_argument("--fit-iterations", type=int, default=30, help="Adam iterations per step (warm start)")
    r.add_argument("--out", default="runs/latest", help="output folder for trace.h5, summary.json, summary.png")
    r.add_argument("--no-maps", action="store_true", help="do not store per-step maps in the trace")
    r.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds an unfinished run (its measurements are discarded)")
    r.add_argument("--acquire-timeout", type=float, default=120.0, help="seconds per acquisition (default 120)")
    r.add_argument("--acquire-retries", type=int, default=2, help="retries of a failed acquisition (default 2)")
    r.add_argument("--feature-space", action="store_true",
                   help="train AtomAI's rVAE on all patches and draw the trajectory in its latent plane")
    r.add_argument("--complete-model", action="store_true",
                   help="train the DKL on every position too, and compare the live model with it")
    r.add_argument("-q", "--quiet", action="store_true")

    r.add_argument("--token", help="access token of the microscope server (default: $NAPARI_HAE_TOKEN)")
    r.add_argument("--request-timeout", type=float, default=10.0,
                   help="seconds to wait for each answer of a remote microscope (default 10)")

    sv = sub.add_parser("serve", help="serve a (simulated) microscope over the network for 'run --microscope'")
    ssrc = sv.add_mutually_exclusive_group(required=True)
    ssrc.add_argument("--sample", help="bundled sample dataset replayed by the simulator")
    ssrc.add_argument("--spectrum", help="spectrum image file replayed by the simulator")
    sv.add_argument("--image", help="structural image file for --spectrum")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=5555, help="TCP port (0: any free port; default 5555)")
    sv.add_argument("--token", help="require this access token (default: $NAPARI_HAE_TOKEN if set)")
    sv.add_argument("--noise", choices=("none", "poisson"), default="none")
    sv.add_argument("--random-seed", type=int, default=0)

    sw = sub.add_parser("sweep", help="run a grid of settings x seeds as simulated experiments on dask.distributed")
    wsrc = sw.add_mutually_exclusive_group(required=True)
    wsrc.add_argument("--sample", help="bundled sample dataset")
    wsrc.add_argument("--spectrum", help="spectrum image file")
    sw.add_argument("--image", help="structural image file for --spectrum")
    sw.add_argument("--patch", type=int, nargs="+", default=[5, 10, 15], help="patch sizes (default 5 10 15)")
    sw.add_argument("--policy", nargs="+", default=["ei:xi=0.01", "ei:xi=0.1", "ucb:beta=1", "ucb:beta=4", "mu"],
                    help="policies as NAME[:PARAM=VALUE[,...]], e.g. ei:xi=0.05 ei_penalized:xi=0.01,radius=5")
    sw.add_argument("--scalarizer", default="band_integral")
    sw.add_argument("--band", nargs=2, type=float, metavar=("A", "B"), help="energy band in eV")
    sw.add_argument("--seeds", type=int, default=5, help="random seeds per setting (default 5)")
    sw.add_argument("--n-seeds", type=int, default=10, help="seed points per run (default 10)")
    sw.add_argument("--steps", type=int, default=40, help="policy steps per run (default 40)")
    sw.add_argument("--fit-iterations", type=int, default=30)
    sw.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    sw.add_argument("--scheduler", help="address of an existing Dask scheduler instead of a LocalCluster")
    sw.add_argument("--out", default="sweeps/latest", help="folder for results.csv, traces/, heatmaps.png")
    sw.add_argument("-q", "--quiet", action="store_true")

    sr = sub.add_parser("sweep-report", help="heat maps (metric vs policy x patch size) from a sweep's table")
    sr.add_argument("sweep", help="a sweep folder or its results.csv")
    sr.add_argument("--out", help="PNG path (default: heatmaps.png in the sweep folder)")

    rp = sub.add_parser("report", help="redraw the monitors of a saved run (trace.h5, trace.journal or folder)")
    rp.add_argument("trace", help="a run folder, trace.h5 or trace.journal")
    rp.add_argument("--out", help="figure path, .png or .svg (default: report.png beside the trace)")
    rp.add_argument("--step", type=int, help="draw the maps of this step (default: the last stored)")
    rp.add_argument("--no-truth", action="store_true", help="do not reload the data for ground-truth comparisons")
    rp.add_argument("--feature-space", action="store_true", help="(re)compute the rVAE latent plane")
    rp.add_argument("--complete-model", action="store_true", help="(re)compute the complete model")
    rp.add_argument("-q", "--quiet", action="store_true")
    return p


def _load_data(args):
    return load_source(_source(args))


def _simulator(data, noise: str, seed: int):
    from .core.instrument.microscope import SimulatedMicroscope

    return SimulatedMicroscope(data, noise=None if noise == "none" else "poisson", seed=seed)


def _source(args) -> dict:
    """Where the data came from, recorded in the trace so that --resume can find it again."""
    if args.sample:
        return {"sample": args.sample, "noise": args.noise}
    return {"spectrum": str(Path(args.spectrum).resolve()),
            "image": str(Path(args.image).resolve()) if args.image else None, "noise": args.noise}


def _check_out_folder(out: Path, overwrite: bool) -> None:
    from .core.errors import HAEInputError
    from .core.record.trace import JOURNAL_NAME, Trace

    j = out / JOURNAL_NAME
    if not j.exists():
        return
    if not overwrite:
        try:
            old = Trace.load(j)
            unfinished = old.n_steps < int(old.settings.get("budget", 0))
        except HAEInputError:
            unfinished = False
        if unfinished:
            raise HAEInputError(
                f"{str(out)!r} holds an unfinished run ({old.n_steps} of {old.settings['budget']} steps, "
                f"{old.n_points} spectra).",
                f"continue it with --resume {out}, or pass --overwrite (discarding it), or choose another --out.")
    j.unlink()


def _scalarizer(args, name: str, energy):
    from .core.targets.scalarizers import Scalarizer

    params = {}
    if args.scalarizer in ("band_integral", "peak_max", "peak_position", "peak_fwhm", "band_ratio"):
        if args.band:
            a, b = args.band
        elif name == "nanoparticles":
            from .core.data.samples.nanoparticles import BANDS

            a, b = BANDS["dipole"]
        else:
            lo, hi = energy.limits
            a, b = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
        params = {"a": a, "b": b}
        if args.scalarizer == "band_ratio":
            if not getattr(args, "band2", None):
                from .core.errors import HAEInputError

                raise HAEInputError("band_ratio needs a second band.", "add --band2 A2 B2 (eV).")
            params.update(a2=args.band2[0], b2=args.band2[1])
    background = getattr(args, "background", None)
    return Scalarizer(args.scalarizer, params, tuple(background) if background else None)


def cmd_run(args) -> int:
    from .core.run.experiment import Experiment

    if args.resume:
        return _resume(args)
    if args.microscope:
        return _run_remote(args)
    if not (args.sample or args.spectrum):
        from .core.errors import HAEInputError

        raise HAEInputError("No data given.", "use --sample nanoparticles, --spectrum FILE [--image FILE], "
                                              "--microscope tcp://HOST:PORT, or --resume RUN_FOLDER.")
    data = _load_data(args)
    sc = _scalarizer(args, data.name, data.energy)
    settings = _settings(args, sc)
    mic = _simulator(data, args.noise, args.random_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_out_folder(out, args.overwrite)
    exp = Experiment(mic, settings, scalarizer=sc, dataset_info={**data.describe(), "source": _source(args)},
                     journal=out / JOURNAL_NAME)
    return _drive(exp, data, out, args)


def _settings(args, sc):
    from .core.run.experiment import ExperimentSettings

    pparams = {}
    if args.xi is not None:
        pparams["xi"] = args.xi
    if args.beta is not None:
        pparams["beta"] = args.beta
    return ExperimentSettings(patch_size=args.patch, scalarizer=sc.to_dict(),
                              policy={"name": args.policy, "params": pparams}, goal=args.goal,
                              n_seeds=args.seeds, seed_mode="given" if args.seed_at else args.seed_mode,
                              seed_positions=args.seed_at, budget=args.steps,
                              random_seed=args.random_seed, fit_iterations=args.fit_iterations,
                              record_maps=not args.no_maps, acquire_timeout=args.acquire_timeout,
                              acquire_retries=args.acquire_retries,
                              objectives=[_objective(t) for t in args.also] if args.also else None)


def _objective(text: str) -> dict:
    """``band_integral:a=3.45,b=4.05`` -> a scalarizer dict (values in eV)."""
    from .core.registry import parse_name_params

    return parse_name_params(text, "--also band_integral:a=3.45,b=4.05")


def _token(args):
    import os

    return args.token or os.environ.get("NAPARI_HAE_TOKEN") or None


def _run_remote(args) -> int:
    """A run on a networked microscope: no pre-acquired data, so no ground truth in the summary."""
    from .core.run.experiment import Experiment
    from .core.instrument.remote import RemoteMicroscope

    mic = RemoteMicroscope(args.microscope, token=_token(args), timeout=args.request_timeout)
    sc = _scalarizer(args, mic.name, mic.energy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_out_folder(out, args.overwrite)
    info = {"name": mic.name, "scan_shape": list(mic.scan_shape), "signal_shape": list(mic.signal_shape),
            "energy": None if mic.energy is None else mic.energy.to_dict(),
            "source": {"microscope": args.microscope}}
    exp = Experiment(mic, _settings(args, sc), scalarizer=sc, dataset_info=info, journal=out / JOURNAL_NAME)
    return _drive(exp, None, out, args)


def _resume(args) -> int:
    from .core.run.experiment import Experiment
    from .core.record.trace import Trace

    path = Path(args.resume)
    trace = Trace.load(path)
    src = trace.dataset.get("source", {})
    if src.get("microscope"):   # a networked instrument: reconnect to it
        from .core.instrument.remote import RemoteMicroscope

        data = None
        mic = RemoteMicroscope(src["microscope"], token=_token(args),
                               timeout=args.request_timeout)
    else:
        data = load_source(src)
        seed = int(trace.settings.get("random_seed", 0))
        mic = _simulator(data, src.get("noise", "none"), seed + trace.n_points)
    out = path if path.is_dir() else path.parent
    journal = out / JOURNAL_NAME
    same = path.is_dir() or path.name == JOURNAL_NAME
    if not same and journal.exists():
        journal.unlink()   # resuming from trace.h5: a fresh journal holds everything
    exp = Experiment.resume(trace, mic, journal=journal, append_journal=same and journal.exists())
    if not args.quiet:
        print(f"Resuming {out}: {trace.n_points} spectra and {trace.n_steps} of {exp.settings.budget} steps on "
              "disk.", file=sys.stderr)
    return _drive(exp, data, out, args)


def _drive(exp, data, out: Path, args) -> int:
    """Run ``exp`` to its budget with a progress bar; whatever happens, write the trace and the summary."""
    from tqdm import tqdm

    from .core.errors import HAERunError
    from .core.analysis.summary import summarize
    from .core.plots.report import summary_figure

    t0 = time.perf_counter()
    err = None
    try:
        exp.start()
        with tqdm(total=exp.settings.budget, initial=exp.step_index, desc="hAE", unit="step",
                  disable=args.quiet) as bar:
            for res in exp.iter_steps():
                bar.set_postfix(value=f"{res.value:.4g}", best=f"{res.record['best_so_far']:.4g}")
                bar.update(1)
    except KeyboardInterrupt as exc:
        err = exc
        print("Interrupted: saving the trace measured so far.", file=sys.stderr)
    except HAERunError as exc:
        err = exc
        print(f"Run paused at step {exp.step_index}: {exc}", file=sys.stderr)
    except Exception as exc:  # never lose what was measured
        err = exc
        print(f"Run failed at step {exp.step_index}: {exc}. Saving the trace measured so far.", file=sys.stderr)
    wall = time.perf_counter() - t0
    exp.close()
    trace_path = exp.trace.save(out / TRACE_NAME)   # first, before anything else can fail
    sc = exp.scalarizer
    truth = sc(data.spectra, data.energies) if data is not None and exp.trace.n_points else None
    name = data.name if data is not None else exp.trace.dataset.get("name", "remote")
    if exp.trace.n_points:
        _monitors(exp.trace, truth, args, quiet=args.quiet)
        trace_path = exp.trace.save(out / TRACE_NAME)
    summary = summarize(exp.trace, truth, wall)
    if exp.objectives and exp.trace.n_points:
        pos, vals = exp.pareto_set()
        summary["pareto_set"] = [{"position": [int(c) for c in p], "values": [float(x) for x in v]}
                                 for p, v in zip(pos, vals)]
        summary["objectives"] = [exp.scalarizer.label()] + [o.label() for o in exp.objectives]
    summary.update(scalarizer=sc.label(), policy=exp.policy.label(), patch_size=exp.patch_size,
                   dataset=name, trace=str(trace_path), complete=exp.done)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if exp.trace.n_points:
        summary_figure(exp.trace, out / "summary.png", truth,
                       title=f"{name}: {sc.label()}, {exp.policy.label()}, patch {exp.patch_size}")
    if not args.quiet:
        _print_summary(summary, out)
    if err is not None:
        if isinstance(err, KeyboardInterrupt):
            return 130
        if isinstance(err, HAERunError):
            return 3
        raise err
    return 0


def _monitors(trace, truth, args, quiet=False) -> dict:
    """Model error against truth / complete / final model and, if asked, the rVAE latent plane; kept in
    ``trace.monitors``."""
    from .core.analysis.summary import compute_monitors

    complete = fs = None
    patch = int(trace.steps["patch_size"][-1]) if trace.n_steps else int(trace.settings.get("patch_size", 16))
    if getattr(args, "complete_model", False) and truth is not None:
        from .core.run.experiment import ExperimentSettings
        from .core.analysis.monitors import complete_model

        if not quiet:
            print("Training the complete model on every position...", file=sys.stderr)
        complete, _ = complete_model(trace.structural, truth, patch, ExperimentSettings.from_dict(trace.settings))
    elif "complete_mean" in trace.monitors:
        complete = trace.monitors["complete_mean"]
    if getattr(args, "feature_space", False):
        from .core.analysis.feature_space import fit_feature_space

        def progress(e, n, loss):
            if not quiet:
                print(f"\rrVAE epoch {e}/{n}, loss {loss:.4g}", end="", file=sys.stderr)

        fs = fit_feature_space(trace.structural, patch, progress=progress)
        if not quiet:
            print(file=sys.stderr)
    return compute_monitors(trace, truth, complete, fs)


def cmd_serve(args) -> int:
    """Serve a simulated microscope (on pre-acquired data) until Ctrl-C."""
    from .core.instrument.remote import MicroscopeServer

    data = _load_data(args)
    mic = _simulator(data, args.noise, args.random_seed)
    token = _token(args)
    server = MicroscopeServer(mic, host=args.host, port=args.port, token=token, name=data.name)
    print(f"serving {data.name} {data.scan_shape[0]}x{data.scan_shape[1]} on {server.address}"
          f"{' (token required)' if token else ''}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.close()
    return 0


def cmd_sweep(args) -> int:
    from .core.analysis.sweep import SweepSpec, heatmaps, parse_policy, run_sweep

    source = {"sample": args.sample} if args.sample else {
        "spectrum": str(Path(args.spectrum).resolve()), "image": str(Path(args.image).resolve()) if args.image
        else None}
    data = load_source(source)
    sc = _scalarizer(args, data.name, data.energy)
    base = {"scalarizer": sc.to_dict(), "budget": args.steps, "n_seeds": args.n_seeds,
            "fit_iterations": args.fit_iterations, "record_maps": False}
    spec = SweepSpec(source, base, {"patch_size": list(args.patch),
                                    "policy": [parse_policy(p) for p in args.policy]}, list(range(args.seeds)))
    t0 = time.perf_counter()
    table = run_sweep(spec, args.out, scheduler=args.scheduler, n_workers=args.workers, progress=not args.quiet)
    png = heatmaps(table, Path(args.out) / "heatmaps.png", title=f"{data.name}: {sc.label()}, {args.steps} steps")
    if not args.quiet:
        print(f"{len(spec.runs())} runs in the table after {time.perf_counter() - t0:.0f} s: {table}; heat maps: {png}")
    return 0


def cmd_sweep_report(args) -> int:
    from .core.analysis.sweep import heatmaps

    p = Path(args.sweep)
    table = p / "results.csv" if p.is_dir() else p
    out = Path(args.out) if args.out else table.parent / "heatmaps.png"
    print(f"written: {heatmaps(table, out)}")
    return 0


def cmd_report(args) -> int:
    from .core.errors import HAEInputError
    from .core.analysis.summary import summarize
    from .core.plots.report import summary_figure
    from .core.targets.scalarizers import Scalarizer
    from .core.record.trace import Trace

    path = Path(args.trace)
    trace = Trace.load(path)
    truth = None
    if not args.no_truth and trace.dataset.get("source"):
        try:
            data = load_source(trace.dataset["source"])
            sc = Scalarizer.from_dict(current_scalarizer(trace))
            truth = sc(data.spectra, data.energies)
        except HAEInputError as exc:
            print(f"warning: no ground truth ({exc})", file=sys.stderr)
    _monitors(trace, truth, args, quiet=args.quiet)
    out = Path(args.out) if args.out else (path if path.is_dir() else path.parent) / "report.png"
    summary_figure(trace, out, truth, step=args.step,
                   title=f"{trace.dataset.get('name', '')}: {trace.steps['policy'][-1] if trace.n_steps else ''}")
    s = summarize(trace, truth)
    if not args.quiet:
        print(json.dumps(s, indent=2, default=float))
        print(f"written: {out}")
    return 0


def current_scalarizer(trace) -> dict:
    """The scalarizer in force at the end of a trace (after any intervention)."""
    d = trace.settings.get("scalarizer", {})
    for iv in trace.interventions:
        if iv["kind"] == "scalarizer":
            d = iv["new"]
    return d


def _print_summary(s: dict, out: Path) -> None:
    lines = [
        f"steps: {s['policy_steps']} (+{s['seeds']} seeds), {s['points_measured']} spectra measured",
        f"best {s['scalarizer']}: {s['best_value']:.4g} at (y, x) = {tuple(s['best_position'])}",
    ]
    if "truth_max" in s:
        lines.append(f"ground-truth maximum: {s['truth_max']:.4g} "
                     f"({100 * s['best_fraction_of_truth_max']:.1f}% reached); steps to top 1%: "
                     f"{s['steps_to_top1pct']}, to top 5%: {s['steps_to_top5pct']}")
    lines.append(f"travel distance: {s['travel_distance_px']:.1f} px = {s['travel_distance_units']:.3g} "
                 f"{s['pixel_units']}")
    if s["median_step_time_s"] is not None:
        lines.append(f"wall time: {s['wall_time_s']:.1f} s, median {s['median_step_time_s']:.3f} s per step")
    lines.append(f"written: {out / 'trace.h5'}, {out / 'summary.json'}, {out / 'summary.png'}")
    print("\n".join(lines))


def main(argv=None) -> int:
    import warnings

    from .core.errors import HAEInputError

    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "sweep-report":
            return cmd_sweep_report(args)
    except HAEInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
