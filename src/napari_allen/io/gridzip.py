"""``grid_data/download`` zips (``data_set.xml`` + ``<vol>.mhd`` + ``<vol>.raw`` at the root) and
folders holding an unzipped download.

Members are read straight from the zip, never extracted to arbitrary paths:

- every member name is checked first: absolute paths, drive letters and ``..`` parts reject the
  whole zip (it was not written by Allen);
- each ``.raw`` must declare exactly the size its ``.mhd`` header implies, and the total
  declared expansion must be plausible for the zip's size (deflate cannot exceed ~1032:1), so a
  zip bomb is rejected before anything is inflated; reads are capped at the declared size;
- small grids are inflated into memory; large ones (25/10 µm) are memory-mapped in place when
  stored uncompressed, or inflated once, streamed, into the cache folder and memory-mapped;
- a truncated or corrupt member (CRC, deflate error) raises :class:`AllenFormatError`.

``data_set.xml`` (and the bundled gene table) give experiment id, gene and plane for layer
names and metadata (see :mod:`napari_allen.io.dataset`).
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback, check, report
from ._decode import _ZLIB_ERRORS, MAX_RATIO, _zlib, content_key, copy_capped, decoded_memmap
from .dataset import merge_metadata, parse_data_set_xml
from .elements import array_from_bytes
from .metaimage import (
    MAX_HEADER_BYTES,
    MEMMAP_THRESHOLD,
    MetaImageHeader,
    check_compressed_size,
    decode_stream,
    open_regular,
    parse_header,
    read_metaimage,
    size_problem,
)
from .provenance import read_provenance, warn_if_synthetic, zip_comment_is_synthetic
from .volume import GridVolume, kind_from_name

#: Largest data_set.xml we agree to parse (real ones are ~100 kB; a parsed element costs
#: ~200 B, so this bounds the parse at a few hundred MB whatever the content).
MAX_XML_BYTES = 4 * 1024 * 1024
#: A grid download holds a handful of members; more than this is not one.
MAX_MEMBERS = 10_000
#: What reading a damaged or unusual zip can raise (zipfile is not consistent about it).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
              RuntimeError, ValueError, struct.error, OverflowError)

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str, source) -> PurePosixPath:
    """The member's safe relative path; AllenFormatError for absolute or ``..`` paths."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise AllenFormatError(source, f"unsafe zip member path {name[:80]!r} (absolute: points "
                                       "outside the archive folder)")
    parts = re.split(r"[\\/]+", name)
    if any(part == ".." for part in parts):
        raise AllenFormatError(source, f"unsafe zip member path {name[:80]!r} (contains '..': "
                                       "points outside the archive folder)")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


@contextlib.contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """The zip at ``path`` (a regular file, never a FIFO or device); AllenFormatError if it is
    not a readable zip or holds implausibly many members."""
    with open_regular(path) as fh:
        try:
            zf = zipfile.ZipFile(fh)
        except ZIP_ERRORS as exc:
            raise AllenFormatError(path, f"not a valid zip (truncated or corrupt): {exc}") \
                from exc
        with zf:
            if len(zf.infolist()) > MAX_MEMBERS:
                raise AllenFormatError(path, f"zip holds {len(zf.infolist()):,} members; a "
                                             "grid download holds a few")
            yield zf


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source) -> bytes:
    """Inflate one member, at most ``limit`` bytes; errors name the zip and the member."""
    if info.file_size > limit:
        raise AllenFormatError(source, f"zip member {info.filename!r} expands to "
                                       f"{info.file_size:,} bytes, more than {limit:,} allowed")
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except ZIP_ERRORS as exc:
        raise AllenFormatError(source, f"truncated or corrupt zip member {info.filename!r}: "
                                       f"{exc}") from exc
    if len(data) > limit:
        raise AllenFormatError(source, f"zip member {info.filename!r} exceeds {limit:,} bytes")
    return data


#: Compressed bytes read, and inflated bytes produced, per step of :func:`bad_member`.
_CRC_CHUNK = 1 << 16


def bad_member(fh, infos: list[zipfile.ZipInfo]) -> str | None:
    """The name of the first member whose data do not inflate to their recorded size and
    CRC-32, or None: ``zipfile.ZipFile.testzip`` for stored and deflated members, inflated and
    checksummed by zlib-ng (about 1.6x zlib's inflate, 5x its CRC: the verification of every
    downloaded grid zip) in 64 KiB steps (memory stays flat with 16 downloads verifying at
    once). ``fh``: the zip, seekable. A damaged local header raises ``zipfile.BadZipFile``;
    encrypted members and other compression methods raise ``NotImplementedError`` (the caller
    falls back to ``testzip``).
    """
    for info in infos:
        if info.is_dir():
            continue
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED,
                                                             zipfile.ZIP_DEFLATED):
            raise NotImplementedError(f"{info.filename}: compression {info.compress_type}")
        offset = _data_offset(fh, info)
        if offset is None:
            raise zipfile.BadZipFile(f"bad local file header of {info.filename!r}")
        fh.seek(offset)
        try:
            if not _member_intact(fh, info):
                return info.filename
        except _ZLIB_ERRORS:
            return info.filename  # not a deflate stream
    return None


