"""Benchmark: Allen's structure-correlation script vs ``napari-allen correlate``, same run.

Both run as separate processes against the local Allen API server (in its own process) with
``--latency-ms`` per response (default 50 ms), on the first ``--n`` coronal data sets (default
100), each with an empty client cache:

1. baseline: the ORIGINAL script, read from ``../shared/seeds/000_*.txt`` at run time and
   ported on the fly (``_seed_scripts.correlation_script``: Python 3 print/urllib fixes, host,
   the lines the page scrape lost); nothing of it is stored in this repository;
2. ours: ``napari-allen correlate --plane coronal --first N --method numpy_ma`` (the
   definition the installed numpy's ``numpy.ma.corrcoef`` computes, so the files must be
   byte-identical), then the default method (numpy_ma_legacy) for its time.

Before timing, the N data sets' unionizes are requested once (not timed) so the server has
them computed, as the real API has them in its database; both runs then see the same server.
Prints both times, the ratio, and whether the three JSON files are identical.

    python benchmarks/bench_structure_correlation.py            # 100 data sets, 50 ms
    python benchmarks/bench_structure_correlation.py --quick    # 20 data sets
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _child_server import ChildServer  # noqa: E402
from _cli import time_cli  # noqa: E402
from _seed_scripts import correlation_script, run_script  # noqa: E402

KINDS = ("structures", "connections", "correlations")


def warm_unionizes(url: str, n: int) -> None:
    """Ask the server for the first ``n`` coronal data sets' unionizes once (not timed)."""
    api = url + "/api/v2/data"
    listing = (f"{api}/SectionDataSet/query.json?criteria=[failed$eq'false'][expression$eq"
               "'true'],products[id$eq1],plane_of_section[id$eq1]&start_row=0&num_rows=2000")
    with urllib.request.urlopen(listing, timeout=120) as response:
        ids = [d["id"] for d in json.loads(response.read())["msg"]][:n]

    def get(data_set: int) -> None:
        query = (f"{api}/StructureUnionize/query.json?criteria=[section_data_set_id$eq"
                 f"{data_set}]&only=id&num_rows=1")
        with urllib.request.urlopen(query, timeout=300) as response:
            response.read()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(get, ids))


def run_ours(url: str, workdir: Path, n: int, jobs: int, method: str | None) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = ["correlate", "--plane", "coronal", "--first", str(n), "--jobs", str(jobs),
           "--out", str(workdir / "out.json")]
    if method:
        cmd += ["--method", method]
    return time_cli(cmd, url, workdir / "cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="data sets (default 100)")
    parser.add_argument("--quick", action="store_true", help="20 data sets")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--jobs", type=int, default=16, help="our concurrent requests")
    args = parser.parse_args(argv)
    n = 20 if args.quick else args.n

    tmp = Path(tempfile.mkdtemp(prefix="bench-corr-"))
    try:
        with ChildServer(args.latency_ms, ccf=False) as server:
            warm_unionizes(server.url, n)
            print(f"{n} coronal data sets, server latency {args.latency_ms:g} ms, "
                  f"our jobs {args.jobs}; load average {os.getloadavg()[0]:.2f} "
                  f"on {os.cpu_count()} CPUs (other work slows both sides)")
            t_script = run_script(correlation_script(server.url), tmp / "script",
                                  ["out.json", str(n)])
            print(f"baseline: the seed script (ported on the fly)   {t_script:8.2f} s")
            t_ours = run_ours(server.url, tmp / "ours", n, args.jobs, "numpy_ma")
            print(f"napari-allen correlate --method numpy_ma        {t_ours:8.2f} s  "
                  f"-> {t_script / t_ours:5.1f}x faster")
            t_default = run_ours(server.url, tmp / "default", n, args.jobs, None)
            print(f"napari-allen correlate (default numpy_ma_legacy) {t_default:7.2f} s  "
                  f"-> {t_script / t_default:5.1f}x faster")
        same = {kind: (tmp / "script" / f"out.{kind}.json").read_bytes()
                == (tmp / "ours" / f"out.{kind}.json").read_bytes() for kind in KINDS}
        print("identical files (script vs numpy_ma):",
              ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
        ok = all(same.values()) and t_script / t_ours >= 5
        print("target (>= 5x, identical files):", "met" if ok else "NOT met")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
