"""Allen MetaImage grids: the ``.mhd`` text header and its ``.raw`` payload.

The header drives everything (``DimSize``, ``ElementSpacing``, ``ElementType``,
``BinaryDataByteOrderMSB``, ``ElementDataFile``, ``HeaderSize``, ``CompressedData``); sizes are
never hard-coded. The payload is x-fastest (AP fastest), so it is reshaped to ``DimSize`` in
Fortran order, giving ``[AP, DV, ML]`` without a transpose. ``AnatomicalOrientation = RAI``
in Allen headers contradicts the real PIR layout and is ignored (allen-api.md §6.4).

Payloads larger than :data:`MEMMAP_THRESHOLD` are memory-mapped (a 10 µm grid is 4.8 GB) so
opening costs no reading; smaller ones are read into memory so no file handle stays open.

Reader collision: napari's builtins (and other plugins) also claim ``*.mhd``/``*.raw``; open
with ``viewer.open(path, plugin="napari-allen")`` to choose this reader.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AllenFormatError
from ..space import describe_size_match, resolution_for_shape
from .volume import GridVolume, kind_from_name

#: Payloads above this many bytes are memory-mapped instead of read.
MEMMAP_THRESHOLD = 32 * 1024 * 1024
#: A real ``.mhd`` header is ~300 B; anything this large is not a detached header.
MAX_HEADER_BYTES = 64 * 1024

ELEMENT_TYPES: dict[str, str] = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1",
    "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4",
    # MetaIO's MET_LONG/MET_ULONG are 32-bit in ITK-written files; LONG_LONG are 64-bit.
    "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_DTYPE_TO_MET: dict[str, str] = {
    "i1": "MET_CHAR", "u1": "MET_UCHAR", "i2": "MET_SHORT", "u2": "MET_USHORT",
    "i4": "MET_INT", "u4": "MET_UINT", "i8": "MET_LONG_LONG", "u8": "MET_ULONG_LONG",
    "f4": "MET_FLOAT", "f8": "MET_DOUBLE",
}


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
        return np.dtype(ELEMENT_TYPES[self.element_type]).newbyteorder(">" if self.msb else "<")

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

    def describe(self) -> str:
        return f"DimSize {' '.join(map(str, self.dim_size))} {self.element_type}"


def _as_bool(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


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
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise AllenFormatError(source, "not a MetaImage header (binary content)") from None
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
        raise AllenFormatError(source, f"ObjectType {fields['ObjectType']!r} is not Image")
    try:
        dims = tuple(int(v) for v in need("DimSize").split())
    except ValueError:
        raise AllenFormatError(source, f"DimSize {fields['DimSize']!r} is not integers") from None
    ndims = int(fields.get("NDims", len(dims)))
    if ndims != 3 or len(dims) != 3:
        raise AllenFormatError(source, f"expected a 3-D grid, got NDims {ndims} DimSize {dims}")
    if min(dims) <= 0:
        raise AllenFormatError(source, f"DimSize {dims} has a non-positive size")
    if int(fields.get("ElementNumberOfChannels", "1")) != 1:
        raise AllenFormatError(source, "multi-channel MetaImage is not an Allen grid")
    etype = need("ElementType")
    if etype not in ELEMENT_TYPES:
        raise AllenFormatError(
            source, f"unknown ElementType {etype!r} (known: {', '.join(ELEMENT_TYPES)})"
        )
    spacing_text = fields.get("ElementSpacing") or fields.get("ElementSize")
    if spacing_text:
        try:
            spacing = tuple(float(v) for v in spacing_text.split())
        except ValueError:
            raise AllenFormatError(source, f"ElementSpacing {spacing_text!r} is not numbers") \
                from None
        if len(spacing) != 3 or min(spacing) <= 0:
            raise AllenFormatError(source, f"ElementSpacing {spacing_text!r} is not 3 positive")
    else:
        # No spacing: only acceptable when the shape is one of Allen's grids.
        res = resolution_for_shape(dims)
        if res is None:
            raise AllenFormatError(source, "no ElementSpacing and DimSize is not an Allen grid")
        spacing = (float(res),) * 3
    if not np.allclose(spacing, spacing[0]):
        raise AllenFormatError(source, f"anisotropic ElementSpacing {spacing} is not supported")
    msb_text = fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False"))
    data_file = need("ElementDataFile")
    if data_file.upper().startswith("LIST") or "%" in data_file:
        raise AllenFormatError(source, f"ElementDataFile {data_file!r} (file lists) unsupported")
    compressed = _as_bool(fields.get("CompressedData", "False"))
    csize = fields.get("CompressedDataSize")
    return MetaImageHeader(
        dim_size=dims,  # type: ignore[arg-type]
        spacing=spacing,  # type: ignore[arg-type]
        element_type=etype,
        msb=_as_bool(msb_text),
        data_file=data_file,
        header_size=int(fields.get("HeaderSize", "0")),
        compressed=compressed,
        compressed_size=int(csize) if csize else None,
        fields=fields,
        header_length=header_length,
    )


def read_header(path: str | os.PathLike) -> MetaImageHeader:
    """Read and parse ``path`` (a ``.mhd``). Reads at most :data:`MAX_HEADER_BYTES`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise AllenFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    return parse_header(head, path)


