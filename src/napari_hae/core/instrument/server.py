"""The server side of the network protocol (:mod:`.remote` has the protocol and the client): a
:class:`MicroscopeServer` in front of any :class:`~napari_hae.core.instrument.microscope.Microscope`.

It validates every request before the instrument is touched (see :func:`parse_request`) and stays responsive while
the instrument works: the instrument is called on one thread of its own (an adapter's session, a Pyro5 proxy or a
camera belongs to one thread), while the serving loop goes on answering. So while an exposure runs, ``ping``,
``status`` (which says what the instrument is doing and for how long) and ``abort`` are answered at once; a retry of
the acquisition in flight (its request id) waits for that exposure's spectrum; any other request that needs the
instrument is answered ``busy`` instead of being queued behind it. ``abort`` calls the instrument's ``abort()`` from
the serving thread; the adapter's acquisition must then end by raising (an aborted frame is never returned as a
spectrum), and its client gets that error, not a spectrum.
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import queue
import re
import threading
import time

import numpy as np

from ..errors import HAEInputError, InstrumentRefused
from .capabilities import Aborts, can_blank, dwell_range, takes_dwell
from .remote import PROTOCOL, _pack, check_curve_key

log = logging.getLogger(__name__)


# -- server ------------------------------------------------------------------------------------------------------
MAX_REQUEST_BYTES = 64 * 1024         # a request is a small JSON header; anything larger is not a request
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# op -> {field: (type, required)}; "op" and "token" are always allowed
_REQUESTS = {
    "ping": {}, "info": {}, "structural_image": {}, "status": {}, "shutdown": {}, "abort": {},
    "blank": {"on": ("bool", False)},
    "move": {"y": ("int", True), "x": ("int", True)},
    "acquire": {"y": ("int", True), "x": ("int", True), "dwell": ("seconds", False), "id": ("id", False)},
}
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ANSWERS_KEPT = 8   # acquisitions whose spectra the server keeps to answer a retry of them


MAX_DEPTH = 4          # a request is one flat JSON object: deeper nesting is refused before it is parsed
MAX_DWELL_S = 3600.0   # an hour a spectrum: anything longer would hold the instrument for every other client


class BadRequest(ValueError):
    """A request that is malformed: the client's error (answered as ``bad_request``, never logged as a fault)."""


def _nesting(raw: bytes) -> int:
    """The deepest nesting of JSON arrays and objects in ``raw`` (brackets inside strings not counted): bounded work
    before a parser that recurses (60 KiB of brackets ended the server with a RecursionError)."""
    depth = deepest = 0
    in_string = escaped = False
    for b in raw:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:      # backslash
                escaped = True
            elif b == 0x22:      # quote
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                return deepest
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _short(value) -> str:
    """``repr(value)``, cut to 60 characters (a 400-digit number or a 60 KiB string is not echoed back whole)."""
    text = repr(value) if not (type(value) is int and abs(value) >= 10**60) else "a number of over 60 digits"
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(value, kind: str) -> bool:
    if kind == "id":
        return isinstance(value, str) and REQUEST_ID.fullmatch(value) is not None
    if kind == "int":
        return type(value) is int and abs(value) < 2**31
    if kind == "bool":
        return type(value) is bool
    try:   # seconds: a JSON integer of 400 digits does not fit a float (it stopped the server one step later)
        seconds = float(value) if type(value) in (int, float) else float("nan")
    except OverflowError:
        return False
    return bool(np.isfinite(seconds)) and 0 <= seconds <= MAX_DWELL_S


def parse_request(frames: list[bytes], token: str | None) -> dict:
    """The request in ``frames``, authenticated first and then validated field by field (raises BadRequest, or
    PermissionError for a wrong or missing token)."""
    if len(frames) != 2 or frames[1]:
        raise BadRequest("a request is two frames, a JSON header and an empty second frame")
    if len(frames[0]) > MAX_REQUEST_BYTES:
        raise BadRequest(f"the request header exceeds {MAX_REQUEST_BYTES} bytes")
    if _nesting(frames[0]) > MAX_DEPTH:
        raise BadRequest(f"the request header nests deeper than {MAX_DEPTH} levels; a request is one flat object")
    try:
        header = json.loads(frames[0])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the request header is not JSON") from None
    if not isinstance(header, dict):
        raise BadRequest("the request header is not a JSON object")
    if token is not None and not hmac.compare_digest(str(header.get("token", "")).encode(), token.encode()):
        raise PermissionError("wrong or missing access token")
    op = header.get("op")
    if not isinstance(op, str) or op not in _REQUESTS:
        raise BadRequest(f"unknown operation {op!r}; known: {sorted(_REQUESTS)}")
    spec = _REQUESTS[op]
    unknown = set(header) - set(spec) - {"op", "token"}
    if unknown:
        raise BadRequest(f"{op}: unknown field(s) {sorted(unknown)}; it takes {sorted(spec) or 'none'}")
    for name, (kind, required) in spec.items():
        if name not in header:
            if required:
                raise BadRequest(f"{op}: the field {name!r} is required")
            continue
        if not _typed(header[name], kind):
            what = {"int": "a JSON integer", "bool": "true or false", "seconds": "a number of seconds >= 0",
                    "id": "1 to 64 letters, digits, _ or -"}[kind]
            limit = {"int": " (|n| < 2^31)", "seconds": f" (at most {MAX_DWELL_S:g} s)"}.get(kind, "")
            raise BadRequest(f"{op}: {name} must be {what}, got {_short(header[name])}{limit}")
    return header


