"""Seed voxels for spatial search, and injection-site coordinates (pure numpy).

Allen's spatial-search lines script seeds one target-spatial query per projection-density voxel
whose density lies in a range (default 0.04-0.3: low enough to avoid dense axon bundles) and that
is not in a fibre tract. Seeds are returned as voxel indices and CCF µm ``[AP, DV, ML]``
(voxel ``i`` centred at ``i * resolution``, :mod:`napari_allen.space`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_allen.lazy import lazy_module
from napari_allen.progress import CancelToken, ProgressCallback, check, report
from napari_allen.space import um_to_voxel, voxel_to_um

pd = lazy_module("pandas")  # imported at first use: the docks open without it

if TYPE_CHECKING:
    from napari_allen.atlas.fiber_tracts import FiberTracts

DEFAULT_DENSITY_RANGE: tuple[float, float] = (0.04, 0.3)
DEFAULT_INJECTION_THRESHOLD: float = 0.5
SAMPLE_MODES: tuple[str, ...] = ("spread", "first", "densest")

#: Columns of a seed table: voxel indices, µm coordinates, and the density there.
SEED_COLUMNS: tuple[str, ...] = ("ap", "dv", "ml", "ap_um", "dv_um", "ml_um", "density")


def _grid(volume: Any, resolution: float | None) -> tuple[np.ndarray, float]:
    """(array, resolution µm) from a GridVolume or an array plus its resolution."""
    if hasattr(volume, "data") and hasattr(volume, "resolution"):
        res = float(volume.resolution if resolution is None else resolution)
        return np.asarray(volume.data), res
    if resolution is None:
        raise ValueError("a bare array needs its resolution (µm)")
    return np.asarray(volume), float(resolution)


def select_seeds(
    density: Any,
    resolution: float | None = None,
    *,
    density_range: Sequence[float] = DEFAULT_DENSITY_RANGE,
    fiber_tracts: FiberTracts | None = None,
    max_seeds: int | None = None,
    sample: str = "spread",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """Seed voxels of a projection-density grid ``[AP, DV, ML]``.

    Keeps voxels with ``lo <= density <= hi`` (``-1``/NaN "no data" never qualify), drops those
    in ``fiber_tracts`` or outside its volume (the seed script skips them too), then caps the
    number at ``max_seeds``:

    - ``"spread"``: evenly spaced through the voxel order, so the seeds cover the whole range of
      the projection rather than its anterior end;
    - ``"first"``: the first ``max_seeds`` in voxel order (the script's order);
    - ``"densest"``: the highest densities (ties in voxel order).

    Returns a DataFrame with :data:`SEED_COLUMNS` (``ap, dv, ml`` indices; ``*_um`` coordinates in
    µm), in voxel (C) order except for ``"densest"`` (descending density). Deterministic.
    ``df.attrs`` holds the counts ``in_range``, ``in_fiber_tracts``, ``outside_tracts_volume``
    and ``capped``.
    """
    if sample not in SAMPLE_MODES:
        raise ValueError(f"sample must be one of {SAMPLE_MODES}, got {sample!r}")
    lo, hi = (float(v) for v in density_range)
    if lo > hi:
        raise ValueError(f"density range must be (min, max) with min <= max, got {lo}, {hi}")
    if max_seeds is not None and max_seeds < 0:
        raise ValueError(f"max_seeds must be >= 0, got {max_seeds}")
    arr, res = _grid(density, resolution)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D [AP, DV, ML] density grid, got shape {arr.shape}")
    check(cancel)
    report(progress, message="selecting seed voxels")
    with np.errstate(invalid="ignore"):
        in_range = (arr >= lo) & (arr <= hi) & (arr != -1) & np.isfinite(arr)
    indices = np.argwhere(in_range)
    counts = {"in_range": int(len(indices)), "in_fiber_tracts": 0, "outside_tracts_volume": 0}
    check(cancel)
    if fiber_tracts is not None and len(indices):
        inside = fiber_tracts.in_bounds(indices, res)
        fiber = fiber_tracts.contains(indices, res)
        counts["in_fiber_tracts"] = int(np.count_nonzero(fiber))
        counts["outside_tracts_volume"] = int(np.count_nonzero(~inside))
        indices = indices[inside & ~fiber]
    values = arr[tuple(indices.T)] if len(indices) else np.empty(0, dtype=float)
    n_before_cap = len(indices)
    if max_seeds is not None and n_before_cap > max_seeds:
        if sample == "first":
            keep = np.arange(max_seeds)
        elif sample == "densest":
            keep = np.argsort(-values, kind="stable")[:max_seeds]
        else:
            keep = np.unique(np.linspace(0, n_before_cap - 1, max_seeds).round().astype(int))
        indices, values = indices[keep], values[keep]
    elif sample == "densest" and len(indices):
        order = np.argsort(-values, kind="stable")
        indices, values = indices[order], values[order]
    counts["capped"] = int(n_before_cap - len(indices))
    um = voxel_to_um(indices, res) if len(indices) else np.empty((0, 3))
    frame = pd.DataFrame({
        "ap": indices[:, 0].astype(np.int64) if len(indices) else np.empty(0, np.int64),
        "dv": indices[:, 1].astype(np.int64) if len(indices) else np.empty(0, np.int64),
        "ml": indices[:, 2].astype(np.int64) if len(indices) else np.empty(0, np.int64),
        "ap_um": um[:, 0], "dv_um": um[:, 1], "ml_um": um[:, 2],
        "density": np.asarray(values, dtype=float),
    }, columns=list(SEED_COLUMNS))
    frame.attrs.update(counts, resolution=res, density_range=(lo, hi))
    report(progress, done=len(frame), total=len(frame), message="seed voxels selected")
    return frame


def seed_points_um(seeds: pd.DataFrame) -> np.ndarray:
    """``(N, 3)`` µm coordinates ``[AP, DV, ML]`` of a seed table."""
    return seeds[["ap_um", "dv_um", "ml_um"]].to_numpy(dtype=float)


def injection_coordinates(
    injection: Any,
    resolution: float | None = None,
    *,
    threshold: float = DEFAULT_INJECTION_THRESHOLD,
) -> np.ndarray:
    """µm coordinates ``(N, 3)`` ``[AP, DV, ML]`` of the injection voxels above ``threshold``
    (the seed script's ``injectionCoordinates``), in voxel (C) order.

    Accepts a GridVolume or an array plus its resolution; the voxel rule itself is the
    connectivity analysis' :func:`~napari_allen.analysis.projections.injection_voxels_um`.
    """
    from napari_allen.analysis.projections import injection_voxels_um

    arr, res = _grid(injection, resolution)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D [AP, DV, ML] injection grid, got shape {arr.shape}")
    return np.asarray(injection_voxels_um(arr, res, threshold=float(threshold)),
                      dtype=float).reshape(-1, 3)


def snap_to_voxel(point_um: Sequence[float], resolution: float,
                  shape: Sequence[int] | None = None) -> np.ndarray | None:
    """The centre (µm) of the voxel of a grid at ``resolution`` µm containing ``point_um``
    ``[AP, DV, ML]``; None if it falls outside a grid of ``shape``. Point-and-click seeds are
    snapped so that nearby clicks reuse one cached query."""
    point = np.asarray(point_um, dtype=float).reshape(3)
    if not np.all(np.isfinite(point)):
        return None
    idx = um_to_voxel(point, resolution)
    if shape is not None and (np.any(idx < 0) or np.any(idx >= np.asarray(shape))):
        return None
    return voxel_to_um(idx, resolution)