def size_problem(header: MetaImageHeader, found: int) -> str:
    """Explain a payload size mismatch, naming the grid it does match when there is one."""
    expected = header.n_bytes + max(header.header_size, 0)
    what = "truncated" if found < expected else "larger than its header says"
    text = (f"data {what}: {header.describe()} needs {expected:,} bytes, found {found:,}"
            " (DimSize/ElementType disagree with the data)")
    hint = describe_size_match(found)
    return f"{text}; {hint}" if hint else text


def array_from_bytes(payload: bytes, header: MetaImageHeader, source) -> np.ndarray:
    """Decode an in-memory payload (possibly zlib-compressed) into an ``[AP, DV, ML]`` array."""
    if header.compressed:
        try:
            decomp = zlib.decompressobj()
            # Cap the output so a compressed bomb cannot exhaust memory.
            payload = decomp.decompress(payload, header.n_bytes + 1)
        except zlib.error as exc:
            raise AllenFormatError(source, f"corrupt compressed data: {exc}") from exc
    elif header.header_size > 0:
        payload = payload[header.header_size:]
    elif header.header_size == -1:
        payload = payload[len(payload) - header.n_bytes:] if len(payload) >= header.n_bytes \
            else payload
    if len(payload) != header.n_bytes:
        raise AllenFormatError(source, size_problem(header, len(payload)))
    flat = np.frombuffer(payload, dtype=header.dtype)
    # Native byte order in memory: vispy and numba-free napari code expect it.
    arr = flat.astype(header.dtype.newbyteorder("="), copy=True)
    return arr.reshape(header.dim_size, order="F")


def read_payload(raw_path: Path, header: MetaImageHeader, source) -> np.ndarray:
    """Read or memory-map ``raw_path`` as described by ``header`` (size checked first)."""
    try:
        size = raw_path.stat().st_size
    except OSError:
        raise AllenFormatError(source, f"data file {raw_path.name!r} not found next to "
                                       "the header") from None
    if header.compressed:
        if size > max(header.n_bytes, 1) * 2 + 1024:
            raise AllenFormatError(source, "compressed data larger than its uncompressed size")
        return array_from_bytes(raw_path.read_bytes(), header, source)
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
    with open(raw_path, "rb") as fh:
        fh.seek(offset)
        payload = fh.read(header.n_bytes)
    flat = np.frombuffer(payload, dtype=header.dtype)
    return flat.astype(header.dtype.newbyteorder("="), copy=True).reshape(
        header.dim_size, order="F")


def read_metaimage(path: str | os.PathLike, kind: str | None = None,
                   metadata: dict | None = None) -> GridVolume:
    """Read an Allen ``.mhd`` (+ its ``ElementDataFile``) into a :class:`GridVolume`.

    ``kind`` defaults to the one implied by the file name (``energy.mhd`` -> ``energy``).
    Raises :class:`AllenFormatError` naming the file for any header/payload problem.
    """
    path = Path(path)
    header = read_header(path)
    if header.data_file.upper() == "LOCAL":
        raw_path = path
        # Data follow the header in the same file (.mha), right after ElementDataFile.
        header.header_size += header.header_length
    else:
        raw_path = path.parent / header.data_file
    data = read_payload(raw_path, header, path)
    meta = {"element_type": header.element_type, "format": "metaimage"}
    meta.update(metadata or {})
    return GridVolume(
        data=data,
        resolution=header.resolution,
        kind=kind or kind_from_name(path.name),
        metadata=meta,
        source=str(path),
    )


def format_header(shape: tuple[int, int, int], resolution: float, dtype: np.dtype,
                  data_file: str) -> str:
    """An Allen-style ``.mhd`` header for an ``[AP, DV, ML]`` array (little-endian payload)."""
    dtype = np.dtype(dtype)
    key = dtype.kind + str(dtype.itemsize)
    if key not in _DTYPE_TO_MET:
        raise ValueError(f"cannot write element type {dtype} as MetaImage")
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
        f"ElementType = {_DTYPE_TO_MET[key]}",
        f"ElementDataFile = {data_file}",
    ]
    return "\n".join(lines) + "\n"
