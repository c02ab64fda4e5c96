"""Whole-plane store: slider step latency/memory, and whole-plane download speed.

A. Slider step. Stores of 4,000 and 250 experiments (200 µm ISH grids: -1 outside the brain,
   a per-experiment level inside plus a noisy patch, so zarr's compression works as on real
   grids) are opened as the 4-D napari layer (``plane_store_layers``) in a canvas-less
   ``ViewerModel``. Each step moves the experiment slider to a random experiment and waits for
   the slice. Reported: median / p95 step time (target < 50 ms) and the peak Python memory
   (tracemalloc) over the steps for both stores: it must not grow with the store size.
B. Whole-plane download. The first N coronal experiments (default 1,000; ``--quick`` 200) from
   the local Allen server with ``--latency-ms`` per response: seed 001's sequential loop
   (download one zip, read it, write it, next) vs ``download_plane`` (``--jobs`` concurrent,
   pipelined store writes). Each run starts with an empty cache. Reported: times and ratio.

Run: ``python benchmarks/bench_plane_store.py [--quick] [--jobs 8] [--latency-ms 50]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from napari_allen.atlas.annotation import grid_annotation
from napari_allen.io.plane_store import PlaneStore


def build_store(path: Path, n: int, seed: int = 0) -> float:
    """A store of ``n`` plausible grids; returns the seconds it took."""
    start = time.perf_counter()
    brain = np.asarray(grid_annotation().data) > 0
    base = np.where(brain, 1.0, -1.0).astype(np.float32)
    table = pd.DataFrame({"experiment_id": np.arange(1, n + 1), "gene": [f"G{i}" for i in
                          range(n)], "plane": "coronal"})
    store = PlaneStore.create(path, table)
    rng = np.random.default_rng(seed)
    block = 100
    for first in range(0, n, block):
        k = min(block, n - first)
        levels = (np.arange(first, first + k) % 17 + 1).astype(np.float32)
        stack = np.where(base > 0, base * levels[:, None, None, None], -1.0).astype(np.float32)
        stack[:, 20:30, 10:20, 20:30] += rng.random((k, 10, 10, 10), dtype=np.float32)
        store.write_many(list(range(first + 1, first + k + 1)), stack)
    return time.perf_counter() - start


def slider_steps(path: Path, steps: int, seed: int = 1) -> dict:
    """Median/p95 ms per slider step and the tracemalloc peak (MB) over all steps."""
    from napari.components import ViewerModel
    from napari.layers import Layer

    from napari_allen.layers.expression import plane_store_layers

    (layer_tuple,) = plane_store_layers(path)
    viewer = ViewerModel()
    layer = viewer.add_layer(Layer.create(*layer_tuple))
    n = layer.data.shape[0]
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n, size=steps)
    for warm in rng.integers(0, n, size=5):  # warm up dask/zarr/napari code paths
        viewer.dims.set_current_step(0, int(warm))
    times = []
    for target in targets:
        start = time.perf_counter()
        viewer.dims.set_current_step(0, int(target))
        view = np.asarray(layer._slice.image.view)
        times.append((time.perf_counter() - start) * 1000)
        expected = float(int(target) % 17 + 1)
        if not np.isclose(np.nanmin(view), expected, rtol=1e-6) and np.isfinite(view).any():
            raise AssertionError(f"slider shows {np.nanmin(view)} for experiment {target}, "
                                 f"expected level {expected}")
    # Memory in a second pass: tracemalloc slows allocations, so it must not skew the times.
    tracemalloc.start()
    tracemalloc.reset_peak()
    for target in targets:
        viewer.dims.set_current_step(0, int(target))
        np.asarray(layer._slice.image.view)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    times.sort()
    return {"n": n, "median_ms": statistics.median(times),
            "p95_ms": times[int(0.95 * (len(times) - 1))], "peak_mb": peak / 1e6}


def download_comparison(n: int, jobs: int, latency_ms: float, root: Path) -> None:
    from allen_local_api.server import LocalAllenServer
    from napari_allen.api.client import AllenClient
    from napari_allen.workflows.plane_download import _volume_from_zip, download_plane

    with LocalAllenServer(latency_ms=latency_ms) as server:
        server.warm()
        with AllenClient(server.url, root / "cache-listing") as client:
            table = client.ish_plane_listing("coronal").head(n)
            table["experiment_id"] = table["experiment_id"].astype(np.int64)
        print(f"\nB. download {len(table)} coronal experiments, {latency_ms:g} ms latency "
              f"per response")

        with AllenClient(server.url, root / "cache-seq") as client:
            store = PlaneStore.create(root / "sequential.zarr", table)
            start = time.perf_counter()
            for eid in table["experiment_id"]:  # seed 001: one experiment after the other
                path = client.grid_zip(int(eid), ("energy",))
                store.write(int(eid), _volume_from_zip(path, "energy", int(eid), None))
            t_seq = time.perf_counter() - start
        assert not store.pending()

        with AllenClient(server.url, root / "cache-par") as client:
            start = time.perf_counter()
            result = download_plane(client, root / "concurrent.zarr", experiments=table,
                                    jobs=jobs)
            t_par = time.perf_counter() - start
        assert result.complete, result.summary()
        a = PlaneStore.open(root / "sequential.zarr", mode="r")
        b = PlaneStore.open(root / "concurrent.zarr", mode="r")
        probe = int(table["experiment_id"].iloc[len(table) // 2])
        same = np.array_equal(a.read(probe), b.read(probe), equal_nan=True)
    print(f"   sequential loop          {t_seq:7.1f} s ({len(table) / t_seq:5.1f} exp/s)")
    print(f"   download_plane jobs={jobs:<3d} {t_par:7.1f} s ({len(table) / t_par:5.1f} exp/s)"
          f"   speed-up x{t_seq / t_par:.1f}; identical volumes: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000-experiment store and 200 downloads")
    parser.add_argument("--experiments", type=int, default=None,
                        help="experiments to download (default 1000, quick 200)")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    big_n = 1000 if args.quick else 4000
    n_download = args.experiments or (200 if args.quick else 1000)

    with tempfile.TemporaryDirectory(prefix="bench-plane-") as tmp:
        root = Path(tmp)
        t_big = build_store(root / "big.zarr", big_n)
        t_small = build_store(root / "small.zarr", 250)
        size = sum(p.stat().st_size for p in (root / "big.zarr").rglob("*") if p.is_file())
        print(f"A. slider step: stores of {big_n} ({t_big:.1f} s to build, {size / 1e6:.0f} MB "
              f"on disk) and 250 experiments ({t_small:.1f} s)")
        small = slider_steps(root / "small.zarr", args.steps)
        big = slider_steps(root / "big.zarr", args.steps)
        for res in (small, big):
            ok = "OK" if res["median_ms"] < 50 else "SLOW"
            print(f"   {res['n']:5d} experiments: median {res['median_ms']:6.1f} ms, "
                  f"p95 {res['p95_ms']:6.1f} ms ({ok}, target < 50 ms), "
                  f"peak memory {res['peak_mb']:6.1f} MB")
        print(f"   memory ratio {big['n']}/{small['n']} experiments: "
              f"x{big['peak_mb'] / max(small['peak_mb'], 1e-9):.2f} (1.0 = independent of size)")
        download_comparison(n_download, args.jobs, args.latency_ms, root)


if __name__ == "__main__":
    main()
