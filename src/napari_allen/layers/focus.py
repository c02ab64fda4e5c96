"""Where to look at a layer: its injection site, else the peak of its values, in CCF µm.

Used to move the viewer's sliders to the data just loaded (``widgets/_view.py``), so a
freshly loaded experiment is not shown on an empty slice. No Qt here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Larger in-memory volumes are not scanned for their peak (lazy 10 µm grids stay lazy).
_MAX_PEAK_VOXELS = 40_000_000
#: Layer-metadata key of a focus point computed ahead (in the worker that built the layer).
FOCUS_KEY = "focus_um"


def _finite_point(values) -> np.ndarray | None:
    try:
        point = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return None
    return point[-3:] if point.size >= 3 and np.isfinite(point[-3:]).all() else None


def metadata_focus_um(metadata: Mapping | None) -> np.ndarray | None:
    """The point recorded in layer metadata: a focus point computed ahead
    (:func:`with_focus_point`), else the measured injection centroid, else the experiment's
    ``injection_x/y/z`` (CCF µm ``[AP, DV, ML]``), else None."""
    meta = dict(metadata or {})
    for key in (FOCUS_KEY, "injection_centroid_um"):
        point = _finite_point(meta.get(key))
        if point is not None:
            return point
    exp = meta.get("experiment")
    source = exp if isinstance(exp, Mapping) else meta
    if all(k in source for k in ("injection_x", "injection_y", "injection_z")):
        return _finite_point([source["injection_x"], source["injection_y"],
                              source["injection_z"]])
    return None


def peak_um(data, scale=None, translate=None) -> np.ndarray | None:
    """World position (µm) of the largest finite value of a 3-D (or N-D, last 3 axes used)
    array, or None for lazy/huge/empty/all-NaN data."""
    if hasattr(data, "dask") or getattr(data, "size", _MAX_PEAK_VOXELS + 1) > _MAX_PEAK_VOXELS:
        return None
    arr = np.asarray(data, dtype=float)
    if arr.ndim < 3 or not np.isfinite(arr).any():
        return None
    flat = np.where(np.isfinite(arr), arr, -np.inf)
    index = np.array(np.unravel_index(int(np.argmax(flat)), arr.shape), dtype=float)[-3:]
    scale = np.ones(3) if scale is None else np.asarray(scale, dtype=float)[-3:]
    translate = np.zeros(3) if translate is None else np.asarray(translate, dtype=float)[-3:]
    return index * scale + translate


def focus_point_um(layer_tuple: tuple) -> np.ndarray | None:
    """The point to show for a LayerDataTuple ``(data, kwargs, layer_type)``: the injection
    site from its metadata, else (images) the peak voxel, (points) the centroid, (surfaces)
    the vertex centroid. CCF µm ``[AP, DV, ML]``; None when nothing sensible is known."""
    data, kwargs, layer_type = (tuple(layer_tuple) + ({}, "image"))[:3]
    kwargs = dict(kwargs or {})
    point = metadata_focus_um(kwargs.get("metadata"))
    if point is not None:
        return point
    if layer_type == "image":
        return peak_um(data, kwargs.get("scale"), kwargs.get("translate"))
    if layer_type == "points":
        pts = np.asarray(data, dtype=float)
        return _finite_point(pts.mean(axis=0)) if pts.ndim == 2 and len(pts) else None
    if layer_type == "surface":
        verts = np.asarray(data[0], dtype=float)
        return _finite_point(verts.mean(axis=0)) if len(verts) else None
    return None


def with_focus_point(layer_tuple: tuple) -> tuple:
    """``layer_tuple`` with its :func:`focus_point_um` stored in the metadata (``FOCUS_KEY``).
    Call it where the layer is built (a worker): finding an image's peak scans the whole
    volume, which must not happen on the main thread when the layer is shown."""
    data, kwargs, layer_type = (tuple(layer_tuple) + ({}, "image"))[:3]
    kwargs = dict(kwargs or {})
    point = focus_point_um((data, kwargs, layer_type))
    if point is not None:
        kwargs["metadata"] = {**dict(kwargs.get("metadata") or {}),
                              FOCUS_KEY: [float(v) for v in point]}
    return data, kwargs, layer_type


def layer_focus_um(layer: Any) -> np.ndarray | None:
    """:func:`focus_point_um` of a napari layer (duck-typed: data, metadata, scale)."""
    from .prebuilt import layer_type_name

    kind = layer_type_name(layer)  # "image"... also through napari's PublicOnlyProxy
    kwargs = {"metadata": getattr(layer, "metadata", {}), "scale": getattr(layer, "scale", None),
              "translate": getattr(layer, "translate", None)}
    return focus_point_um((layer.data, kwargs, kind))
