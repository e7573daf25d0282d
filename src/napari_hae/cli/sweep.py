"""``napari-hae sweep`` and ``sweep-report``: a grid of settings x random seeds on dask.distributed."""

from __future__ import annotations

import time
from pathlib import Path

from ..core.data.io import load_source
from . import _options as opt


def add_parser(sub) -> None:
    d = opt.defaults()
    sw = sub.add_parser("sweep", help="run a grid of settings x random seeds as simulated experiments on dask")
    opt.add_source(sw, required=True)
    opt.add_target(sw)
    opt.add_policy(sw, multiple=True)
    opt.add_model(sw)
    sw.add_argument("--patch", type=int, nargs="+", default=[5, 10, 15], help="patch sizes (default 5 10 15)")
    sw.add_argument("--random-seeds", type=opt.at_least(1), default=5,
                    help="random seeds per setting: 0..N-1 (default 5)")
    sw.add_argument("--n-seeds", type=int, default=d.n_seeds, help=f"seed points per run (default {d.n_seeds})")
    sw.add_argument("--steps", type=int, default=d.budget, help=f"policy steps per run (default {d.budget})")
    sw.add_argument("--fit-iterations", type=int, default=d.fit_iterations)
    sw.add_argument("--workers", type=opt.at_least(1), default=2, help="LocalCluster worker processes (default 2)")
    sw.add_argument("--scheduler", help="address of an existing Dask scheduler instead of a LocalCluster")
    sw.add_argument("--out", default="sweeps/latest", help="folder for results.csv, traces/, heatmaps.png")
    sw.add_argument("-q", "--quiet", action="store_true")
    sw.set_defaults(func=cmd_sweep)

    sr = sub.add_parser("sweep-report", help="heat maps (metric vs policy x patch size) from a sweep's table")
    sr.add_argument("sweep", help="a sweep folder or its results.csv")
    sr.add_argument("--out", help="PNG path (default: heatmaps.png in the sweep folder)")
    sr.set_defaults(func=cmd_sweep_report)


def cmd_sweep(args) -> int:
    from ..core.analysis.sweep import SweepSpec, parse_policy, run_sweep
    from ..core.plots.heatmaps import heatmaps

    source = opt.source(args)
    source.pop("noise")
    data = load_source(source)
    sc = opt.scalarizer(args, data.name, data.energy, data)
    base = {"scalarizer": sc.to_dict(), "budget": args.steps, "n_seeds": args.n_seeds, "goal": args.goal,
            "model": opt.model(args), "fit_iterations": args.fit_iterations, "record_maps": False}
    spec = SweepSpec(source, base, {"patch_size": list(args.patch),
                                    "policy": [parse_policy(p) for p in args.policy]},
                     list(range(args.random_seeds)))
    t0 = time.perf_counter()
    table = run_sweep(spec, args.out, scheduler=args.scheduler, n_workers=args.workers, progress=not args.quiet)
    png = heatmaps(table, Path(args.out) / "heatmaps.png", title=f"{data.name}: {sc.label()}, {args.steps} steps")
    if not args.quiet:
        print(f"{len(spec.runs())} runs in the table after {time.perf_counter() - t0:.0f} s: {table}; heat maps: {png}")
    return 0


def cmd_sweep_report(args) -> int:
    from ..core.plots.heatmaps import heatmaps

    p = Path(args.sweep)
    table = p / "results.csv" if p.is_dir() else p
    out = Path(args.out) if args.out else table.parent / "heatmaps.png"
    print(f"written: {heatmaps(table, out)}")
    return 0
