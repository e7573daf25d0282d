"""The microscope interface over the network: a real server process on loopback, the client in this process."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import fast_settings
from napari_hae.core.errors import HAEInputError, MicroscopeFault
from napari_hae.core.instrument.microscope import SimulatedMicroscope
from napari_hae.core.instrument.remote import RemoteMicroscope
from napari_hae.core.instrument.server import MicroscopeServer
from napari_hae.core.record.trace import Trace
from napari_hae.core.run.experiment import Experiment

TOKEN = "s3cret-token"


def _serve(port=0, token=TOKEN):
    cmd = [sys.executable, "-m", "napari_hae.cli", "serve", "--sample", "nanoparticles", "--port", str(port)]
    if token:
        cmd += ["--token", token]
    env = {**os.environ, "NAPARI_HAE_TOKEN": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    assert "serving nanoparticles 96x96 on tcp://127.0.0.1:" in line, proc.stderr.read()
    return proc, line.split(" on ")[1].split()[0]


@pytest.fixture
def server():
    proc, address = _serve()
    yield proc, address
    proc.kill()
    proc.wait()


@pytest.mark.slow
def test_a_run_through_the_server_equals_the_in_process_simulator(server, sample):
    _, address = server
    remote = RemoteMicroscope(address, token=TOKEN, timeout=20)
    assert remote.scan_shape == (96, 96) and remote.energy == sample.energy
    np.testing.assert_array_equal(remote.structural_image(), sample.structural)
    a = Experiment(remote, fast_settings(budget=5))
    a.run()
    b = Experiment(SimulatedMicroscope(sample), fast_settings(budget=5))
    b.run()
    assert a.trace.positions == b.trace.positions and a.trace.values == b.trace.values
    for x, y in zip(a.trace.spectra, b.trace.spectra):
        np.testing.assert_array_equal(x, y)
    st = remote.status()
    assert st["acquisitions"] == 11 and st["position"] == list(a.trace.positions[-1])
    remote.close()


@pytest.mark.slow
def test_wrong_token_and_out_of_field_requests_are_refused(server):
    _, address = server
    with pytest.raises(HAEInputError, match="refused the request: wrong or missing access token"):
        RemoteMicroscope(address, token="guess", timeout=20)
    with pytest.raises(HAEInputError, match="wrong or missing access token"):
        RemoteMicroscope(address, timeout=20)
    m = RemoteMicroscope(address, token=TOKEN, timeout=20)
    with pytest.raises(HAEInputError, match=r"outside the 96 x 96 scan field"):
        m.acquire(96, 3)
    assert m.status()["acquisitions"] == 0      # refused before the instrument was touched
    m.close()


def test_serving_beyond_loopback_needs_a_token_and_encryption(small_sample):
    import zmq

    for kw in ({}, {"token": TOKEN}, {"curve_secret_key": zmq.curve_keypair()[1].decode()}):
        with pytest.raises(HAEInputError, match="without encryption and an access token.*Fix: give --token and "
                                                "--curve"):
            MicroscopeServer(SimulatedMicroscope(small_sample), host="0.0.0.0", **kw)


@pytest.mark.slow
def test_server_killed_mid_run_pauses_the_run_and_a_restart_resumes_it(server, tmp_path):
    proc, address = server
    port = int(address.rsplit(":", 1)[1])
    remote = RemoteMicroscope(address, token=TOKEN, timeout=1.0)
    exp = Experiment(remote, fast_settings(budget=6, acquire_retries=1, acquire_retry_wait=0.0),
                     journal=tmp_path / "trace.journal")
    exp.run(2)
    proc.kill()   # SIGKILL on POSIX, TerminateProcess on Windows
    proc.wait()
    with pytest.raises(MicroscopeFault, match="failed to acquire"):
        exp.step()
    assert exp.trace.n_points == 8 and Trace.load(tmp_path).n_points == 8      # nothing lost, on disk too
    assert any("MicroscopeUnavailable" in e["message"] for e in exp.trace.events)
    proc2, _ = _serve(port=port)                     # the instrument is back on the same address
    try:
        exp.run()                                    # the client reconnects by itself
    finally:
        proc2.kill()
        proc2.wait()
    assert exp.done and exp.trace.n_points == 12 and len(set(exp.trace.positions)) == 12
    exp.close()
    remote.close()


def test_the_answer_to_a_long_dwell_is_waited_for_not_asked_again(small_sample):
    """Issue 26: the request timeout did not grow with the dwell: `--dwell 2 --request-timeout 3` gave 9
    acquisitions on the server for 3 recorded spectra. A dwell longer than the request timeout is now waited for:
    one acquisition each."""
    import threading
    import time

    class Slow(SimulatedMicroscope):
        replays = False

        def acquire(self, y, x, dwell=None):
            time.sleep(dwell or 0.0)
            return super().acquire(y, x)

    s = MicroscopeServer(Slow(small_sample), token=TOKEN)
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    try:
        c = RemoteMicroscope(s.address, token=TOKEN, timeout=0.3)
        for x in range(3):
            np.testing.assert_array_equal(c.acquire(1, x, dwell=0.6), small_sample.spectra[1, x])
        assert c.status()["acquisitions"] == 3
        c.close()
    finally:
        s.stop()
        thread.join(5)


def test_a_retried_acquisition_is_answered_from_the_first_exposure_not_exposed_again(small_sample):
    """Issue 26: over the network a retry exposed the same point again (the server queued each retry as a new
    acquisition: 9 acquisitions for 3 spectra). An acquisition carries a request id; a retry of one that timed out
    carries the same id and the server answers it with the spectrum it acquired, without a second exposure."""
    import threading
    import time

    from napari_hae.core.instrument.remote import MicroscopeUnavailable

    class Slow(SimulatedMicroscope):
        def __init__(self, data):
            super().__init__(data)
            self.exposed = []

        def acquire(self, y, x):
            time.sleep(0.6)
            self.exposed.append((y, x))
            return super().acquire(y, x)

    inner = Slow(small_sample)
    server = MicroscopeServer(inner, token=TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_ms": 20}, daemon=True)
    thread.start()
    try:
        client = RemoteMicroscope(server.address, token=TOKEN, timeout=0.25)
        assert client.capabilities["request_ids"] is True
        with pytest.raises(MicroscopeUnavailable):
            client.acquire(3, 4)                                       # gave up while the beam was on it
        client.timeout = 5.0
        spectrum = client.acquire(3, 4)                                # the guard's retry
        np.testing.assert_array_equal(spectrum, small_sample.spectra[3, 4])
        assert inner.exposed == [(3, 4)] and server.n_acquisitions == 1
        client.acquire(3, 4)                                           # asked again after an answer: a new one
        client.acquire(5, 6)
        assert inner.exposed == [(3, 4), (3, 4), (5, 6)] and server.n_acquisitions == 3
        client.close()
    finally:
        server.stop()
        thread.join(5)


class Exposing(SimulatedMicroscope):
    """An exposure that lasts ``exposure`` seconds (its dwell if None) and, when aborted from another thread, ends
    at once by raising, as an adapter's abort must."""

    def __init__(self, data, exposure=None):
        import threading

        super().__init__(data)
        self.exposure, self.exposed, self.aborts = exposure, [], 0
        self._aborted = threading.Event()

    def acquire(self, y, x, dwell=None):
        self._aborted.clear()
        if self._aborted.wait(self.exposure if self.exposure is not None else (dwell or 0.0)):
            raise RuntimeError("the exposure was aborted")
        self.exposed.append((y, x))
        return super().acquire(y, x)

    def abort(self):
        self.aborts += 1
        self._aborted.set()


