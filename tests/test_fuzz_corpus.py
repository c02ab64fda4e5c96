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