AT_ONCE = ("ping", "status", "abort", "shutdown")   # answered by the serving loop, never behind the instrument
BUSY_POLL_S = 0.002   # how often the serving loop looks for the instrument's answer while it works


class _Job:
    """A request the instrument thread is working on, and the clients waiting for its answer."""

    def __init__(self, header: dict, envelope: list[bytes]):
        self.header, self.op, self.request_id = header, header["op"], header.get("id")
        self.waiters = [envelope]
        self.started = time.monotonic()
        self.aborted = False
        self.answer: tuple[dict, np.ndarray | None] | None = None
        self.done = threading.Event()

    def same_acquisition(self, header: dict) -> bool:
        return self.op == "acquire" and self.request_id is not None and header.get("id") == self.request_id

    def describe(self) -> dict:
        busy = {"op": self.op, "for_s": round(time.monotonic() - self.started, 3)}
        if self.op == "acquire":
            busy.update(position=[self.header["y"], self.header["x"]], dwell=self.header.get("dwell"))
        if self.aborted:
            busy["aborting"] = True   # asked to abort; the instrument has not returned yet
        return busy

    def sentence(self) -> str:
        what = (f"acquiring at (y, x) = ({self.header['y']}, {self.header['x']})" if self.op == "acquire"
                else f"working on {self.op!r}")
        return f"the instrument is {what} for another request (since {time.monotonic() - self.started:.1f} s)"


class _InstrumentThread:
    """The one thread that calls the served instrument; the serving loop hands it a :class:`_Job` at a time."""

    def __init__(self, work):
        self._work, self._queue = work, queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="hae-served-instrument")
        self._thread.start()

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job.answer = self._work(job.header)
            except BaseException as exc:  # noqa: BLE001  (SystemExit from an adapter: answered, never a hung server)
                job.answer = ({"ok": False, "kind": "instrument_error", "error": f"{type(exc).__name__}: {exc}"},
                              None)
            job.done.set()

    def stop(self) -> None:
        self._queue.put(None)


