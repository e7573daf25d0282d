"""Class 7 of the reliability issue: the network server authenticates before it looks at anything else, accepts
no array data and no oversized frames, validates every field by type, answers malformed requests as the client's
error, lets only an authenticated client shut it down, and encrypts off loopback (CURVE)."""

import json
import threading

import numpy as np
import pytest

from napari_hae.core.errors import HAEInputError
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.instrument.remote import MicroscopeUnavailable, RemoteMicroscope, check_address
from napari_hae.core.instrument.server import MAX_REQUEST_BYTES, MicroscopeServer

TOKEN = "tok-123"


class Counting(SimulatedMicroscope):
    def __init__(self, data):
        super().__init__(data)
        self.calls = 0

    def acquire(self, y, x, dwell=None):
        self.calls += 1
        return super().acquire(y, x)


@pytest.fixture
def srv(small_sample):
    s = MicroscopeServer(Counting(small_sample), token=TOKEN)
    yield s
    s.close()


def req(**h):
    return [json.dumps(h).encode(), b""]


def kind(reply):
    return reply[0].get("kind") if not reply[0]["ok"] else "ok"


def test_the_token_is_checked_before_anything_else(srv):
    assert kind(srv.answer(req(op="acquire", y=1, x=1))) == "unauthorized"
    assert kind(srv.answer(req(op="no-such-op"))) == "unauthorized"      # not even the op is looked at
    assert kind(srv.answer(req(op="acquire", y="1", x=1, token="wrong"))) == "unauthorized"
    assert srv.microscope.calls == 0


def test_array_data_in_a_request_is_refused_unread(srv):
    big = np.zeros(10_000).tobytes()
    r = srv.answer([json.dumps({"op": "ping", "token": TOKEN}).encode(), big])
    assert kind(r) == "bad_request" and "empty second frame" in r[0]["error"]


def test_an_oversized_header_is_refused(srv):
    r = srv.answer([b"{" + b" " * (MAX_REQUEST_BYTES + 10) + b"}", b""])
    assert kind(r) == "bad_request" and "exceeds" in r[0]["error"]


@pytest.mark.parametrize("fields,expect", [
    ({"op": "acquire", "y": "3", "x": 4}, "y must be a JSON integer, got '3'"),
    ({"op": "acquire", "y": 3.0, "x": 4}, "y must be a JSON integer, got 3.0"),
    ({"op": "acquire", "y": True, "x": 4}, "y must be a JSON integer, got True"),
    ({"op": "acquire", "y": 3}, "the field 'x' is required"),
    ({"op": "acquire", "y": 3, "x": 4, "dwell": -1}, "dwell must be a number of seconds >= 0"),
    ({"op": "acquire", "y": 3, "x": 4, "dwel": 1}, "unknown field(s) ['dwel']"),
    ({"op": "blank", "on": "false"}, "on must be true or false, got 'false'"),
    ({"op": "blank", "on": 0}, "on must be true or false, got 0"),
    ({"op": ["acquire"]}, "unknown operation ['acquire']"),
    ({"op": "move", "y": None, "x": 1}, "y must be a JSON integer, got None"),
])
def test_every_field_is_validated_by_type(srv, fields, expect):
    r = srv.answer(req(**fields, token=TOKEN))
    assert kind(r) == "bad_request" and expect in r[0]["error"]
    assert srv.microscope.calls == 0 and srv.blanked is False


@pytest.mark.parametrize("frames", [[b"not json", b""], [b"[1, 2]", b""], [b"\xff\xfe", b""], [b"{}"],
                                    [b"{}", b"", b""]])
def test_malformed_requests_are_client_errors_without_a_traceback(srv, frames, caplog):
    r = srv.answer(frames)
    assert kind(r) == "bad_request"
    assert not any(rec.exc_info for rec in caplog.records)


def test_an_instrument_error_is_reported_as_such(small_sample):
    class Broken(SimulatedMicroscope):
        def acquire(self, y, x, dwell=None):
            raise OSError("detector cooling fault")

    s = MicroscopeServer(Broken(small_sample))
    try:
        r = s.answer(req(op="acquire", y=1, x=1))
        assert kind(r) == "instrument_error" and "detector cooling fault" in r[0]["error"]
    finally:
        s.close()


def test_shutdown_needs_a_token(small_sample, srv):
    open_srv = MicroscopeServer(SimulatedMicroscope(small_sample))
    try:
        r = open_srv.answer(req(op="shutdown"))
        assert kind(r) == "bad_request" and "disabled on a server without an access token" in r[0]["error"]
        assert open_srv._stop is False
    finally:
        open_srv.close()
    assert kind(srv.answer(req(op="shutdown"))) == "unauthorized" and srv._stop is False
    assert kind(srv.answer(req(op="shutdown", token=TOKEN))) == "ok" and srv._stop is True


def test_a_blank_with_a_real_boolean_works(srv):
    assert srv.answer(req(op="blank", on=True, token=TOKEN))[0]["blanked"] is True
    assert srv.answer(req(op="blank", on=False, token=TOKEN))[0]["blanked"] is False


@pytest.mark.parametrize("address", ["127.0.0.1:5555", "tcp://127.0.0.1", "tcp://127.0.0.1:70000",
                                     "tcp://:5555", "tcp://host:port"])
def test_malformed_addresses_are_clear_errors(address):
    with pytest.raises(HAEInputError, match="Fix: use tcp://HOST:PORT"):
        check_address(address)


def test_a_port_in_use_is_a_clear_error(small_sample, srv):
    port = int(srv.address.rsplit(":", 1)[1])
    with pytest.raises(HAEInputError, match=rf"Cannot serve on tcp://127.0.0.1:{port}.*Fix: choose a free port"):
        MicroscopeServer(SimulatedMicroscope(small_sample), port=port)


def test_a_port_out_of_range_is_refused_by_serve(capsys):
    from napari_hae.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--sample", "nanoparticles", "--port", "70000"])
    assert "70000 is not a TCP port" in capsys.readouterr().err


def _serve_in_thread(server):
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_ms": 20}, daemon=True)
    t.start()
    return t


def test_curve_encrypts_and_only_the_keyed_client_gets_answers(small_sample):
    import zmq

    secret = zmq.curve_keypair()[1].decode()
    s = MicroscopeServer(SimulatedMicroscope(small_sample), token=TOKEN, curve_secret_key=secret)
    t = _serve_in_thread(s)
    try:
        c = RemoteMicroscope(s.address, token=TOKEN, timeout=3, server_key=s.public_key)
        np.testing.assert_array_equal(c.acquire(2, 3), small_sample.spectra[2, 3])
        c.close()
        with pytest.raises(MicroscopeUnavailable):    # without the key the handshake never completes
            RemoteMicroscope(s.address, token=TOKEN, timeout=0.5)
    finally:
        s.stop()
        t.join(5)


def test_a_server_that_is_not_running_is_a_sentence(capsys, tmp_path):
    from napari_hae.cli import main

    rc = main(["run", "--microscope", "remote:address=tcp://127.0.0.1:1,timeout=0.3", "--steps", "1", "--out",
               str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "No microscope answers at tcp://127.0.0.1:1" in err and "Fix: start the server" in err
