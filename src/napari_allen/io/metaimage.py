"""Allen MetaImage grids: the ``.mhd`` text header and its ``.raw`` payload (the one MetaImage
parser of the project: readers, grid zips and the download verifier use it).

The header drives everything (``DimSize``, ``ElementSpacing``, ``ElementType``,
``BinaryDataByteOrderMSB``, ``ElementDataFile``, ``HeaderSize``, ``CompressedData``); sizes are
never hard-coded, and every field is validated (types, ranges, counts). The payload is x-fastest
(AP fastest), so it is reshaped to ``DimSize`` in Fortran order, giving ``[AP, DV, ML]`` without
a transpose. ``AnatomicalOrientation = RAI`` in Allen headers contradicts the real PIR layout
and is ignored (docs/allen-api-notes.md §6.4).

``ElementDataFile`` must resolve inside the header's folder: absolute paths, ``..`` and symlinks
leading out of it are refused (a header must not be able to read ``/etc/passwd``).

Payloads larger than :data:`MEMMAP_THRESHOLD` are memory-mapped (a 10 µm grid is 4.8 GB) so
opening costs no reading; smaller ones are read into memory so no file handle stays open.
Compressed payloads (``CompressedData = True``) are inflated as a stream: into memory when
small, into the decoded cache (:mod:`napari_allen.io._decode`) when large; never a whole-file
read, and a header claiming more than the compressed bytes can hold is refused up front.

Reader collision: napari's builtins (and other plugins) also claim ``*.mhd``/``*.raw``; open
with ``viewer.open(path, plugin="napari-allen")`` to choose this reader.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from ..errors import AllenFormatError
from ..space import describe_size_match, resolution_for_shape
from ._decode import (
    GZIP_OR_ZLIB,
    MAX_RATIO,
    content_key,
    decoded_memmap,
    inflate,
    inflate_to_array,
)
from .elements import MET_TYPES, array_from_bytes, met_dtype, met_name
from .provenance import (
    MHD_SYNTHETIC_LINE,
    mhd_fields_are_synthetic,
    read_provenance,
    warn_if_synthetic,
)
from .volume import GridVolume, kind_from_name

#: Payloads above this many bytes are memory-mapped instead of read.
MEMMAP_THRESHOLD = 32 * 1024 * 1024
#: A real ``.mhd`` header is ~300 B; anything this large is not a detached header.
MAX_HEADER_BYTES = 64 * 1024
#: Largest size along one axis (a 10 µm grid is 1320 voxels; keep generous headroom).
MAX_AXIS = 1 << 20

#: Kept for callers of the old name; the table lives in :mod:`.elements`.
ELEMENT_TYPES = MET_TYPES


@dataclass
class MetaImageHeader:
    """A parsed, validated 3-D MetaImage header. ``dim_size`` is ``(x, y, z)`` = (AP, DV, ML)."""

    dim_size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    element_type: str
    msb: bool
    data_file: str
    header_size: int = 0
    compressed: bool = False
    compressed_size: int | None = None
    fields: dict[str, str] = field(default_factory=dict)
    #: Bytes of text up to and including the ElementDataFile line (where LOCAL data start).
    header_length: int = 0

    @property
    def dtype(self) -> np.dtype:
        return met_dtype(self.element_type, self.msb)

    @property
    def n_voxels(self) -> int:
        return math.prod(self.dim_size)

    @property
    def n_bytes(self) -> int:
        """Uncompressed payload size in bytes."""
        return self.n_voxels * self.dtype.itemsize

    @property
    def resolution(self) -> float:
        return float(self.spacing[0])

    @property
    def synthetic(self) -> bool:
        """Does the header carry the local server's synthetic mark (see io.provenance)?"""
        return mhd_fields_are_synthetic(self.fields)

    def describe(self) -> str:
        return f"DimSize {' '.join(map(str, self.dim_size))} {self.element_type}"


def _as_bool(value: str, key: str, source) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise AllenFormatError(source, f"{key} = {value[:40]!r} is not True or False")


def int_field(fields: dict, key: str, source, default: int | None = None, *, low: int = 0,
              fmt: str = "{key} = {value}", header: str = "MetaImage") -> int:
    """The integer header field ``key`` (>= ``low``), or ``default`` when absent; an
    AllenFormatError naming ``source`` otherwise. ``fmt`` spells a field in messages (NRRD
    passes ``"'{key}: {value}'"``)."""
    text = fields.get(key)
    if text is None:
        if default is None:
            raise AllenFormatError(source, f"{header} header lacks {key!r}")
        return default
    try:
        value = int(text)
    except ValueError:
        raise AllenFormatError(source, fmt.format(key=key, value=repr(text[:40]))
                               + " is not an integer") from None
    if value < low:
        raise AllenFormatError(source, fmt.format(key=key, value=value) + f" must be >= {low}")
    return value