class MicroscopeServer:
    """Serve ``microscope`` on ``tcp://host:port`` (port 0: any free port; see :attr:`address`).

    ``token``: if given, every request must carry it. ``host`` defaults to loopback. Off loopback the connection
    is encrypted with CURVE (``curve_secret_key``: the server's secret key, z85 text; its public key is
    :attr:`public_key`, which clients need) and a token is required; ``allow_insecure`` serves in clear text
    instead (a trusted, isolated network only).
    """

    def __init__(self, microscope, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 allow_insecure: bool = False, name: str = "microscope", curve_secret_key: str | None = None):
        import zmq

        off_loopback = host not in LOOPBACK
        if off_loopback and not allow_insecure and not (token and curve_secret_key):
            raise HAEInputError(f"Serving the microscope on {host!r} without encryption and an access token would "
                                "let anyone on the network move the beam (or read the token).",
                                "give --token and --curve (encrypted), or serve on 127.0.0.1.")
        if not 0 <= int(port) <= 65535:
            raise HAEInputError(f"Port {port} is not a TCP port.", "give a port between 1 and 65535 (0: any free).")
        self.microscope = microscope
        self.token = token
        self.name = name
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)   # REQ clients, answered in any order (a busy one later)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)   # larger frames are dropped unread
        self.public_key = None
        if curve_secret_key:
            secret = check_curve_key(curve_secret_key, "the server's secret CURVE key")
            self.public_key = zmq.curve_public(secret).decode()
            self.sock.curve_secretkey = secret
            self.sock.curve_publickey = self.public_key.encode()
            self.sock.curve_server = True
        self.blanked = False
        self.n_requests = 0
        self.n_acquisitions = 0
        self._answered: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()   # id -> spectrum
        self._answered_lock = threading.Lock()   # written on the instrument thread, read on the serving one
        self._job: _Job | None = None
        self._info_said: dict | None = None   # what info answered: answered again while the instrument works
        self._worker: _InstrumentThread | None = None
        self._stop = False
        self.address = self._bind(host, port)

    def _bind(self, host: str, port: int) -> str:
        import zmq

        try:
            if port:
                self.sock.bind(f"tcp://{host}:{int(port)}")
            else:
                port = self.sock.bind_to_random_port(f"tcp://{host}")
        except zmq.ZMQError as exc:
            self.close()
            raise HAEInputError(f"Cannot serve on tcp://{host}:{port} ({exc}).",
                                "choose a free port (--port) and an address of this computer (--host); is another "
                                "server already running there?") from None
        return f"tcp://{host}:{port}"

    # -- what each request gets ------------------------------------------------------------------------------
    def _info(self) -> dict:
        m = self.microscope
        e = m.energy
        caps = {"dwell": takes_dwell(m), "blank": can_blank(m), "request_ids": True, "abort": isinstance(m, Aborts),
                "dwell_range": list(dwell_range(m) or (0.0, MAX_DWELL_S))}
        self._info_said = {"ok": True, "protocol": PROTOCOL, "name": self.name, "scan_shape": list(m.scan_shape),
                           "signal_shape": list(m.signal_shape), "energy": None if e is None else e.to_dict(),
                           "capabilities": caps,
                           "describe": m.describe() if callable(getattr(m, "describe", None)) else {}}
        return self._info_said

    def _status(self) -> dict:
        status = {"ok": True, "blanked": self.blanked, "position": getattr(self.microscope, "position", None),
                  "requests": self.n_requests, "acquisitions": self.n_acquisitions}
        if self._job is not None:
            status["busy"] = self._job.describe()
        return status

    def _abort(self) -> dict:
        job = self._job
        if job is None or job.op != "acquire":
            return {"ok": True, "aborted": False}
        if not isinstance(self.microscope, Aborts):
            return {"ok": False, "kind": "refused",
                    "error": f"the served instrument has no abort(); {job.sentence()} ends when its exposure does"}
        job.aborted = True
        self.microscope.abort()
        return {"ok": True, "aborted": True}

    def _handle(self, header: dict) -> tuple[dict, np.ndarray | None]:
        op = header["op"]
        m = self.microscope
        if op == "ping":
            return {"ok": True, "protocol": PROTOCOL}, None
        if op == "info":
            return self._info(), None
        if op == "status":
            return self._status(), None
        if op == "abort":
            return self._abort(), None
        if op == "structural_image":
            return {"ok": True}, np.asarray(m.structural_image(), dtype=np.float64)
        if op == "blank":   # the served instrument's own blanking, where it has one
            self.blanked = header.get("on", True)
            if can_blank(m):
                (m.blank if self.blanked else m.unblank)()
            return {"ok": True, "blanked": self.blanked}, None
        if op in ("acquire", "move"):
            return self._at_position(op, header)
        # shutdown: only an authenticated client may stop the server
        if self.token is None:
            return {"ok": False, "kind": "bad_request",
                    "error": "remote shutdown is disabled on a server without an access token"}, None
        self._stop = True
        return {"ok": True}, None

    def _at_position(self, op: str, header: dict) -> tuple[dict, np.ndarray | None]:
        m = self.microscope
        y, x = header["y"], header["x"]
        ny, nx = m.scan_shape
        if not (0 <= y < ny and 0 <= x < nx):
            return {"ok": False, "kind": "out_of_field",
                    "error": f"position ({y}, {x}) is outside the {ny} x {nx} scan field"}, None
        if op == "move":
            if hasattr(m, "position"):
                m.position = (y, x)
            return {"ok": True}, None
        dwell = header.get("dwell")
        if dwell is not None and not takes_dwell(m):
            return {"ok": False, "kind": "bad_request",
                    "error": "the served microscope takes no dwell (its acquire(y, x) has none)"}, None
        lo, hi = dwell_range(m) or (0.0, MAX_DWELL_S)
        if dwell is not None and not lo <= dwell <= hi:
            return {"ok": False, "kind": "bad_request",
                    "error": f"a dwell of {dwell:g} s is outside the served microscope's {lo:g} to {hi:g} s"}, None
        return self._acquire(header.get("id"), y, x, dwell)

    def _kept(self, request_id: str | None) -> np.ndarray | None:
        with self._answered_lock:
            return None if request_id is None else self._answered.get(request_id)

    def _acquire(self, request_id: str | None, y: int, x: int, dwell) -> tuple[dict, np.ndarray]:
        """One exposure; a retry of an acquisition already made (its id: the client gave up waiting for the answer)
        gets that spectrum instead of a second exposure."""
        if (kept := self._kept(request_id)) is not None:
            return {"ok": True, "repeated": True}, kept
        spectrum = np.asarray(self.microscope.acquire(y, x, **({} if dwell is None else {"dwell": dwell})),
                              dtype=np.float64)
        self.n_acquisitions += 1
        if request_id is not None:
            with self._answered_lock:
                self._answered[request_id] = spectrum
                while len(self._answered) > ANSWERS_KEPT:
                    self._answered.popitem(last=False)
        return {"ok": True}, spectrum

    def _checked(self, frames: list[bytes]) -> tuple[dict | None, tuple[dict, None] | None]:
        """(the request, None), or (None, the refusal) for one that is not a valid request."""
        try:
            return parse_request(frames, self.token), None
        except PermissionError as exc:
            return None, ({"ok": False, "kind": "unauthorized", "error": str(exc)}, None)
        except BadRequest as exc:
            log.warning("bad request: %s", exc)
            return None, ({"ok": False, "kind": "bad_request", "error": str(exc)}, None)
        except Exception as exc:  # whatever else a crafted frame does to the parser is still the client's error
            return None, ({"ok": False, "kind": "bad_request", "error": f"malformed request ({type(exc).__name__})"},
                          None)

    def _reply(self, header: dict) -> tuple[dict, np.ndarray | None]:
        """The reply to a valid request (every failure becomes a reply: the server keeps serving)."""
        try:
            return self._handle(header)
        except HAEInputError as exc:
            return {"ok": False, "kind": "bad_request", "error": str(exc)}, None
        except InstrumentRefused as exc:   # the instrument's "no": the client does not retry it
            return {"ok": False, "kind": "refused", "error": str(exc)}, None
        except Exception as exc:  # the instrument failed: tell the client, keep serving
            log.exception("the instrument failed on %s", header.get("op"))
            return {"ok": False, "kind": "instrument_error", "error": f"{type(exc).__name__}: {exc}"}, None

    def answer(self, frames: list[bytes]) -> tuple[dict, np.ndarray | None]:
        """The reply to one request, made on the calling thread (the serving loop hands the instrument's work to
        its thread instead; see :meth:`serve_forever`)."""
        header, refusal = self._checked(frames)
        return refusal if header is None else self._reply(header)

    # -- the serving loop --------------------------------------------------------------------------------------
    def _send(self, envelope: list[bytes], reply: tuple[dict, np.ndarray | None]) -> None:
        try:
            packed = _pack(*reply)
        except Exception as exc:  # a reply that cannot be encoded: the request still gets one
            packed = _pack({"ok": False, "kind": "instrument_error", "error": f"unencodable reply ({exc})"})
        self.sock.send_multipart(envelope + packed)

    def _take(self, message: list[bytes]) -> None:
        """One request from the socket: answered now, handed to the instrument thread, joined to the acquisition in
        flight that it retries, or answered busy."""
        cut = message.index(b"", 1) + 1 if b"" in message[1:] else 1   # REQ's envelope: [identity, b""]
        envelope, frames = message[:cut], message[cut:]
        header, refusal = self._checked(frames)
        if header is None:
            return self._send(envelope, refusal)
        op, job = header["op"], self._job
        if op in AT_ONCE or (op == "acquire" and self._kept(header.get("id")) is not None):
            return self._send(envelope, self._reply(header))
        if op == "info" and job is not None and self._info_said is not None:
            return self._send(envelope, (self._info_said, None))   # a client connecting while the beam is on
        if job is not None:
            if job.same_acquisition(header):
                job.waiters.append(envelope)   # a retry of what the instrument is exposing: that spectrum
                return None
            return self._send(envelope, ({"ok": False, "kind": "busy", "error": job.sentence()}, None))
        if self._worker is None:
            self._worker = _InstrumentThread(self._reply)
        self._job = _Job(header, envelope)
        self._worker.submit(self._job)
        return None

    def _finish(self) -> None:
        job, self._job = self._job, None
        for envelope in job.waiters:
            self._send(envelope, job.answer)

    def serve_forever(self, poll_ms: int = 200) -> None:
        """Answer requests until :meth:`stop` (or a ``shutdown`` request with the right token)."""
        import zmq

        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop:
            wait_ms = max(1, int(BUSY_POLL_S * 1000)) if self._job is not None else poll_ms
            if dict(poller.poll(wait_ms)):
                self.n_requests += 1
                self._take(self.sock.recv_multipart())
            if self._job is not None and self._job.done.is_set():
                self._finish()
        self.close()

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        """Stop serving: an acquisition in flight is aborted where the instrument can (its thread is a daemon and
        is left to end by itself), and the socket is closed."""
        if self._job is not None and not self._job.done.is_set():
            try:
                self._abort()
            except Exception:  # closing goes on; the instrument's own close releases it
                log.exception("abort() on closing the server failed")
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if not self.sock.closed:
            self.sock.close(0)
        self.ctx.term()
