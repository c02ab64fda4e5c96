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

import os
import re
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback, check, report
from ._decode import cache_key, copy_capped, decoded_memmap
from .dataset import merge_metadata, parse_data_set_xml
from .metaimage import (
    MAX_HEADER_BYTES,
    MEMMAP_THRESHOLD,
    MetaImageHeader,
    parse_header,
    read_metaimage,
    size_problem,
)
from .provenance import read_provenance
from .volume import GridVolume, kind_from_name

#: Largest plausible deflate ratio (zlib's theoretical maximum is ~1032:1).
MAX_RATIO = 1100
#: Largest non-grid member (data_set.xml is ~100 kB) we agree to inflate.
MAX_XML_BYTES = 64 * 1024 * 1024

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: str, source) -> PurePosixPath:
    """The member's safe relative path; AllenFormatError for absolute or ``..`` paths."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise AllenFormatError(source, f"unsafe zip member path {name!r} (absolute)")
    parts = re.split(r"[\\/]+", name)
    if any(part == ".." for part in parts):
        raise AllenFormatError(source, f"unsafe zip member path {name!r} (contains '..')")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise AllenFormatError(path, f"not a valid zip (truncated or corrupt): {exc}") from exc
    except OSError as exc:
        raise AllenFormatError(path, f"cannot read: {exc.strerror or exc}") from exc


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source) -> bytes:
    """Inflate one member, at most ``limit`` bytes; errors name the zip and the member."""
    if info.file_size > limit:
        raise AllenFormatError(source, f"zip member {info.filename!r} expands to "
                                       f"{info.file_size:,} bytes, more than {limit:,} allowed")
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise AllenFormatError(source, f"truncated or corrupt zip member {info.filename!r}: "
                                       f"{exc}") from exc
    if len(data) > limit:
        raise AllenFormatError(source, f"zip member {info.filename!r} exceeds {limit:,} bytes")
    return data


def _member_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's data (after its local file header)."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise AllenFormatError(path, f"corrupt local header for member {info.filename!r}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


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
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[GridVolume]:
    """Every grid of a ``grid_data/download`` zip, in member-name order.

    Raises AllenFormatError naming the zip for unsafe names, bombs, truncated or corrupt
    members, headers that disagree with their data, or a zip without any ``.mhd`` grid.
    """
    path = Path(path)
    zip_size = path.stat().st_size if path.exists() else 0
    with _open_zip(path) as zf:
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
            xml_meta = parse_data_set_xml(_read_member(zf, xml_info, MAX_XML_BYTES, path),
                                          f"{path}!data_set.xml")
        meta = merge_metadata(xml_meta, path.name)
        # Headers first: the raw sizes they imply cap the whole expansion before inflating.
        plans: list[tuple[PurePosixPath, MetaImageHeader, zipfile.ZipInfo]] = []
        for info, rel in mhds:
            source = f"{path}!{rel}"
            header = parse_header(_read_member(zf, info, MAX_HEADER_BYTES, path), source)
            if header.data_file.upper() == "LOCAL":
                raise AllenFormatError(source, "ElementDataFile LOCAL is not supported in zips")
            raw_rel = check_member_name(str(rel.parent / header.data_file), path)
            raw_info = infos.get(raw_rel)
            if raw_info is None:
                raise AllenFormatError(source, f"data member {str(raw_rel)!r} missing from zip")
            if not header.compressed and raw_info.file_size != header.n_bytes:
                raise AllenFormatError(source, size_problem(header, raw_info.file_size))
            plans.append((rel, header, raw_info))
        provenance = read_provenance(path)
        volumes: list[GridVolume] = []
        for done, (rel, header, raw_info) in enumerate(plans):
            check(cancel)
            report(progress, done=done, total=len(plans), message=f"reading {rel.name}")
            source = f"{path}!{rel}"
            data = _member_array(path, zf, raw_info, header, source, progress, cancel)
            vmeta = dict(meta, element_type=header.element_type, format="grid_zip",
                         member=str(rel), **provenance)
            volumes.append(GridVolume(data=data, resolution=header.resolution,
                                      kind=kind_from_name(rel.name), metadata=vmeta,
                                      source=str(path)))
        report(progress, done=len(plans), total=len(plans), message="done")
    return volumes


def _member_array(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                  header: MetaImageHeader, source: str, progress, cancel) -> np.ndarray:
    n_bytes = header.n_bytes
    if header.compressed:
        # zlib-compressed MetaImage payload inside the zip: small by construction.
        from .metaimage import array_from_bytes

        payload = _read_member(zf, info, max(n_bytes, 1) * 2 + 1024, path)
        return array_from_bytes(payload, header, source)
    if n_bytes <= MEMMAP_THRESHOLD:
        payload = _read_member(zf, info, n_bytes, path)
        if len(payload) != n_bytes:
            raise AllenFormatError(source, size_problem(header, len(payload)))
        flat = np.frombuffer(payload, dtype=header.dtype)
        return flat.astype(header.dtype.newbyteorder("="), copy=True).reshape(
            header.dim_size, order="F")
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
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise AllenFormatError(source, f"truncated or corrupt zip member "
                                           f"{info.filename!r}: {exc}") from exc

    key = cache_key(path, "zip", info.filename, info.CRC)
    return decoded_memmap(key, fill, n_bytes, header.dtype, header.dim_size)


def is_grid_folder(path: str | os.PathLike) -> bool:
    """A folder holding an unzipped download: ``data_set.xml`` or ``.mhd`` grids."""
    path = Path(path)
    if not path.is_dir():
        return False
    return (path / "data_set.xml").is_file() or any(path.glob("*.mhd"))


def read_grid_folder(
    path: str | os.PathLike,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[GridVolume]:
    """Every ``.mhd`` grid in a folder (an unzipped download), with data_set.xml metadata."""
    path = Path(path)
    mhds = sorted(path.glob("*.mhd"))
    if not mhds:
        raise AllenFormatError(path, "folder holds no .mhd grid")
    xml_meta: dict = {}
    xml_path = path / "data_set.xml"
    if xml_path.is_file():
        if xml_path.stat().st_size > MAX_XML_BYTES:
            raise AllenFormatError(xml_path, "data_set.xml is implausibly large")
        xml_meta = parse_data_set_xml(xml_path.read_bytes(), xml_path)
    meta = merge_metadata(xml_meta, path.name)
    volumes = []
    for done, mhd in enumerate(mhds):
        check(cancel)
        report(progress, done=done, total=len(mhds), message=f"reading {mhd.name}")
        vol = read_metaimage(mhd, metadata=dict(meta, format="grid_folder"))
        volumes.append(vol)
    return volumes
