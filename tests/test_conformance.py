"""The adapter conformance kit on every shipped adapter: the simulator, the ZeroMQ remote (serving Nion's simulated
STEM through 'napari-hae serve --microscope'), nion-usim, and dtmicroscope against a DTMicroscope protocol server;
and on adapters that break the rules, so that each check is seen to fail."""

import os
import subprocess
import sys

import numpy as np
import pytest

from napari_hae.core.instrument.adapters import make_microscope
from napari_hae.core.instrument.conformance import check_microscope
from napari_hae.core.instrument.microscope import SimulatedMicroscope

ALL = ("structural image", "energy axis", "corners", "outside the field", "spectra match the image", "dwell",
       "beam time", "blanking", "one acquisition in flight", "reconnect", "resume by registration")


def test_the_simulator_conforms(small_sample):
    report = check_microscope(lambda: make_microscope("simulator", small_sample))
    assert report.ok, report.text()
    assert [c.name for c in report.checks] == list(ALL)
    assert report.outcome("dwell") == "skip" and report.outcome("blanking") == "skip"
    assert report.outcome("beam time") == "skip"


@pytest.mark.slow
@pytest.mark.quiet   # measures time (the dwell check)
def test_nion_usim_conforms():
    pytest.importorskip("nion.usim_device", reason="Nion's simulated STEM (napari-hae[nion]) is absent")
    report = check_microscope(lambda: make_microscope("nion-usim", None, size=32, exposure_ms=2.0))
    assert report.ok, report.text()
    assert {c.name: c.outcome for c in report.checks} == {**dict.fromkeys(ALL, "pass"), "reconnect": "skip"}, \
        report.text()   # Nion's adapter holds no connection to lose: no reconnect()


def test_dtmicroscope_conforms_and_its_row_is_its_x(small_sample):
    pytest.importorskip("Pyro5", reason="Pyro5 (napari-hae[dtmicroscope]) is absent")
    from dtm_server import serve

    data = _non_square(small_sample)
    uri, server, stop = serve(data)
    try:
        mic = make_microscope("dtmicroscope", None, uri=uri)
        assert server.initialized == "STEM" and mic.scan_shape == (48, 40)
        for y, x in ((0, 39), (47, 0), (20, 31)):      # a swapped row and column would fail (or IndexError)
            np.testing.assert_array_equal(mic.acquire(y, x), data.spectra[y, x])
        e = mic.energy
        assert (e.size, e.offset, e.scale, e.units) == (data.energy.size, pytest.approx(data.energy.offset),
                                                        pytest.approx(data.energy.scale, rel=1e-9), "eV")
        mic.close()
        report = check_microscope(lambda: make_microscope("dtmicroscope", None, uri=uri))
        assert report.ok, report.text()
        assert report.outcome("reconnect") == "pass", report.text()
    finally:
        stop()


def _non_square(data):
    from napari_hae.core.data.dataset import SpectrumImage

    return SpectrumImage(structural=data.structural[:, :40].copy(), spectra=data.spectra[:, :40].copy(),
                         energy=data.energy, name="non-square")


@pytest.mark.slow   # a server process with Nion's simulated STEM
@pytest.mark.quiet   # measures time (the dwell check)
def test_the_remote_adapter_conforms_serving_any_adapter(tmp_path):
    pytest.importorskip("nion.usim_device", reason="Nion's simulated STEM (napari-hae[nion]) is absent")
    cmd = [sys.executable, "-m", "napari_hae.cli", "serve", "--microscope", "nion-usim:size=32,exposure_ms=2",
           "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NAPARI_HAE_TOKEN": ""})
    try:
        line = proc.stdout.readline()
        assert "serving Nion" in line and " on tcp://127.0.0.1:" in line, proc.stderr.read()
        address = line.split(" on ")[1].split()[0]
        report = check_microscope(lambda: make_microscope("remote", None, address=address))
        assert report.ok, report.text()
        assert report.outcome("dwell") == "pass" and report.outcome("blanking") == "pass", report.text()
        assert report.outcome("beam time") == "pass", report.text()
    finally:
        proc.kill()
        proc.wait()


class Swapped(SimulatedMicroscope):
    def acquire(self, y, x):
        return super().acquire(x, y)


class Raises(SimulatedMicroscope):
    def acquire(self, y, x):
        return self.data.spectra[y, x].astype(float)      # outside the field: IndexError, not a refusal


class Blind(SimulatedMicroscope):
    replays = False

    def acquire(self, y, x, dwell=None):                  # takes a dwell and ignores it
        return super().acquire(y, x)

    def blank(self):
        pass

    def unblank(self):
        pass


class Lingering:
    """A live instrument (no pre-acquired ``data``) that keeps the beam on for a whole extra frame after the
    exposure, like the Nion adapter before issue 26."""

    def __init__(self, data):
        self._sim = SimulatedMicroscope(data)
        self.scan_shape, self.energy, self.signal_shape = data.scan_shape, data.energy, data.signal_shape
        self.structural_image = self._sim.structural_image

    def acquire(self, y, x, dwell=0.01):
        import time

        time.sleep(2 * dwell)
        return self._sim.acquire(y, x)

    def blank(self):
        pass

    def unblank(self):
        pass


