"""Microscope adapters: named factories of :class:`~napari_hae.core.instrument.microscope.Microscope` objects,
registered like the other plug-ins, so the command line (``run --microscope NAME[:PARAM=V,...]``) and the dock
offer every installed adapter with a form made from its parameters.

An adapter is ``factory(data, *, seed=0, **params) -> Microscope``; ``data`` is the pre-acquired dataset the user
selected (a simulator replays it; a live instrument ignores it) and ``seed`` the run's random seed. Register one
with :func:`register_microscope` or an entry point in the group ``napari_hae.microscopes``; a factory that
replays data sets ``needs_data = True`` (attribute or decorator argument).
"""

from __future__ import annotations

import os

from ..errors import HAEInputError
from ..registry import Entry, ParamSpec, Registry, specs_from_signature
from .capabilities import Closes
from .microscope import SimulatedMicroscope


def _entry(factory, name: str, params=(), needs_data: bool | None = None) -> Entry:
    specs = tuple(params) or tuple(getattr(factory, "params", ())) \
        or specs_from_signature(factory, keyword_only=True, skip=("seed",))
    needs = bool(getattr(factory, "needs_data", False)) if needs_data is None else needs_data
    return Entry(name, factory, specs, (factory.__doc__ or "").strip().split("\n")[0], {"needs_data": needs})


MICROSCOPES = Registry("microscope", "napari_hae.microscopes", describe=lambda obj, name: _entry(obj, name))


def register_microscope(name: str, params: tuple[ParamSpec, ...] = (), needs_data: bool = False):
    """Decorator adding an adapter factory ``factory(data, *, seed=0, **params)`` under ``name``."""

    def deco(factory):
        MICROSCOPES.add(_entry(factory, name, params, needs_data))
        return factory

    return deco


def make_microscope(name: str, data=None, seed: int = 0, **params):
    """The microscope of the registered adapter ``name`` with ``params`` (checked against its specs)."""
    entry = MICROSCOPES.get(name)
    MICROSCOPES.check_params(name, params)
    if entry.extra.get("needs_data") and data is None:
        raise HAEInputError(f"The {name!r} microscope replays pre-acquired data, but none was given.",
                            "give the data (--sample NAME or --spectrum FILE; in napari, open a dataset).")
    return entry.obj(data, seed=int(seed), **params)


def close_microscope(mic) -> None:
    """Release an instrument the run made (blank the beam, stop its cameras, end a simulator): its ``close()``."""
    if isinstance(mic, Closes):
        mic.close()


def recorded_params(name: str, params: dict) -> dict:
    """``params`` without secrets (tokens), for the trace."""
    secret = {p.name for p in MICROSCOPES.get(name).params if p.secret}
    return {k: v for k, v in params.items() if k not in secret}


@register_microscope("simulator", needs_data=True, params=(
    ParamSpec("noise", "none", help="'none' replays the stored spectra; 'poisson' re-draws counting noise",
              choices=("none", "poisson")),))
def simulator(data, *, seed: int = 0, noise: str = "none"):
    """Replays a pre-acquired spectrum image (optionally with fresh Poisson noise per acquisition)."""
    return SimulatedMicroscope(data, noise=None if noise == "none" else noise, seed=seed)


@register_microscope("remote", params=(
    ParamSpec("address", "tcp://127.0.0.1:5555", help="where 'napari-hae serve' (or a vendor server) listens"),
    ParamSpec("token", "", help="access token of the server (default: $NAPARI_HAE_TOKEN)", secret=True),
    ParamSpec("timeout", 10.0, "s", 0.1, 3600.0, "seconds to wait for each answer"),
    ParamSpec("server_key", "", help="the server's CURVE public key (printed by 'napari-hae serve --curve'); "
                                     "needed for a server off loopback"),
))
def remote(data=None, *, seed: int = 0, address: str = "tcp://127.0.0.1:5555", token: str = "",
           timeout: float = 10.0, server_key: str = ""):
    """A microscope served over the network (ZeroMQ)."""
    from .remote import MicroscopeUnavailable, RemoteMicroscope

    try:
        return RemoteMicroscope(address.strip(), token=token or os.environ.get("NAPARI_HAE_TOKEN") or None,
                                timeout=float(timeout), server_key=server_key or None)
    except MicroscopeUnavailable as exc:
        raise HAEInputError(f"No microscope answers at {address} ({exc}).",
                            "start the server (napari-hae serve ...) or check the address.") from exc
