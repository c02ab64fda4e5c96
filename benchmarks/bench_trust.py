"""Benchmark: trust at the edges of the IO layer (issue #9, reader side).

Prints, in one run:

1. the generated fuzz corpus (``tests/fuzz_corpus.py``): its size and the outcome counts —
   clear error (AllenFormatError naming the file) / correct data / other (anything else: a
   different exception, an error not naming the file, wrong data);
2. peak RSS over the corpus: every heavy input (decompression bombs, 25/10 µm grids) opened in
   a fresh child process, next to a baseline child that opens the 25 µm compressed MetaImage
   the way the reader did before (whole-file read + inflate + copy), as a ratio;
3. the decoded cache: entries after opening one large gzip NRRD, touching it and copying it
   elsewhere (the old path+mtime key made one entry per open: the baseline), and whether the
   size cap (``NAPARI_ALLEN_CACHE_MAX``) holds while grids keep coming (LRU eviction).

Usage: ``python benchmarks/bench_trust.py [--quick]`` (``--quick`` skips the 10 µm inputs).
Temporary files go to a temp folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import fuzz_corpus  # noqa: E402

_CHILD = """
import json, sys
sys.path.insert(0, {tests!r}); sys.path.insert(0, {src!r})
from pathlib import Path
import fuzz_corpus
from fuzz_corpus import peak_rss
case = next(c for c in fuzz_corpus.cases() if c.name == {name!r})
folder = Path({folder!r})
path = case.build(folder / "in")
outcome, message = fuzz_corpus.run_case_at(case, path, folder)
print(json.dumps({{"outcome": outcome, "message": message,
                  "peak": peak_rss()}}))
"""

_BASELINE = """
import json, sys, zlib
sys.path.insert(0, {tests!r}); sys.path.insert(0, {src!r})
from pathlib import Path
import numpy as np
import fuzz_corpus
from fuzz_corpus import peak_rss
case = next(c for c in fuzz_corpus.cases() if c.name == "mhd-compressed-25um-zeros")
mhd = case.build(Path({folder!r}) / "in")
before = peak_rss()
# The reader before this work: the whole compressed file in memory, inflated in memory, then
# copied into a native-endian array.
payload = zlib.decompress((mhd.parent / "energy.raw").read_bytes())
array = np.frombuffer(payload, dtype="<f4").astype("=f4", copy=True)
print(json.dumps({{"peak": peak_rss(),
                  "ok": bool(array.size == 528 * 320 * 456)}}))
