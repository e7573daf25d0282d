"""The microscope server never exits on a bad frame and answers every request (issue 30, class 1): 10,000
generated frames (deep nesting, huge numbers, wrong types, oversized fields, garbage bytes, with and without the
token), in-process and through real sockets, with and without CURVE."""

import json
import threading

import numpy as np
import pytest

from napari_hae.core.instrument.remote import _pack, _unpack
from napari_hae.core.instrument.server import MAX_REQUEST_BYTES, MicroscopeServer
from test_server_hardening import Counting  # a simulator that counts its acquisitions

TOKEN = "tok-fuzz"
OPS = ["ping", "info", "structural_image", "status", "blank", "move", "acquire", "abort", "shutdown", "nope", None, 3]


def _value(rng):
    kind = rng.integers(12)
    if kind == 0:
        return int(10 ** int(rng.integers(10, 500)))            # huge integers (10**400 ended the server)
    if kind == 1:
        return -int(rng.integers(0, 2**40))
    if kind == 2:
        return float(rng.choice([np.inf, -np.inf, np.nan, 1e308, -0.0, 5e-324]))
    if kind == 3:
        return "x" * int(rng.integers(0, 70_000))               # oversized fields
    if kind == 4:
        return [1] * int(rng.integers(0, 50))
    if kind == 5:
        return {"a": {"b": [1, {"c": None}]}}
    if kind == 6:
        return bool(rng.integers(2))
    if kind == 7:
        return None
    return int(rng.integers(-5, 60))                           # plausible positions


def _nested(rng) -> bytes:
    n = int(rng.integers(5, 60_000))
    left, right = (b"[", b"]") if rng.integers(2) else (b'{"a":', b"}")
    return left * n + b"1" + right * n


def fuzz_frames(n: int, seed: int = 0):
    """``n`` requests as frames; about a third well-formed (to check they still work), the rest hostile."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        kind = rng.integers(10)
        if kind == 0:
            yield [_nested(rng), b""]
        elif kind == 1:
            yield [bytes(rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8)), b""]
        elif kind == 2:
            yield [b"{}"] * int(rng.integers(0, 4)) if rng.integers(2) else [b'{"op": "ping"}', b"\x00" * 10]
        else:
            header = {"op": OPS[int(rng.integers(len(OPS)))]}
            if rng.random() < 0.7:
                header["token"] = TOKEN if rng.random() < 0.8 else _value(rng)
            for field in rng.choice(["y", "x", "dwell", "on", "extra"], int(rng.integers(0, 4)), replace=False):
                header[str(field)] = _value(rng)
            try:
                raw = json.dumps(header).encode()
            except (ValueError, OverflowError):
                raw = b'{"op": "ping"'
            yield [raw, b""]


def test_ten_thousand_hostile_frames_are_each_answered_and_nothing_stops_the_server(small_sample):
    server = MicroscopeServer(Counting(small_sample), token=TOKEN)
    try:
        kinds = {}
        for frames in fuzz_frames(10_000):
            reply, _ = server.answer(frames)
            assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)
            kinds[reply.get("kind", "ok")] = kinds.get(reply.get("kind", "ok"), 0) + 1
            _pack(reply)   # every reply can be sent
        # the hostile ones were refused as the client's error, the well-formed ones served
        assert kinds.get("bad_request", 0) > 3000 and kinds.get("unauthorized", 0) > 500 and kinds.get("ok", 0) > 300
        assert set(kinds) <= {"ok", "bad_request", "unauthorized", "out_of_field"}
        assert server.microscope.calls == server.n_acquisitions > 0   # every acquisition served was counted
    finally:
        server.close()


@pytest.mark.slow   # subprocess runs / a real window: the full suite
@pytest.mark.parametrize("curve", [False, True])
def test_through_real_sockets_the_server_answers_every_frame_and_stays_up(small_sample, curve):
    import zmq

    secret = zmq.curve_keypair()[1].decode() if curve else None
    server = MicroscopeServer(Counting(small_sample), token=TOKEN, curve_secret_key=secret)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_ms": 20}, daemon=True)
    thread.start()
    ctx = zmq.Context()
    sock = None
    try:
        sent = answered = 0
        for frames in fuzz_frames(300, seed=1):
            if any(len(f) > MAX_REQUEST_BYTES for f in frames) or len(frames) == 0:
                continue   # dropped unread by ZeroMQ (MAXMSGSIZE), which closes that client's connection
            if "shutdown" in frames[0].decode("latin-1"):
                continue   # an authenticated shutdown is allowed to stop it
            if sock is None:
                sock = ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVTIMEO, 5000)
                if curve:
                    pub, sec = zmq.curve_keypair()
                    sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = \
                        server.public_key.encode(), pub, sec
                sock.connect(server.address)
            sock.send_multipart(frames)
            sent += 1
            reply, _ = _unpack(sock.recv_multipart())
            answered += isinstance(reply.get("ok"), bool)
        assert sent > 150 and answered == sent and thread.is_alive()
        sock.send_multipart([json.dumps({"op": "ping", "token": TOKEN}).encode(), b""])
        assert _unpack(sock.recv_multipart())[0]["ok"] is True
    finally:
        if sock is not None:
            sock.close(0)
        ctx.term()
        server.stop()
        thread.join(5)


def test_bad_curve_keys_are_clear_errors_and_a_readable_secret_is_warned_about(tmp_path, capsys):
    import os

    import zmq

    from napari_hae.cli import main
    from napari_hae.cli.serve import _read_key_file
    from napari_hae.core.errors import HAEInputError
    from napari_hae.core.instrument.remote import RemoteMicroscope

    (tmp_path / "garbage.key").write_bytes(b"\xff\xfe not a key")
    (tmp_path / "short.key").write_text("abc")
    (tmp_path / "dir.key").mkdir()
    for name, said in (("garbage.key", "cannot be read as a key"), ("short.key", "is not a CURVE key"),
                       ("dir.key", "is not a file")):
        rc = main(["serve", "--sample", "nanoparticles", "--curve-key", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert rc == 2 and said in err and "Fix:" in err and "Traceback" not in err, (name, err)
    with pytest.raises(HAEInputError, match=r"server_key .* is not a CURVE key .*Fix: copy the key exactly"):
        RemoteMicroscope("tcp://127.0.0.1:5999", server_key="not-a-key", timeout=0.5)
    if os.name != "posix":   # file modes: POSIX only (Windows: a note is printed instead)
        return
    key = tmp_path / "open.key"
    key.write_text(zmq.curve_keypair()[1].decode())
    os.chmod(key, 0o644)
    assert len(_read_key_file(key)) == 40
    assert "can be read by other users" in capsys.readouterr().err
    os.chmod(key, 0o600)
    _read_key_file(key)
    assert capsys.readouterr().err == ""
