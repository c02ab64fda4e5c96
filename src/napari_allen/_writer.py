"""npe2 single-layer writers ``(path, data, meta) -> list[str]`` for Allen grid layers.

A layer is an Allen grid when it is 3-D with an isotropic ``scale`` (µm) and either carries
``metadata['allen_grid']`` (set by :mod:`napari_allen.layers.volumes`) or has the shape of an
Allen grid. Anything else returns ``[]`` (nothing written) so napari can report that this
writer does not apply. Image data shown with ``-1`` as NaN are written back with ``-1``.

- :func:`write_csv`: one row per voxel with data (AP, DV, ML µm, value, structure acronym from
  the bundled 200 µm grid annotation or 25 µm CCF annotation);
- :func:`write_nifti`: NIfTI with a CCF RAS affine (mm);
- :func:`write_metaimage`: Allen ``.mhd`` + ``.raw``;
- :func:`write_spatial_search_json`: delegates to ``napari_allen.io.lines_json``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .io.volume import KINDS, GridVolume
from .space import resolution_for_shape


def layer_to_volume(data: Any, meta: dict) -> GridVolume | None:
    """The GridVolume of an Allen grid layer (NaN -> -1), or None if it is not one."""
    shape = getattr(data, "shape", ())
    if len(shape) != 3:
        return None
    layer_meta = dict(meta.get("metadata") or {})
    scale = np.asarray(meta.get("scale", (1.0, 1.0, 1.0)), dtype=float)
    if scale.shape != (3,) or not np.allclose(scale, scale[0]) or scale[0] <= 0:
        return None
    is_allen = bool(layer_meta.get("allen_grid")) or resolution_for_shape(shape) is not None
    if not is_allen:
        return None
    resolution = float(layer_meta.get("resolution") or scale[0])
    if resolution_for_shape(shape) is not None and np.allclose(scale, 1.0):
        # A bare array added without scale: trust the grid shape.
        resolution = float(resolution_for_shape(shape))
    kind = layer_meta.get("kind", "unknown")
    if kind not in KINDS:
        kind = "unknown"
    if getattr(data, "dtype", np.dtype("f4")).kind == "f":
        if isinstance(data, np.ndarray):
            data = np.where(np.isnan(data), np.float32(-1), data).astype(data.dtype)
        else:  # dask: stays lazy until written plane by plane
            import dask.array as da

            data = da.where(da.isnan(data), -1, data).astype(data.dtype)
    layer_meta.pop("resolution", None)
    layer_meta.pop("kind", None)
    return GridVolume(data=data, resolution=resolution, kind=kind, metadata=layer_meta,
                      source=str(layer_meta.get("source", "")))


def write_csv(path: str, data: Any, meta: dict) -> list[str]:
    """Save an Allen grid layer as CSV with structure acronyms; [] if not an Allen grid."""
    from .atlas.annotation import annotation_for
    from .atlas.ontology import Ontology
    from .io.export import to_csv

    vol = layer_to_volume(data, meta)
    if vol is None:
        return []
    return [str(to_csv(vol, path, annotation=annotation_for(vol), ontology=Ontology.default()))]


def write_nifti(path: str, data: Any, meta: dict) -> list[str]:
    """Save an Allen grid layer as NIfTI (CCF RAS mm affine); [] if not an Allen grid."""
    from .io.export import to_nifti

    vol = layer_to_volume(data, meta)
    if vol is None:
        return []
    return [str(to_nifti(vol, path))]


def write_metaimage(path: str, data: Any, meta: dict) -> list[str]:
    """Save an Allen grid layer as ``.mhd`` + ``.raw``; [] if not an Allen grid."""
    from .io.export import to_metaimage

    vol = layer_to_volume(data, meta)
    if vol is None:
        return []
    return [str(p) for p in to_metaimage(vol, path)]


def write_spatial_search_json(path: str | os.PathLike, data: Any, meta: dict) -> list[str]:
    """Save spatial-search line layers as Allen lines JSON (spatial-search engineer's module)."""
    try:
        from .io.lines_json import write_lines_json_from_layer
    except ImportError:
        return []
    return list(write_lines_json_from_layer(path, data, meta))
