"""The ``napari-hae`` command: one module per subcommand over shared option helpers (``_options``); the same
core and run driver as the napari dock."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)   # torch's own deprecations are not the user's business

import importlib  # noqa: E402

# subcommand -> module; a command imports only its own module, so 'serve' on a microscope PC needs no torch
SUBCOMMANDS = {"run": "run", "serve": "serve", "sweep": "sweep", "sweep-report": "sweep", "report": "report",
               "check-microscope": "check"}


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the named subcommand's module is imported (all of them for bare --help)."""
    p = argparse.ArgumentParser(prog="napari-hae", description="Human-in-the-loop automated STEM experiments.")
    sub = p.add_subparsers(dest="command", required=True)
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    modules = dict.fromkeys(SUBCOMMANDS.values()) if wanted not in SUBCOMMANDS else {SUBCOMMANDS[wanted]: None}
    for name in modules:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return p


def explicit_options(argv) -> set[str]:
    """The destinations of the options the user actually gave in ``argv`` (whatever their values), e.g. to tell
    ``--resume RUN --policy ucb`` from a bare ``--resume RUN`` when ucb is the default."""
    p = build_parser(argv)
    for group in p._subparsers._group_actions:   # every subcommand's options without defaults
        for sp in group.choices.values():
            for a in sp._actions:
                a.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv))) - {"command"}


def main(argv=None) -> int:
    from ..core.errors import HAEInputError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv).parse_args(argv)
        args.explicit = explicit_options(argv)
        return args.func(args)
    except HAEInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # before a run started (a running one stops cleanly on Ctrl-C)
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