def parse_header(text: str | bytes, source: str | os.PathLike) -> MetaImageHeader:
    """Parse and validate an Allen ``.mhd`` header; AllenFormatError naming ``source`` if bad."""
    header_length = len(text)
    if isinstance(text, bytes):
        # ElementDataFile ends the header; with LOCAL the binary payload follows that line.
        key = text.find(b"ElementDataFile")
        if key >= 0:
            eol = text.find(b"\n", key)
            header_length = len(text) if eol < 0 else eol + 1
            text = text[:header_length]
        if len(text) > MAX_HEADER_BYTES:
            raise AllenFormatError(source, "not a MetaImage header (file too large)")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise AllenFormatError(source, "not a MetaImage header (binary content)") from None
        if "\x00" in text:
            raise AllenFormatError(source, "not a MetaImage header (binary content)")
    fields: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "=" not in line:
            raise AllenFormatError(source, f"line {lineno} is not 'Key = Value': {line[:60]!r}")
        key, value = line.split("=", 1)
        fields[key.strip()] = value.strip()
    if not fields:
        raise AllenFormatError(source, "empty MetaImage header")

    def need(key: str) -> str:
        if key not in fields:
            raise AllenFormatError(source, f"MetaImage header lacks {key}")
        return fields[key]

    if fields.get("ObjectType", "Image") != "Image":
        raise AllenFormatError(source, f"ObjectType {fields['ObjectType'][:40]!r} is not Image")
    dim_text = need("DimSize")
    try:
        dims = tuple(int(v) for v in dim_text.split())
    except ValueError:
        raise AllenFormatError(source, f"DimSize {dim_text[:60]!r} is not integers") from None
    ndims = int_field(fields, "NDims", source, default=len(dims))
    if ndims != 3 or len(dims) != 3:
        raise AllenFormatError(source, f"expected a 3-D grid, got NDims {ndims} DimSize {dims}")
    if min(dims) <= 0:
        raise AllenFormatError(source, f"DimSize {dims} has a non-positive size")
    if max(dims) > MAX_AXIS:
        raise AllenFormatError(source, f"DimSize {dims} exceeds {MAX_AXIS:,} voxels per axis")
    if int_field(fields, "ElementNumberOfChannels", source, default=1) != 1:
        raise AllenFormatError(source, "multi-channel MetaImage is not an Allen grid")
    etype = need("ElementType")
    if etype not in MET_TYPES:
        raise AllenFormatError(
            source, f"unknown ElementType {etype[:40]!r} (known: {', '.join(MET_TYPES)})"
        )
    spacing_text = fields.get("ElementSpacing") or fields.get("ElementSize")
    if spacing_text:
        try:
            spacing = tuple(float(v) for v in spacing_text.split())
        except ValueError:
            raise AllenFormatError(source, f"ElementSpacing {spacing_text[:60]!r} is not "
                                           "numbers") from None
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise AllenFormatError(source, f"ElementSpacing {spacing_text[:60]!r} is not 3 "
                                           "positive numbers")
    else:
        # No spacing: only acceptable when the shape is one of Allen's grids.
        res = resolution_for_shape(dims)
        if res is None:
            raise AllenFormatError(source, "no ElementSpacing and DimSize is not an Allen grid")
        spacing = (float(res),) * 3
    if not np.allclose(spacing, spacing[0]):
        raise AllenFormatError(source, f"anisotropic ElementSpacing {spacing} is not supported")
    msb_key = "BinaryDataByteOrderMSB" if "BinaryDataByteOrderMSB" in fields \
        else "ElementByteOrderMSB"
    msb = _as_bool(fields.get(msb_key, "False"), msb_key, source)
    if not _as_bool(fields.get("BinaryData", "True"), "BinaryData", source):
        raise AllenFormatError(source, "BinaryData = False (text payloads) is not supported")
    data_file = need("ElementDataFile")
    if not data_file:
        raise AllenFormatError(source, "ElementDataFile is empty")
    if data_file.upper().startswith("LIST") or "%" in data_file:
        raise AllenFormatError(source, f"ElementDataFile {data_file[:60]!r} (file lists) "
                                       "unsupported")
    compressed = _as_bool(fields.get("CompressedData", "False"), "CompressedData", source)
    csize = fields.get("CompressedDataSize")
    return MetaImageHeader(
        dim_size=dims,  # type: ignore[arg-type]
        spacing=spacing,  # type: ignore[arg-type]
        element_type=etype,
        msb=msb,
        data_file=data_file,
        header_size=int_field(fields, "HeaderSize", source, default=0, low=-1),
        compressed=compressed,
        compressed_size=int_field(fields, "CompressedDataSize", source, low=0) if csize else None,
        fields=fields,
        header_length=header_length,
    )


