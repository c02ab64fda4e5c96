"""Chunked decoding (``io/_decode``), shared by every reader of compressed payloads: any step
size gives the same arrays, no step holds more than one bounded chunk of inflated bytes, and a
damaged payload is reported naming its file whatever the step size."""

from __future__ import annotations

import bz2
import gzip
import io
import zipfile
import zlib

import numpy as np
import pytest

import napari_allen.io._decode as decode
from napari_allen.errors import AllenFormatError
from napari_allen.io.gridzip import read_grid_zip
from napari_allen.io.metaimage import read_metaimage
from napari_allen.io.nrrd import read_nrrd

SHAPE = (23, 17, 11)
#: (compressed bytes read, inflated bytes out) per step: odd tiny ones, small, the defaults.
STEPS = [(7, 13), (4096, 1024), (decode._IN_CHUNK, decode._OUT_CHUNK)]


@pytest.fixture(params=STEPS, ids=lambda s: f"in{s[0]}-out{s[1]}")
def steps(request, monkeypatch):
    monkeypatch.setattr(decode, "_IN_CHUNK", request.param[0])
    monkeypatch.setattr(decode, "_OUT_CHUNK", request.param[1])
    return request.param


def _grid() -> np.ndarray:
    """A sparse float32 grid, like a projection density (mostly zeros, some structure)."""
    rng = np.random.default_rng(7)
    grid = np.zeros(SHAPE, dtype="<f4")
    mask = rng.random(SHAPE) < 0.2
    grid[mask] = rng.random(int(mask.sum()), dtype=np.float32)
    return grid


def _nrrd(path, payload: bytes, encoding: str):
    header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: {SHAPE[0]} {SHAPE[1]} {SHAPE[2]}\n"
              "space directions: (100,0,0) (0,100,0) (0,0,100)\nkinds: domain domain domain\n"
              f"endian: little\nencoding: {encoding}\nspace origin: (0,0,0)\n\n")
    body = {"gzip": lambda b: gzip.compress(b, 6), "bzip2": bz2.compress,
            "raw": lambda b: b}[encoding](payload)
    path.write_bytes(header.encode() + body)
    return path


def _mhd(folder, payload: bytes):
    raw = zlib.compress(payload, 6)
    (folder / "energy.raw").write_bytes(raw)
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\n"
              f"BinaryDataByteOrderMSB = False\nCompressedData = True\n"
              f"CompressedDataSize = {len(raw)}\nElementSpacing = 200 200 200\n"
              f"DimSize = {SHAPE[0]} {SHAPE[1]} {SHAPE[2]}\nElementType = MET_FLOAT\n"
              "ElementDataFile = energy.raw\n")
    (folder / "energy.mhd").write_text(header)
    return folder / "energy.mhd"


@pytest.mark.parametrize("encoding", ["gzip", "bzip2"])
@pytest.mark.parametrize("cached", [False, True], ids=["memory", "decoded-cache"])
def test_nrrd_same_array_whatever_the_step(tmp_path, steps, encoding, cached):
    grid = _grid()
    path = _nrrd(tmp_path / f"projection_density_{encoding}.nrrd", grid.tobytes(order="F"),
                 encoding)
    raw = read_nrrd(_nrrd(tmp_path / "raw.nrrd", grid.tobytes(order="F"), "raw")).data
    vol = read_nrrd(path, cache_dir=tmp_path / "cache", cache_decoded=cached)
    assert isinstance(vol.data, np.memmap) == cached
    assert vol.data.dtype == np.float32 and vol.data.shape == SHAPE
    assert np.array_equal(np.asarray(vol.data), grid) and np.array_equal(raw, grid)


@pytest.mark.parametrize("cached", [False, True], ids=["memory", "decoded-cache"])
def test_grid_zip_and_metaimage_same_array_whatever_the_step(tmp_path, steps, cached):
    grid = _grid()
    payload = grid.tobytes(order="F")
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\n"
              f"BinaryDataByteOrderMSB = False\nElementSpacing = 200 200 200\n"
              f"DimSize = {SHAPE[0]} {SHAPE[1]} {SHAPE[2]}\nElementType = MET_FLOAT\n"
              "ElementDataFile = energy.raw\n")
    path = tmp_path / "grid.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("energy.mhd", header)
        zf.writestr("energy.raw", payload)
    (vol,) = read_grid_zip(path, cache_dir=tmp_path / "cache", cache_decoded=cached)
    assert np.array_equal(np.asarray(vol.data), grid)
    (tmp_path / "mhd").mkdir()
    mhd = read_metaimage(_mhd(tmp_path / "mhd", payload), cache_dir=tmp_path / "cache")
    assert np.array_equal(np.asarray(mhd.data), grid)


@pytest.mark.parametrize("codec", ["gzip", "zlib", "bzip2"])
def test_no_step_holds_more_than_one_chunk(steps, codec):
    """Even a payload inflating ~1000:1 (one compressed read worth megabytes) comes out in
    pieces of at most ``_OUT_CHUNK`` bytes, in order, exactly once."""
    payload = np.repeat(np.arange(7, dtype=np.uint8), 40_000).tobytes() + bytes(range(256))
    packed = {"gzip": gzip.compress, "zlib": zlib.compress, "bzip2": bz2.compress}[codec](
        payload)
    pieces: list[int] = []
    out = bytearray()

    def write(chunk: bytes) -> None:
        pieces.append(len(chunk))
        out.extend(chunk)

    decode.inflate(io.BytesIO(packed), len(payload), write, "test.nrrd",
                   wbits=decode.BZIP2 if codec == "bzip2" else decode.GZIP_OR_ZLIB)
    assert bytes(out) == payload
    assert max(pieces) <= steps[1]
    assert len(pieces) >= len(payload) // steps[1]


@pytest.mark.parametrize("encoding", ["gzip", "bzip2"])
def test_damaged_payload_named_whatever_the_step(tmp_path, steps, encoding):
    grid = _grid()
    whole = _nrrd(tmp_path / "whole.nrrd", grid.tobytes(order="F"), encoding).read_bytes()
    cut = tmp_path / f"cut_{encoding}.nrrd"
    cut.write_bytes(whole[: len(whole) - 40])
    with pytest.raises(AllenFormatError, match=f"truncated NRRD {encoding} data") as err:
        read_nrrd(cut, cache_dir=tmp_path / "cache", cache_decoded=True)
    assert str(cut) in str(err.value)
    header_end = whole.index(b"\n\n") + 2
    flipped = bytearray(whole)
    flipped[header_end + 40: header_end + 60] = bytes(20)  # inside the compressed stream
    corrupt = tmp_path / f"corrupt_{encoding}.nrrd"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(AllenFormatError, match=f"NRRD {encoding} data") as err:
        read_nrrd(corrupt)
    assert str(corrupt) in str(err.value)
    assert not list((tmp_path / "cache" / "decoded").glob("*.raw"))  # nothing partial kept


def test_bomb_stops_at_the_declared_size_whatever_the_step(tmp_path, steps):
    path = _nrrd(tmp_path / "bomb.nrrd", bytes(4 * 23 * 17 * 11 * 50), "gzip")
    with pytest.raises(AllenFormatError, match="inflates beyond") as err:
        read_nrrd(path, cache_dir=tmp_path / "cache", cache_decoded=True)
    assert str(path) in str(err.value)
