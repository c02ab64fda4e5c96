"""The local Allen API server in a child process, for benchmarks.

Its JSON work then does not compete with the measured client for one interpreter's GIL (as
with the real, remote API). ``count(text)`` = requests whose path or query contains ``text``.
"""

from __future__ import annotations

import subprocess
import sys

_SERVER_CHILD = r"""
import sys
from allen_local_api import unionize
from allen_local_api.server import LocalAllenServer
server = LocalAllenServer(host="127.0.0.1", port=0, latency_ms=float(sys.argv[1]))
if float(sys.argv[3]) > 0:  # room for every payload and unionize a benchmark warms up
    server.app.store.cache.max_bytes = max(server.app.store.cache.max_bytes,
                                           int(float(sys.argv[3]) * 2**20))
    unionize.CACHE_BYTES = max(unionize.CACHE_BYTES, int(float(sys.argv[3]) * 2**20))
server.warm(ccf=sys.argv[2] == "ccf")  # build its tables first: no first-request cost
server.start()
print(server.url, flush=True)
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "count":
        n = sum(arg in (r["path"] + str(r["query"])) for r in server.requests)
        print(n, flush=True)
    elif command == "quit":
        break
server.stop()
"""


class ChildServer:
    """``napari-allen``'s local server with ``latency_ms`` per response, in a subprocess.

    ``cache_mb``: at least this much room in the server's payload and unionize caches (their
    defaults hold about 80 experiments' NRRD + zip and 240 unionizes: a benchmark that warms
    the server for more would otherwise time the server rebuilding what it evicted)."""

    def __init__(self, latency_ms: float, *, ccf: bool = True, cache_mb: float = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_CHILD, str(latency_ms), "ccf" if ccf else "-",
             str(float(cache_mb))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError(f"local server did not start (got {self.url!r})")

    def count(self, text: str = "") -> int:
        self.proc.stdin.write(f"count {text}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)

    def __enter__(self) -> ChildServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
