"""Benchmark: opening large Allen grids lazily vs reading them whole.

Measured in one run, on files generated in a temp folder (plus the bundled real 25 µm
annotation NRRD), and printed as ratios against a numpy/pynrrd baseline:

1. 25 µm MetaImage (528x320x456 float32, 308 MB): time to open + build the napari layer +
   show the first slice, vs ``np.fromfile`` of the whole payload (page cache dropped first
   with ``posix_fadvise`` where available, so both start cold);
2. the real ``annotation_25.nrrd`` (gzip): pynrrd's whole read vs our first open (streamed
   decode to the cache) and later opens (memmap of the cached decode);
3. peak memory (``VmHWM`` of a fresh subprocess) opening a sparse 10 µm file (4.8 GB):
   open + layer + one ML and one AP slice, vs the file size.

Usage: ``python benchmarks/bench_open_grids.py [--quick]`` (``--quick``: one repeat, skips the
pynrrd baseline). Runs in well under a minute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

SHAPE_25 = (528, 320, 456)
SHAPE_10 = (1320, 800, 1140)


def _header(shape, res, stem, etype="MET_FLOAT") -> str:
    return ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"ElementSpacing = {res} {res} {res}\nDimSize = {shape[0]} {shape[1]} {shape[2]}\n"
            f"ElementType = {etype}\nElementDataFile = {stem}.raw\n")


def _drop_cache(path: Path) -> None:
    """Evict a file from the page cache (Linux), so reads hit the disk again."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_25um(folder: Path) -> Path:
    """A dense 25 µm float32 grid with -1 outside an ellipsoid 'brain' (308 MB)."""
    raw = folder / "projection_density.raw"
    ap = np.arange(SHAPE_25[0], dtype=np.float32)[:, None]
    dv = np.arange(SHAPE_25[1], dtype=np.float32)[None, :]
    with open(raw, "wb") as fh:
        for k in range(SHAPE_25[2]):  # ML planes, each contiguous (x fastest)
            r = ((ap - 264) / 250) ** 2 + ((dv - 160) / 150) ** 2 + ((k - 228) / 220) ** 2
            plane = np.where(r < 1, (1 - r) * 0.3, -1).astype("<f4")
            fh.write(plane.tobytes(order="F"))
    (folder / "projection_density.mhd").write_text(_header(SHAPE_25, 25, raw.stem))
    return folder / "projection_density.mhd"


def bench_25um_metaimage(folder: Path, repeats: int) -> None:
    from napari_allen.io import read_volumes
    from napari_allen.layers.volumes import image_layer

    mhd = make_25um(folder)
    raw = mhd.with_suffix(".raw")

    def baseline():
        _drop_cache(raw)
        arr = np.fromfile(raw, dtype="<f4").reshape(SHAPE_25, order="F")
        return np.where(arr[0] == -1, np.nan, arr[0])

    def ours_open():
        _drop_cache(raw)
        (vol,) = read_volumes(mhd)
        return image_layer(vol)[0]

    def ours_first_slice():
        return np.asarray(ours_open()[0])  # napari's first coronal (AP) slice

    def ours_sagittal_slice():
        return np.asarray(ours_open()[:, :, 228])

    np.testing.assert_array_equal(np.isnan(baseline()), np.isnan(ours_first_slice()))
    t_base = _best(baseline, repeats)
    rows = [("open + layer (no slice)", _best(ours_open, repeats)),
            ("open + layer + first AP slice", _best(ours_first_slice, repeats)),
            ("open + layer + one ML slice", _best(ours_sagittal_slice, repeats))]
    print("25 µm MetaImage (308 MB float32), page cache dropped before each run:")
    print(f"  baseline np.fromfile whole + slice  : {t_base:7.3f} s")
    for label, t in rows:
        print(f"  napari-allen {label:<31}: {t:7.3f} s  (ratio {t_base / t:6.1f}x faster)")
    print("  (an AP slice of x-fastest data touches every page of the file; ML slabs are "
          "contiguous)")


def bench_annotation_nrrd(folder: Path, repeats: int, quick: bool) -> None:
    import nrrd

    from napari_allen.io.nrrd import read_nrrd
    from napari_allen.layers.volumes import labels_layer

    path = resources.files("napari_allen") / "data" / "annotation" / "annotation_25.nrrd"
    os.environ["NAPARI_ALLEN_CACHE"] = str(folder / "cache")

    start = time.perf_counter()
    vol = read_nrrd(path)
    t_first = time.perf_counter() - start

    def warm():
        v = read_nrrd(path)
        data, _, _ = labels_layer(v)
        return np.asarray(data[264])  # a coronal slice, relabelled for display

    t_warm = _best(warm, repeats)
    print("Real annotation_25.nrrd (gzip, 4 MB -> 308 MB uint32):")
    if not quick:
        t_base = _best(lambda: nrrd.read(str(path)), 1)
        print(f"  pynrrd.read whole            : {t_base:7.3f} s")
    else:
        t_base = None
    print(f"  napari-allen first open (decode to cache) : {t_first:7.3f} s")
    ratio = f"(ratio {t_base / t_warm:5.1f}x faster than pynrrd)" if t_base else ""
    print(f"  napari-allen later open+labels+slice       : {t_warm:7.3f} s  {ratio}")
    assert vol.shape == SHAPE_25


_PEAK_SCRIPT = r"""
import resource, sys, time, numpy as np
import dask.array  # imports count in the baseline, not in the opening
from napari_allen.io import read_volumes
from napari_allen.layers.volumes import image_layer


def peak_bytes():
    # VmHWM is this process's own peak (ru_maxrss is inherited across exec on Linux).
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


base = peak_bytes()
t0 = time.perf_counter()
(vol,) = read_volumes(sys.argv[1])
data, kwargs, _ = image_layer(vol)
t_open = time.perf_counter() - t0
t0 = time.perf_counter()
plane = np.asarray(data[:, :, 570])
t_ml = time.perf_counter() - t0
t0 = time.perf_counter()
first = np.asarray(data[660])
t_ap = time.perf_counter() - t0
print(base, peak_bytes(), type(vol.data).__name__, type(data).__name__, t_open, t_ml, t_ap)
"""


def bench_10um_memory(folder: Path) -> None:
    raw = folder / "energy.raw"
    with open(raw, "wb") as fh:
        fh.truncate(int(np.prod(SHAPE_10)) * 4)  # sparse: no disk blocks
    (folder / "energy.mhd").write_text(_header(SHAPE_10, 10, "energy"))
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(folder / "energy.mhd")],
                         check=True, capture_output=True, text=True).stdout.split()
    base, peak = int(out[0]), int(out[1])
    t_open, t_ml, t_ap = (float(v) for v in out[4:7])
    size = raw.stat().st_size
    grown = max(peak - base, 1)
    print("Sparse 10 µm grid (1320x800x1140 float32, generated, no disk blocks):")
    print(f"  file size {size / 2**30:5.2f} GiB; opened as {out[2]} -> layer {out[3]}")
    print(f"  open + layer {t_open:6.3f} s; one ML slice {t_ml:6.3f} s; one AP slice "
          f"{t_ap:6.3f} s")
    print(f"  peak RSS {peak / 2**20:7.1f} MiB, of which {grown / 2**20:6.1f} MiB for opening "
          f"and slicing  (ratio {size / grown:7.0f}x below the file size)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, no pynrrd baseline")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-open-grids-") as tmp:
        folder = Path(tmp)
        bench_10um_memory(folder)
        bench_25um_metaimage(folder, repeats)
        bench_annotation_nrrd(folder, repeats, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
