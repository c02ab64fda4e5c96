"""Allen NRRD grids: real connectivity files, type/encoding handling, laziness, bad headers."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import pytest

from napari_allen.errors import AllenFormatError
from napari_allen.io import read_volumes
from napari_allen.io.manifest import MANIFEST_NAME, Manifest
from napari_allen.io.nrrd import read_nrrd

CONN = resources.files("napari_allen") / "data" / "connectivity" / "158375425"


def _nrrd(path, sizes, *, type_="float", encoding="gzip", payload: bytes, extra: str = ""):
    header = (f"NRRD0004\n# Complete NRRD file format specification at:\ntype: {type_}\n"
              f"dimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {sizes[0]} {sizes[1]} {sizes[2]}\n"
              f"space directions: (50,0,0) (0,50,0) (0,0,50)\nkinds: domain domain domain\n"
              f"endian: little\nencoding: {encoding}\nspace origin: (0,0,0)\n{extra}\n")
    body = gzip.compress(payload, compresslevel=1) if encoding == "gzip" else payload
    path.write_bytes(header.encode() + body)
    return path


def test_real_projection_density():
    (vol,) = read_volumes(CONN / "projection_density_100.nrrd")
    assert vol.kind == "projection_density"
    assert vol.shape == (132, 80, 114) and vol.resolution == 100.0
    assert vol.dtype == np.float32
    assert vol.metadata["experiment_id"] == 158375425  # from the folder name
    data = np.asarray(vol.data)
    assert data.min() >= 0.0 and data.max() <= 1.0


def test_real_injection_density_centroid_orientation():
    """Density-weighted centroid ~ (7111, 3977, 7620) µm, near the metadata injection point
    (7070, 4360, 7650): confirms [AP, DV, ML] order and voxel i at i*100 µm."""
    vol = read_nrrd(CONN / "injection_density_100.nrrd")
    w = np.asarray(vol.data, dtype=float)
    idx = np.indices(w.shape).reshape(3, -1)
    centroid = (idx * w.ravel()).sum(axis=1) / w.sum() * vol.resolution
    np.testing.assert_allclose(centroid, (7111, 3977, 7620), atol=15)
    assert np.linalg.norm(centroid - (7070, 4360, 7650)) < 450
    # Summed density x voxel volume ~ 0.090 mm³ (allen-data README).
    assert w.sum() * (0.1 ** 3) == pytest.approx(0.090, abs=0.003)


def test_double_type_honoured(tmp_path):
    values = np.arange(6 * 5 * 4, dtype="<f8") / 7
    path = _nrrd(tmp_path / "injection_fraction_50.nrrd", (6, 5, 4), type_="double",
                 payload=values.tobytes())
    vol = read_nrrd(path)
    assert vol.dtype == np.float64 and vol.resolution == 50.0
    assert vol.kind == "injection_fraction"
    assert vol.data[1, 0, 0] == pytest.approx(1 / 7) and vol.data[0, 1, 0] == pytest.approx(6 / 7)


def test_raw_encoding_is_memory_mapped(tmp_path):
    shape = (264, 160, 228)
    path = _nrrd(tmp_path / "annotation_50.nrrd", shape, type_="unsigned int", encoding="raw",
                 payload=b"")
    with open(path, "r+b") as fh:  # sparse payload after the header
        fh.seek(0, 2)
        fh.truncate(fh.tell() + int(np.prod(shape)) * 4)
    vol = read_nrrd(path)
    assert isinstance(vol.data, np.memmap)
    assert vol.kind == "annotation" and vol.dtype == np.uint32 and vol.shape == shape


def test_large_gzip_decodes_once_to_cache(tmp_path, monkeypatch):
    shape = (264, 160, 228)
    grid = np.zeros(shape, dtype="<f4")
    grid[3, 4, 5] = 0.25
    path = _nrrd(tmp_path / "projection_density_50.nrrd", shape,
                 payload=grid.tobytes(order="F"))
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "cache"))
    vol = read_nrrd(path)
    assert isinstance(vol.data, np.memmap)
    assert vol.data[3, 4, 5] == 0.25
    folder = tmp_path / "cache" / "decoded"
    decoded = sorted(p.name for p in folder.iterdir())
    # One decoded payload plus the folder's manifest (size, inode, mtime, source; no hash:
    # a derived file is rebuilt from its source once it changes, test_io_decoded_cache).
    assert len(decoded) == 2 and decoded[0] == MANIFEST_NAME and decoded[1].endswith(".raw")
    entry = Manifest(folder).get(decoded[1])
    assert entry.size == grid.nbytes and entry.url == str(path) and entry.sha256 == ""
    assert (entry.inode, entry.mtime_ns) == (lambda st: (st.st_ino, st.st_mtime_ns))(
        (folder / decoded[1]).stat())
    # A second open reuses the decoded file (same path, no new file, no .part left).
    again = read_nrrd(path)
    assert again.data.filename == vol.data.filename
    assert sorted(p.name for p in folder.iterdir()) == decoded


def test_bundled_annotation_25_is_lazy():
    from napari_allen.atlas.annotation import ccf_annotation_25

    vol = ccf_annotation_25()
    assert isinstance(vol.data, np.memmap)
    assert vol.shape == (528, 320, 456) and vol.dtype == np.uint32 and vol.resolution == 25


# --- bad input ---------------------------------------------------------------------------

def test_truncated_gzip(tmp_path):
    blob = (CONN / "projection_density_100.nrrd").read_bytes()
    path = tmp_path / "projection_density_100.nrrd"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(AllenFormatError, match="truncated NRRD gzip data") as err:
        read_nrrd(path)
    assert str(path) in str(err.value)


def test_gzip_longer_than_sizes(tmp_path):
    path = _nrrd(tmp_path / "x.nrrd", (4, 4, 4), payload=b"\0" * (4 * 4 * 4 * 4 * 10))
    with pytest.raises(AllenFormatError, match="inflates beyond"):
        read_nrrd(path)


def test_raw_size_mismatch(tmp_path):
    path = _nrrd(tmp_path / "x.nrrd", (4, 4, 4), encoding="raw", payload=b"\0" * 100)
    with pytest.raises(AllenFormatError, match="NRRD data truncated"):
        read_nrrd(path)


def test_corrupt_gzip_stream(tmp_path):
    path = _nrrd(tmp_path / "x.nrrd", (4, 4, 4), encoding="raw", payload=b"")
    path.write_bytes(path.read_bytes().replace(b"encoding: raw", b"encoding: gzip")
                     + b"this is not gzip data")
    with pytest.raises(AllenFormatError, match="corrupt NRRD gzip data"):
        read_nrrd(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"PK\x03\x04 not an nrrd", "no 'NRRD' magic"),
     (b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4\nendian: little\nencoding: raw\n\n",
      "dimension 3 sizes"),
     (b"NRRD0004\ntype: float\ndimension: 3\nsizes: a b c\nendian: little\nencoding: raw\n\n",
      "corrupt NRRD header"),
     (b"NRRD0004\ntype: float\ntype: float\n\n", "corrupt NRRD header"),
     (b"NRRD0004\ntype: quaternion\ndimension: 3\nsizes: 2 2 2\nendian: little\n"
      b"encoding: raw\n\n" + bytes(64), "type 'quaternion' is not supported"),
     (b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\nendian: sideways\n"
      b"encoding: raw\n\n" + bytes(32), "endian 'sideways'"),
     (b"NRRD9999\ntype: float\n\n", "corrupt NRRD header")],
)
def test_corrupt_headers(tmp_path, content, problem):
    path = tmp_path / "projection_density_100.nrrd"
    path.write_bytes(content)
    with pytest.raises(AllenFormatError, match=problem) as err:
        read_nrrd(path)
    assert err.value.path == str(path)


def test_no_partial_cache_after_failure(tmp_path, monkeypatch):
    """A large gzip that turns out truncated leaves no decoded file or .part behind."""
    shape = (264, 160, 228)
    path = _nrrd(tmp_path / "projection_density_50.nrrd", shape,
                 payload=np.ones(shape, dtype="<f4").tobytes())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 5000])
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(AllenFormatError, match="truncated"):
        read_nrrd(path)
    assert list((tmp_path / "cache" / "decoded").glob("*raw*")) == []


def test_concurrent_first_opens_share_one_decode(tmp_path, monkeypatch):
    """Widgets open grids from worker threads: two simultaneous first opens both succeed."""
    from concurrent.futures import ThreadPoolExecutor

    shape = (264, 160, 228)
    grid = np.zeros(shape, dtype="<f4")
    grid[7, 8, 9] = 0.5
    path = _nrrd(tmp_path / "projection_density_50.nrrd", shape,
                 payload=grid.tobytes(order="F"))
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "cache"))
    with ThreadPoolExecutor(2) as pool:
        vols = list(pool.map(lambda _: read_nrrd(path), range(2)))
    assert all(v.data[7, 8, 9] == 0.5 for v in vols)
    leftovers = sorted(p.suffix for p in (tmp_path / "cache" / "decoded").iterdir())
    assert leftovers == [".jsonl", ".raw"]
