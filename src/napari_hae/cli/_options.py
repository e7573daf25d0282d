"""Option helpers shared by the subcommands: data sources, target, policy and model options generated from the
registries' parameter specs, and the settings they make. Defaults come from :class:`ExperimentSettings`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..core.errors import HAEInputError

# The registries (and torch behind the model registry) are imported by the helpers that need them, so that
# 'napari-hae serve' on a microscope PC imports numpy and pyzmq only (tests/test_architecture.py checks it).


def at_least(low: int):
    """An argparse type: a whole number >= ``low`` (refused by the parser with a sentence, not a hang later)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is below the minimum {low}")
        return v
    parse.__name__ = f"integer >= {low}"
    return parse


def defaults():
    """The one set of run defaults (:class:`ExperimentSettings`)."""
    from ..core.run.settings import ExperimentSettings

    return ExperimentSettings()


def add_source(p: argparse.ArgumentParser, required: bool = False, extra=()):
    """--sample / --spectrum [--image]: the pre-acquired data a simulated microscope replays."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--sample", help="bundled sample dataset, e.g. 'nanoparticles'")
    g.add_argument("--spectrum", help="spectrum image file read by HyperSpy (.dm3/.dm4/.emd/.hspy/.bcf/.npz)")
    for args, kw in extra:
        g.add_argument(*args, **kw)
    p.add_argument("--image", help="structural (HAADF) image file on the same scan grid (with --spectrum)")
    return g


def source(args, noise: str = "none") -> dict:
    """Where the data came from, recorded in the trace so that --resume and report can find it again."""
    if args.sample:
        return {"sample": args.sample, "noise": noise}
    return {"spectrum": _resolved(args.spectrum), "image": _resolved(args.image) if args.image else None,
            "noise": noise}


def _resolved(path: str) -> str:
    try:
        return str(Path(path).resolve(strict=False))
    except (RuntimeError, OSError) as exc:   # a symbolic-link loop
        raise HAEInputError(f"{path!r} cannot be resolved ({exc}).",
                            "give the path of the file itself (a symbolic link that points back on itself never "
                            "reaches one).") from None


def add_microscope(p: argparse.ArgumentParser) -> None:
    from ..core.instrument.adapters import MICROSCOPES

    p.add_argument("--microscope", metavar="NAME[:PARAM=V,...]",
                   help="the instrument, a registered adapter with its parameters, e.g. simulator:noise=poisson or "
                        "remote:address=tcp://host:5555 (a bare tcp://HOST:PORT means remote); default: the simulator "
                        f"on --sample/--spectrum. Installed: {MICROSCOPES.help_text()}")
    p.add_argument("--token", help="access token of a remote microscope (default: $NAPARI_HAE_TOKEN)")


def microscope(args) -> tuple[str, dict]:
    """(adapter name, parameters) from --microscope (and --token, --request-timeout, --noise)."""
    text = args.microscope or "simulator"
    if text.startswith("tcp://"):
        name, params = "remote", {"address": text}
    else:
        name, _, rest = text.partition(":")
        params = _json_params([item for item in rest.split(",") if item], "--microscope simulator:noise=poisson")
    if name == "remote":
        params.setdefault("timeout", getattr(args, "request_timeout", 10.0))
        if token(args):
            params["token"] = token(args)
    if name == "simulator" and getattr(args, "noise", "none") != "none":
        params.setdefault("noise", args.noise)
    return name.strip(), params


def replay_data(args, adapter: str, missing: str):
    """The data --sample/--spectrum give for ``adapter`` to replay (None when none is given); refused for an adapter
    that brings its own spectra. ``missing``: the fix when ``adapter`` replays data and none was given."""
    from ..core.data.io import load_source
    from ..core.instrument.adapters import MICROSCOPES

    needs_data = MICROSCOPES.get(adapter).extra.get("needs_data")
    given = bool(args.sample or args.spectrum)
    if given and not needs_data:
        raise HAEInputError(f"--sample/--spectrum give data to replay, but the {adapter!r} microscope brings its own "
                            "(its spectra would be compared with a file they did not come from).",
                            f"drop --sample/--spectrum for --microscope {adapter}, or use --microscope simulator.")
    if needs_data and not given:
        raise HAEInputError("No data given.", missing)
    return load_source(source(args)) if given else None


def token(args):
    return getattr(args, "token", None) or os.environ.get("NAPARI_HAE_TOKEN") or None


# -- target ---------------------------------------------------------------------------------------------------

def add_target(p: argparse.ArgumentParser) -> None:
    from ..core.targets.scalarizers import SCALARIZERS

    d = defaults()
    sc = d.scalarizer
    p.add_argument("--scalarizer", default=sc.name, choices=SCALARIZERS.names(), metavar="NAME",
                   help=f"registered scalarizer (default {sc.name}): {SCALARIZERS.help_text()}")
    p.add_argument("--band", nargs=2, type=float, metavar=("A", "B"),
                   help="energy band [A, B] in eV (default: the sample's dipole band, else the feature of the spectra "
                        "with the most structure in the scan, with a background window for a core-loss EELS edge)")
    p.add_argument("--band2", nargs=2, type=float, metavar=("A2", "B2"), help="second band for band_ratio (eV)")
    p.add_argument("--background", nargs=2, type=float, metavar=("C", "D"),
                   help="power-law background fit window (eV) subtracted first (core-loss EELS)")
    p.add_argument("--scalarizer-param", action="append", metavar="NAME=VALUE", default=[],
                   help="a further scalarizer parameter (repeatable; values are JSON, e.g. center=[31.5,31.5])")
    p.add_argument("--goal", choices=("max", "min"), default=d.goal,
                   help=f"maximise or minimise the scalarizer (default {d.goal})")


def scalarizer(args, name: str, energy, data=None):
    """The scalarizer of the options; without ``--band``, the band (and, unless ``--background`` is given, the
    background window) suggested from ``data``'s spectra (:func:`~napari_hae.core.targets.suggest.suggest_target`),
    said on stderr unless ``-q``."""
    from ..core.targets.scalarizers import SCALARIZERS, Scalarizer
    from ..core.targets.suggest import fallback_target, suggest_target

    entry = SCALARIZERS.get(args.scalarizer)
    takes = set(entry.param_names())
    params = _json_params(args.scalarizer_param, "--scalarizer-param center=[31.5,31.5]")
    if {"a", "b"} <= takes:
        if energy is None:
            raise HAEInputError(f"The scalarizer {args.scalarizer!r} needs spectra with an energy axis, but this "
                                "data has 2-D signals (4D-STEM diffraction patterns).",
                                "use --scalarizer com_magnitude (centre-of-mass shift) or another scalarizer for "
                                "2-D signals.")
        background = args.background
        if args.band:
            a, b = args.band
        else:
            sug = suggest_target(data) if data is not None else fallback_target(name, energy)
            (a, b), background = sug.band, background or sug.background
            if not getattr(args, "quiet", False):
                bg = f", background {background[0]:g}-{background[1]:g} eV" if background else ""
                print(f"target: band {a:g}-{b:g} eV{bg}: {sug.reason}. Fix: give --band A B (eV) "
                      f"[--background C D] for another.", file=sys.stderr)
        params.update(a=a, b=b)
    else:
        background = args.background
    if {"a2", "b2"} <= takes:
        if not args.band2:
            raise HAEInputError(f"{args.scalarizer} needs a second band.", "add --band2 A2 B2 (eV).")
        params.update(a2=args.band2[0], b2=args.band2[1])
    SCALARIZERS.check_params(args.scalarizer, params)
    return Scalarizer(args.scalarizer, params, tuple(background) if background else None)


# -- policy: one option per parameter of any registered policy -------------------------------------------------

def _policy_params() -> dict:
    """parameter name -> (spec, [policies taking it]) over every registered policy (plug-ins included)."""
    from ..core.policy import POLICIES

    out: dict = {}
    for e in POLICIES.entries():
        for spec in e.params:
            out.setdefault(spec.name, (spec, []))[1].append(e.name)
    return out


def add_policy(p: argparse.ArgumentParser, multiple: bool = False) -> None:
    from ..core.policy import POLICIES

    pol = defaults().policy
    if multiple:   # sweeps: several policies, each as NAME[:PARAM=V,...]
        p.add_argument("--policy", nargs="+", default=["ei:xi=0.01", "ei:xi=0.1", "ucb:beta=1", "ucb:beta=4", "mu"],
                       help=f"policies as NAME[:PARAM=VALUE[,...]], e.g. ei:xi=0.05; registered: "
                            f"{POLICIES.help_text()}")
        return
    p.add_argument("--policy", default=pol.name, choices=POLICIES.names(), metavar="NAME",
                   help=f"acquisition policy (default {pol.name}): {POLICIES.help_text()}")
    for name, (spec, owners) in _policy_params().items():
        unit = f" ({spec.unit})" if spec.unit else ""
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"policy_{name}", type=float, default=None,
                       metavar=name.upper(),
                       help=f"{spec.help or name}{unit}; parameter of {', '.join(owners)}")


def policy(args) -> dict:
    from ..core.policy import POLICIES

    params = {}
    entry = POLICIES.get(args.policy)
    for name in _policy_params():
        v = getattr(args, f"policy_{name}", None)
        if v is None:
            continue
        if name not in entry.param_names():
            raise HAEInputError(f"--{name.replace('_', '-')} is not a parameter of the policy {args.policy!r}.",
                                f"its parameters are {entry.param_names() or 'none'}.")
        params[name] = int(v) if isinstance(entry.params[entry.param_names().index(name)].default, int) else v
    return {"name": args.policy, "params": params}


# -- model ------------------------------------------------------------------------------------------------------

def add_model(p: argparse.ArgumentParser) -> None:
    from ..core.model import MODELS

    name = defaults().model.name
    p.add_argument("--model", default=name, choices=MODELS.names(), metavar="NAME",
                   help=f"surrogate model (default {name}): {MODELS.help_text()}")
    p.add_argument("--model-param", action="append", metavar="NAME=VALUE", default=[],
                   help="a model parameter (repeatable; values are JSON, e.g. hidden=[32,16])")


def model(args) -> dict:
    from ..core.model import MODELS

    params = _json_params(args.model_param, "--model-param hidden=[32,16]")
    MODELS.check_params(args.model, params)
    return {"name": args.model, "params": params}


def _json_params(items, example: str) -> dict:
    """``["hidden=[32,16]", "noise=poisson"]`` -> ``{"hidden": [32, 16], "noise": "poisson"}`` (JSON, else text)."""
    out = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise HAEInputError(f"{item!r} is not NAME=VALUE.", f"write e.g. {example}.")
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v.strip()
    return out


def objective_text(text: str) -> dict:
    """``band_integral:a=3.45,b=4.05`` -> a scalarizer dict (values in eV)."""
    from ..core.registry import parse_name_params

    return parse_name_params(text, "--also band_integral:a=3.45,b=4.05")


__all__ = ["at_least", "defaults", "add_source", "source", "replay_data", "token", "add_microscope", "microscope",
           "add_target", "scalarizer", "add_policy", "policy", "add_model", "model", "objective_text"]
