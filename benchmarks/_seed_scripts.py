"""Run the original user scripts from ``../shared/seeds`` as baselines, ported on the fly.

The seed files are the scripts as users found them on web pages: prose and code interleaved,
Python 2, and with a few lines the page scrape lost (lines made only of a keyword such as
``try:``/``else:``, lines whose text was a hyperlink, the constants block). Nothing of them is
copied into this repository: the benchmarks read the seed at run time, keep its code lines,
and apply the edits listed below, each asserted to match exactly once so that a changed seed
fails loudly instead of silently benchmarking something else.

Edits, all of them:

- Python 3: ``print x`` -> ``print(x)``; ``urllib.urlopen`` -> ``urllib.request.urlopen``;
  ``iteritems`` -> ``items``; ``d.has_key(k)`` -> ``k in d``; ``xrange`` -> ``range``;
  ``json.dumps(dict.values())`` -> ``json.dumps(list(dict.values()))``; file mode ``'wb'`` ->
  ``'w'`` for the JSON text.
- Host: ``http://api.brain-map.org`` -> the local server's URL.
- Lines lost by the scrape, restored as Allen's published scripts have them:
  correlation script (000): ``API_PATH``/``GRAPH_ID = 1``/``MOUSE_PRODUCT_ID = 1``; the last
  line of ``UNIONIZE_FMT`` (``&only=id,structure_id,sum_pixels,expression_energy,
  section_data_set_id``); the ``else:`` of ``DownloadDataSets``; ``expression.fill(numpy.nan)``;
  the ``numpy.ma.masked_array``/``numpy.ma.corrcoef``/``corr.data``/``numpy.ma.sort``
  expressions whose text was a link; the three ``f.write(json.dumps(...))`` lines.
  Lines script (004): ``INJECTION_MASK_THRESHOLD = 0.5``; ``try:``, ``continue`` and
  ``else:`` in the fibre-tract test; the closing ``}`` and ``json.dump(data, f)``.
- The lines script imports Allen's ``api`` helper module, which is not a seed: :data:`API_MODULE`
  is a straightforward Python 3 version of its four functions (zip download with
  ``urlretrieve``, ``.mhd`` key/value parsing, float32 ``.raw`` reshaped in Fortran order to
  ``DimSize`` (as ints: numpy no longer reshapes to floats), one ``urlopen`` per target-spatial
  query).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path


def _seeds_dir() -> Path:
    """``$NAPARI_ALLEN_SEEDS``, else ``shared/seeds`` beside the repository or beside one of
    its parent folders (CI clones the repository with ``../shared`` beside it)."""
    if os.environ.get("NAPARI_ALLEN_SEEDS"):
        return Path(os.environ["NAPARI_ALLEN_SEEDS"])
    for folder in Path(__file__).resolve().parents[1:]:
        if (folder.parent / "shared" / "seeds").is_dir():
            return folder.parent / "shared" / "seeds"
    return Path(__file__).resolve().parents[2] / "shared" / "seeds"


SEEDS = _seeds_dir()

_CODE_START = re.compile(
    r"^(import \w|from [\w.]+ import |def \w+\(|class \w|if __name__|print |"
    r"[A-Za-z_][\w.]*(\[[^\]]*\])?\s*(,\s*[A-Za-z_]\w*\s*)*[+\-*/]?=[^=]|"
    r"[A-Za-z_]\w*\s*,\s*[A-Za-z_]\w*.*=|with |f\.write|f = open)")


def seed_text(prefix: str) -> str:
    """The text of the seed whose file name starts with ``prefix`` (e.g. ``"000_"``)."""
    matches = sorted(SEEDS.glob(prefix + "*.txt"))
    if not matches:
        raise FileNotFoundError(f"no seed {prefix}*.txt in {SEEDS} (set NAPARI_ALLEN_SEEDS)")
    return matches[0].read_text(encoding="utf-8")


def code_lines(text: str) -> list[str]:
    """The code of a scraped page: indented lines, and column-0 lines that read as Python."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            out.append("")
        elif line[0] in " \t" or _CODE_START.match(line):
            out.append(line.rstrip())
    return out


def _sub(source: str, old: str, new: str, count: int = 1) -> str:
    found = source.count(old)
    if found != count:
        raise ValueError(f"seed port: expected {count} x {old!r}, found {found}; has the seed "
                         "changed?")
    return source.replace(old, new)


def _py3(source: str) -> str:
    source = re.sub(r"^(\s*)print (.+?)\s*$", r"\1print(\2)", source, flags=re.M)
    source = source.replace("urllib.urlopen(", "urllib.request.urlopen(")
    source = source.replace("import urllib\n", "import urllib.request\n")
    source = source.replace(".iteritems()", ".items()")
    source = re.sub(r"(\w+)\.has_key\((\w+)\)", r"\2 in \1", source)
    return source.replace("xrange(", "range(")


