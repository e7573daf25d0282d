"""The microscope interface over the network (ZeroMQ request/reply): a server in front of any
:class:`~napari_hae.core.instrument.microscope.Microscope`, and a client that is one.

Protocol: every request and reply is a two-frame ZeroMQ message, ``[JSON header, raw bytes]``. Arrays travel as
raw bytes described in the header (``dtype``, ``shape``), never pickled. Requests carry ``op`` and, when the server
has one, the access ``token``; replies carry ``ok`` and either the result or an ``error`` with its ``kind``.

Operations: ``info`` (scan shape, signal shape, energy axis, name), ``structural_image``, ``acquire`` (y, x,
optional dwell time in seconds), ``move`` (y, x), ``blank`` (on/off), ``status``, ``ping``.

Safety of a shared instrument: the server binds to loopback unless told otherwise; off loopback it encrypts and
authenticates the connection with ZeroMQ's CURVE (the client needs the server's public key), so a token never
travels in clear text. It can require a token (compared in constant time, before anything else of a request is
looked at); requests carry no array data and a frame larger than ``MAX_REQUEST_BYTES`` is dropped by ZeroMQ before
it is read; every field is validated by type (a position is two JSON integers, ``on`` a JSON boolean) and a
malformed request is answered as the client's error, not the instrument's; positions outside the scan field are
refused before the instrument is touched; ``shutdown`` exists only on a server with a token. The client gives
every request a timeout; a server that does not answer makes the client raise :class:`MicroscopeUnavailable`
(retried by the experiment's acquisition guard, then the run pauses with its trace intact; the next request
reconnects).
"""

from __future__ import annotations

import collections
import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

import numpy as np

from ..data.dataset import EnergyAxis
from ..errors import HAEInputError, InstrumentRefused
from .capabilities import can_blank, dwell_range, takes_dwell

log = logging.getLogger(__name__)
PROTOCOL = "napari-hae-microscope/1"


class MicroscopeUnavailable(ConnectionError):
    """The microscope server did not answer in time (or the connection failed)."""


