"""``napari-allen local-api``: run the local Allen API server in the foreground.

    napari-allen local-api --port 8765 [--host 127.0.0.1] [--latency-ms 50] [--fault-rate 0.1]

Point the plugin or the CLI at it with ``NAPARI_ALLEN_API_URL=http://127.0.0.1:8765``.
"""

from __future__ import annotations

import argparse
import sys


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``local-api`` sub-command."""
    parser = subparsers.add_parser(
        "local-api",
        help="run the local Allen API server (real formats, bundled data, fault injection)",
        description="Serve the Allen API's URL forms from the data bundled with napari-allen "
                    "(synthetic grids, flagged, where no real file exists) until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8765,
                        help="TCP port (0 = any free port; default 8765)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--latency-ms", type=_non_negative, default=0.0,
                        help="delay added before every response, in milliseconds")
    parser.add_argument("--fault-rate", type=_fraction, default=0.0,
                        help="probability (0-1) of a random retryable fault per request")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the server, print its URL on stdout, serve until interrupted."""
    from allen_local_api.server import LocalAllenServer

    try:
        server = LocalAllenServer(host=args.host, port=args.port, latency_ms=args.latency_ms,
                                  fault_rate=args.fault_rate, seed=args.seed)
        server.start()
    except OSError as exc:
        print(f"local-api: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(server.url, flush=True)
    print(f"local Allen API server at {server.url} (latency {args.latency_ms:g} ms, fault rate "
          f"{args.fault_rate:g}); Ctrl-C to stop", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0
