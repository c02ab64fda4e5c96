"""Every malformed input of the generated corpus (tests/fuzz_corpus.py) ends in a clear
AllenFormatError naming the file, or in correct data: through the IO functions, the napari
reader and the ``export`` command, never another exception type or a traceback. The heavy
inputs (decompression bombs, 25/10 µm grids) run in a child process whose peak memory is
measured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_corpus  # noqa: E402
from napari_allen.errors import AllenFormatError  # noqa: E402

CASES = fuzz_corpus.cases()
LIGHT = [c for c in CASES if not c.heavy]
HEAVY = [c for c in CASES if c.heavy]
GRID_SUFFIXES = (".mhd", ".mha", ".raw", ".zip", ".nrrd", ".nhdr")
#: Peak resident memory allowed for opening any input (bytes).
MAX_RSS = 1 << 30


def test_corpus_is_large_and_covers_every_format():
    assert len(CASES) >= 150
    by_format = {}
    for case in CASES:
        key = case.name.split("-")[0]
        by_format[key] = by_format.get(key, 0) + 1
    assert {"mhd", "raw", "zip", "folder", "nrrd", "nhdr", "json", "store"} <= set(by_format)
    assert sum(c.expect == "error" for c in CASES) >= 150
    # Deterministic: the same seed builds the same corpus.
    assert [c.name for c in fuzz_corpus.cases(0)] == [c.name for c in CASES]


@pytest.mark.parametrize("case", LIGHT, ids=lambda c: c.name)
def test_clear_error_or_correct_data(case, tmp_path):
    outcome, message = fuzz_corpus.run_case(case, tmp_path)
    assert outcome == case.expect, message


@pytest.mark.parametrize("case", [c for c in LIGHT if c.fmt == "grid"], ids=lambda c: c.name)
def test_napari_reader_and_export_explain_or_read(case, tmp_path, capsys):
    """Allen-named inputs are claimed by the napari reader (which then raises the reason or
    returns layers) and the export command exits 1 with one line, never a traceback."""
    from napari_allen._reader import get_reader
    from napari_allen.cli import main

    path = case.build(tmp_path / "in")
    reader = get_reader(str(path))
    if path.suffix.lower() in GRID_SUFFIXES:
        assert reader is not None, f"{path.name} is an Allen name but was refused"
    if reader is not None:
        if case.expect == "error":
            with pytest.raises(AllenFormatError):
                reader(str(path))
        else:
            assert reader(str(path))
    code = main(["export", str(path), "--to", "mhd", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if case.expect == "error":
        assert code == 1 and re.match(r"napari-allen( [\w-]+)?: error: ", err), err
        assert len(err.strip().splitlines()) == 1 and path.name in err
    else:
        assert code == 0, err


_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import fuzz_corpus
from fuzz_corpus import peak_rss
case = next(c for c in fuzz_corpus.cases() if c.name == {name!r})
folder = Path({folder!r})
path = case.build(folder / "in")
base = peak_rss()
outcome, message = fuzz_corpus.run_case_at(case, path, folder)
peak = peak_rss()
print(json.dumps({{"outcome": outcome, "message": message, "peak": peak, "base": base}}))
"""


def run_heavy(case, folder: Path) -> dict:
    """Build (in the child: building is not what is measured) and open a heavy case in a
    child process; returns outcome and peak RSS (bytes) of the opening."""
    code = _CHILD.format(tests=str(Path(__file__).parent), name=case.name, folder=str(folder))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", HEAVY, ids=lambda c: c.name)
def test_heavy_inputs_open_in_bounded_memory(case, tmp_path):
    result = run_heavy(case, tmp_path)
    assert result["outcome"] == case.expect, result["message"]
    assert result["peak"] < MAX_RSS, f"peak RSS {result['peak'] / 2**20:.0f} MiB"


_EXPORT_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import numpy as np
from fuzz_corpus import peak_rss
from napari_allen.cli import main
folder = Path({folder!r})
shape = (528, 320, 456)  # 25 µm, 308 MB of float32
header = ("ObjectType = Image\\nNDims = 3\\nElementSpacing = 25 25 25\\n"
          f"DimSize = {{shape[0]}} {{shape[1]}} {{shape[2]}}\\nElementType = MET_FLOAT\\n"
          "ElementDataFile = projection_density_25.raw\\n")
(folder / "projection_density_25.mhd").write_text(header)
slab = np.full((shape[0], shape[1], 8), -1, dtype="<f4")  # -1 = no data ...
with open(folder / "projection_density_25.raw", "wb") as fh:
    for k in range(0, shape[2], 8):
        block = slab.copy()
        if k == 96:
            block[100, 100, 4] = 0.5  # ... but one voxel (100, 100, 100)
        fh.write(block.tobytes(order="F"))
base = peak_rss()
codes = [main(["export", str(folder / "projection_density_25.mhd"), "--to", fmt,
               "--out", str(folder / "out"), "--no-structures"])
         for fmt in ("csv", "nifti", "mhd")]
print(json.dumps({{"codes": codes, "peak": peak_rss(), "base": base,
                  "csv_rows": sum(1 for _ in open(next((folder / "out").glob("*.csv")))) - 1}}))
"""


def test_exporting_a_huge_sparse_grid_is_bounded(tmp_path):
    """CSV, NIfTI and MetaImage exports of a 25 µm grid stream slab by slab: peak memory of
    the export stays far below the grid size (308 MB), the CSV holds only the data voxel."""
    code = _EXPORT_CHILD.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0] and result["csv_rows"] == 1
    assert result["peak"] < 300 * 2**20, result  # the old exporters peaked near 700 MiB
