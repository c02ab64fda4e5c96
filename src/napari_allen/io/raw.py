"""Bare Allen ``.raw`` grids (no ``.mhd``): the grid is inferred from the file size and name.

Allen grids are 4-byte little-endian values, x (AP) fastest: float32 for energy, density,
intensity, injection and connectivity volumes, uint32 for (grid) annotations. Known sizes:
200 µm 67x41x58 (637,304 B), 100 µm 132x80x114 (and CCFv2 133x81x115), 50 µm 264x160x228,
25 µm 528x320x456, 10 µm 1320x800x1140 (4.8 GB). Legacy grid annotations used uint16.
A file whose size matches none of these raises :class:`AllenFormatError` saying so.

A file named like ``74272479.raw`` (no kind in its name) is read as float32 ``unknown``, the
element type of every non-annotation Allen grid; ``metadata['element_type_assumed']`` says so.
If a ``.mhd`` with the same stem sits next to the ``.raw``, :func:`napari_allen.io.read_volumes`
uses the header instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AllenFormatError
from ..space import KNOWN_GRIDS, grid_for_voxels
from .metaimage import MetaImageHeader, read_payload
from .volume import LABEL_KINDS, GridVolume, kind_from_name


def _known_sizes_text() -> str:
    return ", ".join(
        f"{res} µm {'x'.join(map(str, s))} = {s[0] * s[1] * s[2] * 4:,} B"
        for s, res in KNOWN_GRIDS
    )


def infer_raw_grid(path: str | os.PathLike, size: int | None = None,
                   kind: str | None = None) -> tuple[MetaImageHeader, str, bool]:
    """Infer ``(header, kind, element_type_assumed)`` of a bare ``.raw`` from size and name.

    Raises AllenFormatError(path, ...) when no Allen grid has this size.
    """
    path = Path(path)
    if size is None:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise AllenFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    kind = kind or kind_from_name(path.name)
    # Candidate element types in order of likelihood for this kind.
    if kind in LABEL_KINDS:
        candidates = [("MET_UINT", 4), ("MET_USHORT", 2)]
    else:
        candidates = [("MET_FLOAT", 4)]
    for etype, itemsize in candidates:
        if size % itemsize:
            continue
        match = grid_for_voxels(size // itemsize)
        if match:
            shape, res = match
            header = MetaImageHeader(
                dim_size=shape, spacing=(float(res),) * 3, element_type=etype,
                msb=False, data_file=path.name,
            )
            return header, kind, kind == "unknown"
    problem = (f"cannot infer the grid of a bare .raw: {size:,} bytes matches no Allen grid "
               f"of {'/'.join(str(i) for _, i in candidates)}-byte values "
               f"(known: {_known_sizes_text()}); the file may be truncated, or give it its "
               ".mhd header")
    raise AllenFormatError(path, problem)


def read_raw(path: str | os.PathLike, kind: str | None = None,
             metadata: dict | None = None) -> GridVolume:
    """Read a header-less Allen ``.raw`` (memory-mapped when large) as a GridVolume."""
    path = Path(path)
    header, kind, assumed = infer_raw_grid(path, kind=kind)
    data = read_payload(path, header, path)
    meta = {"element_type": header.element_type, "format": "raw"}
    if assumed:
        meta["element_type_assumed"] = True
    meta.update(metadata or {})
    return GridVolume(data=data, resolution=header.resolution, kind=kind, metadata=meta,
                      source=str(path))


def looks_like_raw_grid(path: str | os.PathLike) -> bool:
    """Cheap sniff (stat only): a ``.raw`` whose size is an Allen grid's."""
    path = Path(path)
    if path.suffix.lower() != ".raw" or not path.is_file():
        return False
    size = path.stat().st_size
    return any(size % i == 0 and grid_for_voxels(size // i) for i in (4, 2))


__all__ = ["read_raw", "infer_raw_grid", "looks_like_raw_grid"]