def test_each_check_fails_on_an_adapter_that_breaks_it(small_sample):
    data = _non_square(small_sample)
    assert check_microscope(lambda: Swapped(data)).outcome("corners") == "fail"
    square = check_microscope(lambda: Swapped(small_sample))
    assert square.outcome("spectra match the image") == "fail", square.text()
    assert check_microscope(lambda: Raises(small_sample)).outcome("outside the field") == "fail"
    blind = check_microscope(lambda: Blind(small_sample))
    assert blind.outcome("dwell") == "fail" and blind.outcome("blanking") == "pass", blind.text()
    lingering = check_microscope(lambda: Lingering(small_sample))
    assert lingering.outcome("beam time") == "fail" and lingering.outcome("dwell") == "pass", lingering.text()
    assert "beam on 2.0" in lingering.text() and "x the dwell of 0.2 s" in lingering.text()
    rng = np.random.default_rng(0)
    noise = check_microscope(lambda: _with_image(small_sample, rng.random(small_sample.scan_shape)))
    assert noise.outcome("resume by registration") == "fail", noise.text()


class Forgetful(SimulatedMicroscope):
    """reconnect() opens a new session and does not restore it (DTMicroscope's server gives every connection a fresh
    microscope with no data: a run that reconnected failed every retry with AttributeError)."""

    replays = False

    def __init__(self, data, restores: bool):
        super().__init__(data)
        self.restores, self.session = restores, True

    def reconnect(self):
        self.session = self.restores

    def acquire(self, y, x):
        if not self.session:
            raise AttributeError("'STEM' object has no attribute 'dataset'")
        return super().acquire(y, x)


def test_the_kit_checks_that_a_reconnect_restores_the_session(small_sample):
    """Issue 26: the kit did not check reconnect(), and DTMicroscope's adapter passed it with a reconnect that
    never restored the server's session."""
    broken = check_microscope(lambda: Forgetful(small_sample, restores=False))
    assert broken.outcome("reconnect") == "fail", broken.text()
    assert "after reconnect() acquire(24, 24) raised AttributeError" in broken.text()
    good = check_microscope(lambda: Forgetful(small_sample, restores=True))
    assert good.outcome("reconnect") == "pass", good.text()
    assert check_microscope(lambda: SimulatedMicroscope(small_sample)).outcome("reconnect") == "skip"


def _with_image(data, image):
    mic = SimulatedMicroscope(data)
    mic.structural_image = lambda: image
    return mic


def test_check_microscope_prints_the_table_and_fails_a_broken_adapter(capsys):
    from napari_hae.cli import main
    from napari_hae.core.instrument.adapters import MICROSCOPES, register_microscope

    assert main(["check-microscope", "simulator", "--sample", "nanoparticles"]) == 0
    out = capsys.readouterr().out
    assert "PASS  corners" in out and out.rstrip().endswith("simulator: conforms (4 checks skipped: capabilities it "
                                                            "does not have)")

    @register_microscope("test-swapped", needs_data=True)
    def swapped(data, *, seed=0):
        return Swapped(_non_square(data))

    try:
        assert main(["check-microscope", "test-swapped", "--sample", "nanoparticles"]) == 1
        out = capsys.readouterr().out
        assert "FAIL  corners" in out and "test-swapped: FAILS corners" in out
    finally:
        MICROSCOPES.pop("test-swapped")


@pytest.mark.parametrize("argv, said", [
    (["check-microscope", "simulator"], "replays pre-acquired data, and none was given. Fix: napari-hae "
                                        "check-microscope simulator --sample nanoparticles"),
    (["check-microscope", "remote:address=tcp://127.0.0.1:1", "--sample", "nanoparticles"],
     "does not replay data: --sample/--spectrum would be ignored"),
])
def test_the_conformance_kit_checks_its_own_input(argv, said, capsys):
    """Issue 30, class 6: check-microscope simulator without data was a traceback; --sample was silently ignored."""
    from napari_hae.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_the_conformance_kit_refuses_a_negative_dwell(capsys):
    """--dwell -1 sent negative dwells and reported PASS."""
    from napari_hae.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["check-microscope", "simulator", "--sample", "nanoparticles", "--dwell", "-1"])
    assert exc.value.code == 2 and "--dwell: -1 s is not a dwell to check: give 0 < S <= 60 seconds" in \
        capsys.readouterr().err


def test_a_dtmicroscope_pixel_size_is_carried_to_the_image_and_through_a_server(small_sample):
    """Issue 26: the DTMicroscope adapter (and so the remote serving it) carried no pixel size: a live image of it
    was in pixels whatever its calibration. Its server sends none, so the adapter takes one and describes it; the
    served client forwards it."""
    pytest.importorskip("Pyro5", reason="Pyro5 (napari-hae[dtmicroscope]) is absent")
    import threading

    from dtm_server import serve
    from napari_hae.core.instrument.live import LiveImage
    from napari_hae.core.instrument.remote import RemoteMicroscope
    from napari_hae.core.instrument.server import MicroscopeServer

    uri, _, stop = serve(_non_square(small_sample))
    try:
        plain = make_microscope("dtmicroscope", None, uri=uri)
        assert (LiveImage.of(plain, "dtmicroscope").pixel_size, LiveImage.of(plain, "dtmicroscope").pixel_units) \
            == (1.0, "px")                                       # none given: said in pixels, not invented
        plain.close()
        mic = make_microscope("dtmicroscope", None, uri=uri, pixel_size=0.25, pixel_units="nm")
        image = LiveImage.of(mic, "dtmicroscope")
        assert (image.pixel_size, image.pixel_units) == (0.25, "nm")
        server = MicroscopeServer(mic)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_ms": 20}, daemon=True)
        thread.start()
        try:
            remote = RemoteMicroscope(server.address, timeout=5)
            served = LiveImage.of(remote, "remote")
            assert (served.pixel_size, served.pixel_units) == (0.25, "nm") and served.scan_shape == (48, 40)
            remote.close()
        finally:
            server.stop()
            thread.join(5)
    finally:
        stop()
