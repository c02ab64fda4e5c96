"""Allen NRRD grids (``projection_density_100.nrrd``, ``annotation_25.nrrd``, ...).

The header is parsed with pynrrd; the payload is handled here so that large grids stay lazy:

- ``encoding: raw`` -> a ``numpy.memmap`` at the data offset (no reading at all);
- ``encoding: gzip`` (Allen's default) -> small grids inflate in memory; grids above
  :data:`~napari_allen.io.metaimage.MEMMAP_THRESHOLD` (25/10 µm) inflate once, streamed, into
  a cached raw file (``<cache>/decoded``) that is memory-mapped from then on;
- other encodings (bzip2, ascii, detached data files) are read with pynrrd for small grids.

``type:`` is honoured (``float`` at 100 µm, ``double`` in some 25 µm files, ``unsigned int``
for annotations). Data are x-fastest, so sizes ``(x, y, z)`` give ``[AP, DV, ML]`` in Fortran
order. ``space: left-posterior-superior`` in Allen headers contradicts PIR and is ignored.
Corrupt headers raise :class:`AllenFormatError` naming the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nrrd as pynrrd
import numpy as np

from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback
from ..space import resolution_for_shape
from ._decode import cache_key, decoded_memmap, inflate, inflate_to_array
from .metaimage import MEMMAP_THRESHOLD
from .provenance import read_provenance
from .volume import GridVolume, kind_from_name

_TYPES: dict[str, str] = {}
for _names, _code in [
    ("signed char, int8, int8_t", "i1"),
    ("uchar, unsigned char, uint8, uint8_t", "u1"),
    ("short, short int, signed short, signed short int, int16, int16_t", "i2"),
    ("ushort, unsigned short, unsigned short int, uint16, uint16_t", "u2"),
    ("int, signed int, int32, int32_t", "i4"),
    ("uint, unsigned int, uint32, uint32_t", "u4"),
    (("longlong, long long, long long int, signed long long, signed long long int, int64, "
      "int64_t"), "i8"),
    ("ulonglong, unsigned long long, unsigned long long int, uint64, uint64_t", "u8"),
    ("float", "f4"),
    ("double", "f8"),
]:
    for _name in _names.split(", "):
        _TYPES[_name] = _code


def _dtype(header: dict, path: Path) -> np.dtype:
    type_name = str(header.get("type", "")).strip().lower()
    if type_name not in _TYPES:
        raise AllenFormatError(path, f"NRRD type {type_name!r} is not supported")
    dtype = np.dtype(_TYPES[type_name])
    if dtype.itemsize > 1:
        endian = str(header.get("endian", "")).strip().lower()
        if endian not in ("little", "big"):
            raise AllenFormatError(path, f"NRRD endian {endian!r} must be little or big")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    return dtype


def _resolution(header: dict, sizes: tuple[int, ...], path: Path) -> float:
    """Isotropic spacing in µm from ``space directions`` (diagonal) or ``spacings``."""
    spacing = None
    directions = header.get("space directions")
    if directions is not None:
        mat = np.asarray(directions, dtype=float)
        if mat.shape == (3, 3) and np.all(np.isfinite(mat)):
            spacing = np.linalg.norm(mat, axis=1)
    if spacing is None and header.get("spacings") is not None:
        spacing = np.asarray(header["spacings"], dtype=float)
    if spacing is None or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        res = resolution_for_shape(sizes)
        if res is None:
            raise AllenFormatError(path, "NRRD has no voxel spacing and its sizes are not an "
                                         "Allen grid")
        return float(res)
    if not np.allclose(spacing, spacing[0]):
        raise AllenFormatError(path, f"anisotropic NRRD spacing {spacing.tolist()} unsupported")
    return float(spacing[0])


def read_nrrd_header(path: str | os.PathLike) -> tuple[dict, int]:
    """``(header, data_offset)``; AllenFormatError for anything that is not a valid header."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
            if magic != b"NRRD":
                raise AllenFormatError(path, "not an NRRD file (no 'NRRD' magic)")
            fh.seek(0)
            header = pynrrd.read_header(fh)
            offset = fh.tell()
    except AllenFormatError:
        raise
    except OSError as exc:
        raise AllenFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - pynrrd raises many types on bad headers
        raise AllenFormatError(path, f"corrupt NRRD header: {exc}") from exc
    return header, offset


def read_nrrd(
    path: str | os.PathLike,
    kind: str | None = None,
    *,
    metadata: dict | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> GridVolume:
    """Read an Allen NRRD grid lazily into a :class:`GridVolume` (``[AP, DV, ML]``, µm)."""
    path = Path(path)
    header, offset = read_nrrd_header(path)
    try:
        dimension = int(header.get("dimension", 0))
        sizes = tuple(int(s) for s in header["sizes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AllenFormatError(path, f"corrupt NRRD header: bad dimension/sizes ({exc})") \
            from exc
    if dimension != 3 or len(sizes) != 3 or min(sizes) <= 0:
        raise AllenFormatError(path, f"expected a 3-D grid, got dimension {dimension} "
                                     f"sizes {sizes}")
    dtype = _dtype(header, path)
    resolution = _resolution(header, sizes, path)
    n_bytes = math.prod(sizes) * dtype.itemsize
    encoding = str(header.get("encoding", "")).strip().lower()
    simple = ("data file" not in header and "datafile" not in header
              and not header.get("line skip", header.get("lineskip", 0))
              and not header.get("byte skip", header.get("byteskip", 0)))
    file_size = path.stat().st_size
    what = f"NRRD {encoding} data"

    if simple and encoding == "raw":
        found = file_size - offset
        if found != n_bytes:
            state = "truncated" if found < n_bytes else "larger than its header says"
            raise AllenFormatError(path, f"NRRD data {state}: sizes {sizes} type "
                                         f"{header['type']} need {n_bytes:,} bytes, found "
                                         f"{found:,}")
        data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=sizes, order="F")
        if n_bytes <= MEMMAP_THRESHOLD:
            data = np.array(data, dtype=dtype.newbyteorder("="), order="F")
    elif simple and encoding in ("gzip", "gz"):
        if n_bytes <= MEMMAP_THRESHOLD:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = inflate_to_array(fh, n_bytes, dtype, sizes, path, what=what,
                                        progress=progress, cancel=cancel)
        else:
            def fill(write) -> None:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    inflate(fh, n_bytes, write, path, what=what, progress=progress,
                            cancel=cancel)

            data = decoded_memmap(cache_key(path, "nrrd"), fill, n_bytes, dtype, sizes)
    else:
        if n_bytes > MEMMAP_THRESHOLD:
            raise AllenFormatError(path, f"NRRD encoding {encoding!r} (or a detached data "
                                         "file) cannot be opened lazily; re-save as raw/gzip")
        try:
            data, _ = pynrrd.read(str(path), index_order="F")
        except Exception as exc:  # noqa: BLE001 - pynrrd raises many types on bad data
            raise AllenFormatError(path, f"cannot read NRRD data: {exc}") from exc
        data = np.asarray(data).astype(dtype.newbyteorder("="), copy=False)
    meta = {"format": "nrrd", "element_type": str(header.get("type")), "encoding": encoding,
            **read_provenance(path)}
    meta.update(metadata or {})
    return GridVolume(data=data, resolution=resolution, kind=kind or kind_from_name(path.name),
                      metadata=meta, source=str(path))
