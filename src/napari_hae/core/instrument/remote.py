"""The microscope interface over the network (ZeroMQ request/reply): a server in front of any
:class:`~napari_hae.core.instrument.microscope.Microscope`, and a client that is one.

Protocol: every request and reply is a two-frame ZeroMQ message, ``[JSON header, raw bytes]``. Arrays travel as
raw bytes described in the header (``dtype``, ``shape``), never pickled. Requests carry ``op`` and, when the server
has one, the access ``token``; replies carry ``ok`` and either the result or an ``error`` with its ``kind``.

Operations: ``info`` (scan shape, signal shape, energy axis, name), ``structural_image``, ``acquire`` (y, x,
optional dwell time in seconds), ``move`` (y, x), ``blank`` (on/off), ``status``, ``ping``.

Safety of a shared instrument: the server binds to loopback unless told otherwise, can require a token (compared
in constant time), refuses positions outside the scan field before touching the instrument, and the client gives
every request a timeout; a server that does not answer makes the client raise :class:`MicroscopeUnavailable`
(retried by the experiment's acquisition guard, then the run pauses with its trace intact; the next request
reconnects).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

import numpy as np

from ..data.dataset import EnergyAxis
from ..errors import HAEInputError

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
class MicroscopeServer:
    """Serve ``microscope`` on ``tcp://host:port`` (port 0: any free port; see :attr:`address`).

    ``token``: if given, every request must carry it. ``host`` defaults to loopback; binding elsewhere without a
    token is refused unless ``allow_insecure``.
    """

    def __init__(self, microscope, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 allow_insecure: bool = False, name: str = "microscope"):
        import zmq

        if host not in ("127.0.0.1", "localhost", "::1") and not token and not allow_insecure:
            raise HAEInputError(f"Serving the microscope on {host!r} without an access token would let anyone on "
                                "the network move the beam.", "give --token, or serve on 127.0.0.1.")
        self.microscope = microscope
        self.token = token
        self.name = name
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        if port:
            self.sock.bind(f"tcp://{host}:{int(port)}")
        else:
            port = self.sock.bind_to_random_port(f"tcp://{host}")
        self.address = f"tcp://{host}:{port}"
        self.blanked = False
        self.n_requests = 0
        self.n_acquisitions = 0
        self._stop = False

    def _handle(self, header: dict) -> tuple[dict, np.ndarray | None]:
        if self.token is not None and not hmac.compare_digest(str(header.get("token", "")), self.token):
            return {"ok": False, "kind": "unauthorized", "error": "wrong or missing access token"}, None
        op = header.get("op")
        m = self.microscope
        if op == "ping":
            return {"ok": True, "protocol": PROTOCOL}, None
        if op == "info":
            e = m.energy
            return {"ok": True, "protocol": PROTOCOL, "name": self.name, "scan_shape": list(m.scan_shape),
                    "signal_shape": list(m.signal_shape), "energy": None if e is None else e.to_dict()}, None
        if op == "structural_image":
            return {"ok": True}, np.asarray(m.structural_image(), dtype=np.float64)
        if op == "status":
            return {"ok": True, "blanked": self.blanked, "position": getattr(m, "position", None),
                    "requests": self.n_requests, "acquisitions": self.n_acquisitions}, None
        if op == "blank":
            self.blanked = bool(header.get("on", True))
            return {"ok": True, "blanked": self.blanked}, None
        if op in ("acquire", "move"):
            try:
                y, x = int(header["y"]), int(header["x"])
            except (KeyError, TypeError, ValueError):
                return {"ok": False, "kind": "bad_request", "error": "y and x (integers) are required"}, None
            ny, nx = m.scan_shape
            if not (0 <= y < ny and 0 <= x < nx):
                return {"ok": False, "kind": "out_of_field",
                        "error": f"position ({y}, {x}) is outside the {ny} x {nx} scan field"}, None
            if op == "move":
                if hasattr(m, "position"):
                    m.position = (y, x)
                return {"ok": True}, None
            self.blanked = False
            spectrum = np.asarray(m.acquire(y, x), dtype=np.float64)
            self.n_acquisitions += 1
            return {"ok": True}, spectrum
        if op == "shutdown":
            self._stop = True
            return {"ok": True}, None
        return {"ok": False, "kind": "bad_request", "error": f"unknown operation {op!r}"}, None

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
            try:
                header, _ = _unpack(frames)
                reply, arr = self._handle(header)
            except HAEInputError as exc:
                reply, arr = {"ok": False, "kind": "bad_request", "error": str(exc)}, None
            except Exception as exc:  # the instrument failed: tell the client, keep serving
                log.exception("request failed")
                reply, arr = {"ok": False, "kind": "instrument_error", "error": f"{type(exc).__name__}: {exc}"}, None
            self.sock.send_multipart(_pack(reply, arr))
        self.close()

    def stop(self) -> None:
        self._stop = True

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


# -- client ------------------------------------------------------------------------------------------------------
class RemoteMicroscope:
    """A :class:`~napari_hae.core.instrument.microscope.Microscope` behind a :class:`MicroscopeServer`.

    ``timeout`` (seconds) bounds every request; on a timeout the socket is rebuilt (ZeroMQ's "lazy pirate"
    pattern), so the next request reconnects to a restarted server.
    """

    def __init__(self, address: str, token: str | None = None, timeout: float = 10.0):
        import zmq

        if not address.startswith("tcp://"):
            raise HAEInputError(f"Microscope address {address!r} is not a tcp:// address.",
                                "use tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555.")
        self.address = address
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
        self._structural = None

    def _socket(self):
        import zmq

        if self.sock is None:
            self.sock = self.ctx.socket(zmq.REQ)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.RCVTIMEO, int(self.timeout * 1000))
            self.sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
            self.sock.connect(self.address)
        return self.sock

    def request(self, op: str, **fields: Any) -> tuple[dict, np.ndarray | None]:
        import zmq

        header = {"op": op, **fields}
        if self.token is not None:
            header["token"] = self.token
        sock = self._socket()
        t0 = time.perf_counter()
        try:
            sock.send_multipart(_pack(header))
            reply, arr = _unpack(sock.recv_multipart())
        except zmq.Again:
            self.sock.close(0)   # a REQ socket that missed its reply cannot be reused
            self.sock = None
            raise MicroscopeUnavailable(f"no answer from the microscope server at {self.address} within "
                                        f"{self.timeout:g} s") from None
        self.last_round_trip = time.perf_counter() - t0
        if not reply.get("ok"):
            kind, msg = reply.get("kind", "error"), reply.get("error", "")
            if kind == "unauthorized":
                raise HAEInputError(f"The microscope server at {self.address} refused the request: {msg}.",
                                    "give the server's access token (--token or NAPARI_HAE_TOKEN).")
            if kind == "out_of_field":
                raise HAEInputError(f"The microscope server refused the position: {msg}.",
                                    "pick a position inside the scan field.")
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
        fields = {"y": int(y), "x": int(x)}
        if dwell is not None:
            fields["dwell"] = float(dwell)
        spectrum = self.request("acquire", **fields)[1]
        self.position = (int(y), int(x))
        return spectrum

    def move(self, y: int, x: int) -> None:
        self.request("move", y=int(y), x=int(x))
        self.position = (int(y), int(x))

    def blank(self, on: bool = True) -> None:
        self.request("blank", on=bool(on))

    def status(self) -> dict:
        return self.request("status")[0]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.ctx.term()
