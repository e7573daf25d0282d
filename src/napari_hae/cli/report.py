"""``napari-hae report``: redraw the monitors and summary of a saved run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.data.io import load_source
from ..core.errors import HAEInputError
from ..core.record.journal import make_folder
from .run import monitors

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def add_parser(sub) -> None:
    rp = sub.add_parser("report", help="redraw the monitors of a saved run (trace.h5, trace.journal or folder)")
    rp.add_argument("trace", help="a run folder, trace.h5 or trace.journal")
    rp.add_argument("--out", help="figure path, .png or .svg (default: report.png beside the trace)")
    rp.add_argument("--step", type=int, help="draw the maps of this step (default: the last stored)")
    rp.add_argument("--no-truth", action="store_true", help="do not reload the data for ground-truth comparisons")
    rp.add_argument("--feature-space", action="store_true", help="(re)compute the rVAE latent plane")
    rp.add_argument("--complete-model", action="store_true", help="(re)compute the complete model")
    rp.add_argument("-q", "--quiet", action="store_true")
    rp.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..core.analysis.summary import summarize
    from ..core.plots.report import summary_figure
    from ..core.record.trace import Trace
    from ..core.run.interventions import settings_after
    from ..core.targets.scalarizers import Scalarizer

    path = Path(args.trace)
    out = Path(args.out) if args.out else (path if path.is_dir() else path.parent) / "report.png"
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise HAEInputError(f"--out {str(out)!r}: {out.suffix or 'no extension'} is not a figure format.",
                            f"end the file name with one of {', '.join(FIGURE_SUFFIXES)}.")
    trace = Trace.load(path)
    if trace.damaged:
        print(f"warning: the trace is damaged: {trace.recovery.describe()}. The report shows what was recovered "
              "(see docs/reliability.md).", file=sys.stderr)
    truth = None
    if not args.no_truth and trace.dataset.get("source"):
        try:
            data = load_source(trace.dataset["source"])
            data.check_same_source(trace.dataset.get("fingerprint"), "The run")
            sc = Scalarizer.from_dict(settings_after(trace).scalarizer.to_dict())   # the one in force at the end
            truth = data.scalarize(sc)
        except HAEInputError as exc:
            print(f"warning: no ground truth ({exc})", file=sys.stderr)
    monitors(trace, truth, args, quiet=args.quiet)
    make_folder(out.parent)
    summary_figure(trace, out, truth, step=args.step,
                   title=f"{trace.dataset.get('name', '')}: {trace.steps['policy'][-1] if trace.n_steps else ''}")
    s = summarize(trace, truth)
    if trace.damaged:
        s["damaged"] = trace.recovery.describe()
    if not args.quiet:
        print(json.dumps(s, indent=2, default=float))
        print(f"written: {out}")
    return 0
