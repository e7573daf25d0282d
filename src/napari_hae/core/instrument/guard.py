"""Every call the run makes to an instrument goes through :class:`AcquisitionGuard`: the dwell passed on, the beam
blanked between acquisitions, one acquisition in flight at most, bounded retries, and errors told apart.

What the guard uses of a microscope beyond :class:`~napari_hae.core.instrument.microscope.Microscope` is declared
in :mod:`.capabilities` (runtime-checkable protocols: blanking, abort, reconnect, several points in one call, the
energy axis of the last spectrum), each optional.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import time
from collections.abc import Callable

import numpy as np

from ..errors import HAEInputError, InstrumentDisconnected, InstrumentRefused, MicroscopeFault, sentence
from .capabilities import (
    Aborts,
    AcquiresMany,
    Reconnects,
    ReplaysData,
    ReportsBeamTime,
    ReportsEnergy,
    can_blank,
    dwell_range,
    takes_dwell,
)

log = logging.getLogger(__name__)

MIN_GRACE = 1.0   # s an acquisition that timed out (and was aborted) gets to return before the run pauses


class _StillRunning(Exception):
    """The acquisition that timed out has not returned, even after abort: nothing else may start."""


class AcquisitionGuard:
    """Calls ``microscope.acquire`` with a timeout, checks what comes back, and retries a bounded number of times.

    A spectrum counts as failed if ``acquire`` raises, takes longer than ``timeout`` + ``dwell`` seconds, or
    returns an array of the wrong shape or with NaN/inf. :class:`HAEInputError` is a caller's bug and
    :class:`InstrumentRefused` the instrument's "no": neither is retried. After ``retries`` further failures
    :class:`MicroscopeFault` is raised; nothing is recorded for that position, so the run can pause and resume at
    the same step.

    ``timeout=None`` calls the microscope on the caller's thread. Otherwise every call runs on one thread that
    owns the instrument (never replaced). An acquisition that times out is aborted (``abort()``, if the
    microscope has it) and given ``max(timeout, 1 s)`` to return; until it has, no other acquisition starts and
    the run pauses. If it returns later with a spectrum of the position asked next, that spectrum is used.
    """

    def __init__(self, microscope, retries: int = 2, timeout: float | None = 120.0, wait: float = 0.5,
                 on_event: Callable[[str], None] | None = None, dwell: float | None = None, blank: bool = True,
                 energy=None):
        if int(retries) < 0:
            raise HAEInputError(f"acquire_retries={retries} is negative.", "use 0 or more retries.")
        if timeout is not None and not timeout > 0:
            raise HAEInputError(f"acquire_timeout={timeout} s is not positive.", "use seconds > 0, or None.")
        if dwell is not None and not takes_dwell(microscope):
            raise HAEInputError(f"The microscope ({type(microscope).__name__}) does not take a dwell time: its "
                                "acquire(y, x) has no 'dwell'.",
                                "leave the dwell unset (the instrument's own exposure is used), or use an adapter "
                                "that sets the exposure.")
        if dwell is not None and (limits := dwell_range(microscope)) is not None and \
                not limits[0] <= float(dwell) <= limits[1]:
            raise HAEInputError(f"A dwell of {float(dwell):g} s is outside what {type(microscope).__name__} can "
                                f"expose ({limits[0]:g} to {limits[1]:g} s).",
                                f"choose a dwell (--dwell) from {limits[0]:g} to {limits[1]:g} s.")
        self.microscope = microscope
        self.retries = int(retries)
        self.timeout = timeout
        self.wait = float(wait)
        self.dwell = None if dwell is None else float(dwell)
        self.blank = bool(blank) and can_blank(microscope)
        self.energy = energy   # the run's energy axis: a spectrum that comes with another one is refused
        self.on_event = on_event or (lambda msg: None)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._late: tuple[tuple[int, int], concurrent.futures.Future] | None = None   # timed out, not returned
        self._blanked_at: float | None = None
        self._prefetched: dict[tuple[int, int], np.ndarray] = {}   # spectra of a batch, not yet recorded
        self.last_blanked_s = math.nan   # how long the beam was blanked before the latest acquisition
        # the dose ledger: seconds the beam was on for the latest spectrum returned, failed attempts included (the
        # instrument's own figure where it reports one; else from unblank to blank, or, with the beam never
        # blanked, since the previous acquisition ended)
        self.last_beam_on_s = math.nan
        self._beam_ended: float | None = None   # when the previous acquisition ended (an unblanked beam stays on)
        self._prefetched_beam = 0.0             # a batch's beam time per point
        self._no_beam = isinstance(microscope, ReplaysData)   # pre-acquired data: no beam, no ledger (NaN)

    # -- the owner thread ----------------------------------------------------------------------------------
    def _run(self, fn, *args, timeout: float | None = None, **kw):
        if self.timeout is None:
            return fn(*args, **kw)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hae-instrument")
        fut = self._pool.submit(fn, *args, **kw)
        return fut if timeout == -1 else fut.result(timeout=timeout)

    def _settle_late(self, y: int, x: int):
        """The acquisition that timed out earlier and had not returned: its spectrum when it was of (y, x) and has
        now returned; raises :class:`_StillRunning` while it runs."""
        where, fut = self._late
        try:
            s = fut.result(timeout=max(self.timeout, MIN_GRACE))
        except concurrent.futures.TimeoutError:
            raise _StillRunning(where) from None
        except Exception:   # it ended in an error (e.g. aborted): nothing to keep
            s = None
        self._late = None
        if isinstance(where, list):   # a batch of seeds: what it returned late is used point by point
            if s is not None and len(s) == len(where):
                self._prefetched.update(zip(where, s))
                self.on_event(f"the batch of {len(where)} points that timed out returned later: its spectra are used")
            return self._prefetched.pop((y, x), None)
        if s is not None and where != (y, x):
            self.on_event(f"the acquisition at (y, x) = {where} that timed out returned later; the run has moved "
                          "on, so it is not recorded")
            return None
        if s is not None:
            self.on_event(f"the acquisition at (y, x) = ({y}, {x}) that timed out returned later: its spectrum is "
                          "used")
        return s

    def _acquire_once(self, y: int, x: int):
        kw = {} if self.dwell is None else {"dwell": self.dwell}
        if self.timeout is None:
            return self.microscope.acquire(y, x, **kw)
        fut = self._run(self.microscope.acquire, y, x, timeout=-1, **kw)
        limit = self.timeout + (self.dwell or 0.0)
        t0 = time.perf_counter()
        try:
            return fut.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            pass
        if isinstance(self.microscope, Aborts):
            try:
                self.microscope.abort()
            except Exception as exc:  # an abort that fails is said; the wait below decides
                self.on_event(f"abort() failed: {type(exc).__name__}: {exc}")
        try:   # never a second acquisition while this one runs: it gets a grace period to end
            s = fut.result(timeout=max(self.timeout, MIN_GRACE))
        except concurrent.futures.TimeoutError:
            self._late = ((y, x), fut)
            raise _StillRunning((y, x)) from None
        except Exception:
            raise TimeoutError(f"no spectrum within {limit:g} s (aborted)") from None
        self.on_event(f"the acquisition at (y, x) = ({y}, {x}) took {time.perf_counter() - t0:.3g} s, longer than "
                      f"its timeout of {limit:g} s (TimeoutError); its spectrum is used")
        return s

    # -- one acquisition, with blanking, retries and reconnects ---------------------------------------------
    def __call__(self, y: int, x: int, signal_shape: tuple[int, ...]) -> np.ndarray:
        try:
            return self._call(y, x, signal_shape)
        except _StillRunning as busy:
            where = busy.args[0]
            where = f"of {len(where)} points" if isinstance(where, list) else f"at (y, x) = {where}"
            raise MicroscopeFault(
                f"The microscope has not returned the acquisition {where} "
                f"{self.timeout + (self.dwell or 0.0):g} s after it was due, even after abort: no further "
                "acquisition is started while it runs. The run is paused; every spectrum measured so far is in the "
                "trace.",
                "check the instrument (exposure, detector, connection); resume when it answers (a spectrum it "
                "returns late for the same position is used), or raise acquire_timeout (--acquire-timeout).",
            ) from None

    def prefetch(self, positions, signal_shape) -> int:
        """Acquire ``positions`` in one ``acquire_many`` call where the instrument has one (the seeds); the next
        calls for those positions return them. Returns how many were fetched; a batch that fails is said and the
        points are acquired one by one (with the usual retries)."""
        positions = [(int(y), int(x)) for y, x in positions]
        if not isinstance(self.microscope, AcquiresMany) or len(positions) < 2 or self._late is not None:
            return 0
        kw = {} if self.dwell is None else {"dwell": self.dwell}
        limit = None if self.timeout is None else self.timeout + len(positions) * (self.dwell or 0.0)
        try:
            since = self._set_beam(on=True)
            spectra = self._run(self.microscope.acquire_many, positions, timeout=-1, **kw)
            try:
                spectra = spectra if self.timeout is None else spectra.result(timeout=limit)
            except concurrent.futures.TimeoutError:   # it still runs: settled (or waited for) before the next call
                self._late = (positions, spectra)
                raise TimeoutError(f"no spectra within {limit:g} s") from None
            finally:
                self._prefetched_beam = self._set_beam(on=False, since=since) / len(positions)
            if len(spectra) != len(positions):
                raise ValueError(f"{len(spectra)} spectra for {len(positions)} positions")
            for y, x in positions[:1]:
                self._check_energy(y, x)
        except MicroscopeFault:
            raise
        except Exception as exc:  # a timed-out batch still runs on the instrument's thread: the next call waits
            self.on_event(f"batch acquisition of {len(positions)} points failed ({type(exc).__name__}: {exc}); "
                          "acquiring them one by one")
            return 0
        self._prefetched.update(zip(positions, spectra))
        return len(positions)

    def _call(self, y: int, x: int, signal_shape) -> np.ndarray:
        early = self._prefetched.pop((y, x), None)   # from a batch, or returned late
        if early is None and self._late is not None:
            early = self._settle_late(y, x)
        if early is not None:
            try:
                self.last_beam_on_s = math.nan if self._no_beam else self._prefetched_beam   # its share of a batch
                return self._checked(early, signal_shape)
            except ValueError as exc:
                self.on_event(f"the spectrum fetched earlier at (y, x) = ({y}, {x}) is unusable ({exc}): acquiring "
                              "again")
        last, attempt, reconnected, spent = None, 0, False, [0.0]
        while attempt <= self.retries:
            try:
                s = self._attempt(y, x, spent)
                s = self._checked(s, signal_shape)
                self._check_energy(y, x)
                self.last_beam_on_s = math.nan if self._no_beam else spent[0]
                return s
            except (HAEInputError, _StillRunning, MicroscopeFault):
                self._say_spent(y, x, spent[0])
                raise
            except InstrumentRefused as exc:
                raise MicroscopeFault(
                    f"The microscope refused the acquisition at (y, x) = ({y}, {x}): {sentence(exc)} Retrying would "
                    "not help; the run is paused and every spectrum measured so far is in the trace.",
                    "check the adapter's coordinates and the instrument's limits, then resume; or mark the region "
                    "to avoid.") from exc
            except Exception as exc:  # an instrument may raise anything; it is reported, never swallowed
                last = exc
                msg = (f"acquisition at (y, x) = ({y}, {x}) failed (attempt {attempt + 1} of {self.retries + 1}): "
                       f"{type(exc).__name__}: {exc}")
                log.warning(msg)
                self.on_event(msg)
                if isinstance(exc, InstrumentDisconnected) and not reconnected:
                    reconnected = True
                    if self._reconnect():
                        continue   # a fresh session: this attempt is not counted against the instrument
                if attempt < self.retries:
                    time.sleep(self.wait * (attempt + 1))
                attempt += 1
        self._say_spent(y, x, spent[0])
        raise MicroscopeFault(
            f"The microscope failed to acquire at (y, x) = ({y}, {x}) {self.retries + 1} times "
            f"(last: {type(last).__name__}: {last}). The run is paused; every spectrum measured so far is in the "
            "trace.",
            "check the instrument (beam, detector, connection), then resume the run (Resume in napari, or "
            "napari-hae run --resume OUT).",
        )

    def _reconnect(self) -> bool:
        if not isinstance(self.microscope, Reconnects):
            return False
        try:
            self._run(self.microscope.reconnect)
        except Exception as exc:
            self.on_event(f"reconnect() failed: {type(exc).__name__}: {exc}")
            return False
        self.on_event("the connection to the microscope was lost and reconnected")
        return True

    def _attempt(self, y: int, x: int, spent: list) -> np.ndarray:
        """One acquisition between unblank and blank; its beam time is added to ``spent[0]``."""
        since = self._set_beam(on=True)
        if isinstance(self.microscope, ReportsBeamTime):
            self.microscope.last_beam_on_s = math.nan
        try:
            return self._acquire_once(y, x)
        finally:   # the beam off until the next acquisition (after a stuck one returns, on its thread)
            measured = self._set_beam(on=False, since=since)
            reported = self.microscope.last_beam_on_s if isinstance(self.microscope, ReportsBeamTime) else math.nan
            spent[0] += float(reported) if math.isfinite(reported) else measured

    def _say_spent(self, y: int, x: int, seconds: float) -> None:
        """Beam time spent on a position that gives no spectrum is said in the trace (no dose goes unrecorded)."""
        if seconds > 0 and not self._no_beam:
            self.on_event(f"beam on for {seconds:.3g} s at (y, x) = ({y}, {x}) without a spectrum to record")

    def _set_beam(self, on: bool, since: float | None = None) -> float:
        """Unblank before an acquisition (returns since when the beam is on for it), blank after it (queued
        behind an acquisition that has not returned; returns the seconds the beam was on ``since``). A beam that is
        never blanked is on since the previous acquisition ended."""
        now = time.perf_counter()
        if not self.blank:
            if on:
                return now if self._beam_ended is None else self._beam_ended
            self._beam_ended = now
            return now - since
        if on and self._blanked_at is not None:
            self.last_blanked_s = now - self._blanked_at
            self._blanked_at = None
        self._run(self.microscope.unblank if on else self.microscope.blank,
                  timeout=-1 if self._late is not None else None)
        if on:
            return now   # counted from the unblank command: the ledger may overstate, never understate
        self._blanked_at = time.perf_counter()
        return self._blanked_at - since

    def _check_energy(self, y: int, x: int) -> None:
        """A spectrum whose energy axis (``microscope.last_energy``) is not the run's is never mixed in."""
        got = self.microscope.last_energy if isinstance(self.microscope, ReportsEnergy) else None
        run = self.energy
        if got is None or run is None:
            return
        if got.size == run.size and got.units == run.units and abs(got.offset - run.offset) <= 0.01 * abs(run.scale) \
                and abs(got.scale / run.scale - 1.0) <= 1e-6:
            return
        self.on_event(f"energy axis changed at (y, x) = ({y}, {x}): {got.size} channels, offset {got.offset:g} "
                      f"{got.units}, dispersion {got.scale:g} (the run's: {run.size}, {run.offset:g} {run.units}, "
                      f"{run.scale:g}); the spectrum is not recorded")
        raise MicroscopeFault(
            f"The spectrometer's energy axis changed mid-run at (y, x) = ({y}, {x}): offset {run.offset:g} -> "
            f"{got.offset:g} {got.units}, dispersion {run.scale:g} -> {got.scale:g} {got.units}/channel, "
            f"{run.size} -> {got.size} channels. Its spectra would not be comparable with the run's, so this one is "
            "not recorded; the run is paused and every spectrum measured so far is in the trace.",
            "restore the spectrometer's calibration (energy offset, dispersion) and resume; or start a new run for "
            "the new axis.")

    @staticmethod
    def _checked(s, signal_shape) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        if s.shape != tuple(signal_shape):
            raise ValueError(f"spectrum of shape {s.shape}, expected {tuple(signal_shape)}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"spectrum with {int(np.size(s) - np.isfinite(s).sum())} NaN/inf values")
        return s

    def call(self, fn, *args):
        """Another call to the instrument (a drift check's structural image) on the thread that owns it, after any
        acquisition in flight; bounded by the acquisition timeout."""
        return self._run(fn, *args, timeout=self.timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
