"""Benchmark: spatial-search lines for N seed voxels against the local Allen API server with
50 ms latency per request.

Compares, in the same run and on the same seeds:

1. baseline: the lines script's loop, one ``urllib`` request per seed, one after another, no
   cache (Allen's example ``DownloadTargetLines``);
2. ``search_seeds`` with a thread pool (``--jobs``) through ``AllenClient`` (cold cache);
3. the same again with a fresh client on the same cache folder (warm cache): no request
   should reach the server.

The server runs in a child process so that its JSON work does not compete with the client for
this process' GIL (as with the real, remote API). Prints times and ratios vs the baseline.

    python benchmarks/bench_spatial_search.py            # 1,000 seeds (about a minute)
    python benchmarks/bench_spatial_search.py --quick    # 200 seeds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

EXPERIMENT = 156394513

_SERVER_CHILD = r"""
import sys
from allen_local_api.server import LocalAllenServer
server = LocalAllenServer(host="127.0.0.1", port=0, latency_ms=float(sys.argv[1]))
server.warm(ccf=True)  # build its tables first: no first-request cost in the timings
server.start()
print(server.url, flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "count":
        n = sum("target_spatial" in (r["path"] + str(r["query"])) for r in server.requests)
        print(n, flush=True)
    elif command == "quit":
        break
server.stop()
"""


class ChildServer:
    """The local server in a subprocess; ``count()`` = target-spatial requests it served."""

    def __init__(self, latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_CHILD, str(latency_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError(f"local server did not start (got {self.url!r})")

    def count(self) -> int:
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)


def script_loop(base_url: str, seeds: np.ndarray, experiment: int) -> int:
    """The lines script's ``DownloadTargetLines`` loop: sequential, uncached."""
    fmt = (base_url + "/api/v2/data/query.json?criteria=service::mouse_connectivity_target_"
           "spatial%%5Bseed_point$eq%d,%d,%d%%5D%%5Bsection_data_set$eq%d%%5D")
    lines = []
    for seed in seeds:
        url = fmt % (seed[0], seed[1], seed[2], experiment)
        with urllib.request.urlopen(url, timeout=60) as response:
            payload = json.loads(response.read())
        if payload.get("success") is True and isinstance(payload.get("msg"), list):
            lines += payload["msg"]
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="seed voxels (default 1000)")
    parser.add_argument("--quick", action="store_true", help="200 seeds")
    parser.add_argument("--jobs", type=int, default=32, help="concurrent queries (default 32)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    n = 200 if args.quick else args.n

    from napari_allen.analysis.seeds import seed_points_um, select_seeds
    from napari_allen.api.client import AllenClient
    from napari_allen.atlas.fiber_tracts import FiberTracts
    from napari_allen.io.nrrd import read_nrrd
    from napari_allen.workflows.seed_search import search_seeds

    server = ChildServer(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-spatial-") as tmp:
            cache = Path(tmp) / "cache"
            with AllenClient(server.url, cache_dir=cache) as client:
                density = read_nrrd(client.grid_nrrd(EXPERIMENT, "projection_density", 100))
                seeds = select_seeds(density, fiber_tracts=FiberTracts.default(),
                                     max_seeds=n)
                if len(seeds) < n:  # widen the range rather than benchmark fewer seeds
                    seeds = select_seeds(density, density_range=(1e-6, 1.0), max_seeds=n)
            points = seed_points_um(seeds)
            print(f"{len(points)} seed voxels of experiment {EXPERIMENT}, "
                  f"server latency {args.latency_ms:g} ms, jobs {args.jobs}")

            t0 = time.perf_counter()
            n_base = script_loop(server.url, points, EXPERIMENT)
            t_base = time.perf_counter() - t0
            print(f"baseline (script loop, sequential): {t_base:8.2f} s  {n_base} lines")

            before = server.count()
            with AllenClient(server.url, cache_dir=cache) as client:
                cold = search_seeds(client, points, section_data_set=EXPERIMENT,
                                    jobs=args.jobs)
            cold_requests = server.count() - before
            print(f"search_seeds cold cache:            {cold.seconds:8.2f} s  "
                  f"{len(cold.lines)} lines, {cold_requests} requests, "
                  f"{cold.n_failed} failed  -> {t_base / cold.seconds:6.1f}x faster")

            before = server.count()
            with AllenClient(server.url, cache_dir=cache) as client:
                warm = search_seeds(client, points, section_data_set=EXPERIMENT,
                                    jobs=args.jobs)
            warm_requests = server.count() - before
            print(f"search_seeds warm cache:            {warm.seconds:8.2f} s  "
                  f"{len(warm.lines)} lines, {warm_requests} requests  -> "
                  f"{t_base / warm.seconds:6.1f}x faster")

            ok = (len(cold.lines) == n_base == len(warm.lines) and warm_requests == 0
                  and t_base / cold.seconds >= 10)
            print("target (>= 10x cold, same lines, 0 requests warm):",
                  "met" if ok else "NOT met")
            return 0 if ok else 1
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(main())
