"""Benchmark: averaging projection density over many connectivity experiments.

Compares, in one run and on the same cached inputs served by the local Allen API server,

- **ours**: ``napari_allen.workflows.connectivity.average_experiments`` (streaming running sums,
  vectorised hemisphere subtraction, decoded-array cache, constant memory);
- **baseline**: brain_street_view's ``fetch_connectivity_data`` approach re-implemented: per
  experiment ``np.fromfile`` of its cached raw density, injection volume looked up in the
  accumulated injection-summary lists, a per-slice Python loop for the hemisphere subtraction,
  every volume kept in a preallocated float64 ``(AP, DV, ML, n)`` array, then the average.

The baseline's injection lookups use the root rows (structure 997, both hemispheres) that ours
uses too, rather than every injection row bsv accumulates, which only favours the baseline.
Both use injection-volume normalisation and bsv's hemisphere subtraction (each experiment's
own side keeps ipsilateral minus mirrored contralateral, the other half 0; ours:
``ipsilateral=None``, ``hemisphere_output="injected_half"``); the difference is printed.
Downloads happen first and are not timed ("cached"). Prints times, peak traced
memory (tracemalloc, numpy allocations included) and the ratios.

    python benchmarks/bench_projection_average.py            # 300 experiments
    python benchmarks/bench_projection_average.py --quick    # 40 experiments
    python benchmarks/bench_projection_average.py --n 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

VOLUME_BYTES = 132 * 80 * 114 * 4  # one float32 100 µm grid


def _measure(fn):
    """(result, seconds, peak traced bytes above the start)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    start_bytes, _ = tracemalloc.get_traced_memory()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak - start_bytes


