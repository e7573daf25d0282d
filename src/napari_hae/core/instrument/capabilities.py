"""What an instrument may do beyond :class:`~napari_hae.core.instrument.microscope.Microscope`: each capability a
declared, runtime-checkable protocol, checked with ``isinstance`` (as ophyd's and Nion's device protocols).

| protocol | methods | what the run does with it |
|---|---|---|
| :class:`Blanks` | ``blank()``, ``unblank()`` | blanks the beam between acquisitions (while the model fits) |
| :class:`Aborts` | ``abort()`` | ends an acquisition that ran past its timeout (called from another thread) |
| :class:`Reconnects` | ``reconnect()`` | re-opens a lost session before a retry |
| :class:`AcquiresMany` | ``acquire_many(positions, dwell=...)`` | acquires the seeds in one call |
| :class:`ReportsEnergy` | ``last_energy`` (an ``EnergyAxis``) | refuses a spectrum whose energy axis moved |
| :class:`ReplaysData` | ``data`` (a ``SpectrumImage``) | records the data's fingerprint; a resume checks it |
| :class:`Closes` | ``close()`` | releases the instrument when the run ends (beam blanked, cameras stopped) |
| :class:`ReacquiresImage` | ``acquire_structural_image()`` | follows drift during a run (``drift_every``) |
| :class:`ServedCapabilities` | ``capabilities`` (a dict) | a served instrument's client: what the one behind it does |

``acquire(y, x, dwell=...)`` (seconds per spectrum) is a keyword, not a method, so it cannot be a structural
protocol: :func:`takes_dwell` reads the signature. Errors an adapter raises:
:class:`~napari_hae.core.errors.InstrumentRefused` (not retried), :class:`~napari_hae.core.errors.
InstrumentDisconnected` (``reconnect()`` first), anything else (retried).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Blanks(Protocol):
    def blank(self) -> None: ...

    def unblank(self) -> None: ...


@runtime_checkable
class Aborts(Protocol):
    def abort(self) -> None: ...


@runtime_checkable
class Reconnects(Protocol):
    def reconnect(self) -> None: ...


@runtime_checkable
class AcquiresMany(Protocol):
    def acquire_many(self, positions, dwell: float | None = None) -> Any: ...


@runtime_checkable
class ReplaysData(Protocol):
    data: Any


@runtime_checkable
class Closes(Protocol):
    def close(self) -> None: ...


@runtime_checkable
class ReportsEnergy(Protocol):
    last_energy: Any


@runtime_checkable
class ReportsBeamTime(Protocol):
    """``last_beam_on_s``: seconds the beam was on for the latest ``acquire`` as the instrument (or the adapter,
    between its own unblank and blank) measured it; NaN when it cannot say. Without it the guard measures the time
    between its unblank and blank calls."""

    last_beam_on_s: float


@runtime_checkable
class ReacquiresImage(Protocol):
    """``acquire_structural_image()``: a fresh structural image of the field as it is now (a scan: it costs dose; the
    adapter blanks the beam again afterwards), in the run's scan geometry; ``last_image_beam_on_s``: how long the
    beam was on for it (NaN: unknown)."""

    def acquire_structural_image(self) -> Any: ...


@runtime_checkable
class ServedCapabilities(Protocol):
    capabilities: dict


def _served(microscope) -> dict | None:
    caps = microscope.capabilities if isinstance(microscope, ServedCapabilities) else None
    return caps if isinstance(caps, dict) else None


def takes_dwell(microscope) -> bool:
    """Whether ``microscope.acquire`` takes a ``dwell`` keyword (a wrapper's: its ``inner`` microscope's)."""
    while "inner" in getattr(microscope, "__dict__", {}):   # a wrapper (registration, a test's counter)
        microscope = microscope.inner
    if (caps := _served(microscope)) is not None:
        return bool(caps.get("dwell"))
    try:
        params = inspect.signature(microscope.acquire).parameters
    except (TypeError, ValueError):   # a C or remote callable without a signature: ask it for nothing new
        return False
    return "dwell" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@runtime_checkable
class TakesFractions(Protocol):
    """``subpixel``: True when ``acquire(y, x)`` takes fractional pixel coordinates (the probe parked between pixel
    centres): a resume on a re-acquired image then sends each position by the sub-pixel drift, not rounded."""

    subpixel: bool


def takes_fractions(microscope) -> bool:
    return isinstance(microscope, TakesFractions) and microscope.subpixel is True


@runtime_checkable
class DwellRange(Protocol):
    """``dwell_range``: (shortest, longest) dwell in seconds the instrument can expose; a run asking for one outside
    it is refused before anything is measured."""

    dwell_range: tuple[float, float]


def dwell_range(microscope) -> tuple[float, float] | None:
    """The instrument's dwell range in seconds (a served one's as its server says), or None when it states none."""
    caps = _served(microscope)
    got = caps.get("dwell_range") if caps is not None else \
        microscope.dwell_range if isinstance(microscope, DwellRange) else None
    if got is None:
        return None
    lo, hi = (float(v) for v in got)
    return lo, hi


def can_blank(microscope) -> bool:
    """Whether the run may blank the beam: :class:`Blanks`, unless a served instrument says it cannot."""
    caps = _served(microscope)
    return isinstance(microscope, Blanks) and (caps is None or bool(caps.get("blank")))
