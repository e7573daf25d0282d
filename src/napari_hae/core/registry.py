"""Plug-in registries: scalarizers, policies, surrogate models and microscope adapters, each with parameter specs.

Every registered entry carries :class:`ParamSpec` s (name, default, unit, range, help). The command line and the
napari dock build their options and forms from these specs, so a plug-in appears in both without editing either.

Third-party packages add entries through entry points, one group per registry::

    [project.entry-points."napari_hae.policies"]
    greedy = "my_package.policies:Greedy"          # an AcquisitionFunction subclass

    [project.entry-points."napari_hae.scalarizers"]
    band_std = "my_package.targets:band_std"       # func(spectra, energy, *, a, b)

    [project.entry-points."napari_hae.models"]
    my_dkl = "my_package.models:MyModel"           # cls(input_dim, *, seed, **params) -> SurrogateModel

    [project.entry-points."napari_hae.microscopes"]
    my_scope = "my_package.scopes:MyMicroscope"

The entry point's name is the registered name. Loading the object may register it itself (with the decorators
``register_policy`` etc.); otherwise the registry registers it under the entry point's name. Entry points are
loaded the first time a registry is asked for its names or an entry.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import HAEInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a registered plug-in: what forms and command-line options are made from."""

    name: str
    default: Any = None
    unit: str = ""
    low: float | None = None
    high: float | None = None
    help: str = ""
    choices: tuple | None = None   # the allowed values of an enumerated parameter
    secret: bool = False           # a password or token: never echoed or recorded

    @property
    def kind(self) -> type:
        if isinstance(self.default, bool):
            return bool
        if isinstance(self.default, int):
            return int
        if isinstance(self.default, float):
            return float
        return object

    def describe(self) -> str:
        """``xi (0.01 std. units, 0-10)``: for --help and tooltips."""
        unit = f" {self.unit}" if self.unit else ""
        parts = []
        if self.choices:
            parts.append("|".join(map(str, self.choices)))
        if self.default is not None and not self.secret:
            parts.append(f"{_num(self.default)}{unit}")
        elif unit:
            parts.append(unit.strip())
        if self.low is not None or self.high is not None:
            parts.append(f"{_num(self.low) if self.low is not None else ''}-"
                         f"{_num(self.high) if self.high is not None else ''}")
        return f"{self.name} ({', '.join(parts)})" if parts else self.name


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def specs_from_signature(func: Callable, given: tuple[ParamSpec, ...] = (), keyword_only: bool = False,
                         skip: tuple[str, ...] = ("self",)) -> tuple[ParamSpec, ...]:
    """Parameter specs of ``func``: those ``given`` (with units and ranges), the rest from the signature."""
    known = {p.name: p for p in given}
    out = []
    for p in inspect.signature(func).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if keyword_only and p.kind != p.KEYWORD_ONLY:
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        out.append(known.pop(p.name, ParamSpec(p.name, default)))
    return tuple(out) + tuple(known.values())


@dataclass
class Entry:
    name: str
    obj: Any
    params: tuple[ParamSpec, ...] = ()
    doc: str = ""
    extra: dict = field(default_factory=dict)   # registry-specific (e.g. a scalarizer's signal_ndim)

    def param_names(self) -> list[str]:
        return [p.name for p in self.params]