def correlation_script(host: str) -> str:
    """Allen's structure-correlation script (seed 000), Python 3, pointed at ``host``."""
    src = "\n".join(code_lines(seed_text("000_"))) + "\n"
    src = _sub(src, "PLANE_ID = 1 # coronal",
               f'API_PATH = "{host}/api/v2/data"\nGRAPH_ID = 1\nMOUSE_PRODUCT_ID = 1 # aba\n'
               "PLANE_ID = 1 # coronal")
    src = _sub(src, '(MOUSE_PRODUCT_ID)) +\\\n',
               '(MOUSE_PRODUCT_ID)) +\\\n               "&only=id,structure_id,sum_pixels,'
               'expression_energy,section_data_set_id"\n')
    src = _sub(src, "        return dataSets\n        n = min(",
               "        return dataSets\n    else:\n        n = min(")
    src = _sub(src, "    expression = numpy.empty([nstructs,ndata])\n",
               "    expression = numpy.empty([nstructs,ndata])\n"
               "    expression.fill(numpy.nan)\n")
    src = _sub(src, "mdat =,numpy.isnan(expression))",
               "mdat = numpy.ma.masked_array(expression,numpy.isnan(expression))")
    src = _sub(src, "    corr =\n", "    corr = numpy.ma.corrcoef(mdat)\n")
    src = _sub(src, "    return, structureIds", "    return corr.data, structureIds")
    src = _sub(src, "mcorr =,numpy.isnan(corr)", "mcorr = numpy.ma.masked_array(corr,"
                                                  "numpy.isnan(corr)")
    src = _sub(src, "corrsort =,axis=None", "corrsort = numpy.ma.sort(mcorr,axis=None")
    src = _sub(src, 'f = open(connfile,"w")\n',
               'f = open(connfile,"w")\nf.write(json.dumps(conns))\nf.close()\n')
    src = _sub(src, 'f = open(structfile,"w")\n',
               'f = open(structfile,"w")\nf.write(json.dumps(list(structHash.values())))\n'
               "f.close()\n")
    src = _sub(src, "f.write(json.dumps(list([list(r) for r in corr])))",
               "f.write(json.dumps(list([list(r) for r in corr])))\nf.close()")
    src = _py3(src)
    compile(src, "seed 000 port", "exec")
    return src


#: Allen's ``api`` helper module for the lines script (see the module docstring).
API_MODULE = r'''
import json, re, urllib.request, urllib.error, zipfile
import numpy as np
API_SERVER = "@HOST@/"
GRID_FMT = API_SERVER + "grid_data/download/%d?include=%s"
LINES_FMT = ("@HOST@/api/v2/data/query.json?criteria=service::mouse_connectivity_target_"
             "spatial[seed_point$eq%d,%d,%d][section_data_set$eq%d]")

def DownloadFiberTractVolume():
    return DownloadVolume(API_SERVER + "api/v2/well_known_file_download/197646984",
                          "annotationFiber")

def DownloadDataSetVolume(dataSetId, volume="density"):
    return DownloadVolume(GRID_FMT % (dataSetId, volume), volume)

def DownloadTargetLines(target_coordinate, injection_data_set_id):
    url = LINES_FMT % (target_coordinate[0], target_coordinate[1], target_coordinate[2],
                       injection_data_set_id)
    try:
        response = json.loads(urllib.request.urlopen(url).read())
        return response["msg"] if response["success"] == True else []
    except urllib.error.HTTPError:
        return []

def DownloadVolume(url, volume):
    fh = urllib.request.urlretrieve(url)
    zf = zipfile.ZipFile(fh[0])
    header = zf.read(volume + ".mhd").decode("ascii")
    raw = zf.read(volume + ".raw")
    arr = np.frombuffer(raw, dtype=np.float32)
    metaInfo = dict(line.split(" = ") for line in header.split("\n") if line)
    for k, v in list(metaInfo.items()):
        if re.match(r"^[\d\s]+$", v):
            nums = v.split(" ")
            metaInfo[k] = list(map(float, nums)) if len(nums) > 1 else int(nums[0])
    arr = arr.reshape([int(d) for d in metaInfo["DimSize"]], order="F")
    return (header, arr, metaInfo)
'''


def lines_script(host: str, data_set_id: int | None = None) -> tuple[str, str]:
    """(script source, ``api`` module source) for the spatial-search-lines script (seed 004)."""
    src = "\n".join(code_lines(seed_text("004_"))) + "\n"
    src = _sub(src, "DENSITY_RANGE = [0.04, 0.3]\n",
               "DENSITY_RANGE = [0.04, 0.3]\nINJECTION_MASK_THRESHOLD = 0.5\n")
    if data_set_id is not None:
        src = re.sub(r"^DATA_SET_ID = \d+", f"DATA_SET_ID = {int(data_set_id)}", src,
                     count=1, flags=re.M)
    src = _sub(src, "            ftVal = ftArr[",
               "        try:\n            ftVal = ftArr[")
    src = _sub(src, '"outside fiber tract mask"\n',
               '"outside fiber tract mask"\n            continue\n')
    src = _sub(src, '            dataSetLines += lines\n            print index,',
               '            dataSetLines += lines\n        else:\n            print index,')
    src = _sub(src, "INJECTION_MASK_THRESHOLD)\n",
               "INJECTION_MASK_THRESHOLD)\n    }\n")
    src = _sub(src, "    with open('data.json', 'wb') as f:",
               "    with open('data.json', 'w') as f:\n        json.dump(data, f)")
    src = _py3(src)
    compile(src, "seed 004 port", "exec")
    api = API_MODULE.replace("@HOST@", host.rstrip("/"))
    return src, api


def run_script(source: str, workdir: Path, args: list[str] = (), *,
               modules: dict[str, str] | None = None, timeout: float = 3600) -> float:
    """Run ``source`` as ``script.py`` in ``workdir`` in a fresh interpreter (its output files
    land there); ``modules`` are written beside it. Returns the wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "script.py").write_text(source, encoding="utf-8")
    for name, text in (modules or {}).items():
        (workdir / f"{name}.py").write_text(text, encoding="utf-8")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "script.py", *args], cwd=workdir, timeout=timeout,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the seed script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds
