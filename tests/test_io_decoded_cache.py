"""The decoded cache cannot hurt the machine: content-keyed (touch/copy adds no copy), capped
with least-recently-used eviction, refused up front when the disk is too small, trimmed by
``napari-allen cache-prune``."""

from __future__ import annotations

import gzip
import os
import shutil

import numpy as np
import pytest

from napari_allen.cli import main
from napari_allen.errors import AllenFormatError
from napari_allen.io import _decode
from napari_allen.io._decode import decoded_cache_info, parse_size, prune_decoded_cache
from napari_allen.io.nrrd import read_nrrd

SHAPE = (264, 160, 228)  # 50 µm: 38.5 MB of float32, above the in-memory threshold
N_BYTES = SHAPE[0] * SHAPE[1] * SHAPE[2] * 4


def _big_nrrd(path, seed: int):
    grid = np.zeros(SHAPE, dtype="<f4")
    grid[seed % SHAPE[0], 4, 5] = seed
    header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: {SHAPE[0]} {SHAPE[1]} {SHAPE[2]}\n"
              "spacings: 50 50 50\nendian: little\nencoding: gzip\n\n")
    path.write_bytes(header.encode() + gzip.compress(grid.tobytes(order="F"), 1))
    return path


def _raws(cache):
    return sorted((cache / "decoded").glob("*.raw"))


def test_touch_and_copy_reuse_one_entry(tmp_path):
    cache = tmp_path / "cache"
    first = _big_nrrd(tmp_path / "projection_density_50.nrrd", 3)
    vol = read_nrrd(first, cache_dir=cache)
    assert vol.data[3, 4, 5] == 3 and len(_raws(cache)) == 1
    os.utime(first, ns=(1, 2))  # touched: another mtime
    copy = tmp_path / "elsewhere" / "copy.nrrd"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    for path in (first, copy):
        assert read_nrrd(path, cache_dir=cache).data[3, 4, 5] == 3
    assert len(_raws(cache)) == 1  # one decoded copy whatever the path/mtime


def test_damaged_entry_is_decoded_again(tmp_path):
    cache = tmp_path / "cache"
    path = _big_nrrd(tmp_path / "projection_density_50.nrrd", 7)
    read_nrrd(path, cache_dir=cache)
    (raw,) = _raws(cache)
    with open(raw, "r+b") as fh:  # flip bytes where the value lives (the mtime changes)
        fh.seek((7 + 4 * SHAPE[0] + 5 * SHAPE[0] * SHAPE[1]) * 4)
        fh.write(b"\xff\xff\xff\xff")
    assert read_nrrd(path, cache_dir=cache).data[7, 4, 5] == 7


@pytest.mark.parametrize("damage", ["truncate", "substitute", "same_size_same_mtime_swap"])
def test_truncated_or_substituted_entry_is_never_read(tmp_path, damage):
    """Decoded entries carry no hash: size, inode and mtime must still be the recorded ones,
    else the entry is decoded again from its (verified) source."""
    cache = tmp_path / "cache"
    path = _big_nrrd(tmp_path / "projection_density_50.nrrd", 11)
    read_nrrd(path, cache_dir=cache)
    (raw,) = _raws(cache)
    st = raw.stat()
    if damage == "truncate":
        with open(raw, "r+b") as fh:
            fh.truncate(N_BYTES // 2)
    else:  # another file of the same size put in its place (os.replace: a new inode)
        other = raw.with_name("other.tmp")
        other.write_bytes(b"\xff" * N_BYTES)
        if damage == "same_size_same_mtime_swap":
            os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, raw)
    vol = read_nrrd(path, cache_dir=cache)
    assert vol.data[11, 4, 5] == 11 and float(np.asarray(vol.data).max()) == 11
    assert raw.stat().st_size == N_BYTES


def test_cap_evicts_least_recently_used(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_ALLEN_CACHE_MAX", str(2 * N_BYTES + 100))
    paths = [_big_nrrd(tmp_path / f"projection_density_{i}_50.nrrd", i) for i in range(1, 4)]
    read_nrrd(paths[0], cache_dir=cache)
    read_nrrd(paths[1], cache_dir=cache)
    read_nrrd(paths[0], cache_dir=cache)  # paths[0] is now the most recently used
    read_nrrd(paths[2], cache_dir=cache)  # evicts paths[1]
    info = decoded_cache_info(cache)
    assert info["entries"] == 2 and info["bytes"] <= info["max_bytes"]
    before = {p.name for p in _raws(cache)}
    read_nrrd(paths[0], cache_dir=cache)  # still cached: no new entry
    assert {p.name for p in _raws(cache)} == before


def test_grid_larger_than_the_cap_is_not_cached(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_ALLEN_CACHE_MAX", "10MB")
    vol = read_nrrd(_big_nrrd(tmp_path / "projection_density_50.nrrd", 9), cache_dir=cache)
    assert vol.data[9, 4, 5] == 9
    assert _raws(cache) == [] and decoded_cache_info(cache)["bytes"] == 0


def test_refused_up_front_when_the_disk_is_too_small(tmp_path, monkeypatch):
    path = _big_nrrd(tmp_path / "projection_density_50.nrrd", 2)

    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(_decode.shutil, "disk_usage", lambda _p: Usage)
    monkeypatch.setenv("NAPARI_ALLEN_CACHE_MAX", "1GB")
    with pytest.raises(AllenFormatError, match="GB of disk") as err:
        read_nrrd(path, cache_dir=tmp_path / "cache")
    assert str(path) in str(err.value)
    assert _raws(tmp_path / "cache") == []


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5 GiB") == int(1.5 * 2**30)
    assert parse_size("123") == 123
    for bad in ("lots", "-1GB", "2XB", ""):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_bad_cap_setting_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_ALLEN_CACHE_MAX", "plenty")
    with pytest.raises(AllenFormatError, match="NAPARI_ALLEN_CACHE_MAX"):
        read_nrrd(_big_nrrd(tmp_path / "projection_density_50.nrrd", 1),
                  cache_dir=tmp_path / "cache")


def test_cache_info_and_prune_commands(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(cache))
    for i in (1, 2):
        read_nrrd(_big_nrrd(tmp_path / f"projection_density_{i}_50.nrrd", i))
    assert main(["cache-info", "--offline"]) == 0
    assert "decoded:      2 grids (77.0 MB" in capsys.readouterr().out
    assert main(["cache-prune", "--max", "50MB"]) == 0
    assert "removed 1 decoded grids (38.5 MB); 1 left" in capsys.readouterr().out
    assert main(["cache-prune", "--max", "0"]) == 0
    assert _raws(cache) == [] and prune_decoded_cache(cache, 0) == (0, 0)
    assert main(["cache-prune", "--max", "huge"]) == 2
