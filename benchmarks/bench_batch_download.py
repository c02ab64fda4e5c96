"""Batch download benchmark against the local Allen API server (in-process, loopback).

Measured in one run, with ``--latency-ms`` (default 50) injected per request:

1. baseline: AllenSDK's own loop, ``GridDataApi.download_expression_grid_data`` one experiment
   after another, when AllenSDK can be run: importable here, or a Python that has it given by
   ``--allensdk-python`` / ``$ALLENSDK_PYTHON`` (AllenSDK pins old numpy/pandas, so it lives in
   a throwaway venv: ``python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install allensdk``).
   Without it the benchmark says so and uses the seed documents' loop (one ``requests.get`` at
   a time, body written to disk);
2. the whole ``napari-allen download --experiments ... --jobs 16`` command (process start,
   imports and the CSV included) and ``download_many`` in-process, against the latency bound
   N x latency / jobs: targets <= 2x the bound and >= 10x the baseline;
3. peak Python memory (tracemalloc) of ``download_many`` for 100 grids vs all N grids
   (target: ratio ~1, memory does not grow with the number of grids);
4. the same batch with ``--fault-rate`` (default 0.1) injected faults: every file must match
   the server's checksum, nothing may be left behind (``.part``/``.lock``), nothing failed.

The server runs in a subprocess (``napari-allen local-api``) by default, so the client's CPU
and memory are measured alone; ``--in-process`` runs it in a thread instead. Expected bytes come
from the server's own ``LocalAllenServer.checksum`` (the served grids are deterministic).

Usage: ``python benchmarks/bench_batch_download.py [--n 400] [--jobs 16] [--quick]
[--allensdk-python /tmp/sdkvenv/bin/python]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit

import requests

from _cli import time_cli
from allen_local_api.server import LocalAllenServer
from napari_allen.api.batch import GridRequest, download_many
from napari_allen.api.client import AllenClient


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


SDK_LOOP = """
import json, sys, time
from allensdk.api.queries.grid_data_api import GridDataApi
base, out, ids = sys.argv[1], sys.argv[2], [int(i) for i in sys.argv[3].split(",")]
api = GridDataApi(base_uri=base)
start = time.perf_counter()
for i in ids:
    api.download_expression_grid_data(i, include=["energy"], path=f"{out}/{i}.zip")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def allensdk_python(option: str | None) -> str | None:
    """A Python that can import AllenSDK: this one, ``option``, or ``$ALLENSDK_PYTHON``."""
    candidates = [sys.executable, option, os.environ.get("ALLENSDK_PYTHON")]
    for exe in candidates:
        if not exe:
            continue
        ok = subprocess.run([exe, "-c", "import allensdk.api.queries.grid_data_api"],
                            capture_output=True, timeout=120).returncode == 0
        if ok:
            return exe
    return None


