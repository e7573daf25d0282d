"""``napari-hae check-microscope``: the adapter conformance kit on one adapter, for authors of new adapters."""

from __future__ import annotations

from ..core.data.io import load_source
from . import _options as opt


def add_parser(sub) -> None:
    c = sub.add_parser("check-microscope",
                       help="check that a microscope adapter does what a run relies on (conformance kit)")
    c.add_argument("microscope", metavar="NAME[:PARAM=V,...]",
                   help="the adapter and its parameters, as for run --microscope (e.g. nion-usim:size=32)")
    opt.add_source(c)
    c.add_argument("--dwell", type=float, default=0.05, metavar="S",
                   help="the longer of the two dwells the dwell check compares (default 0.05 s)")
    c.set_defaults(func=cmd_check)


def cmd_check(args) -> int:
    import logging

    from ..core.instrument.adapters import MICROSCOPES, make_microscope
    from ..core.instrument.conformance import check_microscope

    logging.getLogger("napari_hae.core.instrument.guard").setLevel(logging.ERROR)   # the checks provoke faults

    name, params = opt.microscope(args)
    MICROSCOPES.check_params(name, params)
    data = load_source(opt.source(args)) if MICROSCOPES.get(name).extra.get("needs_data") else None
    report = check_microscope(lambda: make_microscope(name, data, **params), dwell=args.dwell)
    print(report.text())
    failed = [c.name for c in report.checks if c.outcome == "fail"]
    print(f"{name}: {'conforms' if not failed else 'FAILS ' + ', '.join(failed)} "
          f"({sum(c.outcome == 'skip' for c in report.checks)} checks skipped: capabilities it does not have)")
    return 1 if failed else 0