def _misfit(v, spec: ParamSpec) -> str:
    """Why ``v`` is not a number of ``spec``'s kind (an int: whole) within its range ("" when it is)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or \
            (spec.kind is int and float(v) != int(v)):
        return "not a whole number" if spec.kind is int else "not a number"
    if spec.low is not None and v < spec.low:
        return f"not >= {spec.low:g}"
    if spec.high is not None and v > spec.high:
        return f"not <= {spec.high:g}"
    return ""


class Registry:
    """Named plug-ins of one kind, filled by decorators and by the entry-point group ``group``."""

    def __init__(self, kind: str, group: str, describe: Callable[[Any, str], Entry] | None = None):
        self.kind = kind              # "policy", "scalarizer", ... (used in messages)
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._describe = describe     # obj, name -> Entry, for objects loaded from entry points
        self._loaded = False
        self.load_errors: dict[str, str] = {}

    # -- filling ------------------------------------------------------------------------------------------
    def add(self, entry: Entry) -> Entry:
        self._entries[entry.name] = entry
        return entry

    def load_entry_points(self, force: bool = False) -> None:
        """Import the plug-ins of other packages (once). A plug-in that fails to import is reported, not fatal."""
        if self._loaded and not force:
            return
        self._loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            if ep.name in self._entries and not force:
                continue
            try:   # loaded in isolation: a broken plug-in is reported by name and skipped, never fatal
                obj = ep.load()
                if not callable(obj):
                    raise TypeError(f"{ep.value} is a {type(obj).__name__}, not a class or function")
                entry = self._describe(obj, ep.name) if self._describe is not None else None
            except (Exception, SystemExit) as exc:   # SystemExit too: a plug-in must not end the program
                self.load_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("napari-hae: %s plug-in %r (%s) failed to load and is skipped: %s", self.kind, ep.name,
                            ep.value, self.load_errors[ep.name])
                continue
            if ep.name not in self._entries and entry is not None:
                self.add(entry)

    # -- reading ------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self.load_entry_points()
        return list(self._entries)

    def entries(self) -> Iterator[Entry]:
        self.load_entry_points()
        return iter(list(self._entries.values()))

    def get(self, name: str) -> Entry:
        self.load_entry_points()
        if name not in self._entries:
            hint = f" (plug-in failed to load: {self.load_errors[name]})" if name in self.load_errors else ""
            raise HAEInputError(f"Unknown {self.kind} {name!r}{hint}.",
                                f"choose one of {sorted(self._entries)}, or register your own "
                                f"(decorator, or an entry point in the group {self.group!r}).")
        return self._entries[name]

    def with_defaults(self, name: str, params: dict) -> dict:
        """``params`` completed with the defaults of ``name``'s other parameters (secrets left out): what a record
        needs so that a later change of a default does not change what it rebuilds."""
        return {**{p.name: (list(p.default) if isinstance(p.default, tuple) else p.default)
                   for p in self.get(name).params if not p.secret and p.default is not None}, **params}

    def check_params(self, name: str, params: dict) -> None:
        """Raise when ``params`` names a parameter that ``name`` does not take, or a value outside its choices."""
        entry = self.get(name)
        unknown = set(params) - set(entry.param_names())
        if unknown:
            raise HAEInputError(f"The {self.kind} {name!r} has no parameter(s) {sorted(unknown)}.",
                                f"its parameters are {entry.param_names() or 'none'}.")
        for spec in entry.params:
            if spec.name not in params:
                continue
            v = params[spec.name]
            if spec.choices and v not in spec.choices:
                raise HAEInputError(f"The {self.kind} {name!r} got {spec.name}={v!r}.",
                                    f"use one of {list(spec.choices)}.")
            if spec.kind in (int, float) and (why := _misfit(v, spec)):
                raise HAEInputError(f"The {self.kind} {name!r} got {spec.name}={v!r}, which is {why}.",
                                    f"give {spec.describe()}.")

    def __contains__(self, name) -> bool:
        self.load_entry_points()
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def pop(self, name: str, *default):
        """Remove an entry (tests register temporary plug-ins)."""
        return self._entries.pop(name, *default)

    def help_text(self) -> str:
        """One line per entry: ``name(param (default ...), ...)``: for --help and tooltips."""
        return "; ".join(f"{e.name}({', '.join(p.describe() for p in e.params)})" if e.params else e.name
                         for e in self.entries())


# -- registries written as text -----------------------------------------------------------------------------

def parse_name_params(text: str, example: str) -> dict:
    """``"ei:xi=0.05"`` -> ``{"name": "ei", "params": {"xi": 0.05}}``; values are floats. ``example`` is shown in
    the error message of malformed text."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        try:
            if not eq:
                raise ValueError
            params[k.strip()] = float(v)
        except ValueError:
            raise HAEInputError(f"Parameter {item!r} in {text!r} is not name=value (a number).",
                                f"write e.g. {example}.") from None
    return {"name": name.strip(), "params": params}