class RemoteRefused(RuntimeError):
    """The server answered with an error (wrong token, bad position, instrument error)."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(f"{kind}: {message}")


def _pack(header: dict, array: np.ndarray | None = None) -> list[bytes]:
    if array is not None:
        a = np.ascontiguousarray(array)
        header = {**header, "dtype": a.dtype.str, "shape": list(a.shape)}
        return [json.dumps(header).encode(), a.tobytes()]
    return [json.dumps(header).encode(), b""]


def _unpack(frames: list[bytes]) -> tuple[dict, np.ndarray | None]:
    if len(frames) != 2:
        raise ValueError(f"expected 2 frames, got {len(frames)}")
    header = json.loads(frames[0])
    arr = None
    if "dtype" in header:
        arr = np.frombuffer(frames[1], dtype=np.dtype(header["dtype"])).reshape(header["shape"]).copy()
    return header, arr


# -- server ------------------------------------------------------------------------------------------------------
MAX_REQUEST_BYTES = 64 * 1024         # a request is a small JSON header; anything larger is not a request
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# op -> {field: (type, required)}; "op" and "token" are always allowed
_REQUESTS = {
    "ping": {}, "info": {}, "structural_image": {}, "status": {}, "shutdown": {},
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
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)   # larger frames are dropped unread
        self.public_key = None
        if curve_secret_key:
            secret = check_curve_key(curve_secret_key, "the server's secret CURVE key")
            self.public_key = zmq.curve_public(secret).decode()
            self.sock.curve_secretkey = secret
            self.sock.curve_publickey = self.public_key.encode()
            self.sock.curve_server = True
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
        self.address = f"tcp://{host}:{port}"
        self.blanked = False
        self.n_requests = 0
        self.n_acquisitions = 0
        self._answered: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()   # id -> spectrum
        self._stop = False

    def _handle(self, header: dict) -> tuple[dict, np.ndarray | None]:
        op = header["op"]
        m = self.microscope
        if op == "ping":
            return {"ok": True, "protocol": PROTOCOL}, None
        if op == "info":
            e = m.energy
            return {"ok": True, "protocol": PROTOCOL, "name": self.name, "scan_shape": list(m.scan_shape),
                    "signal_shape": list(m.signal_shape), "energy": None if e is None else e.to_dict(),
                    "capabilities": {"dwell": takes_dwell(m), "blank": can_blank(m), "request_ids": True,
                                     "dwell_range": list(dwell_range(m) or (0.0, MAX_DWELL_S))},
                    "describe": m.describe() if callable(getattr(m, "describe", None)) else {}}, None
        if op == "structural_image":
            return {"ok": True}, np.asarray(m.structural_image(), dtype=np.float64)
        if op == "status":
            return {"ok": True, "blanked": self.blanked, "position": getattr(m, "position", None),
                    "requests": self.n_requests, "acquisitions": self.n_acquisitions}, None
        if op == "blank":   # the served instrument's own blanking, where it has one
            self.blanked = header.get("on", True)
            if can_blank(m):
                (m.blank if self.blanked else m.unblank)()
            return {"ok": True, "blanked": self.blanked}, None
        if op in ("acquire", "move"):
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
        # shutdown: only an authenticated client may stop the server
        if self.token is None:
            return {"ok": False, "kind": "bad_request",
                    "error": "remote shutdown is disabled on a server without an access token"}, None
        self._stop = True
        return {"ok": True}, None

    def _acquire(self, request_id: str | None, y: int, x: int, dwell) -> tuple[dict, np.ndarray]:
        """One exposure; a retry of an acquisition already made (its id: the client gave up waiting while this
        server, one request at a time, was still exposing) gets that spectrum instead of a second exposure."""
        if request_id is not None and request_id in self._answered:
            return {"ok": True, "repeated": True}, self._answered[request_id]
        spectrum = np.asarray(self.microscope.acquire(y, x, **({} if dwell is None else {"dwell": dwell})),
                              dtype=np.float64)
        self.n_acquisitions += 1
        if request_id is not None:
            self._answered[request_id] = spectrum
            while len(self._answered) > ANSWERS_KEPT:
                self._answered.popitem(last=False)
        return {"ok": True}, spectrum

    def answer(self, frames: list[bytes]) -> tuple[dict, np.ndarray | None]:
        """The reply to one request (every failure becomes a reply: the server keeps serving)."""
        try:
            header = parse_request(frames, self.token)
        except PermissionError as exc:
            return {"ok": False, "kind": "unauthorized", "error": str(exc)}, None
        except BadRequest as exc:
            log.warning("bad request: %s", exc)
            return {"ok": False, "kind": "bad_request", "error": str(exc)}, None
        except Exception as exc:  # whatever else a crafted frame does to the parser is still the client's error
            return {"ok": False, "kind": "bad_request", "error": f"malformed request ({type(exc).__name__})"}, None
        try:
            return self._handle(header)
        except HAEInputError as exc:
            return {"ok": False, "kind": "bad_request", "error": str(exc)}, None
        except InstrumentRefused as exc:   # the instrument's "no": the client does not retry it
            return {"ok": False, "kind": "refused", "error": str(exc)}, None
        except Exception as exc:  # the instrument failed: tell the client, keep serving
            log.exception("the instrument failed on %s", header.get("op"))
            return {"ok": False, "kind": "instrument_error", "error": f"{type(exc).__name__}: {exc}"}, None

    def serve_forever(self, poll_ms: int = 200) -> None:
        """Answer requests until :meth:`stop` (or a ``shutdown`` request with the right token)."""
        import zmq

        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop:
            if not dict(poller.poll(poll_ms)):
                continue
            frames = self.sock.recv_multipart()
            self.n_requests += 1
            reply, arr = self.answer(frames)
            try:
                packed = _pack(reply, arr)
            except Exception as exc:  # a reply that cannot be encoded: the request still gets one (REP must answer)
                packed = _pack({"ok": False, "kind": "instrument_error", "error": f"unencodable reply ({exc})"})
            self.sock.send_multipart(packed)
        self.close()

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def check_curve_key(key, what: str) -> bytes:
    """``key`` as CURVE needs it (40 characters of Z85 text), or a clear error naming ``what``."""
    from zmq.utils import z85

    raw = key.encode() if isinstance(key, str) else bytes(key)
    try:
        if len(raw) != 40:
            raise ValueError(f"{len(raw)} characters")
        z85.decode(raw)
    except (ValueError, KeyError, IndexError, TypeError, UnicodeError) as exc:
        raise HAEInputError(f"{what} is not a CURVE key (40 characters of Z85 text; got {exc}).",
                            "copy the key exactly as the server printed it (or delete a damaged key file to make "
                            "a new one).") from None
    return raw


def check_address(address: str) -> None:
    """Refuse an address that is not ``tcp://HOST:PORT`` with a port in range."""
    fix = "use tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555."
    if not isinstance(address, str) or not address.startswith("tcp://"):
        raise HAEInputError(f"Microscope address {address!r} is not a tcp:// address.", fix)
    host, sep, port = address[len("tcp://"):].rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise HAEInputError(f"Microscope address {address!r} has no valid host and port (1-65535).", fix)


