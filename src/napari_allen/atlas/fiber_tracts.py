"""Fibre tracts: which voxels of any CCF grid lie in white matter.

Allen's spatial-search lines skip seed voxels inside fibre tracts (axons of passage, not
terminals). Two sources give the tracts:

- a CCF annotation (structure ids): fibre tracts are structure 1009 "fiber tracts" and all its
  descendants in the ontology (:meth:`FiberTracts.from_annotation`, :meth:`FiberTracts.default`
  for the bundled 25 µm CCFv3 2017 annotation);
- the legacy ``annotationFiber`` volume (well-known file 197646984, 25 µm), where every non-zero
  voxel is a tract (:meth:`FiberTracts.from_legacy`).

Arrays are ``[AP, DV, ML]``; voxel ``i`` of a grid at ``r`` µm is centred at ``i * r`` µm
(:mod:`napari_allen.space`). A voxel of another grid is looked up through µm, so a 100 µm
index maps to the 25 µm annotation index ×4 (the seed script's ``ftScale``).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_allen.atlas.ontology import FIBER_TRACTS_ID, Ontology
from napari_allen.progress import CancelToken, ProgressCallback, check, report
from napari_allen.space import GRID_SHAPES, rescale_index

if TYPE_CHECKING:
    from napari_allen.io.volume import GridVolume

# Planes processed per step when building a whole mask: bounds the temporary memory and lets
# a cancel land quickly (25 µm: 16 x 320 x 456 ≈ 2.3 M voxels).
_CHUNK = 16


def fiber_tract_ids(ontology: Ontology | None = None) -> np.ndarray:
    """Sorted ids of structure 1009 "fiber tracts" and all its descendants."""
    onto = ontology or Ontology.default()
    return np.array(sorted(onto.descendants(FIBER_TRACTS_ID, include_self=True)), dtype=np.int64)


def grid_shape_at(native_shape: tuple[int, ...], native_resolution: float,
                  resolution: float) -> tuple[int, int, int]:
    """Shape ``(AP, DV, ML)`` of the grid at ``resolution`` µm covering a native grid.

    The standard CCF grids (10/25/50/100 µm) come from :data:`GRID_SHAPES`; other spacings keep
    every voxel centre inside the native extent.
    """
    res = float(resolution)
    if res.is_integer() and int(res) in GRID_SHAPES and int(res) != 200:
        # Only when the native grid is itself a standard CCF grid of the same extent.
        native_std = GRID_SHAPES.get(int(native_resolution)) if float(
            native_resolution).is_integer() else None
        if native_std == tuple(native_shape):
            return GRID_SHAPES[int(res)]
    return tuple(  # type: ignore[return-value]
        int(np.floor((n - 1) * float(native_resolution) / res + 1e-9)) + 1 for n in native_shape
    )


class FiberTracts:
    """Fibre-tract lookups over one label volume ``[AP, DV, ML]`` at ``resolution`` µm.

    ``fiber_ids`` lists the structure ids that count as tracts; ``None`` means every non-zero
    label (the legacy ``annotationFiber`` volume). Build with :meth:`from_annotation`,
    :meth:`from_legacy`, :meth:`from_volume` or :meth:`default`.
    """

    def __init__(self, labels: Any, resolution: float, *,
                 fiber_ids: Collection[int] | None = None, source: str = "") -> None:
        if len(getattr(labels, "shape", ())) != 3:
            raise ValueError(
                f"{source or 'fibre-tract labels'}: expected a 3-D [AP, DV, ML] label volume, "
                f"got shape {getattr(labels, 'shape', None)}"
            )
        if not float(resolution) > 0:
            raise ValueError(f"resolution must be positive (µm), got {resolution}")
        self.labels = labels
        self.resolution = float(resolution)
        self.source = source
        self.fiber_ids: np.ndarray | None = (
            None if fiber_ids is None else np.unique(np.asarray(list(fiber_ids), dtype=np.int64))
        )

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_annotation(cls, annotation: GridVolume | Any, resolution: float | None = None,
                        ontology: Ontology | None = None) -> FiberTracts:
        """From a CCF annotation (structure ids): tracts = 1009 and its descendants."""
        labels, res, source = _unpack(annotation, resolution)
        return cls(labels, res, fiber_ids=fiber_tract_ids(ontology), source=source)

    @classmethod
    def from_legacy(cls, fiber_annotation: GridVolume | Any,
                    resolution: float | None = None) -> FiberTracts:
        """From Allen's legacy ``annotationFiber`` volume: every non-zero voxel is a tract."""
        labels, res, source = _unpack(fiber_annotation, resolution)
        return cls(labels, res, fiber_ids=None, source=source)

    @classmethod
    def from_volume(cls, volume: GridVolume, ontology: Ontology | None = None) -> FiberTracts:
        """Legacy rule for ``kind == 'fiber_annotation'``, ontology rule otherwise."""
        if volume.kind == "fiber_annotation":
            return cls.from_legacy(volume)
        return cls.from_annotation(volume, ontology=ontology)

    @classmethod
    def from_path(cls, path: str | os.PathLike, ontology: Ontology | None = None) -> FiberTracts:
        """From a label file: Allen's legacy ``annotationFiber.mhd``/``.raw``/zip (every non-zero
        voxel a tract) or a CCF annotation (``.nrrd``, ``.mhd``, zip: ontology rule); raises
        AllenFormatError naming the file if it holds no single 3-D label volume."""
        from napari_allen.errors import AllenFormatError
        from napari_allen.io import read_volumes

        volumes = [v for v in read_volumes(path) if v.is_labels or v.kind == "unknown"]
        if len(volumes) != 1:
            raise AllenFormatError(path, f"expected one annotation or annotationFiber volume, "
                                         f"found {len(volumes)}")
        (volume,) = volumes
        if not np.issubdtype(np.dtype(volume.dtype), np.integer):
            raise AllenFormatError(path, f"structure labels must be integers, got "
                                         f"{volume.dtype}")
        return cls.from_volume(volume, ontology=ontology)

    @classmethod
    def default(cls, ontology: Ontology | None = None) -> FiberTracts:
        """From the bundled 25 µm CCFv3 annotation (read once, then cached by the atlas)."""
        from napari_allen.atlas.annotation import ccf_annotation_25

        return cls.from_annotation(ccf_annotation_25(), ontology=ontology)

    # --- properties ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.labels.shape)  # type: ignore[return-value]

    @property
    def is_legacy(self) -> bool:
        return self.fiber_ids is None

    def is_fiber_label(self, values: Any) -> np.ndarray:
        """Boolean array: is each structure id a fibre tract."""
        values = np.asarray(values)
        if self.fiber_ids is None:
            return values != 0
        ids = self.fiber_ids
        if ids.size == 0:
            return np.zeros(values.shape, dtype=bool)
        # searchsorted against the ~200 sorted ids is several times faster than np.isin on
        # tens of millions of voxels, and needs no table as large as the biggest id.
        pos = np.searchsorted(ids, values)
        np.clip(pos, 0, ids.size - 1, out=pos)
        return ids[pos] == values

    # --- lookups from another grid ------------------------------------------------------
    def native_index(self, indices: Any, resolution: float) -> np.ndarray:
        """Voxel indices ``(N, 3)`` of a grid at ``resolution`` µm -> native indices (not
        clipped; 100 µm -> 25 µm multiplies by 4)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1, 3)
        return rescale_index(idx, resolution, self.resolution).reshape(-1, 3)

    def in_bounds(self, indices: Any, resolution: float) -> np.ndarray:
        """Boolean ``(N,)``: does each voxel map inside the label volume."""
        native = self.native_index(indices, resolution)
        return np.all((native >= 0) & (native < np.asarray(self.shape)), axis=1)

    def labels_at(self, indices: Any, resolution: float) -> np.ndarray:
        """Structure ids ``(N,)`` under voxels ``(N, 3)`` of a grid at ``resolution`` µm;
        0 for voxels outside the label volume."""
        native = self.native_index(indices, resolution)
        inside = np.all((native >= 0) & (native < np.asarray(self.shape)), axis=1)
        out = np.zeros(len(native), dtype=np.int64)
        if inside.any():
            sel = native[inside]
            if hasattr(self.labels, "vindex"):  # dask: point-wise indexing
                values = np.asarray(self.labels.vindex[sel[:, 0], sel[:, 1], sel[:, 2]])
            else:
                values = self.labels[sel[:, 0], sel[:, 1], sel[:, 2]]
            out[inside] = np.asarray(values, dtype=np.int64)
        return out

    def contains(self, indices: Any, resolution: float) -> np.ndarray:
        """Boolean ``(N,)``: is each voxel (of a grid at ``resolution`` µm) in a fibre tract.
        Voxels outside the label volume are not."""
        return self.is_fiber_label(self.labels_at(indices, resolution))

    def contains_um(self, points_um: Any) -> np.ndarray:
        """Boolean ``(N,)`` for CCF points in µm ``[AP, DV, ML]`` (nearest native voxel)."""
        pts = np.asarray(points_um, dtype=float).reshape(-1, 3)
        native = np.rint(pts / self.resolution).astype(np.int64)
        return self.contains(native, self.resolution)

    # --- whole volumes ------------------------------------------------------------------
    def sampled_labels(self, resolution: float | None = None, *,
                       progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None) -> np.ndarray:
        """Structure ids on the grid at ``resolution`` µm (default: native), each voxel taking
        the native voxel nearest its centre."""
        if resolution is None or float(resolution) == self.resolution:
            return np.asarray(self.labels)
        shape = grid_shape_at(self.shape, self.resolution, float(resolution))
        # The µm mapping is separable per axis, so index each axis once instead of per voxel.
        axes = []
        for n_target, n_native in zip(shape, self.shape, strict=True):
            idx = rescale_index(np.arange(n_target)[:, None].repeat(3, 1), resolution,
                                self.resolution)[:, 0]
            axes.append(np.clip(idx, 0, n_native - 1))
        out = np.empty(shape, dtype=self.labels.dtype)
        axis = _slow_axis(self.labels)
        n = shape[axis]
        for start in range(0, n, _CHUNK):
            check(cancel)
            sel = [axes[0], axes[1], axes[2]]
            sel[axis] = axes[axis][start:start + _CHUNK]
            # One index array per step (numpy and dask both support that), the chunk axis
            # first so only its planes are read.
            block = self.labels
            for ax in (axis, *(a for a in range(3) if a != axis)):
                where = [slice(None)] * 3
                where[ax] = sel[ax]
                block = block[tuple(where)]
            where = [slice(None)] * 3
            where[axis] = slice(start, start + len(sel[axis]))
            out[tuple(where)] = np.asarray(block)
            report(progress, done=min(n, start + _CHUNK), total=n,
                   message="sampling fibre tracts")
        return out

    def mask(self, resolution: float | None = None, *,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> np.ndarray:
        """Boolean fibre-tract mask ``[AP, DV, ML]`` on the grid at ``resolution`` µm
        (default: the native grid)."""
        labels = self.sampled_labels(resolution, progress=progress, cancel=cancel)
        out = np.empty(labels.shape, dtype=bool)
        for where in _chunks(labels):
            check(cancel)
            out[where] = self.is_fiber_label(labels[where])
        return out

    def tract_labels(self, resolution: float | None = None, *,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None) -> np.ndarray:
        """Structure ids (uint32) on the grid at ``resolution`` µm, 0 outside fibre tracts:
        the data of an atlas-coloured Labels layer."""
        labels = self.sampled_labels(resolution, progress=progress, cancel=cancel)
        out = np.array(labels, dtype=np.uint32, order="K")  # a copy, in memory
        for where in _chunks(out):
            check(cancel)
            block = out[where]
            block[~self.is_fiber_label(block)] = 0
        return out


def _slow_axis(arr: Any) -> int:
    """The axis whose planes are contiguous in memory/on disk: ML (2) for Allen's x-fastest
    (Fortran-ordered) grids, else AP (0). Chunking along it reads each byte once."""
    flags = getattr(arr, "flags", None)
    if flags is not None and flags["F_CONTIGUOUS"] and not flags["C_CONTIGUOUS"]:
        return 2
    return 0


def _chunks(arr: Any):
    """Index tuples of ``_CHUNK``-plane blocks along :func:`_slow_axis`."""
    axis = _slow_axis(arr)
    for start in range(0, arr.shape[axis], _CHUNK):
        where = [slice(None)] * 3
        where[axis] = slice(start, start + _CHUNK)
        yield tuple(where)


def _unpack(volume: Any, resolution: float | None) -> tuple[Any, float, str]:
    """(labels, resolution µm, source) from a GridVolume or a bare array + resolution."""
    data = getattr(volume, "data", None)
    if data is not None and hasattr(volume, "resolution"):
        res = float(resolution) if resolution is not None else float(volume.resolution)
        return data, res, str(getattr(volume, "source", "") or "")
    if resolution is None:
        raise ValueError("a bare label array needs its resolution (µm)")
    return volume, float(resolution), ""
