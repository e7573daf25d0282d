"""The ``napari-hae`` command: one module per subcommand over shared option helpers (``_options``); the same
core and run driver as the napari dock."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

# subcommand -> module; a command imports only its own module, so 'serve' on a microscope PC needs no torch
SUBCOMMANDS = {"run": "run", "serve": "serve", "sweep": "sweep", "sweep-report": "sweep", "report": "report",
               "check-microscope": "check"}


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the named subcommand's module is imported (all of them for bare --help)."""
    from .. import __version__

    p = argparse.ArgumentParser(prog="napari-hae", description="Human-in-the-loop automated STEM experiments.")
    p.add_argument("--version", action="version", version=f"napari-hae {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="say more (-v: what each step does, -vv: debug)")
    p.add_argument("-q", "--quiet", action="count", default=0, dest="silent",
                   help="say less (errors only); a subcommand's own -q hides its progress bar")
    try:
        import shtab

        shtab.add_argument_to(p, ["--print-completion"], help="print a shell completion script (bash, zsh, tcsh): "
                                                              "e.g. napari-hae --print-completion bash > "
                                                              "~/.local/share/bash-completion/completions/napari-hae")
    except ImportError:   # a microscope PC's minimal install: no completion, everything else works
        pass
    sub = p.add_subparsers(dest="command", required=True)
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    modules = dict.fromkeys(SUBCOMMANDS.values()) if wanted not in SUBCOMMANDS else {SUBCOMMANDS[wanted]: None}
    for name in modules:
        try:
            importlib.import_module(f".{name}", __name__).add_parser(sub)
        except ModuleNotFoundError as exc:   # a serve-only install (microscope PC): 'serve' works, the rest says why
            if not exc.name or exc.name.split(".")[0] == __name__.split(".")[0]:
                raise
            for command in (c for c, m in SUBCOMMANDS.items() if m == name and c not in sub.choices):
                _unavailable(sub, command, exc.name)
    return p


def _unavailable(sub, command: str, missing: str) -> None:
    """``command`` as a subcommand that says, when called, which package this install lacks for it."""
    def refuse(args):
        from ..core.errors import HAEInputError

        raise HAEInputError(f"'napari-hae {command}' needs the package {missing!r}, which this install lacks (a "
                            "serve-only install, as on a microscope PC, has numpy, scipy and pyzmq only).",
                            "install napari-hae with its dependencies (pip install napari-hae), or run this "
                            "command on the analysis PC.")

    sp = sub.add_parser(command, help=f"(not in this install: needs {missing})", add_help=False)
    # whatever options follow are this command's, which this install cannot read: all taken, refused as one
    sp.parse_known_args = lambda args=None, namespace=None: (argparse.Namespace(func=refuse), [])


def explicit_options(argv) -> set[str]:
    """The destinations of the options the user actually gave in ``argv`` (whatever their values), e.g. to tell
    ``--resume RUN --policy ucb`` from a bare ``--resume RUN`` when ucb is the default."""
    p = build_parser(argv)
    for group in p._subparsers._group_actions:   # every subcommand's options without defaults
        for sp in group.choices.values():
            for a in sp._actions:
                a.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv))) - {"command"}


def _log_level(args) -> int:
    return {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(2, args.verbose - args.silent)), logging.DEBUG)


def main(argv=None) -> int:
    from ..core.errors import HAEInputError

    # this process is ours (not napari's): OpenMP threads that finish a parallel region sleep at once instead of
    # spinning (~200 ms by default), so that a fit's threads leave the CPU to the rest. Read when torch loads its
    # OpenMP runtime (no subcommand has imported torch yet); a value the user set is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv).parse_args(argv)
        logging.basicConfig(level=_log_level(args), format="%(levelname)s %(name)s: %(message)s")
        if args.verbose < 2:   # the libraries' own deprecation notices are not the user's business, unless debugging
            for module in ("torch", "gpytorch", "linear_operator", "atomai"):
                warnings.filterwarnings("ignore", category=FutureWarning, module=module)
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
