"""Annotation volumes shipped with the package and structure look-ups at a voxel or µm point.

- :func:`grid_annotation`: the 200 µm ``gridAnnotation`` (uint32 structure ids, 67x41x58),
  aligned with the ISH expression grids; 159,326 voxels, read into memory once.
- :func:`ccf_annotation_25`: the CCFv3 2017 annotation at 25 µm (528x320x456, 308 MB as uint32).
  Its gzip NRRD is inflated once into the cache folder and memory-mapped, so only the pages
  actually looked at are read.

Both are cached per process. Positions are CCF µm ``[AP, DV, ML]`` (voxel ``i`` centred at
``i*resolution``, :mod:`napari_allen.space`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..io.volume import GridVolume
from ..space import rescale_index, sample_at_um, sample_at_voxels
from .ontology import Ontology

_LOCK = threading.Lock()


def _data_path(*parts: str):
    return resources.files("napari_allen").joinpath("data", *parts)


@cache
def _grid_annotation() -> GridVolume:
    from ..io.gridzip import read_grid_zip

    (vol,) = read_grid_zip(_data_path("annotation", "P56_Mouse_gridAnnotation.zip"))
    vol.metadata["atlas"] = "P56 gridAnnotation (2017 ontology ids)"
    return vol


def grid_annotation() -> GridVolume:
    """The bundled 200 µm grid annotation (``kind='annotation'``, uint32, [AP, DV, ML])."""
    with _LOCK:  # widgets may ask from worker threads at the same time
        return _grid_annotation()


@cache
def _ccf_annotation_25() -> GridVolume:
    from ..io.nrrd import read_nrrd

    vol = read_nrrd(ccf_annotation_25_path(), kind="annotation")
    vol.metadata["atlas"] = "CCFv3 2017"
    return vol


def ccf_annotation_25_path() -> Path:
    """The bundled CCFv3 2017 annotation NRRD (25 µm, gzip)."""
    return Path(str(_data_path("annotation", "annotation_25.nrrd")))


def ccf_annotation_25_header() -> GridVolume:
    """The bundled 25 µm annotation's shape, dtype, resolution and source without decoding it
    (``data`` has only ``shape`` and ``dtype``): enough to find its caches."""
    from ..io.pyramid import describe_grid

    vol = describe_grid(ccf_annotation_25_path())
    assert vol is not None  # one grid per NRRD
    return vol


def ccf_annotation_25() -> GridVolume:
    """The bundled CCFv3 2017 annotation at 25 µm (memory-mapped uint32, [AP, DV, ML]).

    The first call in a fresh cache folder inflates the NRRD (~1 s); later calls are instant.
    """
    with _LOCK:
        return _ccf_annotation_25()


def ccf_annotation_25_if_loaded() -> GridVolume | None:
    """The 25 µm annotation if this process has it open already, else None: never decodes
    and never waits (another thread may be decoding it), so a GUI handler can ask at every
    mouse move and warm it in a worker (:func:`ccf_annotation_25`) when it gets None."""
    if not _LOCK.acquire(blocking=False):
        return None
    try:
        return _ccf_annotation_25() if _ccf_annotation_25.cache_info().currsize else None
    finally:
        _LOCK.release()


def annotation_for(vol: GridVolume) -> GridVolume:
    """The bundled annotation to label ``vol``'s voxels: the 200 µm grid annotation for ISH
    grids (their own 67x41x58 space), else the 25 µm CCFv3 annotation (looked up through µm)."""
    grid = grid_annotation()
    if tuple(vol.shape) == tuple(grid.shape) and vol.resolution == grid.resolution:
        return grid
    return ccf_annotation_25()


def resample_annotation(annotation: np.ndarray, from_resolution: float,
                        to_resolution: float) -> np.ndarray:
    """Annotation on a coarser (or finer) grid by nearest voxel centre (index scaling).

    E.g. 25 µm -> 100 µm takes voxel ``4 i`` for voxel ``i``: labels are never blended.
    The output shape is the input extent divided by the ratio (rounded).
    """
    ann = np.asarray(annotation)
    ratio = float(to_resolution) / float(from_resolution)
    shape = tuple(max(1, int(round(n / ratio))) for n in ann.shape)
    axes = []
    for axis, n in enumerate(shape):
        idx = np.zeros((n, 3), dtype=np.int64)
        idx[:, axis] = np.arange(n)
        mapped = rescale_index(idx, to_resolution, from_resolution)[:, axis]
        axes.append(np.clip(mapped, 0, ann.shape[axis] - 1))
    return ann[np.ix_(*axes)]


def ccf_annotation_at(resolution: float) -> np.ndarray:
    """The bundled 25 µm CCF annotation on the ``resolution`` µm grid (index scaling, labels
    never blended): ``[AP, DV, ML]`` uint32 structure ids, e.g. 132x80x114 at 100 µm."""
    ann = ccf_annotation_25()
    if float(resolution) == ann.resolution:
        return np.asarray(ann.data)
    return resample_annotation(ann.data, ann.resolution, resolution)


def structure_id_at_voxel(annotation: GridVolume | np.ndarray,
                          index: Sequence[int] | np.ndarray) -> np.ndarray | int:
    """Structure id(s) at voxel ``index`` (``(3,)`` or ``(N, 3)`` [AP, DV, ML]); 0 outside."""
    data = annotation.data if isinstance(annotation, GridVolume) else annotation
    return sample_at_voxels(data, index)


def structure_id_at(annotation: GridVolume, point_um: Sequence[float] | np.ndarray
                    ) -> np.ndarray | int:
    """Structure id(s) at CCF µm point(s) ``[AP, DV, ML]`` (nearest voxel centre; 0 outside)."""
    return sample_at_um(annotation.data, annotation.resolution, point_um)


def structure_at(point_um: Sequence[float], *, resolution: int = 25,
                 ontology: Ontology | None = None,
                 annotation: GridVolume | None = None) -> dict:
    """``{id, acronym, name}`` of the structure at a CCF µm point ``[AP, DV, ML]``.

    ``resolution`` 25 uses the CCFv3 annotation, 200 the ISH grid annotation; ``annotation``
    another (or an already open) annotation volume instead. ``id`` 0 means outside the brain
    (acronym ``''``).
    """
    if annotation is not None:
        vol = annotation
    elif resolution == 25:
        vol = ccf_annotation_25()
    elif resolution == 200:
        vol = grid_annotation()
    else:
        raise ValueError(f"no bundled annotation at {resolution} µm (use 25 or 200)")
    sid = int(structure_id_at(vol, point_um))
    if sid == 0:
        return {"id": 0, "acronym": "", "name": "outside the brain"}
    onto = ontology or Ontology.default()
    if sid in onto:
        return {"id": sid, "acronym": onto.acronym(sid), "name": onto.name(sid)}
    return {"id": sid, "acronym": "?", "name": f"unknown structure {sid}"}


def division_map(ids: np.ndarray, divisions: Sequence[int | str],
                 ontology: Ontology | None = None) -> np.ndarray:
    """Map structure ids to the division (one of ``divisions``) containing them, else 0.

    E.g. ``division_map(grid, ["HPF", "Isocortex", ...])`` labels every voxel by its major
    division; used for region means (e.g. Nrp1's mean energy per division).
    """
    onto = ontology or Ontology.default()
    ids = np.asarray(ids)
    uniq, inverse = np.unique(ids, return_inverse=True)
    mapped = np.zeros(len(uniq), dtype=np.int64)
    for div in onto.ids_of(divisions):
        mapped[onto.membership(div, uniq)] = div
    return mapped[inverse].reshape(ids.shape)
