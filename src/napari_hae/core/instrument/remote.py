"""The microscope interface over the network (ZeroMQ request/reply): the protocol and a client that is a
:class:`~napari_hae.core.instrument.microscope.Microscope`; the server in front of any microscope is
:mod:`.server`.

Protocol: every request and reply is a two-frame ZeroMQ message, ``[JSON header, raw bytes]``. Arrays travel as
raw bytes described in the header (``dtype``, ``shape``), never pickled. Requests carry ``op`` and, when the server
has one, the access ``token``; replies carry ``ok`` and either the result or an ``error`` with its ``kind``.

Operations: ``info`` (scan shape, signal shape, energy axis, name, capabilities), ``structural_image``, ``acquire``
(y, x, optional dwell time in seconds, optional request ``id``: a retry with the same id never exposes again),
``move`` (y, x), ``blank`` (on/off), ``status`` (with ``busy``: what the instrument is doing, while it works),
``abort`` (the acquisition in flight), ``ping``. While the instrument works the server answers ``ping``,
``status`` and ``abort`` at once and anything else that needs the instrument as ``busy``.

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

import json
import logging
import time
import uuid
from typing import Any

import numpy as np

from ..data.dataset import EnergyAxis
from ..errors import HAEInputError, InstrumentRefused

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
    """A :class:`~napari_hae.core.instrument.microscope.Microscope` behind a
    :class:`~napari_hae.core.instrument.server.MicroscopeServer`.

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

    def _connect(self):
        import zmq

        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
        if self.server_key:   # CURVE: encrypted, and only the server holding the matching secret key answers
            public, secret = zmq.curve_keypair()
            sock.curve_serverkey = self.server_key.encode()
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.connect(self.address)
        return sock

    def _ask(self, sock, op: str, limit: float, fields: dict) -> tuple[dict, np.ndarray | None]:
        """Send ``op`` on ``sock`` and wait ``limit`` seconds for its answer (raises zmq.Again)."""
        import zmq

        header = {"op": op, **fields}
        if self.token is not None:
            header["token"] = self.token
        sock.setsockopt(zmq.RCVTIMEO, int(limit * 1000))
        sock.send_multipart(_pack(header))
        return _unpack(sock.recv_multipart())

    def request(self, op: str, wait: float = 0.0, **fields: Any) -> tuple[dict, np.ndarray | None]:
        """Send ``op`` and wait for its answer: ``timeout`` seconds, plus ``wait`` (an acquisition's dwell: the
        answer cannot come sooner, and a request given up too early is retried as a second exposure)."""
        import zmq

        if self.sock is None:
            self.sock = self._connect()
        limit = self.timeout + max(0.0, float(wait))
        t0 = time.perf_counter()
        try:
            reply, arr = self._ask(self.sock, op, limit, fields)
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

    def abort(self) -> None:
        """Ask the server to abort the acquisition in flight (where the served instrument can: its
        ``capabilities``). Called from another thread than the one waiting for that acquisition's answer, so it
        asks on a connection of its own; the waiting request then gets the instrument's error, not a spectrum."""
        import zmq

        if not self.capabilities.get("abort"):
            return
        sock = self._connect()
        try:
            reply = self._ask(sock, "abort", self.timeout, {})[0]
        except zmq.Again:
            raise MicroscopeUnavailable(f"no answer to abort from the microscope server at {self.address} within "
                                        f"{self.timeout:g} s") from None
        finally:
            sock.close(0)
        if not reply.get("ok"):
            raise RemoteRefused(reply.get("kind", "error"), reply.get("error", ""))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.ctx.term()
