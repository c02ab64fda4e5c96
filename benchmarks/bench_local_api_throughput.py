"""Throughput of the local Allen API server (so that client benchmarks measure the client).

Measured in one run, against a baseline from the same run:

1. grid zips (distinct, cold synthetic ISH experiments) with ``--latency-ms`` injected latency:
   a sequential one-request-at-a-time loop (the seed notebooks' way) vs ``--jobs`` threads;
   prints the speed-up (target: close to ``jobs`` when latency dominates, i.e. the server is not
   the bottleneck);
2. the same parallel run repeated (served from the in-memory LRU): cached vs cold;
3. RMA query latency (structure graph, a SectionDataSet page, a tabular CSV plane listing);
4. the process's peak RSS.

    .venv/bin/python benchmarks/bench_local_api_throughput.py [--quick] [--grids N] [--jobs J]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from allen_local_api.catalog import catalog
from allen_local_api.server import LocalAllenServer

_local = threading.local()


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def fetch(url: str) -> int:
    response = _session().get(url, timeout=(5, 60))
    response.raise_for_status()
    return len(response.content)


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def run_sequential(urls: list[str]) -> None:
    for url in urls:
        fetch(url)


def run_parallel(urls: list[str], jobs: int) -> None:
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(fetch, urls))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 grids instead of 200")
    parser.add_argument("--grids", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    n = args.grids or (40 if args.quick else 200)

    cat = catalog()
    ish = [r["id"] for r in cat.section_data_sets if cat.is_ish(r["id"]) and r["id"] != 74272479]
    # Distinct experiments for each run, so neither run profits from the server's cache.
    seq_ids, par_ids = ish[:n], ish[n:2 * n]
    with LocalAllenServer(latency_ms=args.latency_ms) as server:
        server.warm(ccf=False)
        fetch(f"{server.url}/grid_data/download/{ish[-1]}")  # noise bank, masks, session
        seq_urls = [f"{server.url}/grid_data/download/{i}" for i in seq_ids]
        par_urls = [f"{server.url}/grid_data/download/{i}" for i in par_ids]
        t_seq = timed(run_sequential, seq_urls)
        t_par = timed(run_parallel, par_urls, args.jobs)
        t_hot = timed(run_parallel, par_urls, args.jobs)
        print(f"grid zips: {n} cold, latency {args.latency_ms:g} ms")
        print(f"  sequential loop      {t_seq:7.2f} s  ({n / t_seq:6.1f} grids/s)")
        print(f"  {args.jobs:2d} jobs, cold       {t_par:7.2f} s  ({n / t_par:6.1f} grids/s)  "
              f"speed-up x{t_seq / t_par:.1f}")
        print(f"  {args.jobs:2d} jobs, cached     {t_hot:7.2f} s  ({n / t_hot:6.1f} grids/s)  "
              f"speed-up x{t_seq / t_hot:.1f}")

        server.latency_ms = 0
        queries = {
            "structure graph (1,327 rows)": "/api/v2/data/query.json?q=model::Structure,"
            "rma::criteria,[graph_id$in1],rma::options[num_rows$eq'all']",
            "SectionDataSet page (2,000 + genes)": "/api/v2/data/query.json?q=model::"
            "SectionDataSet,rma::criteria,products[id$in1],rma::include,genes,"
            "rma::options[num_rows$eq2000]",
            "coronal plane CSV listing": "/api/v2/data/SectionDataSet/query.csv?criteria="
            "[failed$eqfalse],plane_of_section[name$eqcoronal],treatments[name$eqISH],genes"
            "&tabular=data_sets.id+as+experiment_id,genes.acronym+as+gene&num_rows=all",
        }
        print("RMA queries (median of 5, no latency):")
        for label, target in queries.items():
            fetch(server.url + target)
            times = [timed(fetch, server.url + target) for _ in range(5)]
            print(f"  {label:38s} {statistics.median(times) * 1000:7.1f} ms")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (server + client): {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
