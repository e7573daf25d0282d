"""A small DTMicroscope STEM server for the tests: the calls of DTMicroscope's ``server_stem`` (Pyro5), over a
spectrum image, indexing ``dataset[key][x][y]`` with x the row, as DTMicroscope does. DTMicroscope itself is not on
the package registry; this speaks its protocol."""

from __future__ import annotations

import threading

import numpy as np
import Pyro5.api


def serialize_array(array):
    array = np.asarray(array)
    return array.tolist(), array.shape, str(array.dtype)


@Pyro5.api.expose
class STEMServer:
    def __init__(self, data):
        self.data, self.initialized, self.calls = data, None, 0

    def initialize_microscope(self, microscope="dummy"):
        self.initialized = microscope

    def register_data(self, data_source="test.h5"):
        raise FileNotFoundError(data_source)   # the tests' server has its dataset built in

    def get_overview_image(self):
        return serialize_array(self.data.structural)

    def get_spectrum_image_e_axis(self, key):
        return serialize_array(self.data.energy.values)

    def get_point_data(self, key, x, y):
        if key != "Channel_001":
            raise KeyError(key)
        self.calls += 1
        return serialize_array(self.data.spectra[x][y])   # x: the row, as in DTMicroscope


# the datasets a session server can register, by name (DTMicroscope reads a file)
FILES: dict = {}


@Pyro5.api.expose
@Pyro5.api.behavior(instance_mode="session")
class SessionSTEMServer(STEMServer):
    """As DTMicroscope's server: every connection gets a fresh microscope object with no data until it registers
    some (a server restarted mid-run has forgotten the run's session)."""

    def __init__(self):
        super().__init__(None)

    def register_data(self, data_source="test.h5"):
        self.data = FILES[data_source]

    def get_overview_image(self):
        if self.data is None:
            raise AttributeError("'NoneType' object has no attribute 'structural'")   # what the real one raises
        return super().get_overview_image()


def serve(data, port: int = 0, sessions: bool = False):
    """Start the server in a thread: (uri, server object (None with ``sessions``), stop())."""
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=port)
    server = None if sessions else STEMServer(data)
    uri = daemon.register(SessionSTEMServer if sessions else server, objectId="microscope.server")
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()

    def stop():
        daemon.shutdown()
        thread.join(5)
        daemon.close()

    return str(uri), server, stop


if __name__ == "__main__":   # a server process, as DTMicroscope's server_stem runs: python dtm_server.py PORT
    import sys

    from napari_hae.core.data.samples.nanoparticles import make_nanoparticles

    FILES["sample.h5"] = make_nanoparticles(shape=(48, 48), n_clusters=6, seed=3)   # the tests' small_sample
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=int(sys.argv[1]))
    print(daemon.register(SessionSTEMServer, objectId="microscope.server"), flush=True)
    daemon.requestLoop()