def sdk_loop(python: str, url: str, ids: list[int], out: Path) -> float:
    """AllenSDK's GridDataApi loop (timed inside its process: imports excluded)."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([python, "-c", SDK_LOOP, url, str(out), ",".join(map(str, ids))],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"AllenSDK loop failed: {proc.stderr[-500:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def cli_download(url: str, ids: list[int], out: Path, jobs: int, cache: Path) -> float:
    """The whole ``napari-allen download`` command, process start included."""
    return time_cli(["download", "--experiments", *map(str, ids), "--out", str(out),
                     "--jobs", str(jobs)], url, cache, timeout=600)


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


@contextlib.contextmanager
def local_server(latency_ms: float, fault_rate: float, in_process: bool):
    """Yield the URL of a local Allen API server with the given latency and fault rate."""
    if in_process:
        with LocalAllenServer(latency_ms=latency_ms, fault_rate=fault_rate) as server:
            yield server.url
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_allen.cli", "local-api", "--port", "0",
         "--latency-ms", str(latency_ms), "--fault-rate", str(fault_rate)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()  # the command prints its URL once listening
        if not url.startswith("http"):
            raise RuntimeError(f"local-api did not start (printed {url!r})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class RetryCounter(logging.Handler):
    """Counts the client's retries (napari_allen.api.http logs each one)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("retrying"):
            self.count += 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="number of grids (default 400)")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="n=100")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server in a thread of this process")
    parser.add_argument("--allensdk-python", default=None,
                        help="a Python with AllenSDK for the baseline (else $ALLENSDK_PYTHON)")
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.n
    failures: list[str] = []
    reference = LocalAllenServer()  # not started: only its deterministic responses are used

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, \
            local_server(args.latency_ms, 0.0, args.in_process) as url:
        tmp = Path(tmp)
        client = AllenClient(url, tmp / "cache", backoff=0.05, retries=8)
        listing = client.ish_plane_listing("coronal")
        ids = [int(i) for i in listing["experiment_id"].drop_duplicates()][:n]
        if len(ids) < n:
            print(f"only {len(ids)} coronal experiments served; using them all")
        n = len(ids)
        urls = [client.grid_zip_url(i, ("energy",)) for i in ids]
        expected = {i: reference.checksum(path_and_query(u))
                    for i, u in zip(ids, urls, strict=True)}
        # Warm the server's grid cache, so both methods below measure transfer, not the
        # server's first-time grid synthesis.
        t0 = time.perf_counter()
        batch(client, ids, tmp / "warm-up", args.jobs)
        print(f"{n} grids, {args.latency_ms:g} ms latency; server warm-up "
              f"{time.perf_counter() - t0:.1f} s")

        sdk = allensdk_python(args.allensdk_python)
        if sdk is not None:
            base_name = "AllenSDK GridDataApi loop"
            seq = sdk_loop(sdk, url, ids, tmp / "sdk")
        else:
            base_name = "seed loop (AllenSDK not available: give --allensdk-python)"
            seq = sequential(urls, tmp / "sequential")
        par, frame = batch(client, ids, tmp / "parallel", args.jobs)
        cmd = cli_download(url, ids, tmp / "cli", args.jobs, tmp / "cli-cache")
        bound = n * args.latency_ms / 1000 / args.jobs
        bad_status = int((frame["status"] != "downloaded").sum())
        print(f"baseline, {base_name}: {seq:7.2f} s  ({n / seq:6.1f} grids/s)")
        print(f"download_many x{args.jobs:<3} (in-process):      {par:7.2f} s  "
              f"({n / par:6.1f} grids/s)  {par / bound:4.2f}x the bound, "
              f"{seq / par:5.1f}x the baseline")
        print(f"napari-allen download (whole command): {cmd:7.2f} s  "
              f"({n / cmd:6.1f} grids/s)  {cmd / bound:4.2f}x the bound, "
              f"{seq / cmd:5.1f}x the baseline")
        print(f"latency bound N x latency / jobs = {n} x {args.latency_ms:g} ms / {args.jobs} "
              f"= {bound:.2f} s; targets: <= 2x the bound, >= 10x the baseline")
        if bad_status:
            failures.append(f"{bad_status} rows not 'downloaded' in the clean run")
        if n >= 400 and seq / cmd < 10:
            failures.append(f"command only {seq / cmd:.1f}x the baseline (target 10x)")
        if n >= 400 and cmd > 2 * bound:
            failures.append(f"command {cmd / bound:.2f}x the latency bound (target <= 2x)")

        again, frame = batch(client, ids, tmp / "parallel", args.jobs)
        print(f"re-run (all complete, verified against the manifest): {again:.2f} s, "
              f"{int((frame['status'] == 'verified').sum())}/{n} verified")

        small = min(100, n)
        mem_small = peak_memory(client, ids[:small], tmp / "mem-small", args.jobs)
        mem_all = peak_memory(client, ids, tmp / "mem-all", args.jobs)
        ratio = mem_all / max(mem_small, 1)
        print(f"peak traced memory: {mem_small / 1e6:.1f} MB for {small} grids, "
              f"{mem_all / 1e6:.1f} MB for {n} grids (ratio {ratio:.2f}; "
              f"grids total {n * 0.3:.0f} MB on disk)")
        if n >= 2 * small and ratio > 1.5:
            failures.append(f"memory grows with the number of grids (ratio {ratio:.2f})")

    counter = RetryCounter()
    http_log = logging.getLogger("napari_allen.api.http")
    http_log.addHandler(counter)
    http_log.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp, \
            local_server(args.latency_ms, args.fault_rate, args.in_process) as url:
        tmp = Path(tmp)
        client = AllenClient(url, tmp / "cache", backoff=0.05, retries=8)
        faulty_out = tmp / "faulty"
        tf, frame = batch(client, ids, faulty_out, args.jobs)
        wrong = [i for i in ids
                 if sha256(faulty_out / f"{i}_energy_200um.zip") != expected[i]]
        leftovers = [p.name for p in faulty_out.iterdir() if p.suffix in (".part", ".lock")]
        failed = int((frame["status"] == "failed").sum())
        print(f"with {args.fault_rate:.0%} faults: {tf:.2f} s; {counter.count} retries, "
              f"{len(wrong)} wrong files, {len(leftovers)} leftovers, {failed} failed")
        if wrong or leftovers or failed:
            failures.append("faulty run: wrong files, leftovers or failures")
        if args.fault_rate > 0 and counter.count == 0:
            failures.append("no fault was injected")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
