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
    c.add_argument("--dwell", type=_dwell, default=0.05, metavar="S",
                   help="the longer of the two dwells the dwell check compares (default 0.05 s; 0 < S <= 60)")
    c.set_defaults(func=cmd_check)


def _dwell(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= 60):
        raise argparse.ArgumentTypeError(f"{text} s is not a dwell to check: give 0 < S <= 60 seconds")
    return value


def _data_for(name: str, args):
    """The data an adapter that replays data needs (a clear error without it); none for one that does not (a data
    option given to it is refused, not ignored)."""
    from ..core.errors import HAEInputError
    from ..core.instrument.adapters import MICROSCOPES

    given = args.sample or args.spectrum
    if MICROSCOPES.get(name).extra.get("needs_data"):
        if not given:
            raise HAEInputError(f"The {name!r} microscope replays pre-acquired data, and none was given.",
                                f"napari-hae check-microscope {name} --sample nanoparticles (or --spectrum FILE).")
        return load_source(opt.source(args))
    if given:
        raise HAEInputError(f"The {name!r} microscope does not replay data: --sample/--spectrum would be ignored.",
                            f"drop them (napari-hae check-microscope {name}).")
    return None


def cmd_check(args) -> int:
    import logging

    from ..core.instrument.adapters import MICROSCOPES, make_microscope
    from ..core.instrument.conformance import check_microscope

    logging.getLogger("napari_hae.core.instrument.guard").setLevel(logging.ERROR)   # the checks provoke faults

    name, params = opt.microscope(args)
    MICROSCOPES.check_params(name, params)
    data = _data_for(name, args)
    report = check_microscope(lambda: make_microscope(name, data, **params), dwell=args.dwell)
    print(report.text())
    failed = [c.name for c in report.checks if c.outcome == "fail"]
    skipped = sum(c.outcome == "skip" for c in report.checks)
    print(f"{name}: {'conforms' if not failed else 'FAILS ' + ', '.join(failed)} "
          f"({skipped} check{'' if skipped == 1 else 's'} skipped: capabilities it does not have)")
    return 1 if failed else 0