def baseline_bsv(experiments: pd.DataFrame, raw_paths: dict[int, Path],
                 injection_rows: pd.DataFrame, shape: tuple[int, int, int]) -> np.ndarray:
    """brain_street_view's algorithm (normalise, per-slice hemisphere loop, keep all volumes
    in a float64 4-D array, then average), with the hemisphere decided from the injection ML
    µm (bsv reads max_voxel_z of the injection summary) and the other half left 0."""
    ids = experiments["id"].astype("int64").tolist()
    n_exp = len(ids)
    # bsv accumulates every injection-summary record in parallel lists...
    combined: dict[str, list] = {"experimentID": [], "structure_id": [], "hemisphere_id": [],
                                 "projection_volume": []}
    for exp_id in ids:
        rows = injection_rows[injection_rows["section_data_set_id"] == exp_id]
        combined["experimentID"].extend(rows["section_data_set_id"].tolist())
        combined["structure_id"].extend(rows["structure_id"].tolist())
        combined["hemisphere_id"].extend(rows["hemisphere_id"].tolist())
        combined["projection_volume"].extend(rows["projection_volume"].tolist())
    ml_um = dict(zip(ids, pd.to_numeric(experiments["injection_z"]).tolist(), strict=True))
    n_ml = shape[2]
    half = n_ml // 2
    midline_um = (n_ml - 1) / 2 * 100.0
    combined_projection = np.zeros((*shape, 1))
    individual = np.zeros((*shape, n_exp))  # load_all=True: every volume kept
    for i, exp_id in enumerate(ids):
        projection = np.fromfile(raw_paths[exp_id], dtype="<f4").reshape(shape, order="F")
        # ... and converts the lists to arrays for every experiment (as bsv does)
        exp_idx = np.array(combined["experimentID"]) == exp_id
        struct_idx = exp_idx & (np.array(combined["structure_id"]) == 997)
        hem3 = struct_idx & (np.array(combined["hemisphere_id"]) == 3)
        vols = np.array(combined["projection_volume"], dtype=float)
        inj_vol = vols[hem3].max() if hem3.any() else 0
        if inj_vol == 0:
            inj_vol = 1
        projection = projection / inj_vol
        tmp = np.zeros_like(projection)
        if ml_um[exp_id] <= midline_um:  # left hemisphere: the left half keeps the difference
            for ml in range(half):
                tmp[:, :, ml] = projection[:, :, ml] - projection[:, :, n_ml - 1 - ml]
        else:  # right hemisphere
            for ml in range(half):
                tmp[:, :, n_ml - 1 - ml] = (projection[:, :, n_ml - 1 - ml]
                                            - projection[:, :, ml])
        individual[:, :, :, i] = tmp
        combined_projection[:, :, :, 0] += tmp
    combined_projection[:, :, :, 0] /= n_exp
    return combined_projection[:, :, :, 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="number of experiments (300)")
    parser.add_argument("--quick", action="store_true", help="40 experiments")
    parser.add_argument("--jobs", type=int, default=4, help="parallel requests for warm-up")
    parser.add_argument("--cache", default=None,
                        help="keep the warm cache in this folder and reuse it next time "
                             "(use with a fixed --port); default: a temporary folder")
    parser.add_argument("--port", type=int, default=0, help="local server port (0 = free)")
    args = parser.parse_args(argv)
    n = 40 if args.quick else args.n
    tmp = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="bench-projavg-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return _run(n, args.jobs, args.port, tmp)
    finally:
        if not args.cache:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(n: int, jobs: int, port: int, tmp: Path) -> int:
    os.environ["NAPARI_ALLEN_CACHE"] = str(tmp / "cache")
    from allen_local_api.server import LocalAllenServer
    from napari_allen.analysis.projections import AveragingOptions
    from napari_allen.api.client import AllenClient
    from napari_allen.workflows.connectivity import (
        average_experiments,
        download_volume,
        fetch_injection_summary,
        iter_volumes,
    )

    with LocalAllenServer(host="127.0.0.1", port=port) as server:
        os.environ["NAPARI_ALLEN_API_URL"] = server.url
        server.warm(ccf=True)  # build the server's tables before the first request
        # A long read timeout for the warm-up only: the local server computes each
        # experiment's ProjectionStructureUnionize from its grids (about 1 s each).
        client = AllenClient(base_url=server.url, cache_dir=tmp / "cache", timeout=(5, 900))
        experiments = client.connectivity_experiments().head(n).reset_index(drop=True)
        ids = experiments["id"].astype("int64").tolist()
        print(f"{len(ids)} experiments from {server.url}; cache {tmp}", file=sys.stderr)

        # --- warm-up (not timed): downloads, decoded cache, summaries, baseline raw files --
        t0 = time.perf_counter()
        root_rows = {"is_injection": True, "hemisphere_ids": [3], "structure_ids": [997]}
        # The client asks for 20 experiments per request: warm exactly those requests.
        chunks = [sorted(ids)[i:i + 20] for i in range(0, len(ids), 20)]
        with ThreadPoolExecutor(jobs) as pool:
            paths = dict(zip(ids, pool.map(lambda e: download_volume(client, e), ids),
                             strict=True))
            list(pool.map(lambda c: client.projection_structure_unionize(c, **root_rows),
                          chunks))
        raw_dir = tmp / "bsv"
        raw_dir.mkdir(exist_ok=True)
        raw_paths: dict[int, Path] = {}
        shape = None
        for exp_id, vol in iter_volumes(client, ids):
            data = np.asarray(vol.data, dtype="<f4")
            shape = data.shape
            raw_paths[exp_id] = raw_dir / f"{exp_id}_density.raw"
            data.ravel(order="F").tofile(raw_paths[exp_id])  # bsv caches density.raw
        # bsv keeps every injection-summary row; the root rows suffice for its lookups (and
        # make the baseline cheaper, not dearer).
        injection_rows = client.projection_structure_unionize(ids, **root_rows)
        # bsv keeps each experiment's side and zeroes the other half: ipsilateral="own"
        # (None) with the default injected-half output is the same computation.
        options = AveragingOptions(normalization="injection_volume", subtract_hemisphere=True,
                                   ipsilateral=None, hemisphere_output="injected_half")
        fetch_injection_summary(client, ids)  # the metadata cache answers the timed run
        print(f"warm-up {time.perf_counter() - t0:.1f} s ({len(paths)} files)", file=sys.stderr)

        # --- timed runs ------------------------------------------------------------------
        base, t_base, m_base = _measure(
            lambda: baseline_bsv(experiments, raw_paths, injection_rows, shape))
        ours, t_ours, m_ours = _measure(
            lambda: average_experiments(client, experiments, options))
        client.close()

    mean = ours.groups[0].mean
    diff = float(np.nanmax(np.abs(mean - base))) if mean.shape == base.shape else float("nan")
    scale = float(np.nanmax(np.abs(base))) or 1.0
    print(f"experiments:            {len(ids)} (used by ours: {ours.groups[0].n_experiments}, "
          f"skipped {len(ours.skipped)})")
    print(f"baseline (bsv) time:    {t_base:8.2f} s   peak {m_base / 1e6:9.1f} MB "
          f"({m_base / VOLUME_BYTES:6.1f} volumes)")
    print(f"ours time:              {t_ours:8.2f} s   peak {m_ours / 1e6:9.1f} MB "
          f"({m_ours / VOLUME_BYTES:6.1f} volumes)")
    print(f"speed-up (time ratio):  {t_base / t_ours:8.2f} x   (target >= 3)")
    print(f"memory ratio:           {m_base / max(m_ours, 1):8.2f} x   "
          f"(target: ours < 5 volumes = {5 * VOLUME_BYTES / 1e6:.1f} MB)")
    print(f"max |ours - baseline|:  {diff:.3g} (relative {diff / scale:.2g})")
    ok = t_base / t_ours >= 3 and m_ours < 5 * VOLUME_BYTES and diff / scale < 1e-4
    print("RESULT:", "PASS" if ok else "MISS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