def open_regular(path: str | os.PathLike, what: str = "") -> BinaryIO:
    """``open(path, 'rb')`` for a regular file; AllenFormatError naming ``path`` for a missing
    file, a folder, a FIFO/device (reading would block or never end), a symlink loop or a
    permission problem."""
    path = Path(path)
    label = f"{what} " if what else ""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AllenFormatError(path, f"{label}file not found") from None
    except OSError as exc:
        raise AllenFormatError(path, f"cannot read {label}file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AllenFormatError(path, f"{label}is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise AllenFormatError(path, f"{label}is not a regular file (FIFO, socket or device)")
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as exc:
        raise AllenFormatError(path, f"cannot read {label}file: {exc.strerror or exc}") from None


def contained_data_file(header_path: str | os.PathLike, name: str, what: str) -> Path:
    """The data file ``name`` of the header at ``header_path``, which must resolve inside the
    header's folder: no absolute path, no ``..``, no symlink leading out of the folder."""
    header_path = Path(header_path)
    unified = name.replace("\\", "/")
    pure = PurePosixPath(unified)
    if pure.is_absolute() or (len(unified) > 1 and unified[1] == ":"):
        raise AllenFormatError(header_path, f"{what} {name[:80]!r} is an absolute path; it must "
                                            "name a file next to the header")
    if ".." in pure.parts:
        raise AllenFormatError(header_path, f"{what} {name[:80]!r} leaves the header's folder "
                                            "('..')")
    folder = header_path.parent
    candidate = folder.joinpath(*pure.parts)
    try:
        real_folder = folder.resolve(strict=True)
        real = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop (Python < 3.13)
        raise AllenFormatError(header_path, f"{what} {name[:80]!r} cannot be resolved: "
                                            f"{exc}") from None
    if not real.is_relative_to(real_folder):
        raise AllenFormatError(header_path, f"{what} {name[:80]!r} is a symlink leading out of "
                                            "the header's folder")
    return candidate


def size_problem(header: MetaImageHeader, found: int) -> str:
    """Explain a payload size mismatch, naming the grid it does match when there is one."""
    expected = header.n_bytes + max(header.header_size, 0)
    what = "truncated" if found < expected else "larger than its header says"
    text = (f"data {what}: {header.describe()} needs {expected:,} bytes, found {found:,}"
            " (DimSize/ElementType disagree with the data)")
    hint = describe_size_match(found)
    return f"{text}; {hint}" if hint else text


def check_compressed_size(header: MetaImageHeader, compressed: int, source) -> None:
    """Refuse up front a compressed payload that cannot hold what the header declares."""
    if compressed <= 0:
        raise AllenFormatError(source, "compressed data is empty")
    if header.n_bytes > compressed * MAX_RATIO + 1024:
        raise AllenFormatError(source, f"{compressed:,} bytes of compressed data cannot inflate "
                                       f"to the {header.n_bytes:,} bytes {header.describe()} "
                                       "declares (corrupt header or decompression bomb)")


def decode_stream(fh: BinaryIO, header: MetaImageHeader, source, *, key_parts: tuple,
                  key_source: tuple | None = None, cache_dir=None, cache_decoded=False,
                  progress=None, cancel=None):
    """Inflate a compressed MetaImage payload read from ``fh`` (positioned at its start):
    into memory when small, into the decoded cache when large or ``cache_decoded``
    (``key_source`` = ``(path, offset, length)`` of the compressed bytes, hashed for the
    cache key)."""
    what = "compressed MetaImage data"
    threshold = 0 if cache_decoded else MEMMAP_THRESHOLD
    if header.n_bytes <= threshold or key_source is None:
        if header.n_bytes > MEMMAP_THRESHOLD:
            raise AllenFormatError(source, "compressed payload too large to inflate in memory")
        return inflate_to_array(fh, header.n_bytes, header.dtype, header.dim_size, source,
                                wbits=GZIP_OR_ZLIB, what=what, progress=progress,
                                cancel=cancel)
    start = fh.tell()

    def fill(write) -> None:
        fh.seek(start)
        inflate(fh, header.n_bytes, write, source, what=what, progress=progress, cancel=cancel)

    key = content_key(*key_source, "mhd", header.dtype.str, header.dim_size, *key_parts)
    return decoded_memmap(key, fill, header.n_bytes, header.dtype, header.dim_size,
                          folder=cache_dir, source=source, synthetic=header.synthetic)


def open_data_file(data_path: Path, source) -> BinaryIO:
    """:func:`open_regular` for the data file of the header ``source``: errors name both."""
    try:
        return open_regular(data_path)
    except AllenFormatError as exc:
        if str(data_path) == str(source):
            raise
        raise AllenFormatError(source, f"data file {data_path.name!r}: {exc.problem}") \
            from None


def read_payload(raw_path: Path, header: MetaImageHeader, source, *, cache_dir=None,
                 progress=None, cancel=None):
    """Read or memory-map ``raw_path`` as described by ``header`` (size checked first)."""
    with open_data_file(raw_path, source) as fh:
        size = os.fstat(fh.fileno()).st_size
        if header.compressed:
            offset = max(header.header_size, 0)
            compressed = size - offset
            if header.compressed_size is not None and header.compressed_size != compressed:
                raise AllenFormatError(source, f"CompressedDataSize {header.compressed_size:,}"
                                               f" but the data file holds {compressed:,} bytes")
            check_compressed_size(header, compressed, source)
            fh.seek(offset)
            return decode_stream(fh, header, source, key_parts=(),
                                 key_source=(raw_path, offset, compressed),
                                 cache_dir=cache_dir, progress=progress, cancel=cancel)
        if header.header_size == -1:
            offset = size - header.n_bytes
            if offset < 0:
                raise AllenFormatError(source, size_problem(header, size))
        else:
            offset = header.header_size
            if size != offset + header.n_bytes:
                raise AllenFormatError(source, size_problem(header, size))
        if header.n_bytes > MEMMAP_THRESHOLD:
            # Lazy: pages are read only when napari slices them.
            return np.memmap(raw_path, dtype=header.dtype, mode="r", offset=offset,
                             shape=header.dim_size, order="F")
        fh.seek(offset)
        payload = fh.read(header.n_bytes)
    if len(payload) != header.n_bytes:  # the file shrank under us
        raise AllenFormatError(source, size_problem(header, len(payload) + offset))
    return array_from_bytes(payload, header.dtype, header.dim_size)


def read_header(path: str | os.PathLike) -> MetaImageHeader:
    """Read and parse ``path`` (a ``.mhd``). Reads at most :data:`MAX_HEADER_BYTES`."""
    path = Path(path)
    with open_regular(path) as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
    return parse_header(head, path)


def read_metaimage(path: str | os.PathLike, kind: str | None = None,
                   metadata: dict | None = None, *, cache_dir=None, progress=None,
                   cancel=None) -> GridVolume:
    """Read an Allen ``.mhd`` (+ its ``ElementDataFile``) into a :class:`GridVolume`.

    ``kind`` defaults to the one implied by the file name (``energy.mhd`` -> ``energy``).
    ``cache_dir``: the cache folder for large compressed payloads (default: configured).
    Raises :class:`AllenFormatError` naming the file for any header/payload problem.
    """
    path = Path(path)
    header = read_header(path)
    if header.data_file.upper() == "LOCAL":
        raw_path = path
        # Data follow the header in the same file (.mha), right after ElementDataFile.
        header.header_size = max(header.header_size, 0) + header.header_length
    else:
        raw_path = contained_data_file(path, header.data_file, "ElementDataFile")
        if not raw_path.exists() and not raw_path.is_symlink():
            raise AllenFormatError(path, f"data file {header.data_file[:80]!r} not found next "
                                         "to the header")
    data = read_payload(raw_path, header, path, cache_dir=cache_dir, progress=progress,
                        cancel=cancel)
    meta = {"element_type": header.element_type, "format": "metaimage",
            **read_provenance(path)}
    if header.synthetic:
        meta["synthetic"] = True
    meta.update(metadata or {})
    warn_if_synthetic(meta, path)
    return GridVolume(
        data=data,
        resolution=header.resolution,
        kind=kind or kind_from_name(path.name),
        metadata=meta,
        source=str(path),
    )


def format_header(shape: tuple[int, int, int], resolution: float, dtype: np.dtype,
                  data_file: str, *, synthetic: bool = False) -> str:
    """An Allen-style ``.mhd`` header for an ``[AP, DV, ML]`` array (little-endian payload).
    ``synthetic`` keeps the local server's mark (io.provenance) in an exported copy."""
    element_type = met_name(dtype)
    spacing = f"{resolution:g}"
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "Offset = 0 0 0",
        "CenterOfRotation = 0 0 0",
        # Allen writes RAI here although the data are PIR; we keep Allen's bytes for
        # compatibility with tools expecting Allen files (readers ignore this tag).
        "AnatomicalOrientation = RAI",
        f"ElementSpacing = {spacing} {spacing} {spacing}",
        f"DimSize = {shape[0]} {shape[1]} {shape[2]}",
        f"ElementType = {element_type}",
        *([MHD_SYNTHETIC_LINE] if synthetic else []),
        f"ElementDataFile = {data_file}",
    ]
    return "\n".join(lines) + "\n"
