"""The ``napari-hae`` command: one module per subcommand over shared option helpers (``_options``); the same
core and run driver as the napari dock."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)   # torch's own deprecations are not the user's business

from . import report, run, serve, sweep  # noqa: E402

SUBCOMMANDS = (run, serve, sweep, report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="napari-hae", description="Human-in-the-loop automated STEM experiments.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return p


def main(argv=None) -> int:
    from ..core.errors import HAEInputError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except HAEInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