def _member_intact(fh, info: zipfile.ZipInfo) -> bool:
    """Do the member's data at ``fh``'s position inflate to its size and CRC-32?"""
    deflated = info.compress_type == zipfile.ZIP_DEFLATED
    inflate = _zlib.decompressobj(-15) if deflated else None
    crc = size = 0
    left = info.compress_size
    while left:
        chunk = fh.read(min(_CRC_CHUNK, left))
        if not chunk:
            return False  # the data end early
        left -= len(chunk)
        while chunk:
            if inflate is None:
                out, chunk = chunk, b""
            else:
                out = inflate.decompress(chunk, _CRC_CHUNK)
                chunk = inflate.unconsumed_tail
            crc, size = _zlib.crc32(out, crc), size + len(out)
            if size > info.file_size:
                return False  # inflates beyond its recorded size
    if inflate is not None:
        tail = inflate.flush()
        crc, size = _zlib.crc32(tail, crc), size + len(tail)
        if not inflate.eof:
            return False  # the deflate stream is cut
    return size == info.file_size and crc == info.CRC


def _data_offset(fh, info: zipfile.ZipInfo) -> int | None:
    """Byte offset of a member's data (after its local file header) in the zip ``fh``, or
    None when that header is damaged."""
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _member_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data (after its local file header)."""
    with open(path, "rb") as fh:
        offset = _data_offset(fh, info)
    if offset is None:
        raise AllenFormatError(path, f"corrupt local header for member {info.filename!r}")
    return offset


def _grid_members(zf: zipfile.ZipFile, source) -> tuple[list[tuple[zipfile.ZipInfo,
                                                                   PurePosixPath]], dict]:
    """Validate all member names; return the .mhd members and a name -> info map."""
    infos: dict[PurePosixPath, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        rel = check_member_name(info.filename, source)
        if info.flag_bits & 0x1:
            raise AllenFormatError(source, f"zip member {info.filename!r} is encrypted")
        if not info.is_dir():
            infos[rel] = info
    mhds = [(info, rel) for rel, info in infos.items() if rel.suffix.lower() == ".mhd"]
    mhds.sort(key=lambda item: str(item[1]))
    return mhds, infos


def looks_like_grid_zip(path: str | os.PathLike) -> bool:
    """Cheap sniff (central directory only): a zip holding ``.mhd`` grids."""
    path = Path(path)
    if path.suffix.lower() != ".zip" or not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.lower().endswith(".mhd") for n in names)


def read_grid_zip(
    path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    cache_decoded: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[GridVolume]:
    """Every grid of a ``grid_data/download`` zip, in member-name order.

    Raises AllenFormatError naming the zip for unsafe names, bombs, truncated or corrupt
    members, headers that disagree with their data, or a zip without any ``.mhd`` grid.
    ``cache_dir``: the cache folder for large deflated members (default: configured).
    ``cache_decoded``: memory-map members whatever their size (deflated ones decoded once
    into the decoded cache, stored ones mapped in place inside the zip).
    """
    path = Path(path)
    with _open_zip(path) as zf:
        zip_size = path.stat().st_size
        mhds, infos = _grid_members(zf, path)
        declared = sum(i.file_size for i in infos.values())
        if declared > max(zip_size, 1) * MAX_RATIO:
            raise AllenFormatError(path, f"zip claims to expand to {declared:,} bytes from "
                                         f"{zip_size:,} (zip bomb?)")
        if not mhds:
            raise AllenFormatError(path, "zip holds no .mhd grid (not a grid_data download)")
        xml_meta: dict = {}
        xml_info = next((i for r, i in infos.items() if r.name == "data_set.xml"), None)
        if xml_info is not None:
            xml_meta = parse_data_set_xml(read_member(zf, xml_info, MAX_XML_BYTES, path),
                                          f"{path}!data_set.xml")
        meta = merge_metadata(xml_meta, path.name)
        if zip_comment_is_synthetic(zf.comment):
            meta["synthetic"] = True
        # Headers first: the raw sizes they imply cap the whole expansion before inflating.
        plans: list[tuple[PurePosixPath, MetaImageHeader, zipfile.ZipInfo]] = []
        for info, rel in mhds:
            source = f"{path}!{rel}"
            header = parse_header(read_member(zf, info, MAX_HEADER_BYTES, path), source)
            if header.data_file.upper() == "LOCAL":
                raise AllenFormatError(source, "ElementDataFile LOCAL is not supported in zips")
            raw_rel = check_member_name(str(rel.parent / header.data_file), path)
            raw_info = infos.get(raw_rel)
            if raw_info is None:
                raise AllenFormatError(source, f"data member {str(raw_rel)!r} missing from zip")
            if header.compressed:
                check_compressed_size(header, raw_info.file_size, source)
            elif raw_info.file_size != header.n_bytes:
                raise AllenFormatError(source, size_problem(header, raw_info.file_size))
            plans.append((rel, header, raw_info))
        provenance = read_provenance(path)
        volumes: list[GridVolume] = []
        for done, (rel, header, raw_info) in enumerate(plans):
            check(cancel)
            report(progress, done=done, total=len(plans), message=f"reading {rel.name}")
            source = f"{path}!{rel}"
            data = _member_array(path, zf, raw_info, header, source, cache_dir, progress,
                                 cancel, cache_decoded=cache_decoded)
            vmeta = dict(meta, element_type=header.element_type, format="grid_zip",
                         member=str(rel), **provenance)
            if header.synthetic:
                vmeta["synthetic"] = True
            warn_if_synthetic(vmeta, source)
            volumes.append(GridVolume(data=data, resolution=header.resolution,
                                      kind=kind_from_name(rel.name), metadata=vmeta,
                                      source=str(path)))
        report(progress, done=len(plans), total=len(plans), message="done")
    return volumes


def _member_array(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                  header: MetaImageHeader, source: str, cache_dir, progress,
                  cancel, *, cache_decoded: bool = False) -> np.ndarray:
    n_bytes = header.n_bytes
    if header.compressed:
        # A zlib-compressed MetaImage payload inside the zip: streamed like any other.
        try:
            with zf.open(info) as fh:
                return decode_stream(
                    fh, header, source, key_parts=("zip", info.CRC),
                    key_source=(path, _member_data_offset(path, info), info.compress_size),
                    cache_dir=cache_dir, cache_decoded=cache_decoded, progress=progress,
                    cancel=cancel)
        except AllenFormatError:
            raise
        except ZIP_ERRORS as exc:
            raise AllenFormatError(source, f"truncated or corrupt zip member "
                                           f"{info.filename!r}: {exc}") from exc
    if n_bytes <= MEMMAP_THRESHOLD and not cache_decoded:
        payload = read_member(zf, info, n_bytes, path)
        if len(payload) != n_bytes:
            raise AllenFormatError(source, size_problem(header, len(payload)))
        return array_from_bytes(payload, header.dtype, header.dim_size)
    if info.compress_type == zipfile.ZIP_STORED:
        offset = _member_data_offset(path, info)
        if offset + n_bytes > path.stat().st_size:
            raise AllenFormatError(source, "truncated zip: stored member runs past the end")
        return np.memmap(path, dtype=header.dtype, mode="r", offset=offset,
                         shape=header.dim_size, order="F")

    def fill(write) -> None:
        try:
            with zf.open(info) as fh:
                copy_capped(fh, n_bytes, write, source, what=f"zip member {info.filename!r}",
                            progress=progress, cancel=cancel)
        except AllenFormatError:
            raise
        except ZIP_ERRORS as exc:
            raise AllenFormatError(source, f"truncated or corrupt zip member "
                                           f"{info.filename!r}: {exc}") from exc

    key = content_key(path, _member_data_offset(path, info), info.compress_size, "zip",
                      info.CRC, header.dtype.str, header.dim_size)
    return decoded_memmap(key, fill, n_bytes, header.dtype, header.dim_size, folder=cache_dir,
                          source=source, synthetic=bool(header.synthetic))


def is_grid_folder(path: str | os.PathLike) -> bool:
    """A folder holding an unzipped download: ``data_set.xml`` or ``.mhd`` grids."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / "data_set.xml").is_file() or any(path.glob("*.mhd"))


def read_grid_folder(
    path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[GridVolume]:
    """Every ``.mhd`` grid in a folder (an unzipped download), with data_set.xml metadata."""
    path = Path(path)
    mhds = sorted(p for p in path.glob("*.mhd") if not p.is_dir())
    if not mhds:
        raise AllenFormatError(path, "folder holds no .mhd grid")
    xml_meta: dict = {}
    xml_path = path / "data_set.xml"
    if xml_path.exists() or xml_path.is_symlink():
        with open_regular(xml_path) as fh:
            content = fh.read(MAX_XML_BYTES + 1)
        if len(content) > MAX_XML_BYTES:
            raise AllenFormatError(xml_path, "data_set.xml is implausibly large")
        xml_meta = parse_data_set_xml(content, xml_path)
    meta = merge_metadata(xml_meta, path.name)
    volumes = []
    for done, mhd in enumerate(mhds):
        check(cancel)
        report(progress, done=done, total=len(mhds), message=f"reading {mhd.name}")
        vol = read_metaimage(mhd, metadata=dict(meta, format="grid_folder"),
                             cache_dir=cache_dir, progress=progress, cancel=cancel)
        volumes.append(vol)
    return volumes