def _served(inner, **kw):
    import threading

    server = MicroscopeServer(inner, token=TOKEN, **kw)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_ms": 20}, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.quiet   # measures time
def test_a_busy_server_answers_other_clients_at_once_and_refuses_a_second_exposure(small_sample):
    """Issue 26: a served instrument exposing for one client answered no other (one request at a time: a status or
    a ping waited for the whole exposure). Now the server answers at once while the instrument exposes, says what
    it is doing, and refuses a second acquisition as busy instead of queueing it behind the first."""
    import threading
    import time

    from napari_hae.core.instrument.remote import RemoteRefused

    inner = Exposing(small_sample)
    server, thread = _served(inner)
    try:
        a = RemoteMicroscope(server.address, token=TOKEN, timeout=5)
        b = RemoteMicroscope(server.address, token=TOKEN, timeout=5)
        got = []
        t = threading.Thread(target=lambda: got.append(a.acquire(2, 3, dwell=1.5)))
        t.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        status = b.status()
        b.request("ping")
        RemoteMicroscope(server.address, token=TOKEN, timeout=5).close()   # a client connecting meanwhile
        assert time.perf_counter() - t0 < 0.3, "the second client waited for the first one's exposure"
        assert status["busy"]["op"] == "acquire" and status["busy"]["position"] == [2, 3]
        assert 0.2 < status["busy"]["for_s"] < 1.5
        with pytest.raises(RemoteRefused, match=r"busy: the instrument is acquiring at \(y, x\) = \(2, 3\) for "
                                                r"another request"):
            b.acquire(4, 4, dwell=0.1)
        t.join(5)
        np.testing.assert_array_equal(got[0], small_sample.spectra[2, 3])
        assert inner.exposed == [(2, 3)] and server.n_acquisitions == 1
        assert "busy" not in b.status()
        np.testing.assert_array_equal(b.acquire(4, 4, dwell=0.1), small_sample.spectra[4, 4])   # free again
        a.close()
        b.close()
    finally:
        server.stop()
        thread.join(5)


