"""A deterministic corpus of malformed (and a few valid) inputs for every format the plugin
reads: MetaImage, bare raw, grid zips and folders, NRRD, lines JSON, plane stores, and file
system oddities (FIFOs, symlink loops, folders where files belong).

Each :class:`Case` builds its input under a given folder and says what must happen when it is
opened: ``"error"`` (an :class:`AllenFormatError` naming the file) or ``"data"`` (the values
its ``check`` expects). ``heavy`` cases are big on purpose (decompression bombs, 25/10 µm
grids); their peak memory is measured in a child process. Used by ``tests/test_fuzz_corpus.py``
and ``benchmarks/bench_trust.py``; ``python tests/fuzz_corpus.py OUT`` writes the corpus out.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import random
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHAPE = (4, 3, 2)
VALUES = (np.arange(24, dtype="<f4").reshape(SHAPE, order="F") - 1.0)  # holds a -1
ALLEN_SHAPE = (67, 41, 58)
SHAPE_25 = (528, 320, 456)
SHAPE_10 = (1320, 800, 1140)

#: Expected data of a case: ``check(volumes_or_document) -> bool``.
Check = Callable[[object], bool]


@dataclass
class Case:
    """One input: ``build(folder) -> path to open``; ``expect`` "error" or "data"."""

    name: str
    fmt: str  # grid, json, store
    build: Callable[[Path], Path]
    expect: str = "error"
    check: Check | None = None
    heavy: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


# --- helpers ------------------------------------------------------------------------------
def _raw(values: np.ndarray, dtype: str = "<f4") -> bytes:
    return np.asarray(values).astype(dtype).tobytes(order="F")


def _mhd_text(fields: dict[str, str | None]) -> str:
    base = {"ObjectType": "Image", "NDims": "3", "BinaryData": "True",
            "BinaryDataByteOrderMSB": "False", "CompressedData": "False",
            "ElementSpacing": "200 200 200", "DimSize": " ".join(map(str, SHAPE)),
            "ElementType": "MET_FLOAT", "ElementDataFile": "energy.raw"}
    for key, value in fields.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    data_file = base.pop("ElementDataFile", None)
    lines = [f"{k} = {v}" for k, v in base.items()]
    if data_file is not None:
        lines.append(f"ElementDataFile = {data_file}")
    return "\n".join(lines) + "\n"


def _pair(fields: dict | None = None, payload: bytes | None = None, stem: str = "energy",
          raw_name: str | None = "energy.raw") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        mhd = folder / f"{stem}.mhd"
        mhd.write_text(_mhd_text(fields or {}))
        if raw_name is not None:
            (folder / raw_name).write_bytes(_raw(VALUES) if payload is None else payload)
        return mhd
    return build


def _values_check(expected: np.ndarray) -> Check:
    def check(vols) -> bool:
        return (len(vols) == 1 and np.asarray(vols[0].data).shape == expected.shape
                and np.array_equal(np.asarray(vols[0].data), expected, equal_nan=True))
    return check


def _zeros_check(shape) -> Check:
    def check(vols) -> bool:
        from napari_allen.io.planes import plane_reader_for

        vol = vols[0]
        if tuple(vol.shape) != tuple(shape):
            return False
        # Three planes along different axes, sliced the way the layers slice memory maps
        # (PlaneReader releases the pages it touched): all zeros.
        data = plane_reader_for(vol.data) or vol.data

        def plane(index) -> bool:  # read in slabs of 16 ML planes, as the dask chunks do
            return not any(np.any(np.asarray(data[(*index, slice(k, k + 16))]))
                           for k in range(0, shape[2], 16))

        return (not np.any(np.asarray(data[:, :, shape[2] // 2]))
                and plane((shape[0] // 3, slice(None))) and plane((slice(None), -1)))
    return check


def _zeros_deflated(shape, gzip_format: bool = False) -> bytes:
    """float32 zeros of ``shape`` compressed as a stream (never the whole grid in memory)."""
    comp = zlib.compressobj(1, zlib.DEFLATED, 31 if gzip_format else 15)
    block = bytes(16 << 20)
    left = int(np.prod(shape)) * 4
    parts = []
    while left > 0:
        parts.append(comp.compress(block[:min(left, len(block))]))
        left -= len(block)
    parts.append(comp.flush())
    return b"".join(parts)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _nrrd_header(fields: dict[str, str | None], extra: str = "",
                 magic: str = "NRRD0004") -> str:
    base = {"type": "float", "dimension": "3", "sizes": " ".join(map(str, SHAPE)),
            "space directions": "(50,0,0) (0,50,0) (0,0,50)", "endian": "little",
            "encoding": "gzip"}
    for key, value in fields.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return magic + "\n" + "".join(f"{k}: {v}\n" for k, v in base.items()) + extra + "\n"


def _nrrd(fields: dict | None = None, payload: bytes | None = None, extra: str = "",
          magic: str = "NRRD0004", name: str = "projection_density_50.nrrd"
          ) -> Callable[[Path], Path]:
    fields = fields or {}

    def build(folder: Path) -> Path:
        enc = (fields.get("encoding") or "gzip").lower()
        body = payload
        if body is None:
            raw = _raw(VALUES)
            body = {"gzip": lambda: gzip.compress(raw, mtime=0), "gz": lambda: gzip.compress(
                raw, mtime=0), "bzip2": lambda: bz2.compress(raw),
                    "raw": lambda: raw}.get(enc, lambda: raw)()
        return _write(folder / name, _nrrd_header(fields, extra, magic).encode() + body)
    return build


def _zip(members: list[tuple[str, bytes]], name: str = "74272479_energy_200um.zip",
         comment: bytes = b"", compression=zipfile.ZIP_DEFLATED,
         patch: Callable[[bytes], bytes] | None = None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", compression) as zf:
            for member, data in members:
                zf.writestr(member, data)
            zf.comment = comment
        if patch is not None:
            path.write_bytes(patch(path.read_bytes()))
        return path
    return build


def _good_members(fields: dict | None = None) -> list[tuple[str, bytes]]:
    return [("energy.mhd", _mhd_text(fields or {}).encode()), ("energy.raw", _raw(VALUES))]


def _json(doc_text: str, name: str = "spatial_search_lines.json") -> Callable[[Path], Path]:
    return lambda folder: _write(folder / name, doc_text.encode("utf-8"))


def _line(**over) -> dict:
    rec = {"id": 156394513, "structure-id": 993, "structure-abbrev": "MOs", "density": 0.1,
           "path": [{"coord": [7400.0, 3300.0, 3300.0], "density": 0.1, "intensity": 850.0},
                    {"coord": [4300.0, 2690.0, 7050.0], "density": 0.0, "intensity": 0.0}]}
    rec.update(over)
    return rec


def _lines_doc(lines=None, injection=None, **top) -> str:
    doc = {"lines": [_line()] if lines is None else lines,
           "injectionCoordinates": [[4300.0, 2690.0, 7050.0]] if injection is None
           else injection}
    doc.update(top)
    return json.dumps(doc)


def _special(kind: str, name: str) -> Callable[[Path], Path]:
    """FIFO, folder, symlink loop or dangling symlink under an Allen name."""
    def build(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "loop":
            os.symlink(path.name, path)
        elif kind == "dangling":
            os.symlink(folder / "does-not-exist", path)
        return path
    return build


# --- generators ---------------------------------------------------------------------------
def metaimage_cases() -> list[Case]:
    cases: list[Case] = []
    for key in ("DimSize", "ElementType", "ElementDataFile"):
        cases.append(Case(f"mhd-missing-{key}", "grid", _pair({key: None})))
    bad_fields = {
        "DimSize": ["", "a b c", "4 3", "4 3 2 1", "0 3 2", "-4 3 2", "4.5 3 2", "1e3 3 2",
                    "99999999 99999999 99999999", "4 3 99999999999999999999", "4,3,2"],
        "NDims": ["x", "2", "-3", "3.0", "99999999999999999999", ""],
        "ElementType": ["MET_HALF", "", "met_float", "MET_FLOAT MET_FLOAT", "float"],
        "ElementSpacing": ["a b c", "0 0 0", "-1 1 1", "nan nan nan", "inf 1 1", "1 2",
                           "1e400 1e400 1e400", "200 100 200"],
        "HeaderSize": ["-5", "x", "999999999", "4.5", "-99999999999999999999"],
        "BinaryDataByteOrderMSB": ["maybe"],
        "CompressedData": ["perhaps"],
        "ElementNumberOfChannels": ["3", "x", "-1"],
        "ObjectType": ["Mesh"],
        "BinaryData": ["False"],
        "CompressedDataSize": ["x", "-1"],
    }
    for key, values in bad_fields.items():
        for i, value in enumerate(values):
            cases.append(Case(f"mhd-{key}-{i}", "grid", _pair({key: value})))
    for i, target in enumerate(["/etc/passwd", "../../../../etc/passwd", "..\\..\\x.raw",
                                "sub/../../energy.raw", "C:\\energy.raw", "LIST",
                                "energy_%03d.raw", "missing.raw", ""]):
        cases.append(Case(f"mhd-datafile-{i}", "grid", _pair({"ElementDataFile": target}),
                          tags=("path",)))

    def symlink_escape(folder: Path) -> Path:
        mhd = _pair(raw_name=None)(folder)
        os.symlink("/etc/passwd", folder / "energy.raw")
        return mhd

    def raw_is_folder(folder: Path) -> Path:
        mhd = _pair(raw_name=None)(folder)
        (folder / "energy.raw").mkdir()
        return mhd

    def raw_is_fifo(folder: Path) -> Path:
        mhd = _pair(raw_name=None)(folder)
        os.mkfifo(folder / "energy.raw")
        return mhd

    def raw_loop(folder: Path) -> Path:
        mhd = _pair(raw_name=None)(folder)
        os.symlink("energy.raw", folder / "energy.raw")
        return mhd

    cases += [Case("mhd-raw-symlink-escape", "grid", symlink_escape, tags=("path",)),
              Case("mhd-raw-is-folder", "grid", raw_is_folder),
              Case("mhd-raw-is-fifo", "grid", raw_is_fifo),
              Case("mhd-raw-symlink-loop", "grid", raw_loop)]
    for name, payload in [("truncated", _raw(VALUES)[:-4]), ("empty", b""),
                          ("longer", _raw(VALUES) + b"\0" * 4), ("double", _raw(VALUES) * 2)]:
        cases.append(Case(f"mhd-payload-{name}", "grid", _pair(payload=payload)))
    for name, text in [("binary", bytes(range(256)) * 4), ("nul", b"ObjectType = Image\0\n"),
                       ("no-equals", b"this is not a header\n"), ("empty", b""),
                       ("utf16", _mhd_text({}).encode("utf-16")),
                       ("no-newline-1MB", b"A" * (1 << 20)),
                       ("only-comments", b"# nothing\n# here\n")]:
        cases.append(Case(f"mhd-header-{name}", "grid",
                          lambda f, t=text: _write(f / "energy.mhd", t)))
    # Compressed payloads.
    comp = zlib.compress(_raw(VALUES))
    cases += [
        Case("mhd-compressed-not-zlib", "grid",
             _pair({"CompressedData": "True"}, payload=_raw(VALUES))),
        Case("mhd-compressed-truncated", "grid",
             _pair({"CompressedData": "True"}, payload=comp[:-6])),
        Case("mhd-compressed-size-mismatch", "grid",
             _pair({"CompressedData": "True", "CompressedDataSize": str(len(comp) + 5)},
                   payload=comp)),
        Case("mhd-compressed-too-long", "grid",
             _pair({"CompressedData": "True"}, payload=zlib.compress(_raw(VALUES) * 2))),
        Case("mhd-compressed-ok", "grid", _pair({"CompressedData": "True"}, payload=comp),
             expect="data", check=_values_check(VALUES)),
        Case("mhd-compressed-claims-10um", "grid",
             _pair({"CompressedData": "True", "DimSize": " ".join(map(str, SHAPE_10))},
                   payload=zlib.compress(bytes(1 << 20))), tags=("bomb",)),
    ]
    # Valid variants that must read correctly.
    big_endian = _raw(VALUES, ">f4")
    cases += [
        Case("mhd-ok", "grid", _pair(), expect="data", check=_values_check(VALUES)),
        Case("mhd-ok-big-endian", "grid", _pair({"BinaryDataByteOrderMSB": "True"},
                                                payload=big_endian),
             expect="data", check=_values_check(VALUES)),
        Case("mhd-ok-headersize", "grid", _pair({"HeaderSize": "10"},
                                                payload=b"x" * 10 + _raw(VALUES)),
             expect="data", check=_values_check(VALUES)),
        Case("mhd-ok-headersize-minus-1", "grid", _pair({"HeaderSize": "-1"},
                                                        payload=b"junk" + _raw(VALUES)),
             expect="data", check=_values_check(VALUES)),
        Case("mhd-ok-met-long", "grid", _pair({"ElementType": "MET_LONG"},
                                              payload=_raw(VALUES, "<i4")),
             expect="data", check=_values_check(VALUES.astype("i4"))),
        Case("mhd-ok-subfolder-datafile", "grid",
             lambda f: (_write(f / "data" / "energy.raw", _raw(VALUES)),
                        _pair({"ElementDataFile": "data/energy.raw"}, raw_name=None)(f))[1],
             expect="data", check=_values_check(VALUES)),
    ]

    def local(folder: Path, cut: int = 0) -> Path:
        text = _mhd_text({"ElementDataFile": "LOCAL"}).encode()
        payload = _raw(VALUES)
        return _write(folder / "energy.mha", text + payload[:len(payload) - cut])

    def hostile_manifest(folder: Path, text: str) -> Path:
        mhd = _pair()(folder)
        (folder / ".napari-allen-manifest.jsonl").write_text(text)
        return mhd

    cases += [
        Case("mhd-manifest-deep", "grid",
             lambda f: hostile_manifest(f, "[" * 100_000 + "]" * 100_000 + "\n"),
             expect="data", check=_values_check(VALUES)),
        Case("mhd-manifest-garbage", "grid",
             lambda f: hostile_manifest(f, '{"name": 5}\nnot json\n\x00\n'),
             expect="data", check=_values_check(VALUES)),
    ]
    cases += [Case("mha-local-ok", "grid", local, expect="data", check=_values_check(VALUES)),
              Case("mha-local-truncated", "grid", lambda f: local(f, 8))]
    for kind in ("fifo", "dir", "loop", "dangling"):
        cases.append(Case(f"mhd-is-{kind}", "grid", _special(kind, "energy.mhd"),
                          tags=("fs",)))
    # Heavy: a 25 µm compressed grid (really 308 MB) opens in bounded memory.
    def compressed_25(folder: Path) -> Path:
        return _pair({"CompressedData": "True", "DimSize": " ".join(map(str, SHAPE_25)),
                      "ElementSpacing": "25 25 25"}, payload=_zeros_deflated(SHAPE_25))(folder)

    cases.append(Case("mhd-compressed-25um-zeros", "grid", compressed_25, expect="data",
                      check=_zeros_check(SHAPE_25), heavy=True))
    return cases


def raw_cases() -> list[Case]:
    grid_bytes = int(np.prod(ALLEN_SHAPE)) * 4
    cases = []
    for size in (0, 1, 3, 1000, grid_bytes - 4, grid_bytes + 4, grid_bytes * 3):
        cases.append(Case(f"raw-size-{size}", "grid",
                          lambda f, s=size: _write(f / "energy.raw", b"\x7f" * s)))
    cases.append(Case("raw-annotation-odd", "grid",
                      lambda f: _write(f / "gridAnnotation.raw", b"\1" * 12345)))

    def sparse(folder: Path, name: str, size: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        with open(path, "wb") as fh:
            fh.truncate(size)
        return path

    energy = np.arange(int(np.prod(ALLEN_SHAPE)), dtype="<f4").reshape(ALLEN_SHAPE, order="F")
    cases += [
        Case("raw-ok-energy", "grid", lambda f: _write(f / "energy.raw", _raw(energy)),
             expect="data", check=_values_check(energy)),
        Case("raw-ok-uint16-annotation", "grid",
             lambda f: _write(f / "gridAnnotation.raw",
                              _raw(np.ones(ALLEN_SHAPE), "<u2")),
             expect="data", check=_values_check(np.ones(ALLEN_SHAPE, dtype="u2"))),
        Case("raw-1GB-not-a-grid", "grid", lambda f: sparse(f, "energy.raw", 1_000_000_007),
             heavy=True),
        Case("raw-10um-sparse", "grid", lambda f: sparse(f, "energy.raw",
                                                         int(np.prod(SHAPE_10)) * 4),
             expect="data", check=_zeros_check(SHAPE_10), heavy=True),
    ]
    for kind in ("fifo", "dir", "loop", "dangling"):
        cases.append(Case(f"raw-is-{kind}", "grid", _special(kind, "energy.raw"),
                          tags=("fs",)))
    return cases


def zip_cases(rng: random.Random) -> list[Case]:
    good = _zip(_good_members())
    cases = [Case("zip-ok", "grid", good, expect="data", check=_values_check(VALUES))]

    def cut(fraction: float):
        def build(folder: Path) -> Path:
            path = good(folder)
            blob = path.read_bytes()
            path.write_bytes(blob[:int(len(blob) * fraction)])
            return path
        return build

    for fraction in (0.0, 0.1, 0.5, 0.9, 0.99):
        cases.append(Case(f"zip-truncated-{fraction}", "grid", cut(fraction)))
    cases.append(Case("zip-garbage", "grid",
                      lambda f: _write(f / "74272479_energy_200um.zip",
                                       bytes(rng.getrandbits(8) for _ in range(4096)))))
    for i, name in enumerate(["../energy.mhd", "/etc/energy.mhd", "C:\\energy.mhd",
                              "a/../../energy.raw", "..\\..\\energy.mhd"]):
        cases.append(Case(f"zip-slip-{i}", "grid",
                          _zip(_good_members() + [(name, b"ObjectType = Image\n")]),
                          tags=("path",)))

    def flip(offset_from: str):
        def patch(blob: bytes) -> bytes:
            data = bytearray(blob)
            pos = blob.find(b"energy.raw") + len("energy.raw") + 8 if offset_from == "data" \
                else len(blob) // 2
            data[pos] ^= 0xFF
            return bytes(data)
        return patch

    def set_flag(blob: bytes) -> bytes:  # mark every member encrypted (general purpose bit 0)
        data = bytearray(blob)
        for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = 0
            while (pos := data.find(sig, start)) >= 0:
                data[pos + off] |= 1
                start = pos + 4
        return bytes(data)

    def set_method(blob: bytes) -> bytes:  # compression method 99 (AES) nobody supports here
        data = bytearray(blob)
        for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
            start = 0
            while (pos := data.find(sig, start)) >= 0:
                data[pos + off:pos + off + 2] = struct.pack("<H", 99)
                start = pos + 4
        return bytes(data)

    def lie_size(blob: bytes) -> bytes:  # central directory: raw member 10x smaller
        data = bytearray(blob)
        pos = data.find(b"PK\x01\x02")
        while pos >= 0:
            name_len = struct.unpack("<H", data[pos + 28:pos + 30])[0]
            if data[pos + 46:pos + 46 + name_len] == b"energy.raw":
                size = struct.unpack("<I", data[pos + 24:pos + 28])[0]
                data[pos + 24:pos + 28] = struct.pack("<I", size // 10)
            pos = data.find(b"PK\x01\x02", pos + 4)
        return bytes(data)

    cases += [
        Case("zip-crc-flip", "grid", _zip(_good_members(), patch=flip("data"))),
        Case("zip-middle-flip", "grid", _zip(_good_members(), patch=flip("middle"))),
        Case("zip-encrypted", "grid", _zip(_good_members(), patch=set_flag)),
        Case("zip-unknown-method", "grid", _zip(_good_members(), patch=set_method)),
        Case("zip-lying-size", "grid", _zip(_good_members(), patch=lie_size)),
        Case("zip-no-grid", "grid", _zip([("readme.txt", b"hello")])),
        Case("zip-empty", "grid", _zip([])),
        Case("zip-no-raw", "grid", _zip(_good_members()[:1])),
        Case("zip-raw-size-mismatch", "grid",
             _zip([_good_members()[0], ("energy.raw", b"\0" * 10)])),
        Case("zip-bad-header", "grid", _zip([("energy.mhd", b"DimSize = x\n"),
                                             ("energy.raw", b"")])),
        Case("zip-local-datafile", "grid",
             _zip([("energy.mhd", _mhd_text({"ElementDataFile": "LOCAL"}).encode())])),
        Case("zip-datafile-escape", "grid",
             _zip([("energy.mhd", _mhd_text({"ElementDataFile": "../x.raw"}).encode())]),
             tags=("path",)),
        Case("zip-raw-is-dir", "grid", _zip([_good_members()[0], ("energy.raw/", b"")])),
        Case("zip-xml-invalid", "grid",
             _zip(_good_members() + [("data_set.xml", b"<section-data-set><id>")])),
        Case("zip-xml-billion-laughs", "grid", _zip(_good_members() + [("data_set.xml", (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            + b"".join(b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;">'
                       % ((98 + i,) + (97 + i,) * 10) for i in range(8))
            + b"]><section-data-set><id>&i;</id></section-data-set>"))])),
        Case("zip-xml-deep", "grid", _zip(_good_members() + [
            ("data_set.xml", b"<a>" * 200_000 + b"</a>" * 200_000)])),
        Case("zip-xml-external-entity", "grid", _zip(_good_members() + [("data_set.xml", (
            b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<section-data-set><id>&x;</id></section-data-set>"))])),
        Case("zip-xml-too-large", "grid", _zip(_good_members() + [
            ("data_set.xml", b"<section-data-set>" + b"<a/>" * (2**20 + 10)
             + b"</section-data-set>")])),
        Case("zip-xml-not-a-dataset", "grid", _zip(_good_members() + [
            ("data_set.xml", b"<html><body>oops</body></html>")])),
        Case("zip-many-members", "grid", _zip(_good_members() + [
            (f"junk/{i}.txt", b"") for i in range(10_050)], compression=zipfile.ZIP_STORED)),
        Case("zip-ok-stored", "grid", _zip(_good_members(), compression=zipfile.ZIP_STORED),
             expect="data", check=_values_check(VALUES)),
        Case("zip-ok-compressed-mhd", "grid", _zip(
            [("energy.mhd", _mhd_text({"CompressedData": "True"}).encode()),
             ("energy.raw", zlib.compress(_raw(VALUES)))]),
             expect="data", check=_values_check(VALUES)),
        Case("zip-compressed-mhd-bomb", "grid", _zip(
            [("energy.mhd", _mhd_text({"CompressedData": "True",
                                       "DimSize": " ".join(map(str, SHAPE_10))}).encode()),
             ("energy.raw", zlib.compress(bytes(1 << 16)))]), tags=("bomb",)),
        Case("zip-declared-bomb", "grid", _zip(
            [("energy.mhd", _mhd_text({"DimSize": " ".join(map(str, SHAPE_10))}).encode()),
             ("energy.raw", b"")], patch=None), tags=("bomb",)),
    ]
    for kind in ("fifo", "dir", "loop", "dangling"):
        cases.append(Case(f"zip-is-{kind}", "grid",
                          _special(kind, "74272479_energy_200um.zip"), tags=("fs",)))
    # Heavy: a deflated 25 µm member (308 MB of zeros) opens in bounded memory.
    def zip_25(folder: Path) -> Path:
        path = folder / "74272479_energy_25um.zip"
        folder.mkdir(parents=True, exist_ok=True)
        header = _mhd_text({"DimSize": " ".join(map(str, SHAPE_25)),
                            "ElementSpacing": "25 25 25"}).encode()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr("energy.mhd", header)
            with zf.open("energy.raw", "w", force_zip64=True) as member:
                block = bytes(16 << 20)
                left = int(np.prod(SHAPE_25)) * 4
                while left > 0:
                    member.write(block[:min(left, len(block))])
                    left -= len(block)
        return path

    cases.append(Case("zip-25um-deflated", "grid", zip_25, expect="data",
                      check=_zeros_check(SHAPE_25), heavy=True))
    return cases


def folder_cases() -> list[Case]:
    def folder(xml: bytes | None, mhd_fields: dict | None = None, xml_kind: str = "file"):
        def build(base: Path) -> Path:
            path = base / "74272479_energy"
            _pair(mhd_fields)(path)
            if xml_kind == "fifo":
                os.mkfifo(path / "data_set.xml")
            elif xml_kind == "dir":
                (path / "data_set.xml").mkdir()
            elif xml is not None:
                (path / "data_set.xml").write_bytes(xml)
            return path
        return build

    return [
        Case("folder-ok", "grid", folder(b"<section-data-set><id>74272479</id>"
                                         b"</section-data-set>"),
             expect="data", check=_values_check(VALUES)),
        Case("folder-xml-broken", "grid", folder(b"<section-data-set>")),
        Case("folder-xml-fifo", "grid", folder(None, xml_kind="fifo"), tags=("fs",)),
        Case("folder-xml-dir", "grid", folder(None, xml_kind="dir"), tags=("fs",)),
        Case("folder-bad-mhd", "grid", folder(None, {"DimSize": "x y z"})),
        Case("folder-empty", "grid", lambda base: (base / "74272479_energy").mkdir(
            parents=True) or base / "74272479_energy"),
    ]


def nrrd_cases(rng: random.Random) -> list[Case]:
    cases = [Case("nrrd-ok-gzip", "grid", _nrrd(), expect="data", check=_values_check(VALUES)),
             Case("nrrd-ok-raw", "grid", _nrrd({"encoding": "raw"}), expect="data",
                  check=_values_check(VALUES)),
             Case("nrrd-ok-bzip2", "grid", _nrrd({"encoding": "bzip2"}), expect="data",
                  check=_values_check(VALUES)),
             Case("nrrd-ok-ascii", "grid", _nrrd({"encoding": "ascii"}, payload=" ".join(
                 str(v) for v in VALUES.ravel(order="F")).encode()),
                  expect="data", check=_values_check(VALUES)),
             Case("nrrd-ok-hex", "grid", _nrrd({"encoding": "hex"},
                                               payload=_raw(VALUES).hex().encode()),
                  expect="data", check=_values_check(VALUES)),
             Case("nrrd-ok-spacings", "grid",
                  _nrrd({"space directions": None, "spacings": "50 50 50"}),
                  expect="data", check=_values_check(VALUES))]
    bad = {
        "dimension": ["x", "2", "4", "-1", "", "99999999999999999999"],
        "sizes": ["a b c", "4 3", "0 3 2", "-4 3 2", "4 3 2 1", "99999999 99999999 9999999",
                  "4.5 3 2"],
        "type": ["quaternion", "block", "", "float32x"],
        "endian": [None, "sideways"],
        "encoding": ["zip", "", "lzma"],
        "space directions": ["(1,0) (0,1,0) (0,0,1)", "(a,b,c) (0,1,0) (0,0,1)",
                             "none (0,1,0) (0,0,1)", "(0,0,0) (0,1,0) (0,0,1)",
                             "(nan,0,0) (0,1,0) (0,0,1)", "(1,0,0)", "garbage"],
        "line skip": ["x", "-1", "9999"],
        "byte skip": ["x", "-2", "-1"],
    }
    for key, values in bad.items():
        for i, value in enumerate(values):
            cases.append(Case(f"nrrd-{key.replace(' ', '')}-{i}", "grid", _nrrd({key: value})))
    cases.append(Case("nrrd-spacings-bad", "grid",
                      _nrrd({"space directions": None, "spacings": "0 0 0"})))
    cases.append(Case("nrrd-no-spacing-not-allen", "grid", _nrrd({"space directions": None})))
    for i, magic in enumerate(["NRRD9999", "NRRX0004", "nrrd0004", ""]):
        cases.append(Case(f"nrrd-magic-{i}", "grid", _nrrd(magic=magic)))
    raw = _raw(VALUES)
    good_gz = gzip.compress(raw, mtime=0)
    cases += [
        Case("nrrd-gzip-truncated", "grid", _nrrd(payload=good_gz[:-10])),
        Case("nrrd-gzip-corrupt", "grid", _nrrd(payload=b"not gzip at all" * 4)),
        Case("nrrd-gzip-too-long", "grid", _nrrd(payload=gzip.compress(raw * 3, mtime=0))),
        Case("nrrd-gzip-empty", "grid", _nrrd(payload=b"")),
        Case("nrrd-bzip2-corrupt", "grid", _nrrd({"encoding": "bzip2"}, payload=b"BZh9xx")),
        Case("nrrd-raw-truncated", "grid", _nrrd({"encoding": "raw"}, payload=raw[:-4])),
        Case("nrrd-raw-long", "grid", _nrrd({"encoding": "raw"}, payload=raw + b"\0")),
        Case("nrrd-ascii-words", "grid", _nrrd({"encoding": "ascii"}, payload=b"a b c")),
        Case("nrrd-ascii-short", "grid", _nrrd({"encoding": "ascii"}, payload=b"1 2 3")),
        Case("nrrd-hex-odd", "grid", _nrrd({"encoding": "hex"}, payload=b"abc")),
        Case("nrrd-header-binary", "grid", lambda f: _write(
            f / "projection_density_50.nrrd",
            b"NRRD0004\n" + bytes(rng.getrandbits(8) for _ in range(2000)))),
        Case("nrrd-header-no-blank-line", "grid", lambda f: _write(
            f / "projection_density_50.nrrd", b"NRRD0004\n" + b"type: float\n" * 10000)),
        Case("nrrd-header-duplicate", "grid", _nrrd(extra="type: float\n")),
        Case("nrrd-header-nul", "grid", _nrrd(extra="content: a\0b\n")),
        Case("nrrd-header-not-field", "grid", _nrrd(extra="just words\n")),
        Case("nrrd-gzip-bomb-10um", "grid", _nrrd({"sizes": " ".join(map(str, SHAPE_10))},
                                                  payload=gzip.compress(bytes(1 << 20))),
             tags=("bomb",)),
    ]
    for i, target in enumerate(["/etc/passwd", "../../../etc/passwd", "sub/../../x.raw",
                                "missing.raw", "LIST", "a b c %d", ""]):
        cases.append(Case(f"nrrd-datafile-{i}", "grid",
                          _nrrd({"data file": target, "encoding": "raw"}, payload=b""),
                          tags=("path",)))

    def detached(folder: Path, link: str | None = None, payload: bytes | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if link:
            os.symlink(link, folder / "data.raw")
        else:
            (folder / "data.raw").write_bytes(raw if payload is None else payload)
        text = _nrrd_header({"data file": "data.raw", "encoding": "raw"})
        return _write(folder / "projection_density_50.nhdr", text.encode())

    cases += [
        Case("nhdr-ok", "grid", detached, expect="data", check=_values_check(VALUES)),
        Case("nhdr-symlink-escape", "grid", lambda f: detached(f, "/etc/passwd"),
             tags=("path",)),
        Case("nhdr-data-truncated", "grid", lambda f: detached(f, payload=raw[:5])),
    ]
    for kind in ("fifo", "dir", "loop", "dangling"):
        cases.append(Case(f"nrrd-is-{kind}", "grid",
                          _special(kind, "projection_density_100.nrrd"), tags=("fs",)))
    # Heavy: a real 25 µm gzip grid of zeros (308 MB inflated) opens in bounded memory.
    def nrrd_25(folder: Path) -> Path:
        return _nrrd({"sizes": " ".join(map(str, SHAPE_25)), "space directions": None,
                      "spacings": "25 25 25"},
                     payload=_zeros_deflated(SHAPE_25, gzip_format=True))(folder)

    cases.append(Case("nrrd-25um-gzip", "grid", nrrd_25, expect="data",
                      check=_zeros_check(SHAPE_25), heavy=True))
    return cases


def _doc_check(n_lines: int, first_id: int | None = 156394513) -> Check:
    def check(doc) -> bool:
        return len(doc.lines) == n_lines and (n_lines == 0 or doc.lines[0].get("id") == first_id)
    return check


def json_cases() -> list[Case]:
    good = _lines_doc()
    cases = [
        Case("json-ok", "json", _json(good), expect="data", check=_doc_check(1)),
        Case("json-ok-no-id", "json", _json(_lines_doc([_line(id=None)])), expect="data",
             check=_doc_check(1, None)),
        Case("json-ok-injection-only", "json",
             _json(json.dumps({"injectionCoordinates": [[1.0, 2.0, 3.0]]})),
             expect="data", check=_doc_check(0)),
        Case("json-ok-meta-not-object", "json", _json(_lines_doc(**{"napari-allen": 5})),
             expect="data", check=_doc_check(1)),
        Case("json-truncated", "json", _json(good[: len(good) // 2])),
        Case("json-empty", "json", _json("")),
        Case("json-garbage", "json", lambda f: _write(f / "lines.json",
                                                      b'{"lines": \xff\xfe\x00 oops')),
        Case("json-utf16", "json", lambda f: _write(f / "lines.json", good.encode("utf-16"))),
        Case("json-deep-array", "json", _json('{"lines": ' + "[" * 100_000 + "]" * 100_000
                                              + "}")),
        Case("json-deep-object", "json", _json('{"lines": [' + '{"a":' * 100_000 + "1"
                                               + "}" * 100_000 + "]}")),
        Case("json-top-list", "json", _json('[{"lines": []}]')),
        Case("json-top-string", "json", _json('"lines"')),
        Case("json-lines-object", "json", _json('{"lines": {"a": 1}}')),
        Case("json-lines-string", "json", _json('{"lines": "abc"}')),
        Case("json-huge-number", "json", _json(good.replace("7400.0", "1e400"))),
    ]
    for const in ("NaN", "Infinity", "-Infinity"):
        cases.append(Case(f"json-{const}", "json", _json(good.replace("7400.0", const))))
        cases.append(Case(f"json-{const}-injection", "json",
                          _json(good.replace("4300.0, 2690.0, 7050.0]]",
                                             f"4300.0, {const}, 7050.0]]"))))
    bad_lines = {
        "line-not-object": [5], "line-null": [None], "path-missing": [_line(path=None)],
        "path-empty": [_line(path=[])], "path-string": [_line(path="abc")],
        "point-not-object": [_line(path=[1, 2])],
        "coord-missing": [_line(path=[{"density": 1}])],
        "coord-short": [_line(path=[{"coord": [1, 2]}])],
        "coord-long": [_line(path=[{"coord": [1, 2, 3, 4]}])],
        "coord-strings": [_line(path=[{"coord": ["a", "b", "c"]}])],
        "coord-numeric-strings": [_line(path=[{"coord": ["1", "2", "3"]}])],
        "coord-bool": [_line(path=[{"coord": [True, False, True]}])],
        "coord-null": [_line(path=[{"coord": [None, 1, 2]}])],
        "coord-nested": [_line(path=[{"coord": [[1], [2], [3]]}])],
        "coord-object": [_line(path=[{"coord": {"x": 1}}])],
        "point-density-string": [_line(path=[{"coord": [1, 2, 3], "density": "high"}])],
        "point-intensity-list": [_line(path=[{"coord": [1, 2, 3], "intensity": [1]}])],
        "density-string": [_line(density="x")], "density-list": [_line(density=[1])],
        "id-string": [_line(id="abc")], "id-float": [_line(id=1.5)], "id-negative": [_line(id=-3)],
        "id-bool": [_line(id=True)], "id-huge": [_line(id=10**30)],
        "structure-id-string": [_line(**{"structure-id": "MOs"})],
        "abbrev-number": [_line(**{"structure-abbrev": 5})],
        "injection-structures-object": [_line(**{"injection-structures": {"a": 1},
                                                 "structure-abbrev": None})],
    }
    for name, lines in bad_lines.items():
        cases.append(Case(f"json-{name}", "json", _json(_lines_doc(lines))))
    for name, inj in {"string": "abc", "flat": [1, 2, 3], "ragged": [[1, 2, 3], [1, 2]],
                      "strings": [["a", "b", "c"]], "object": {"a": 1}, "bools": [[True] * 3],
                      "four": [[1, 2, 3, 4]], "nested": [[[1, 2, 3]]]}.items():
        cases.append(Case(f"json-injection-{name}", "json", _json(_lines_doc(injection=inj))))
    for kind in ("fifo", "dir", "loop", "dangling"):
        cases.append(Case(f"json-is-{kind}", "json", _special(kind, "lines.json"),
                          tags=("fs",)))

    def big_coordinates(folder: Path, n: int) -> Path:
        row = "[4300.125,2690.125,7050.125],"
        text = '{"lines": [], "injectionCoordinates": [' + row * (n - 1) + row[:-1] + "]}"
        return _write(folder / "lines.json", text.encode())

    from napari_allen.io.lines_json import MAX_JSON_BYTES

    limit_rows = (MAX_JSON_BYTES - 64) // 29  # just under the size limit
    cases += [
        Case("json-too-large", "json", lambda f: big_coordinates(f, limit_rows + 1000)),
        Case("json-at-size-limit", "json", lambda f: big_coordinates(f, limit_rows),
             expect="data", heavy=True,
             check=lambda doc: doc.injection_coordinates.shape == (limit_rows, 3)),
    ]
    return cases


def store_cases() -> list[Case]:
    import pandas as pd

    def store(edit: Callable[[Path], None] | None = None, ok: bool = False):
        def build(folder: Path) -> Path:
            from napari_allen.io.plane_store import PlaneStore

            path = folder / "coronal.zarr"
            table = pd.DataFrame({"experiment_id": [1, 2], "gene": ["A", "B"]})
            st = PlaneStore.create(path, table, plane="coronal")
            st.write(1, np.full(ALLEN_SHAPE, 0.5, dtype=np.float32))
            if edit is not None:
                edit(path)
            return path
        return build

    def rewrite_attrs(**changes):
        def edit(path: Path) -> None:
            meta = json.loads((path / "zarr.json").read_text())
            attrs = meta["attributes"]["napari_allen_plane_store"]
            for k, v in changes.items():
                if v is None:
                    attrs.pop(k, None)
                else:
                    attrs[k] = v
            (path / "zarr.json").write_text(json.dumps(meta))
        return edit

    def write(name: str, data: bytes):
        return lambda path: (path / name).write_bytes(data)

    def chunk_garbage(path: Path) -> None:
        for chunk in (path / "energy").rglob("*"):
            if chunk.is_file() and chunk.name != "zarr.json":
                chunk.write_bytes(b"garbage" * 10)

    def store_check(st) -> bool:
        return st[0][0].shape[0] == 2 and float(np.nanmax(np.asarray(st[0][0][0]))) == 0.5

    return [
        Case("store-ok", "store", store(), expect="data", check=store_check),
        Case("store-zarr-json-garbage", "store", store(write(
            "zarr.json", b'{"napari_allen_plane_store" oops'))),
        Case("store-zarr-json-list", "store", store(write(
            "zarr.json", b'["napari_allen_plane_store"]'))),
        Case("store-volume-missing", "store", store(rewrite_attrs(volume=None))),
        Case("store-volume-bad", "store", store(rewrite_attrs(volume="../../etc"))),
        Case("store-resolution-string", "store", store(rewrite_attrs(resolution_um="x"))),
        Case("store-resolution-negative", "store", store(rewrite_attrs(resolution_um=-5))),
        Case("store-version-future", "store", store(rewrite_attrs(format_version=99))),
        Case("store-attrs-not-object", "store", store(lambda p: rewrite_attrs()(p) or (
            p / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                    "attributes": {
                                                        "napari_allen_plane_store": 5}})))),
        Case("store-table-missing", "store", store(lambda p: (p / "experiments.csv").unlink())),
        Case("store-table-empty", "store", store(write("experiments.csv", b""))),
        Case("store-table-binary", "store", store(write("experiments.csv",
                                                        bytes(range(256)) * 8))),
        Case("store-table-no-ids", "store", store(write("experiments.csv", b"gene\nA\nB\n"))),
        Case("store-table-bad-ids", "store", store(write("experiments.csv",
                                                         b"experiment_id\nx\n2\n"))),
        Case("store-table-duplicate-ids", "store", store(write("experiments.csv",
                                                               b"experiment_id\n1\n1\n"))),
        Case("store-table-rows-mismatch", "store", store(write("experiments.csv",
                                                               b"experiment_id\n1\n2\n3\n"))),
        Case("store-array-missing", "store", store(
            lambda p: [x.unlink() for x in sorted((p / "energy").rglob("*"), reverse=True)
                       if x.is_file()] and None)),
        Case("store-array-meta-garbage", "store", store(write("energy/zarr.json", b"{oops"))),
        Case("store-chunk-garbage", "store", store(chunk_garbage)),
        Case("store-completed-binary", "store", store(write("completed.txt", b"\xff\xfe1\n")),
             expect="data", check=store_check),
    ]


def peak_rss() -> int:
    """Peak resident memory of this process (bytes): ``VmHWM``, which starts afresh at exec
    (``ru_maxrss`` would include the parent's peak from before the fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- running a case -----------------------------------------------------------------------
def open_case(case: Case, path: Path, cache_dir: Path):
    """Open ``path`` the way the plugin does for the case's format and touch the data (a few
    planes, never a whole large grid). Returns what ``case.check`` inspects."""
    if case.fmt == "json":
        from napari_allen.io.lines_json import read_lines_json
        from napari_allen.layers.lines import read_lines_json_layers

        doc = read_lines_json(path)
        read_lines_json_layers(path)
        return doc
    if case.fmt == "store":
        from napari_allen.layers.expression import plane_store_layers

        layers = plane_store_layers(path)
        np.asarray(layers[0][0][0])
        return layers
    from napari_allen.io import read_volumes

    vols = read_volumes(path, cache_dir=cache_dir)
    for vol in vols:
        np.asarray(vol.data[:, :, 0])
    return vols


def run_case(case: Case, folder: Path) -> tuple[str, str]:
    """Build and open a case: ``("error", message)`` for an AllenFormatError naming the input,
    ``("data", "")`` for correct data, ``("wrong", why)`` for anything else (another exception,
    an error not naming the file, data that differ from the expected)."""
    return run_case_at(case, case.build(folder / "in"), folder)


def run_case_at(case: Case, path: Path, folder: Path) -> tuple[str, str]:
    """:func:`run_case` for an input already built at ``path`` (cache under ``folder``)."""
    from napari_allen.errors import AllenFormatError

    try:
        result = open_case(case, path, folder / "cache")
    except AllenFormatError as exc:
        text = str(exc)
        if path.name not in text and str(path) not in text:
            return "wrong", f"error does not name {path.name}: {text}"
        return "error", text
    except Exception as exc:  # noqa: BLE001 - classifying is the point
        return "wrong", f"{type(exc).__name__}: {str(exc)[:300]}"
    if case.check is not None and not case.check(result):
        return "wrong", "opened, but the data differ from what was written"
    return "data", ""


def cases(seed: int = 0) -> list[Case]:
    """The whole corpus, deterministic for ``seed``."""
    rng = random.Random(seed)
    out = (metaimage_cases() + raw_cases() + zip_cases(rng) + folder_cases()
           + nrrd_cases(rng) + json_cases() + store_cases())
    names = [c.name for c in out]
    assert len(names) == len(set(names)), "case names must be unique"
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
    for case in cases():
        if not case.heavy:
            case.build(target / case.name)
    print(f"wrote {sum(not c.heavy for c in cases())} cases to {target}")
