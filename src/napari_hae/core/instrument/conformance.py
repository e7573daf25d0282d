"""The adapter conformance kit: what every microscope adapter must do, checked on the adapter itself.

Run it on yours with ``napari-hae check-microscope NAME[:param=value,...]`` (a table and exit code 1 on a
failure), or from your tests::

    from napari_hae.core.instrument.conformance import check_microscope
    report = check_microscope(lambda: make_my_scope())
    assert report.ok, report.text()

``make`` is called to create the instrument (twice: the second time for the resume check) and each one is closed
(``close()``) after the checks. Checks that need a capability the adapter does not have are skipped, not failed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import HAEInputError, InstrumentRefused, MicroscopeFault
from .capabilities import Reconnects, ReplaysData, ReportsBeamTime, can_blank, takes_dwell
from .guard import AcquisitionGuard
from .registration import register


@dataclass
class Check:
    name: str
    outcome: str          # "pass", "fail" or "skip"
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.outcome != "fail" for c in self.checks)

    def text(self) -> str:
        w = max(len(c.name) for c in self.checks)
        return "\n".join(f"{c.outcome.upper():4}  {c.name:<{w}}  {c.detail}" for c in self.checks)

    def outcome(self, name: str) -> str:
        """"pass", "fail", "skip", or "not run" (a check after a failed interface check)."""
        return next((c.outcome for c in self.checks if c.name == name), "not run")


class _Counting:
    """``mic`` with its acquisitions counted, and how many ran at once."""

    def __init__(self, mic):
        self.inner, self.now, self.most, self._lock = mic, 0, 0, threading.Lock()

    def acquire(self, y, x, **kw):
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self.inner.acquire(y, x, **kw)
        finally:
            with self._lock:
                self.now -= 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _spectrum_scalar(s: np.ndarray) -> float:
    return float(np.sum(s))


def check_microscope(make: Callable[[], object], dwell: float = 0.05) -> Report:
    """Run every check on the instrument ``make()`` returns."""
    report = Report()
    add = report.checks.append
    mic = make()
    try:
        _check_interface(mic, add)
        usable = report.ok   # the rest needs a structural image and spectra to look at
        if usable:
            _check_positions(mic, add)
            _check_dwell(mic, add, dwell)
            _check_beam_time(mic, add, dwell)
            _check_blanking(mic, add)
            _check_one_in_flight(mic, add)
            _check_reconnect(mic, add)
    finally:
        _close(mic)
    if usable:
        _check_resume(make, add)
    return report


def _close(mic) -> None:
    close = getattr(mic, "close", None)
    if callable(close):
        close()


def _check_interface(mic, add) -> None:
    ny, nx = (int(v) for v in mic.scan_shape)
    img = np.asarray(mic.structural_image(), dtype=np.float64)
    if img.shape != (ny, nx) or not np.isfinite(img).all():
        add(Check("structural image", "fail", f"shape {img.shape} (scan {ny} x {nx}), "
                                              f"{int((~np.isfinite(img)).sum())} non-finite values"))
        return
    add(Check("structural image", "pass", f"{ny} x {nx}, finite"))
    e = mic.energy
    if e is not None and not e.calibrated:
        add(Check("energy axis", "fail", f"uncalibrated ({e.units!r}): bands would be in channels"))
    else:
        add(Check("energy axis", "pass", "none (2-D signals)" if e is None else
                  f"{e.size} channels, {e.offset:g} + {e.scale:g} x i {e.units}"))


def _check_positions(mic, add) -> None:
    """Spectra where the image says: finite at the four corners (a swapped row and column fails on a
    non-square field), a request outside the field refused cleanly, and the spectra's total over a grid
    related to the image more than the same spectra to the image's transpose (on a square field)."""
    ny, nx = mic.scan_shape
    shape = tuple(mic.signal_shape)
    for y, x in ((0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1)):
        try:
            s = np.asarray(mic.acquire(y, x), dtype=np.float64)
        except Exception as exc:  # a swapped axis raises IndexError here
            add(Check("corners", "fail", f"acquire({y}, {x}) raised {type(exc).__name__}: {exc}"))
            return
        if s.shape != shape or not np.isfinite(s).all():
            add(Check("corners", "fail", f"acquire({y}, {x}) gave shape {s.shape} (expected {shape}) or NaN"))
            return
    add(Check("corners", "pass", f"the four corners of {ny} x {nx} give finite spectra of {shape}"))
    try:
        mic.acquire(ny, nx)
        add(Check("outside the field", "fail", f"acquire({ny}, {nx}) returned a spectrum"))
    except (HAEInputError, InstrumentRefused) as exc:
        add(Check("outside the field", "pass", f"refused: {type(exc).__name__}"))
    except Exception as exc:
        add(Check("outside the field", "fail", f"{type(exc).__name__} ({exc}): raise InstrumentRefused, so the "
                                               "run pauses with a reason instead of retrying"))
    img = np.asarray(mic.structural_image(), dtype=np.float64)
    k = max(2, min(ny, nx) // 6)
    grid = [(y, x) for y in range(k // 2, ny, k) for x in range(k // 2, nx, k)][:64]
    values = np.array([_spectrum_scalar(np.asarray(mic.acquire(y, x))) for y, x in grid])
    here = abs(_corr(values, [img[p] for p in grid]))
    if ny == nx:
        swapped = abs(_corr(values, [img[x, y] for y, x in grid]))
        outcome = "pass" if here > swapped else "fail"
        add(Check("spectra match the image", outcome, f"|corr(total counts, image)| {here:.2f} where the image "
                                                      f"says, {swapped:.2f} with rows and columns swapped"))
    else:
        add(Check("spectra match the image", "pass" if here >= 0.1 else "skip",
                  f"|corr(total counts, image)| {here:.2f} (rows and columns checked by the corners)"))


def _corr(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _check_dwell(mic, add, dwell: float) -> None:
    if not takes_dwell(mic):
        add(Check("dwell", "skip", "acquire(y, x) takes no dwell: the instrument's own exposure is used"))
        return
    t = [min(_timed_acquire(mic, d) for _ in range(DWELL_TRIES)) for d in (dwell / 10, dwell)]
    ok = t[1] >= 0.9 * dwell and t[1] - t[0] >= 0.5 * (dwell - dwell / 10)
    add(Check("dwell", "pass" if ok else "fail", f"acquire with dwell {dwell / 10:g} s took {t[0]:.3f} s, with "
                                                 f"{dwell:g} s {t[1]:.3f} s (shortest of {DWELL_TRIES})"))


DWELL_TRIES = 3   # a busy PC only adds time to a call: the shortest of a few is the instrument's own (one call each
                  # failed the check on a loaded machine: 0.046 s for a 0.005 s dwell)


def _timed_acquire(mic, dwell: float) -> float:
    t0 = time.perf_counter()
    mic.acquire(0, 0, dwell=dwell)
    return time.perf_counter() - t0


BEAM_PER_DWELL = 1.2   # most beam time per point a conforming adapter spends, in dwells (the trace's beam_on_s)
BEAM_CHECK_DWELL = 0.2   # s: the shortest dwell the beam time is checked at (a typical EELS dwell)


def _check_beam_time(mic, add, dwell: float) -> None:
    """The beam time the run records per point (:class:`AcquisitionGuard`'s ledger) against the dwell: an adapter
    that waits for a frame in progress, or reads a whole extra frame, spends dose the spectrum does not show."""
    from .guard import AcquisitionGuard

    if not takes_dwell(mic):
        add(Check("beam time", "skip", "acquire(y, x) takes no dwell: nothing to compare the beam time with"))
        return
    if isinstance(mic, ReplaysData):
        add(Check("beam time", "skip", "it replays pre-acquired data: no beam to account for"))
        return
    dwell = max(dwell, BEAM_CHECK_DWELL)   # a fixed few ms of readout is not the fault looked for here
    guard = AcquisitionGuard(mic, retries=0, timeout=max(10.0, 20 * dwell), dwell=dwell)
    try:
        shape = tuple(mic.signal_shape)
        spent = []
        for x in range(3):
            guard(0, x, shape)
            spent.append(guard.last_beam_on_s)
    finally:
        guard.close()
    ratio = float(np.median(spent)) / dwell
    how = "the instrument's figure" if isinstance(mic, ReportsBeamTime) else "unblank to blank" if can_blank(mic) \
        else "the beam is never blanked: since the previous acquisition"
    add(Check("beam time", "pass" if ratio <= BEAM_PER_DWELL else "fail",
              f"beam on {ratio:.2f} x the dwell of {dwell:g} s per spectrum (median of 3; {how}; at most "
              f"{BEAM_PER_DWELL:g} x passes)"))


def _check_blanking(mic, add) -> None:
    if not can_blank(mic):
        add(Check("blanking", "skip", "no blank()/unblank(): the beam stays on while the model fits"))
        return
    calls = []
    guard = AcquisitionGuard(_Logging(mic, calls), timeout=None, blank=True)
    guard(0, 0, tuple(mic.signal_shape))
    ok = calls == ["unblank", "acquire", "blank"]
    add(Check("blanking", "pass" if ok else "fail", f"around an acquisition: {calls}"))


class _Logging(_Counting):
    def __init__(self, mic, calls):
        super().__init__(mic)
        self.calls = calls

    def acquire(self, y, x, **kw):
        self.calls.append("acquire")
        return super().acquire(y, x, **kw)

    def blank(self):
        self.calls.append("blank")
        self.inner.blank()

    def unblank(self):
        self.calls.append("unblank")
        self.inner.unblank()


def _check_one_in_flight(mic, add) -> None:
    """Acquisitions under a timeout far shorter than they take: never two at once, and the run pauses."""
    counting = _Counting(mic)
    guard = AcquisitionGuard(counting, retries=2, timeout=1e-4, wait=0.0)
    t0 = time.perf_counter()
    faults = 0
    for y, x in ((0, 0), (0, 1), (1, 0)):
        try:
            guard(y, x, tuple(mic.signal_shape))
        except MicroscopeFault:
            faults += 1
    guard.close()
    time.sleep(0.05)
    ok = counting.most <= 1
    add(Check("one acquisition in flight", "pass" if ok else "fail",
              f"at most {counting.most} at once under a 0.1 ms timeout ({faults} of 3 paused the run, "
              f"{time.perf_counter() - t0:.2f} s)" + ("" if callable(getattr(mic, "abort", None)) else "; no abort()")))


def _check_reconnect(mic, add) -> None:
    """After ``reconnect()`` (what the run calls when the connection was lost) the session is whole again: a spectrum
    comes back at the field's centre and the structural image is the same field. A server that gives each
    connection a fresh state (DTMicroscope's) needs the adapter to restore it."""
    if not isinstance(mic, Reconnects):
        add(Check("reconnect", "skip", "no reconnect(): a lost connection pauses the run"))
        return
    ny, nx = (int(v) for v in mic.scan_shape)
    before = np.asarray(mic.structural_image(), dtype=np.float64)
    y, x = ny // 2, nx // 2
    try:
        mic.reconnect()
        s = np.asarray(mic.acquire(y, x), dtype=np.float64)
        after = np.asarray(mic.structural_image(), dtype=np.float64)
    except Exception as exc:  # what a run's retry would meet
        add(Check("reconnect", "fail", f"after reconnect() acquire({y}, {x}) raised {type(exc).__name__}: {exc}; "
                                       "restore the session (initialise, load the data) in reconnect()"))
        return
    same = after.shape == before.shape and _corr(before.ravel(), after.ravel()) >= 0.9
    ok = same and s.shape == tuple(mic.signal_shape) and bool(np.isfinite(s).all())
    add(Check("reconnect", "pass" if ok else "fail",
              f"after reconnect(): a spectrum of {s.shape} at ({y}, {x}); the structural image "
              f"{'is the same field' if same else 'shows another field'}"))


def _check_resume(make, add) -> None:
    """A second instance's structural image registers to the first's, and a known drift is found."""
    first = make()
    try:
        a = np.asarray(first.structural_image(), dtype=np.float64)
    finally:
        _close(first)
    second = make()
    try:
        b = np.asarray(second.structural_image(), dtype=np.float64)
    finally:
        _close(second)
    try:
        d, _, corr = register(a, b)
        drift, _, corr2 = register(a, np.roll(b, (2, -3), axis=(0, 1)))
    except HAEInputError as exc:
        add(Check("resume by registration", "fail", str(exc)))
        return
    ok = drift == (d[0] + 2, d[1] - 3)
    add(Check("resume by registration", "pass" if ok else "fail",
              f"a re-created instrument's image registers with shift {d} (correlation {corr:.2f}); a drift of "
              f"(2, -3) px more is found as {drift}"))
