"""Allen NRRD grids (``projection_density_100.nrrd``, ``annotation_25.nrrd``, ...): the one NRRD
parser of the project (readers, the download verifier and the local server use it).

The header is parsed here, from at most :data:`MAX_HEADER_BYTES` bytes, and every field is
validated (``dimension``, ``sizes``, ``type``, ``endian``, ``encoding``, spacing, ``data file``,
``line skip``/``byte skip``, ``key:=value`` pairs). The payload is handled so that large grids
stay lazy and memory stays bounded whatever the header claims:

- ``encoding: raw`` -> a ``numpy.memmap`` at the data offset (no reading at all);
- ``encoding: gzip``/``bzip2`` -> small grids inflate in memory; grids above
  :data:`~napari_allen.io.metaimage.MEMMAP_THRESHOLD` (25/10 µm) inflate once, streamed, into
  the decoded cache (:mod:`napari_allen.io._decode`) and are memory-mapped from there;
- ``ascii``/``text``/``hex`` -> small grids only;
- a detached ``data file:`` must resolve inside the header's folder (no absolute path, no
  ``..``, no symlink out of it).

``type:`` is honoured (``float`` at 100 µm, ``double`` in some 25 µm files, ``unsigned int``
for annotations). Data are x-fastest, so sizes ``(x, y, z)`` give ``[AP, DV, ML]`` in Fortran
order. ``space: left-posterior-superior`` in Allen headers contradicts PIR and is ignored.
Every problem raises :class:`AllenFormatError` naming the file.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback
from ..space import resolution_for_shape
from ._decode import (
    BZIP2,
    GZIP_OR_ZLIB,
    MAX_RATIO,
    content_key,
    decoded_memmap,
    inflate,
    inflate_to_array,
)
from .elements import NRRD_TYPES, array_from_bytes
from .metaimage import (
    MEMMAP_THRESHOLD,
    contained_data_file,
    int_field,
    open_data_file,
    open_regular,
)
from .provenance import nrrd_is_synthetic, read_provenance, warn_if_synthetic
from .volume import GridVolume, kind_from_name

#: A real NRRD header is < 1 kB; anything longer is not a header.
MAX_HEADER_BYTES = 64 * 1024
#: Largest size along one axis (a 10 µm grid is 1320 voxels; keep generous headroom).
MAX_AXIS = 1 << 20
#: Text encodings are parsed in memory: only for grids up to this many voxels.
MAX_TEXT_VOXELS = 8_000_000

_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2",
              "ascii": "ascii", "text": "ascii", "txt": "ascii", "hex": "hex"}
_MAGIC = re.compile(rb"^NRRD000[1-5]\r?$")
_VECTOR = re.compile(r"\(([^()]*)\)|none", re.IGNORECASE)


@dataclass
class NrrdHeader:
    """A parsed, validated 3-D NRRD header. ``sizes`` is ``(x, y, z)`` = (AP, DV, ML)."""

    sizes: tuple[int, int, int]
    dtype: np.dtype
    encoding: str  # normalised: raw, gzip, bzip2, ascii, hex
    type_name: str
    spacing: tuple[float, float, float] | None
    data_file: str | None = None
    line_skip: int = 0
    byte_skip: int = 0
    #: Bytes from the start of the file to the first data byte (attached data).
    data_offset: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    key_values: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def n_bytes(self) -> int:
        """Uncompressed payload size in bytes."""
        return math.prod(self.sizes) * self.dtype.itemsize

    @property
    def synthetic(self) -> bool:
        return nrrd_is_synthetic(self.key_values, self.comments)

    def resolution(self, source) -> float:
        """Isotropic spacing in µm; an Allen grid shape stands in when none is given."""
        if self.spacing is None:
            res = resolution_for_shape(self.sizes)
            if res is None:
                raise AllenFormatError(source, "NRRD has no voxel spacing and its sizes are "
                                               "not an Allen grid")
            return float(res)
        first = self.spacing[0]  # numpy.allclose's test, without numpy's per-call overhead
        if not all(abs(v - first) <= 1e-8 + 1e-5 * abs(first) for v in self.spacing):
            raise AllenFormatError(source, f"anisotropic NRRD spacing {list(self.spacing)} "
                                           "unsupported")
        return float(self.spacing[0])


def _int_field(fields: dict, key: str, source, default: int | None = None, *,
               low: int = 0) -> int:
    return int_field(fields, key, source, default, low=low, fmt="NRRD '{key}: {value}'",
                     header="NRRD")


def _spacing(fields: dict, dimension: int, source) -> tuple[float, float, float] | None:
    """Voxel size per axis from ``space directions`` (vector norms) or ``spacings``."""
    directions = fields.get("space directions")
    if directions is not None:
        vectors = _VECTOR.findall(directions)
        matches = list(_VECTOR.finditer(directions))
        if len(matches) != dimension or any(m.group(0).lower() == "none" for m in matches):
            raise AllenFormatError(source, f"NRRD 'space directions' {directions[:80]!r} "
                                           f"needs {dimension} vectors")
        rows = []
        for text in vectors:
            try:
                rows.append([float(v) for v in text.split(",")])
            except ValueError:
                raise AllenFormatError(source, f"NRRD 'space directions' vector ({text[:40]}) "
                                               "is not numbers") from None
        if any(len(r) != len(rows[0]) for r in rows) or not rows[0]:
            raise AllenFormatError(source, "NRRD 'space directions' vectors differ in length")
        norms = [math.hypot(*row) for row in rows]  # vector lengths (µm)
        if not all(math.isfinite(n) and n > 0 for n in norms):
            raise AllenFormatError(source, f"NRRD 'space directions' {directions[:80]!r} has a "
                                           "zero or non-finite vector")
        return tuple(float(n) for n in norms)  # type: ignore[return-value]
    text = fields.get("spacings")
    if text is None:
        return None
    parts = text.split()
    if len(parts) != dimension:
        raise AllenFormatError(source, f"NRRD 'spacings: {text[:60]}' needs {dimension} values")
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise AllenFormatError(source, f"NRRD 'spacings: {text[:60]}' is not numbers") from None
    if all(math.isnan(v) for v in values):
        return None  # NRRD's way of saying "unknown"
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise AllenFormatError(source, f"NRRD 'spacings: {text[:60]}' must be positive")
    return tuple(values)  # type: ignore[return-value]


def parse_nrrd_header(head: bytes, source, *, at_eof: bool = False) -> NrrdHeader:
    """Parse and validate the NRRD header at the start of ``head``.

    ``head`` holds the first bytes of the file (up to :data:`MAX_HEADER_BYTES` + 1);
    ``at_eof`` says the file ends there (a detached ``.nhdr`` may lack the closing blank
    line). Raises AllenFormatError naming ``source`` for anything that is not a valid 3-D grid
    header.
    """
    first_eol = head.find(b"\n")
    if not head.startswith(b"NRRD") or first_eol < 0 or not _MAGIC.match(head[:first_eol]):
        if not head.startswith(b"NRRD"):
            raise AllenFormatError(source, "not an NRRD file (no 'NRRD' magic)")
        raise AllenFormatError(source, f"corrupt NRRD header: bad magic line "
                                       f"{head[:min(first_eol if first_eol >= 0 else 16, 16)]!r}")
    match = re.search(rb"\r?\n\r?\n", head)
    if match is None:
        if not at_eof or len(head) > MAX_HEADER_BYTES:
            raise AllenFormatError(source, "corrupt NRRD header: no blank line ends it within "
                                           f"{MAX_HEADER_BYTES:,} bytes")
        end, data_offset = len(head), len(head)
    else:
        end, data_offset = match.start(), match.end()
    if end > MAX_HEADER_BYTES:
        raise AllenFormatError(source, "corrupt NRRD header: longer than "
                                       f"{MAX_HEADER_BYTES:,} bytes")
    try:
        text = head[first_eol + 1:end].decode("utf-8")
    except UnicodeDecodeError:
        raise AllenFormatError(source, "corrupt NRRD header: not text") from None
    if "\x00" in text:
        raise AllenFormatError(source, "corrupt NRRD header: binary (NUL) bytes in the header")
    fields: dict[str, str] = {}
    key_values: dict[str, str] = {}
    comments: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 2):
        line = line.rstrip("\r")
        if line.startswith("#"):
            comments.append(line[1:].strip())
            continue
        if ":=" in line and (": " not in line or line.index(":=") < line.index(": ")):
            key, value = line.split(":=", 1)
            key_values[key] = value
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            raise AllenFormatError(source, f"corrupt NRRD header: line {lineno} is not "
                                           f"'field: value': {line[:60]!r}")
        key = key.strip().lower()
        if key in fields:
            raise AllenFormatError(source, f"corrupt NRRD header: field '{key}' repeated")
        fields[key] = value.strip()
    # pynrrd's spellings without spaces are accepted too.
    for short, long in (("datafile", "data file"), ("lineskip", "line skip"),
                        ("byteskip", "byte skip")):
        if short in fields:
            fields.setdefault(long, fields.pop(short))
    dimension = _int_field(fields, "dimension", source, low=1)
    try:
        sizes = tuple(int(s) for s in fields["sizes"].split()) if "sizes" in fields else None
    except ValueError:
        raise AllenFormatError(source, f"corrupt NRRD header: sizes {fields['sizes'][:60]!r} "
                                       "are not integers") from None
    if sizes is None:
        raise AllenFormatError(source, "corrupt NRRD header: no 'sizes'")
    if dimension != 3 or len(sizes) != 3:
        raise AllenFormatError(source, f"expected a 3-D grid, got dimension {dimension} "
                                       f"sizes {sizes}")
    if min(sizes) <= 0 or max(sizes) > MAX_AXIS:
        raise AllenFormatError(source, f"NRRD sizes {sizes} must be between 1 and {MAX_AXIS:,}")
    type_name = fields.get("type", "").strip().lower()
    if type_name not in NRRD_TYPES:
        raise AllenFormatError(source, f"NRRD type {type_name!r} is not supported")
    dtype = np.dtype(NRRD_TYPES[type_name])
    encoding_text = fields.get("encoding", "").strip().lower()
    if encoding_text not in _ENCODINGS:
        raise AllenFormatError(source, f"NRRD encoding {encoding_text!r} is not supported "
                                       f"(known: {', '.join(sorted(set(_ENCODINGS)))})")
    encoding = _ENCODINGS[encoding_text]
    if dtype.itemsize > 1 and encoding != "ascii":
        endian = fields.get("endian", "").strip().lower()
        if endian not in ("little", "big"):
            raise AllenFormatError(source, f"NRRD endian {endian!r} must be little or big")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    spacing = _spacing(fields, dimension, source)
    data_file = fields.get("data file")
    if data_file is not None and (data_file.upper().startswith("LIST")
                                  or len(data_file.split()) != 1):
        raise AllenFormatError(source, f"NRRD 'data file: {data_file[:60]}' (file lists, "
                                           "multi-file patterns) is not supported")
    line_skip = _int_field(fields, "line skip", source, 0)
    byte_skip = _int_field(fields, "byte skip", source, 0, low=-1)
    if byte_skip == -1 and encoding != "raw":
        raise AllenFormatError(source, "NRRD 'byte skip: -1' is only valid with raw encoding")
    return NrrdHeader(sizes=sizes, dtype=dtype, encoding=encoding,  # type: ignore[arg-type]
                      type_name=type_name, spacing=spacing, data_file=data_file,
                      line_skip=line_skip, byte_skip=byte_skip, data_offset=data_offset,
                      fields=fields, key_values=key_values, comments=comments)


def read_nrrd_header(path: str | os.PathLike) -> NrrdHeader:
    """Read and validate the header of ``path`` (reads at most MAX_HEADER_BYTES + 1)."""
    path = Path(path)
    with open_regular(path) as fh:
        head = fh.read(MAX_HEADER_BYTES + 1)
        at_eof = not fh.read(1) if len(head) <= MAX_HEADER_BYTES else False
    return parse_nrrd_header(head, path, at_eof=at_eof)


def _data_location(path: Path, header: NrrdHeader) -> tuple[Path, int]:
    """``(file holding the payload, offset of its first byte before skips)``."""
    if header.data_file is None:
        return path, header.data_offset
    return contained_data_file(path, header.data_file, "NRRD 'data file'"), 0


def _skip_lines(fh, n: int, source) -> None:
    for _ in range(n):
        line = fh.readline(MAX_HEADER_BYTES)
        if not line.endswith(b"\n"):
            raise AllenFormatError(source, f"NRRD 'line skip: {n}' runs past a line or the "
                                           "end of the data")


def _text_array(data_path: Path, offset: int, header: NrrdHeader, source) -> np.ndarray:
    n = math.prod(header.sizes)
    if n > MAX_TEXT_VOXELS:
        raise AllenFormatError(source, f"NRRD {header.encoding} encoding of {n:,} voxels is "
                                       "too large to read; re-save as raw or gzip")
    limit = n * (2 * header.dtype.itemsize + 1 if header.encoding == "hex" else 40) + 1024
    with open_data_file(data_path, source) as fh:
        fh.seek(offset)
        _skip_lines(fh, header.line_skip, source)
        fh.seek(header.byte_skip, os.SEEK_CUR)
        text = fh.read(limit + 1)
    if len(text) > limit:
        raise AllenFormatError(source, f"NRRD {header.encoding} data longer than {n:,} values")
    try:
        if header.encoding == "hex":
            payload = bytes.fromhex(text.decode("ascii"))
            if len(payload) != header.n_bytes:
                raise AllenFormatError(source, f"NRRD hex data holds {len(payload):,} bytes, "
                                               f"sizes need {header.n_bytes:,}")
            return array_from_bytes(payload, header.dtype, header.sizes)
        values = np.array(text.decode("ascii").split(), dtype=np.float64)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AllenFormatError(source, f"NRRD {header.encoding} data is not numbers: "
                                       f"{str(exc)[:80]}") from None
    if values.size != n:
        raise AllenFormatError(source, f"NRRD ascii data holds {values.size:,} values, sizes "
                                       f"{header.sizes} need {n:,}")
    native = header.dtype.newbyteorder("=")
    if native.kind in "iu":
        info = np.iinfo(native)
        if not np.all(np.isfinite(values)) or values.min() < info.min or values.max() > info.max:
            raise AllenFormatError(source, f"NRRD ascii data out of range for {header.type_name}")
    return values.astype(native).reshape(header.sizes, order="F")


def read_nrrd(
    path: str | os.PathLike,
    kind: str | None = None,
    *,
    metadata: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_decoded: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> GridVolume:
    """Read an Allen NRRD grid lazily into a :class:`GridVolume` (``[AP, DV, ML]``, µm).

    ``cache_dir`` is the cache folder whose ``decoded/`` holds large inflated grids (default:
    the configured one). ``cache_decoded``: memory-map whatever the size (compressed payloads
    are decoded once into the decoded cache, raw ones mapped in place), for callers that read
    the same grids again and again (averages over hundreds of experiments).
    """
    path = Path(path)
    header = read_nrrd_header(path)
    resolution = header.resolution(path)
    data = nrrd_payload(path, header, cache_dir=cache_dir, cache_decoded=cache_decoded,
                        progress=progress, cancel=cancel)
    meta = {"format": "nrrd", "element_type": header.type_name, "encoding": header.encoding,
            **read_provenance(path)}
    if header.synthetic:
        meta["synthetic"] = True
    meta.update(metadata or {})
    warn_if_synthetic(meta, path)
    return GridVolume(data=data, resolution=resolution, kind=kind or kind_from_name(path.name),
                      metadata=meta, source=str(path))


def _locate(path: Path, header: NrrdHeader) -> tuple[Path, int, int]:
    """``(data file, first payload byte, payload bytes on disk)`` after the skips, with the
    size checks that need no decoding (raw: exact size; compressed: some bytes, and no more
    than any compressed stream of that size can inflate to). AllenFormatError if they fail."""
    data_path, offset = _data_location(path, header)
    n_bytes = header.n_bytes
    with open_data_file(data_path, path) as fh:
        file_size = os.fstat(fh.fileno()).st_size
        if header.line_skip:
            fh.seek(offset)
            _skip_lines(fh, header.line_skip, path)
            offset = fh.tell()
    if header.encoding == "raw":
        if header.byte_skip == -1:
            offset = file_size - n_bytes
            if offset < 0:
                raise AllenFormatError(path, _size_text(header, file_size, "truncated"))
        else:
            offset += header.byte_skip
            found = file_size - offset
            if found != n_bytes:
                state = "truncated" if found < n_bytes else "larger than its header says"
                raise AllenFormatError(path, _size_text(header, max(found, 0), state))
        return data_path, offset, n_bytes
    offset += header.byte_skip
    stored = file_size - offset
    if header.encoding in ("ascii", "hex"):
        return data_path, offset, stored
    if stored <= 0:
        raise AllenFormatError(path, f"truncated NRRD {header.encoding} data: no bytes after "
                                     "the header")
    if n_bytes > stored * MAX_RATIO + 1024:
        raise AllenFormatError(path, f"NRRD {header.encoding} data of {stored:,} bytes cannot "
                                     f"inflate to the {n_bytes:,} bytes its sizes declare "
                                     "(corrupt header or decompression bomb)")
    return data_path, offset, stored


def preflight(path: str | os.PathLike, header: NrrdHeader | None = None) -> NrrdHeader:
    """Every check of :func:`read_nrrd` that needs no decoding (header, data file, sizes,
    compression ratio, spacing): for callers that defer the decoding (the multiscale cache)."""
    path = Path(path)
    header = header or read_nrrd_header(path)
    header.resolution(path)
    _locate(path, header)
    return header


def nrrd_payload(path: Path, header: NrrdHeader, *, cache_dir=None, cache_decoded=False,
                 progress=None, cancel=None):
    """The ``[AP, DV, ML]`` array of ``path``'s payload (memmap for large raw/decoded data,
    or for any size with ``cache_decoded``)."""
    # Below this size the payload is decoded into memory (0: always memory-mapped).
    threshold = 0 if cache_decoded else MEMMAP_THRESHOLD
    data_path, offset, stored = _locate(path, header)
    n_bytes = header.n_bytes
    sizes = header.sizes
    if header.encoding in ("ascii", "hex"):
        return _text_array(data_path, _data_location(path, header)[1], header, path)
    if header.encoding == "raw":
        data = np.memmap(data_path, dtype=header.dtype, mode="r", offset=offset, shape=sizes,
                         order="F")
        if n_bytes <= threshold:
            data = np.array(data, dtype=header.dtype.newbyteorder("="), order="F")
        return data
    what = f"NRRD {header.encoding} data"
    wbits = BZIP2 if header.encoding == "bzip2" else GZIP_OR_ZLIB

    if n_bytes <= threshold:
        with open_data_file(data_path, path) as fh:
            fh.seek(offset)
            return inflate_to_array(fh, n_bytes, header.dtype, sizes, path, what=what,
                                    wbits=wbits, progress=progress, cancel=cancel)

    def fill(write) -> None:
        with open_data_file(data_path, path) as fh:
            fh.seek(offset)
            inflate(fh, n_bytes, write, path, what=what, wbits=wbits, progress=progress,
                    cancel=cancel)

    key = content_key(data_path, offset, stored, "nrrd", header.encoding,
                      header.dtype.str, sizes)
    return decoded_memmap(key, fill, n_bytes, header.dtype, sizes, folder=cache_dir,
                          source=path, synthetic=header.synthetic)


def _size_text(header: NrrdHeader, found: int, state: str) -> str:
    return (f"NRRD data {state}: sizes {header.sizes} type {header.type_name} need "
            f"{header.n_bytes:,} bytes, found {found:,}")