# -- client ------------------------------------------------------------------------------------------------------
class RemoteMicroscope:
    """A :class:`~napari_hae.core.instrument.microscope.Microscope` behind a :class:`MicroscopeServer`.

    ``timeout`` (seconds) bounds every request; on a timeout the socket is rebuilt (ZeroMQ's "lazy pirate"
    pattern), so the next request reconnects to a restarted server.
    """

    def __init__(self, address: str, token: str | None = None, timeout: float = 10.0,
                 server_key: str | None = None):
        import zmq

        check_address(address)
        self.address = address
        self.server_key = server_key or None
        if self.server_key:
            check_curve_key(self.server_key, "server_key (the server's public CURVE key)")
        self.token = token
        self.timeout = float(timeout)
        self.ctx = zmq.Context()
        self.sock = None
        self.position: tuple[int, int] | None = None
        self.last_round_trip = float("nan")
        try:
            info = self.request("info")[0]
        except BaseException:
            self.close()
            raise
        if info.get("protocol") != PROTOCOL:
            raise HAEInputError(f"The server at {address} speaks {info.get('protocol')!r}, not {PROTOCOL!r}.",
                                "update napari-hae on both computers to the same version.")
        self._scan_shape = tuple(info["scan_shape"])
        self._signal_shape = tuple(info["signal_shape"])
        self._energy = EnergyAxis(**info["energy"]) if info.get("energy") else None
        self.name = info.get("name", "remote")
        # what the served instrument can do (older servers: nothing beyond acquire)
        self.capabilities = {"dwell": False, "blank": False, **info.get("capabilities", {})}
        self._describe = dict(info.get("describe") or {})
        self._structural = None
        self._unanswered: tuple[tuple, str] | None = None   # (position, dwell), id: an acquisition given up on

    def _socket(self):
        import zmq

        if self.sock is None:
            self.sock = self.ctx.socket(zmq.REQ)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
            self.sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
            if self.server_key:   # CURVE: encrypted, and only the server holding the matching secret key answers
                public, secret = zmq.curve_keypair()
                self.sock.curve_serverkey = self.server_key.encode()
                self.sock.curve_publickey = public
                self.sock.curve_secretkey = secret
            self.sock.connect(self.address)
        return self.sock

    def request(self, op: str, wait: float = 0.0, **fields: Any) -> tuple[dict, np.ndarray | None]:
        """Send ``op`` and wait for its answer: ``timeout`` seconds, plus ``wait`` (an acquisition's dwell: the
        answer cannot come sooner, and a request given up too early is retried as a second exposure)."""
        import zmq

        header = {"op": op, **fields}
        if self.token is not None:
            header["token"] = self.token
        sock = self._socket()
        limit = self.timeout + max(0.0, float(wait))
        sock.setsockopt(zmq.RCVTIMEO, int(limit * 1000))
        t0 = time.perf_counter()
        try:
            sock.send_multipart(_pack(header))
            reply, arr = _unpack(sock.recv_multipart())
        except zmq.Again:
            self.sock.close(0)   # a REQ socket that missed its reply cannot be reused
            self.sock = None
            raise MicroscopeUnavailable(f"no answer from the microscope server at {self.address} within "
                                        f"{limit:g} s") from None
        self.last_round_trip = time.perf_counter() - t0
        if not reply.get("ok"):
            kind, msg = reply.get("kind", "error"), reply.get("error", "")
            if kind == "unauthorized":
                raise HAEInputError(f"The microscope server at {self.address} refused the request: {msg}.",
                                    "give the server's access token (--token or NAPARI_HAE_TOKEN).")
            if kind == "out_of_field":
                raise HAEInputError(f"The microscope server refused the position: {msg}.",
                                    "pick a position inside the scan field.")
            if kind == "refused":
                raise InstrumentRefused(msg)
            raise RemoteRefused(kind, msg)
        return reply, arr

    @property
    def scan_shape(self):
        return self._scan_shape

    @property
    def signal_shape(self):
        return self._signal_shape

    @property
    def energy(self):
        return self._energy

    def structural_image(self) -> np.ndarray:
        if self._structural is None:
            self._structural = self.request("structural_image")[1]
        return self._structural

    def acquire(self, y: int, x: int, dwell: float | None = None) -> np.ndarray:
        """A spectrum at (y, x). Asked again after a timeout (the guard's retry), the same acquisition is asked
        for (its id): a server that exposed it meanwhile answers with that spectrum, not a second exposure."""
        fields = {"y": int(y), "x": int(x)}
        if dwell is not None:
            fields["dwell"] = float(dwell)
        if self.capabilities.get("request_ids"):
            key = (fields["y"], fields["x"], fields.get("dwell"))
            same = self._unanswered is not None and self._unanswered[0] == key
            fields["id"] = self._unanswered[1] if same else uuid.uuid4().hex
            self._unanswered = (key, fields["id"])
        try:
            spectrum = self.request("acquire", wait=dwell or 0.0, **fields)[1]
        except MicroscopeUnavailable:
            raise   # no answer: a retry asks for this acquisition again
        except BaseException:
            self._unanswered = None
            raise
        self._unanswered = None
        self.position = (int(y), int(x))
        return spectrum

    def move(self, y: int, x: int) -> None:
        self.request("move", y=int(y), x=int(x))
        self.position = (int(y), int(x))

    def blank(self, on: bool = True) -> None:
        self.request("blank", on=bool(on))

    def unblank(self) -> None:
        self.request("blank", on=False)

    def describe(self) -> dict:
        """The served instrument's geometry (pixel size in nm...), as it describes itself."""
        return dict(self._describe)

    def status(self) -> dict:
        return self.request("status")[0]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.ctx.term()
