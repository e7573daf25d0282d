"""``napari-hae serve``: a (simulated) microscope on the network, for ``run --microscope``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from . import _options as opt


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="serve a microscope (any adapter) over the network for 'run --microscope'")
    opt.add_source(sv, required=False)
    sv.add_argument("--microscope", metavar="NAME[:PARAM=V,...]", default="simulator",
                    help="the adapter to serve (default: the simulator on --sample/--spectrum), e.g. nion-usim")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    sv.add_argument("--port", type=_port, default=5555, help="TCP port (0: any free port; default 5555)")
    sv.add_argument("--token", help="require this access token (default: $NAPARI_HAE_TOKEN if set)")
    sv.add_argument("--curve", action="store_true",
                    help="encrypt the connection (ZeroMQ CURVE); prints the public key clients need "
                         "(run --microscope remote:address=...,server_key=KEY). Required off loopback")
    sv.add_argument("--curve-key", metavar="FILE",
                    help="the server's secret CURVE key (z85 text; created there if missing) so that clients keep "
                         "the same public key across restarts (default: a new key each start)")
    sv.add_argument("--insecure", action="store_true",
                    help="allow serving off loopback in clear text (an isolated, trusted network only)")
    sv.add_argument("--noise", choices=("none", "poisson"), default="none")
    sv.add_argument("--random-seed", type=int, default=0)
    sv.set_defaults(func=cmd_serve)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535; 0: any free port)")
    return port


def _read_key_file(path: Path) -> str:
    """A saved secret key, checked: a directory, unreadable or damaged file is a clear error; one other users can
    read is used with a warning (anyone who reads it can impersonate this server)."""
    import stat
    import sys

    from ..core.errors import HAEInputError
    from ..core.instrument.remote import check_curve_key

    if not path.is_file():
        raise HAEInputError(f"--curve-key {str(path)!r} is not a file.", "give the path of the key file (it is "
                                                                       "created there if missing).")
    try:
        text = path.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise HAEInputError(f"--curve-key {str(path)!r} cannot be read as a key ({exc}).",
                            "delete it to make a new key (clients then need the new public key).") from None
    check_curve_key(text, f"The key file {str(path)!r}")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        print(f"warning: {path} can be read by other users of this computer, who could then impersonate this "
              f"server. Fix: chmod 600 {path}.", file=sys.stderr)
    elif os.name != "posix":
        print(f"note: {path} holds the server's secret key; on Windows keep it in a folder only you can read "
              "(your user profile).", file=sys.stderr)
    return text


def _curve_secret(args) -> str | None:
    """The server's secret CURVE key: read from --curve-key (created there if missing), or a new one."""
    if not (args.curve or args.curve_key):
        return None
    import zmq

    if args.curve_key:
        path = Path(args.curve_key)
        if path.exists():
            return _read_key_file(path)
        _, secret = zmq.curve_keypair()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret.decode())
        if os.name == "posix":   # on Windows a file's mode bits do not keep other users out
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        else:
            print(f"note: {path} holds the server's secret key; keep it in a folder only you can read (your user "
                  "profile).", file=sys.stderr)
        return secret.decode()
    return zmq.curve_keypair()[1].decode()


def cmd_serve(args) -> int:
    """Serve a microscope (the simulator on pre-acquired data, or any adapter) until Ctrl-C."""
    from ..core.instrument.adapters import close_microscope, make_microscope
    from ..core.instrument.server import MicroscopeServer

    name, params = opt.microscope(args)   # the simulator's --noise is among its parameters
    data = opt.replay_data(args, name, "give --sample NAME or --spectrum FILE, or serve a live adapter "
                                       "(--microscope NAME).")
    mic = make_microscope(name, data, seed=args.random_seed, **params)
    label = data.name if data is not None else getattr(mic, "name", name)
    token = opt.token(args)
    try:
        server = MicroscopeServer(mic, host=args.host, port=args.port, token=token, name=label,
                                  curve_secret_key=_curve_secret(args), allow_insecure=args.insecure)
    except BaseException:
        close_microscope(mic)
        raise
    ny, nx = mic.scan_shape
    print(f"serving {label} {ny}x{nx} on {server.address}{' (token required)' if token else ''}", flush=True)
    if server.public_key:
        print(f"CURVE public key (give it to clients as server_key): {server.public_key}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.close()
    finally:
        close_microscope(mic)   # a live instrument: the beam blanked, its cameras stopped
    return 0