"""


def _child(code: str, folder: Path, name: str = "") -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line is a JSON result."""
    folder.mkdir(parents=True, exist_ok=True)
    text = code.format(tests=str(ROOT / "tests"), src=str(ROOT / "src"), folder=str(folder),
                       name=name)
    proc = subprocess.run([sys.executable, "-c", text], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        return {"outcome": "other", "message": proc.stderr[-500:], "peak": 0}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def corpus(tmp: Path, quick: bool) -> None:
    cases = fuzz_corpus.cases()
    counts: collections.Counter = collections.Counter()
    unexpected = []
    started = time.perf_counter()
    for case in cases:
        if case.heavy:
            continue
        outcome, message = fuzz_corpus.run_case(case, tmp / "light" / case.name)
        counts["clear error" if outcome == "error" else "correct data" if outcome == "data"
               else "other"] += 1
        if outcome != case.expect:
            unexpected.append((case.name, outcome, message[:120]))
    light_s = time.perf_counter() - started
    print(f"fuzz corpus: {len(cases)} inputs ({sum(c.heavy for c in cases)} heavy), "
          f"{sum(c.expect == 'error' for c in cases)} malformed")
    print(f"  light inputs in-process ({light_s:.1f} s): " + ", ".join(
        f"{k} {counts[k]}" for k in ("clear error", "correct data", "other")))
    peaks = []
    peak_by_case = {}
    for case in cases:
        if not case.heavy or (quick and "10um" in case.name):
            continue
        started = time.perf_counter()
        result = _child(_CHILD, tmp / "heavy" / case.name, case.name)
        shutil.rmtree(tmp / "heavy" / case.name, ignore_errors=True)
        outcome = result["outcome"]
        counts["clear error" if outcome == "error" else "correct data" if outcome == "data"
               else "other"] += 1
        if outcome != case.expect:
            unexpected.append((case.name, outcome, result.get("message", "")[:120]))
        peaks.append(result["peak"])
        peak_by_case[case.name] = result["peak"]
        print(f"  heavy {case.name:28s} {outcome:5s} peak RSS {result['peak'] / 2**20:7.0f} MiB"
              f"  ({time.perf_counter() - started:.1f} s)")
    print("  all inputs: " + ", ".join(f"{k} {counts[k]}" for k in
                                       ("clear error", "correct data", "other")))
    for name, outcome, message in unexpected:
        print(f"  UNEXPECTED {name}: {outcome} {message}")
    base = _child(_BASELINE, tmp / "baseline")
    shutil.rmtree(tmp / "baseline", ignore_errors=True)
    ours = max(peaks) if peaks else 0
    print(f"  max peak RSS over the corpus: {ours / 2**20:.0f} MiB")
    same = peak_by_case.get("mhd-compressed-25um-zeros", 0)
    if base.get("peak") and same:
        print(f"  25 µm compressed .mhd (308 MB inflated): old whole-read+inflate+copy "
              f"{base['peak'] / 2**20:.0f} MiB vs ours {same / 2**20:.0f} MiB -> "
              f"{base['peak'] / same:.1f}x less (ours does not grow with the grid: inflation "
              "streams into the decoded cache)")


_EXPORT = """
import json, sys, gzip
sys.path.insert(0, {tests!r}); sys.path.insert(0, {src!r})
from pathlib import Path
import numpy as np
from fuzz_corpus import peak_rss
folder = Path({folder!r})
shape = (528, 320, 456)  # 25 µm: 308 MB of float32, -1 (no data) but one voxel
(folder / "projection_density_25.mhd").write_text(
    "ObjectType = Image\\nNDims = 3\\nElementSpacing = 25 25 25\\nDimSize = 528 320 456\\n"
    "ElementType = MET_FLOAT\\nElementDataFile = projection_density_25.raw\\n")
slab = np.full((shape[0], shape[1], 8), -1, dtype="<f4")
with open(folder / "projection_density_25.raw", "wb") as fh:
    for k in range(0, shape[2], 8):
        block = slab.copy()
        if k == 96:
            block[100, 100, 4] = 0.5
        fh.write(block.tobytes(order="F"))
del slab, block
if {mode!r} == "ours":
    from napari_allen.cli import main
    for fmt in ("csv", "nifti", "mhd"):
        main(["export", str(folder / "projection_density_25.mhd"), "--to", fmt,
              "--out", str(folder / "out"), "--no-structures"])
else:  # the exporters before this work: whole array, whole NIfTI in memory, then gzip
    import nibabel as nib
    data = np.memmap(folder / "projection_density_25.raw", "<f4", "r", shape=shape, order="F")
    arr = np.asarray(data).astype("=f4", copy=False)
    payload = gzip.compress(nib.Nifti1Image(arr, np.eye(4)).to_bytes(), 6)
    (folder / "out.nii.gz").write_bytes(payload)
print(json.dumps({{"peak": peak_rss()}}))
"""


def export(tmp: Path) -> None:
    ours = _child(_EXPORT.replace("{mode!r}", repr("ours")), tmp / "export-ours")
    base = _child(_EXPORT.replace("{mode!r}", repr("baseline")), tmp / "export-base")
    shutil.rmtree(tmp / "export-ours", ignore_errors=True)
    shutil.rmtree(tmp / "export-base", ignore_errors=True)
    print("export of a sparse 25 µm grid (308 MB, one voxel with data):")
    print(f"  peak RSS: ours (CSV + NIfTI + MetaImage via `napari-allen export`) "
          f"{ours['peak'] / 2**20:.0f} MiB vs whole-array NIfTI baseline "
          f"{base['peak'] / 2**20:.0f} MiB -> {base['peak'] / max(ours['peak'], 1):.1f}x less")


def _nrrd(path: Path, seed: int) -> Path:
    shape = (264, 160, 228)
    grid = np.zeros(shape, dtype="<f4")
    grid[seed, 1, 1] = seed
    header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: {shape[0]} {shape[1]} {shape[2]}\n"
              "spacings: 50 50 50\nendian: little\nencoding: gzip\n\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + gzip.compress(grid.tobytes(order="F"), 1))
    return path


def decoded_cache(tmp: Path) -> None:
    from napari_allen.io._decode import decoded_cache_info
    from napari_allen.io.nrrd import read_nrrd

    cache = tmp / "cache"
    first = _nrrd(tmp / "grids" / "projection_density_50.nrrd", 1)
    opens = [first]
    read_nrrd(first, cache_dir=cache)
    os.utime(first, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched
    opens.append(first)
    read_nrrd(first, cache_dir=cache)
    copy = tmp / "elsewhere" / "copy.nrrd"
    copy.parent.mkdir(parents=True)
    shutil.copy(first, copy)
    opens.append(copy)
    read_nrrd(copy, cache_dir=cache)
    info = decoded_cache_info(cache)
    print("decoded cache (50 µm gzip NRRD, 38.5 MB decoded): open, touch + open, copy + open")
    print(f"  entries: ours {info['entries']} ({info['bytes'] / 1e6:.1f} MB) vs path+mtime "
          f"key {len(opens)} ({len(opens) * 38.5:.1f} MB) -> {len(opens) / info['entries']:.0f}x"
          " fewer copies")
    cap = int(2.5 * 38.5e6)
    os.environ["NAPARI_ALLEN_CACHE_MAX"] = str(cap)
    try:
        worst = 0
        for i in range(2, 8):
            read_nrrd(_nrrd(tmp / "grids" / f"projection_density_{i}_50.nrrd", i),
                      cache_dir=cache)
            worst = max(worst, decoded_cache_info(cache)["bytes"])
        info = decoded_cache_info(cache)
    finally:
        del os.environ["NAPARI_ALLEN_CACHE_MAX"]
    print(f"  cap {cap / 1e6:.1f} MB, 7 grids opened: largest size seen {worst / 1e6:.1f} MB, "
          f"{info['entries']} entries kept (cap {'respected' if worst <= cap else 'EXCEEDED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the 10 µm inputs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trust-") as tmp:
        corpus(Path(tmp), args.quick)
        export(Path(tmp))
        decoded_cache(Path(tmp))


if __name__ == "__main__":
    main()