def test_an_acquisition_that_times_out_is_aborted_over_the_network_and_nothing_is_recorded_for_it(small_sample):
    """Issue 26: there was no abort over the network: an acquisition that ran past its timeout kept the served
    instrument exposing (here for 30 s) and the run waited out its grace for nothing. The client now asks the
    server to abort it (on a connection of its own: the first still waits for its answer); the exposure ends at
    once and no spectrum is returned for it."""
    import time

    from napari_hae.core.instrument.guard import AcquisitionGuard

    inner = Exposing(small_sample, exposure=30.0)
    server, thread = _served(inner)
    try:
        remote = RemoteMicroscope(server.address, token=TOKEN, timeout=5)
        assert remote.capabilities["abort"] is True
        events = []
        guard = AcquisitionGuard(remote, retries=0, timeout=0.3, dwell=0.2, on_event=events.append)
        t0 = time.perf_counter()
        with pytest.raises(MicroscopeFault, match=r"failed to acquire at \(y, x\) = \(5, 6\) 1 times \(last: "
                                                  r"TimeoutError: no spectrum within 0.5 s \(aborted\)\)"):
            guard(5, 6, small_sample.spectra.shape[2:])
        assert time.perf_counter() - t0 < 2.0
        assert inner.aborts == 1 and inner.exposed == [] and server.n_acquisitions == 0
        assert "busy" not in remote.status()                       # the instrument is free for the retry
        inner.exposure = 0.05
        np.testing.assert_array_equal(remote.acquire(5, 6, dwell=0.2), small_sample.spectra[5, 6])
        remote.close()
    finally:
        server.stop()
        thread.join(5)


def test_abort_with_nothing_in_flight_or_an_instrument_without_abort_is_answered_not_failed(small_sample):
    server, thread = _served(SimulatedMicroscope(small_sample))
    try:
        remote = RemoteMicroscope(server.address, token=TOKEN, timeout=5)
        assert remote.capabilities["abort"] is False
        remote.abort()                                             # nothing to ask the server: a no-op
        reply = remote.request("abort")[0]
        assert reply == {"ok": True, "aborted": False}
        remote.close()
    finally:
        server.stop()
        thread.join(5)
