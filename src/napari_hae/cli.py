"""Headless command line: ``napari-hae run ...`` runs an experiment on the same core as the napari plugin."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-hae", description="Human-in-the-loop automated STEM experiments.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a simulated automated experiment on pre-acquired data")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--sample", help="bundled sample dataset, e.g. 'nanoparticles'")
    src.add_argument("--spectrum", help="spectrum image file read by HyperSpy (.dm3/.dm4/.emd/.hspy/.bcf/.npz)")
    r.add_argument("--image", help="structural (HAADF) image file on the same scan grid")
    r.add_argument("--scalarizer", default="band_integral", help="registered scalarizer (default band_integral)")
    r.add_argument("--band", nargs=2, type=float, metavar=("A", "B"),
                   help="energy band [A, B] in eV (default: the sample's dipole band, else the middle third)")
    r.add_argument("--band2", nargs=2, type=float, metavar=("A2", "B2"), help="second band for band_ratio (eV)")
    r.add_argument("--background", nargs=2, type=float, metavar=("C", "D"),
                   help="power-law background fit window (eV) subtracted first (core-loss EELS)")
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
    r.add_argument("-q", "--quiet", action="store_true")
    return p


def _load_data(args):
    from .core.io import load_spectrum_image
    from .sample_data import load_sample

    if args.sample:
        return load_sample(args.sample)
    return load_spectrum_image(args.spectrum, args.image)


def _scalarizer(args, data):
    from .core.scalarizers import Scalarizer

    params = {}
    if args.scalarizer in ("band_integral", "peak_max", "peak_position", "peak_fwhm", "band_ratio"):
        if args.band:
            a, b = args.band
        elif data.name == "nanoparticles":
            from .sample_data.nanoparticles import BANDS

            a, b = BANDS["dipole"]
        else:
            lo, hi = data.energy.limits
            a, b = lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3
        params = {"a": a, "b": b}
        if args.scalarizer == "band_ratio":
            if not args.band2:
                from .core.errors import HAEInputError

                raise HAEInputError("band_ratio needs a second band.", "add --band2 A2 B2 (eV).")
            params.update(a2=args.band2[0], b2=args.band2[1])
    return Scalarizer(args.scalarizer, params, tuple(args.background) if args.background else None)


def cmd_run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .core.experiment import Experiment, ExperimentSettings
    from .core.microscope import SimulatedMicroscope
    from .core.report import summarize, summary_figure

    data = _load_data(args)
    sc = _scalarizer(args, data)
    pparams = {}
    if args.xi is not None:
        pparams["xi"] = args.xi
    if args.beta is not None:
        pparams["beta"] = args.beta
    settings = ExperimentSettings(patch_size=args.patch, scalarizer=sc.to_dict(),
                                  policy={"name": args.policy, "params": pparams}, goal=args.goal,
                                  n_seeds=args.seeds, seed_mode="given" if args.seed_at else args.seed_mode,
                                  seed_positions=args.seed_at, budget=args.steps,
                                  random_seed=args.random_seed, fit_iterations=args.fit_iterations,
                                  record_maps=not args.no_maps)
    mic = SimulatedMicroscope(data, noise=None if args.noise == "none" else "poisson", seed=args.random_seed)
    exp = Experiment(mic, settings, scalarizer=sc, dataset_info=data.describe())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    err = None
    try:
        exp.start()
        with tqdm(total=args.steps, desc="hAE", unit="step", disable=args.quiet) as bar:
            for res in exp.iter_steps():
                bar.set_postfix(value=f"{res.value:.4g}", best=f"{res.record['best_so_far']:.4g}")
                bar.update(1)
    except KeyboardInterrupt as exc:
        err = exc
        print("Interrupted: saving the trace measured so far.", file=sys.stderr)
    except Exception as exc:  # never lose what was measured
        err = exc
        print(f"Run failed at step {exp.step_index}: {exc}. Saving the trace measured so far.", file=sys.stderr)
    wall = time.perf_counter() - t0
    trace_path = exp.trace.save(out / "trace.h5")
    truth = sc(data.spectra, data.energies) if exp.trace.n_points else None
    summary = summarize(exp.trace, truth, wall)
    summary.update(scalarizer=sc.label(), policy=exp.policy.label(), patch_size=exp.patch_size,
                   dataset=data.name, trace=str(trace_path))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if exp.trace.n_points:
        summary_figure(exp.trace, out / "summary.png", truth,
                       title=f"{data.name}: {sc.label()}, {exp.policy.label()}, patch {exp.patch_size}")
    if not args.quiet:
        _print_summary(summary, out)
    if err is not None:
        if isinstance(err, KeyboardInterrupt):
            return 130
        raise err
    return 0


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
    except HAEInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
