"""Serve a sample and acquire one spectrum over the network with torch, napari, Qt, matplotlib, dask, AtomAI,
HyperSpy, pydantic and h5py unimportable: what a microscope PC with a serve-only install has. Prints the result."""

import importlib.abc
import sys
import threading

BLOCKED = {"torch", "gpytorch", "napari", "qtpy", "PyQt6", "PyQt5", "matplotlib", "dask", "distributed", "atomai",
           "hyperspy", "exspy", "magicgui", "vispy", "pydantic", "h5py"}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this microscope PC")
        return None


sys.meta_path.insert(0, Block())
import numpy as np  # noqa: E402

from napari_hae.cli import _options as opt  # noqa: E402
from napari_hae.cli import build_parser  # noqa: E402
from napari_hae.core.instrument.adapters import make_microscope  # noqa: E402
from napari_hae.core.instrument.remote import RemoteMicroscope  # noqa: E402
from napari_hae.core.instrument.server import MicroscopeServer  # noqa: E402

args = build_parser(["serve"]).parse_args(["serve", "--sample", "nanoparticles", "--port", "0"])
name, params = opt.microscope(args)   # what 'napari-hae serve' does
data = opt.replay_data(args, name, "give --sample")
server = MicroscopeServer(make_microscope(name, data, seed=args.random_seed, **params), port=0, name=data.name)
t = threading.Thread(target=server.serve_forever, daemon=True)
t.start()
client = RemoteMicroscope(server.address, timeout=20)
ok = np.array_equal(client.acquire(3, 4), data.spectra[3, 4])
client.close()
server.stop()
print("served without", sorted(BLOCKED & {k.split(".")[0] for k in sys.modules}) or "any heavy package", ok)
