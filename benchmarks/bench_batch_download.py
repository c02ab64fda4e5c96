"""Batch download benchmark against the local Allen API server (in-process, loopback).

Measured in one run, with ``--latency-ms`` (default 50) injected per request:

1. baseline: the seed documents' loop, one ``requests.get`` at a time, body written to disk;
2. ``download_many`` with ``--jobs`` (default 16) threads: speed-up over the baseline
   (target >= 10x);
3. peak Python memory (tracemalloc) of ``download_many`` for 100 grids vs all N grids
   (target: ratio ~1, memory does not grow with the number of grids);
4. the same batch with ``--fault-rate`` (default 0.1) injected faults: every file must match
   the server's checksum, nothing may be left behind (``.part``/``.lock``), nothing failed.

Usage: ``python benchmarks/bench_batch_download.py [--n 500] [--jobs 16] [--quick]``
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit

import requests

from napari_allen.api.batch import GridRequest, download_many
from napari_allen.api.client import AllenClient
from napari_allen.local_api.server import LocalAllenServer


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def sequential(urls: list[str], out: Path) -> float:
    """The seeds' way: one blocking request after another, whole body in memory."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for n, url in enumerate(urls):
        resp = requests.get(url, timeout=60)
        resp.raise_for_status()
        (out / f"{n}.zip").write_bytes(resp.content)
    return time.perf_counter() - start


def batch(client: AllenClient, ids: list[int], out: Path, jobs: int):
    reqs = [GridRequest(i, ("energy",), dest=out / f"{i}_energy_200um.zip") for i in ids]
    start = time.perf_counter()
    frame = download_many(client, reqs, jobs=jobs)
    return time.perf_counter() - start, frame


def peak_memory(client: AllenClient, ids: list[int], out: Path, jobs: int) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    batch(client, ids, out, jobs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="number of grids (default 500)")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="n=100")
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.n
    failures: list[str] = []

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, \
            LocalAllenServer(latency_ms=0) as server:
        tmp = Path(tmp)
        meta_client = AllenClient(server.url, tmp / "meta-cache")
        listing = meta_client.ish_plane_listing("coronal")
        ids = [int(i) for i in listing["experiment_id"].drop_duplicates()][:n]
        if len(ids) < n:
            print(f"only {len(ids)} coronal experiments served; using them all")
        n = len(ids)
        urls = [meta_client.grid_zip_url(i, ("energy",)) for i in ids]
        # Warm the server's grid cache and learn the exact bytes it serves (checksums), so
        # both methods below measure transfer, not the server's first-time grid synthesis.
        t0 = time.perf_counter()
        expected = {i: server.checksum(path_and_query(u)) for i, u in zip(ids, urls, strict=True)}
        print(f"{n} grids; server warm-up {time.perf_counter() - t0:.1f} s")

        server.latency_ms = args.latency_ms
        seq = sequential(urls, tmp / "sequential")
        client = AllenClient(server.url, tmp / "cache", backoff=0.05, retries=8)
        par, frame = batch(client, ids, tmp / "parallel", args.jobs)
        speedup = seq / par
        bad_status = int((frame["status"] != "downloaded").sum())
        print(f"sequential (seed loop): {seq:7.2f} s  ({n / seq:6.1f} grids/s)")
        print(f"download_many x{args.jobs:<3}:   {par:7.2f} s  ({n / par:6.1f} grids/s)")
        print(f"speed-up: {speedup:.1f}x (target >= 10x)")
        if bad_status:
            failures.append(f"{bad_status} rows not 'downloaded' in the clean run")
        if speedup < 10:
            failures.append(f"speed-up {speedup:.1f}x below 10x")

        again, frame = batch(client, ids, tmp / "parallel", args.jobs)
        print(f"re-run (all complete, skipped): {again:.2f} s, "
              f"{int((frame['status'] == 'cached').sum())}/{n} cached")

        small = min(100, n)
        mem_small = peak_memory(client, ids[:small], tmp / "mem-small", args.jobs)
        mem_all = peak_memory(client, ids, tmp / "mem-all", args.jobs)
        ratio = mem_all / max(mem_small, 1)
        print(f"peak traced memory: {mem_small / 1e6:.1f} MB for {small} grids, "
              f"{mem_all / 1e6:.1f} MB for {n} grids (ratio {ratio:.2f}; target ~1)")
        if n >= 2 * small and ratio > 1.5:
            failures.append(f"memory grows with the number of grids (ratio {ratio:.2f})")

        server.fault_rate = args.fault_rate
        faulty_out = tmp / "faulty"
        tf, frame = batch(client, ids, faulty_out, args.jobs)
        server.fault_rate = 0.0
        faults = sum(1 for r in server.requests if r.get("fault"))
        wrong = [i for i in ids
                 if sha256(faulty_out / f"{i}_energy_200um.zip") != expected[i]]
        leftovers = [p.name for p in faulty_out.iterdir() if p.suffix in (".part", ".lock")]
        failed = int((frame["status"] == "failed").sum())
        print(f"with {args.fault_rate:.0%} faults: {tf:.2f} s; {faults} faults injected, "
              f"{len(wrong)} wrong files, {len(leftovers)} leftovers, {failed} failed")
        if wrong or leftovers or failed:
            failures.append("faulty run: wrong files, leftovers or failures")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
