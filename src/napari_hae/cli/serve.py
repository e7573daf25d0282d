"""``napari-hae serve``: a (simulated) microscope on the network, for ``run --microscope``."""

from __future__ import annotations

from ..core.data.io import load_source
from . import _options as opt


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="serve a (simulated) microscope over the network for 'run --microscope'")
    opt.add_source(sv, required=True)
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    sv.add_argument("--port", type=int, default=5555, help="TCP port (0: any free port; default 5555)")
    sv.add_argument("--token", help="require this access token (default: $NAPARI_HAE_TOKEN if set)")
    sv.add_argument("--noise", choices=("none", "poisson"), default="none")
    sv.add_argument("--random-seed", type=int, default=0)
    sv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    """Serve a simulated microscope (on pre-acquired data) until Ctrl-C."""
    from ..core.instrument.remote import MicroscopeServer

    data = load_source(opt.source(args))
    mic = opt.simulator(data, args.noise, args.random_seed)
    token = opt.token(args)
    server = MicroscopeServer(mic, host=args.host, port=args.port, token=token, name=data.name)
    print(f"serving {data.name} {data.scan_shape[0]}x{data.scan_shape[1]} on {server.address}"
          f"{' (token required)' if token else ''}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.close()
    return 0
