"""10 µm that slides (issue #11.4): full-resolution plane reads from the pyramid cache vs. the
direct memory map of the Allen file, and the one-time conversion vs. one full read, same run.

A synthetic 10 µm projection density (1320x800x1140 float32, 4.8 GB as Allen stores it: raw
little-endian, AP fastest) is written as a *sparse* file: a smooth "projection" in a 400x300x
400-voxel box and holes elsewhere, so it occupies ~200 MB of disk (plus the pyramid, ~tens of
MB). Everything is deleted at the end.

Measured (each read after dropping nothing: the same warm/cold state for both sides):
- coronal (AP), horizontal (DV) and sagittal (ML) planes at full resolution: direct memory map
  (today's reader, through its PlaneReader) vs. the pyramid's level 0 (3 planes per axis);
- one full sequential read of the file (first/cold and again/warm) vs. the whole conversion
  (read + write all levels).

    PYTHONPATH=src python benchmarks/bench_multiscale_10um.py [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (1320, 800, 1140)
TARGET_PLANE_S = 0.3


def make_sparse_grid(folder: Path) -> Path:
    """``projection_density_10.mhd/.raw``: zeros (holes) except a smooth blob."""
    stem = "projection_density_10"
    (folder / f"{stem}.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "ElementSpacing = 10 10 10\nDimSize = 1320 800 1140\nElementType = MET_FLOAT\n"
        f"ElementDataFile = {stem}.raw\n")
    raw = folder / f"{stem}.raw"
    n_ap, n_dv, n_ml = SHAPE
    with open(raw, "wb") as fh:
        fh.truncate(n_ap * n_dv * n_ml * 4)
    mm = np.memmap(raw, dtype="<f4", mode="r+", shape=SHAPE, order="F")
    ap = np.arange(500, 900)[:, None]
    dv = np.arange(250, 550)[None, :]
    for ml in range(400, 800):  # one ML plane at a time: contiguous writes
        r2 = ((ap - 700) / 200.0) ** 2 + ((dv - 400) / 150.0) ** 2 + ((ml - 600) / 200.0) ** 2
        mm[500:900, 250:550, ml] = np.where(r2 < 1, np.exp(-3 * r2), 0).astype("<f4")
    mm.flush()
    del mm
    return folder / f"{stem}.mhd"


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where the temporary files go")
    args = parser.parse_args(argv)

    from napari_allen.io import read_volumes
    from napari_allen.io.planes import plane_reader_for
    from napari_allen.io.pyramid import build_pyramid, level_shapes

    work = Path(tempfile.mkdtemp(prefix="napari-allen-10um-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        mhd = make_sparse_grid(work)
        print(f"synthetic 10 µm grid {SHAPE} float32 written in {time.perf_counter() - t0:.1f} s")
        (vol,) = read_volumes(mhd)
        direct = plane_reader_for(vol.data) or vol.data

        def read_all() -> None:
            for k in range(0, SHAPE[2], 32):
                np.asarray(direct[:, :, k:k + 32]).sum()

        # The first read fills the page cache (cold: what a first open pays); the conversion
        # then reads a warm file, so it is also compared with a warm read.
        cold_read = _time(read_all)
        full_read = _time(read_all)
        convert = _time(lambda: build_pyramid(vol, work / "pyramid.zarr"))
        pyr = build_pyramid(vol, work / "pyramid.zarr")  # opens the finished one
        size_mb = sum(f.stat().st_size for f in (work / "pyramid.zarr").rglob("*")
                      if f.is_file()) / 1e6
        print(f"levels {level_shapes(SHAPE)}; pyramid on disk {size_mb:.0f} MB")
        print(f"\n{'':<34}{'direct mmap':>12}{'pyramid':>10}{'ratio':>8}")
        print(f"{'first (cold) full read (s)':<34}{cold_read:12.2f}")
        print(f"{'warm full read vs. conversion (s)':<34}{full_read:12.2f}{convert:10.2f}"
              f"{convert / full_read:8.2f}")
        level0 = pyr.levels[0]
        worst = 0.0
        for axis, name in enumerate(("coronal (AP)", "horizontal (DV)", "sagittal (ML)")):
            picks = [SHAPE[axis] // 4, SHAPE[axis] // 2, 3 * SHAPE[axis] // 5]
            d_times, p_times = [], []
            for k in picks:
                index = [slice(None)] * 3
                index[axis] = k
                index = tuple(index)
                d_times.append(_time(lambda ix=index: np.asarray(direct[ix])))
                p_times.append(_time(lambda ix=index: np.asarray(level0[ix])))
                assert np.array_equal(np.asarray(direct[index]), np.asarray(level0[index]))
            d, p = max(d_times), max(p_times)
            worst = max(worst, p)
            print(f"{'plane ' + name + ' (s, worst of 3)':<34}{d:12.2f}{p:10.3f}{p / d:8.3f}")
        print(f"\nfull-resolution plane reads <= {TARGET_PLANE_S} s: "
              f"{'yes' if worst <= TARGET_PLANE_S else 'NO'} (worst {worst:.3f} s); "
              f"conversion / first (cold) read = {convert / cold_read:.2f}, / warm read = "
              f"{convert / full_read:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
