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


def serve(data):
    """Start the server in a thread: (uri, server object, stop())."""
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    server = STEMServer(data)
    uri = daemon.register(server, objectId="microscope.server")
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()

    def stop():
        daemon.shutdown()
        thread.join(5)
        daemon.close()

    return str(uri), server, stop
