"""StructureUnionize (ISH) and ProjectionStructureUnionize (connectivity) computed from the
served grids and the real annotation, rolled up the structure hierarchy.

ISH (200 µm, gridAnnotation): one 200 µm voxel stands for one "pixel" in the pixel sums;
``expression_density`` = mean density, ``expression_energy`` = mean energy over voxels with data
(energy != -1). Structures with no voxel with data are left out.

Connectivity (100 µm grids, CCF annotation subsampled to 100 µm): a 100 µm voxel holds 1,000
10 µm pixels; ``is_injection`` rows weight voxels by ``injection_fraction`` and the others by
``1 - injection_fraction``; hemisphere 1 = left (ML < 5,700 µm), 2 = right, 3 = both;
``projection_density = sum_projection_pixels / sum_pixels``, ``projection_energy = density x
intensity``, volumes in mm³, ``normalized_projection_volume`` = projection_volume / the
injection's projection_volume (structure 997, is_injection true, hemisphere 3), ``max_voxel_*`` =
µm position of the densest voxel (0 when none).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from .catalog import Catalog, stable_int
from .grids import GridStore
from .query import QueryError
from .rma import Query

PIXELS_PER_VOXEL_100 = 1000  # (100 µm / 10 µm)^3
PIXEL_MM3 = 1e-6  # one 10 µm pixel
MIDLINE_INDEX_100 = 57  # ML voxel 57 is at 5,700 µm (right from there)

class _Table:
    """One experiment's unionize rows as columns (numpy arrays, one per attribute, in the
    record's key order): about 10x smaller than the row dicts; rows are rebuilt per request."""

    __slots__ = ("keys", "columns", "nbytes")

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.keys = list(rows[0]) if rows else []
        self.columns = [np.asarray([r[k] for r in rows]) for k in self.keys]
        self.nbytes = sum(c.nbytes for c in self.columns) + 200

    def rows(self) -> list[dict[str, Any]]:
        keys = self.keys
        # Columns of one length, as many as keys (built so): no strict checks per row.
        return [dict(zip(keys, values))  # noqa: B905
                for values in zip(*(c.tolist() for c in self.columns))]  # noqa: B905


_CACHE: OrderedDict[tuple, _Table] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_BUILDING: dict[tuple, threading.Lock] = {}
#: Bound of the unionize cache: every experiment's unionize is computed once and kept as long
#: as it fits (an ISH experiment ~75 kB, a connectivity one ~0.8 MB).
CACHE_BYTES = 192 * 2**20


def _cached(key: tuple, build) -> list[dict[str, Any]]:
    """The rows of ``key``, computed at most once at a time (concurrent requests for the same
    experiment wait for one computation) and kept in a byte-bounded LRU."""
    with _CACHE_LOCK:
        table = _CACHE.get(key)
        if table is not None:
            _CACHE.move_to_end(key)
            return table.rows()
        building = _BUILDING.setdefault(key, threading.Lock())
    with building:
        with _CACHE_LOCK:
            table = _CACHE.get(key)
        if table is None:
            table = _Table(build())
            with _CACHE_LOCK:
                _CACHE[key] = table
                total = sum(t.nbytes for t in _CACHE.values())
                while total > CACHE_BYTES and len(_CACHE) > 1:
                    _, old = _CACHE.popitem(last=False)
                    total -= old.nbytes
        with _CACHE_LOCK:
            _BUILDING.pop(key, None)
    return table.rows()


def _experiment_ids(query: Query) -> list[int]:
    for flt in query.filters:
        if flt.attr.split(".")[-1] == "section_data_set_id" and flt.op in ("$eq", "$in"):
            values = flt.value if isinstance(flt.value, list) else [flt.value]
            try:
                return sorted({int(float(v)) for v in values})
            except (TypeError, ValueError):
                raise QueryError(f"section_data_set_id must be an integer: {values!r}") from None
    raise QueryError(f"{query.model} queries need [section_data_set_id$eq<id>] or $in (the "
                     "local server computes unionizes per experiment)")


def _rollup(store: GridStore, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(structure ids, labels x structures 0/1 matrix: structure is the label or one of its
    ancestors), built once per annotation: per-structure sums become one matrix product."""
    with store._lock:
        cache = store.__dict__.setdefault("_rollup_cache", {})
        key = (len(labels), int(labels[-1]) if len(labels) else 0)
        if key not in cache:
            known = store.catalog.structure_by_id
            chains = [(store.catalog.ancestors(int(lab)) if int(lab) in known else [997])
                      if lab != 0 else [] for lab in labels.tolist()]
            sids = np.array(sorted({sid for chain in chains for sid in chain}), dtype=np.int64)
            column = {int(sid): j for j, sid in enumerate(sids.tolist())}
            matrix = np.zeros((len(labels), len(sids)))
            for i, chain in enumerate(chains):
                matrix[i, [column[sid] for sid in chain]] = 1.0
            cache[key] = (sids, matrix)
        return cache[key]


def _rolled_sums(store: GridStore, labels: np.ndarray, inverse: np.ndarray,
                 quantities: dict[str, np.ndarray]) -> dict[int, dict[str, float]]:
    """Per-structure sums (descendants included) of each quantity over the annotation."""
    flat = inverse.ravel(order="F")
    per_label = np.stack([np.bincount(flat, weights=q.ravel(order="F"), minlength=len(labels))
                          for q in quantities.values()])
    sids, rollup = _rollup(store, labels)
    sums = per_label @ rollup  # quantities x structures
    names = list(quantities)
    return {sid: dict(zip(names, column, strict=True))
            for sid, column in zip(sids.tolist(), sums.T.tolist(), strict=True)}


# ------------------------------------------------------------------ ISH


def ish_unionize_records(catalog: Catalog, store: GridStore, query: Query) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for exp in _experiment_ids(query):
        if not catalog.is_ish(exp):
            continue
        rows.extend(_cached(("ish", exp), lambda exp=exp: _ish_rows(store, exp)))
    return rows


def _ish_rows(store: GridStore, experiment_id: int) -> list[dict[str, Any]]:
    arrays, _ = store.ish_arrays(experiment_id)
    energy, density, intensity = arrays["energy"], arrays["density"], arrays["intensity"]
    valid = (energy >= 0).astype(np.float64)
    labels, inverse = store.label_index(200)
    sums = _rolled_sums(store, labels, inverse, {
        "n": valid,
        "energy": np.where(energy >= 0, energy, 0.0),
        "energy2": np.where(energy >= 0, energy.astype(np.float64) ** 2, 0.0),
        "density": np.where(density >= 0, density, 0.0),
        "intensity": np.where(intensity >= 0, intensity, 0.0),
    })
    rows = []
    for sid in sorted(sums):
        s = sums[sid]
        n = s["n"]
        if n <= 0:
            continue
        mean = s["energy"] / n
        var = max(s["energy2"] / n - mean * mean, 0.0)
        rows.append({
            "expression_density": s["density"] / n,
            "expression_energy": mean,
            "id": stable_int("su", experiment_id, sid),
            "section_data_set_id": experiment_id,
            "structure_id": sid,
            "sum_expressing_pixel_intensity": s["energy"],
            "sum_expressing_pixels": s["density"],
            "sum_pixel_intensity": s["intensity"],
            "sum_pixels": n,
            "voxel_energy_cv": (var**0.5 / mean) if mean > 0 else 0.0,
            "voxel_energy_mean": mean,
        })
    return rows


# ------------------------------------------------------------------ connectivity


def projection_unionize_records(catalog: Catalog, store: GridStore, query: Query) -> list[dict]:
    rows: list[dict[str, Any]] = []
    for exp in _experiment_ids(query):
        if exp not in catalog.connectivity_by_id:
            continue
        rows.extend(_cached(("proj", exp), lambda exp=exp: _projection_rows(store, exp)))
    return rows


def _projection_rows(store: GridStore, experiment_id: int) -> list[dict[str, Any]]:
    arrays, _ = store.connectivity_arrays(experiment_id, 100)
    density = arrays["projection_density"].astype(np.float64)
    energy = arrays["projection_energy"].astype(np.float64)
    fraction = np.clip(arrays["injection_fraction"].astype(np.float64), 0, 1)
    labels, inverse = store.label_index(100)
    ml = np.arange(density.shape[2])[None, None, :]
    right = np.broadcast_to(ml >= MIDLINE_INDEX_100, density.shape)
    results: dict[tuple[int, bool], dict[int, dict[str, float]]] = {}
    maxima: dict[tuple[int, bool], dict[int, tuple[float, tuple[int, int, int]]]] = {}
    for is_injection in (True, False):
        weight = fraction if is_injection else 1.0 - fraction
        for hemi, side in ((1, ~right), (2, right), (3, None)):
            w = weight if side is None else weight * side
            results[(hemi, is_injection)] = _rolled_sums(store, labels, inverse, {
                "pixels": w * PIXELS_PER_VOXEL_100,
                "proj_pixels": w * density * PIXELS_PER_VOXEL_100,
                "proj_intensity": w * energy * PIXELS_PER_VOXEL_100,
            })
            maxima[(hemi, is_injection)] = _rolled_max(store, labels, inverse,
                                                       np.where(w > 0, density, -1.0))
    inj_volume = results[(3, True)].get(997, {}).get("proj_pixels", 0.0) * PIXEL_MM3
    rows = []
    for (hemi, is_injection), sums in sorted(results.items()):
        for sid in sorted(sums):
            s = sums[sid]
            if s["pixels"] <= 0:
                continue
            volume = s["proj_pixels"] * PIXEL_MM3
            peak, where = maxima[(hemi, is_injection)].get(sid, (0.0, (0, 0, 0)))
            has_peak = peak > 0
            rows.append({
                "hemisphere_id": hemi,
                "id": stable_int("psu", experiment_id, sid, hemi, is_injection),
                "is_injection": is_injection,
                "max_voxel_density": peak if has_peak else 0.0,
                "max_voxel_x": where[0] * 100 if has_peak else 0,
                "max_voxel_y": where[1] * 100 if has_peak else 0,
                "max_voxel_z": where[2] * 100 if has_peak else 0,
                "normalized_projection_volume": volume / inj_volume if inj_volume > 0 else 0.0,
                "projection_density": s["proj_pixels"] / s["pixels"],
                "projection_energy": s["proj_intensity"] / s["pixels"],
                "projection_intensity": (s["proj_intensity"] / s["proj_pixels"]
                                         if s["proj_pixels"] > 0 else 0.0),
                "projection_volume": volume,
                "section_data_set_id": experiment_id,
                "structure_id": sid,
                "sum_pixel_intensity": s["proj_intensity"] + 20.0 * s["pixels"],
                "sum_pixels": s["pixels"],
                "sum_projection_pixel_intensity": s["proj_intensity"],
                "sum_projection_pixels": s["proj_pixels"],
                "volume": s["pixels"] * PIXEL_MM3,
            })
    return rows


def _label_segments(store: GridStore, inverse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(voxel order grouping F-order voxels by label index, start of each label's run);
    computed once per annotation so each per-experiment maximum is a few vector passes."""
    with store._lock:
        cache = store.__dict__.setdefault("_label_segments", {})
        key = inverse.shape
        if key not in cache:
            flat_inv = inverse.ravel(order="F")
            order = np.argsort(flat_inv, kind="stable")
            starts = np.flatnonzero(np.r_[True, np.diff(flat_inv[order]) != 0])
            cache[key] = (order, starts)
        return cache[key]


def _rolled_max(store: GridStore, labels: np.ndarray, inverse: np.ndarray,
                values: np.ndarray) -> dict[int, tuple[float, tuple[int, int, int]]]:
    """Per structure (descendants included): the maximum value and its voxel index (the
    first voxel in F order among ties)."""
    order, starts = _label_segments(store, inverse)
    flat_inv = inverse.ravel(order="F")
    grouped = values.ravel(order="F")[order]
    peaks = np.maximum.reduceat(grouped, starts)
    # First position in each label's run that reaches the run's maximum.
    run_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(grouped)]))
    hits = np.flatnonzero(grouped == peaks[run_of])
    first_hit = hits[np.r_[True, np.diff(run_of[hits]) != 0]]
    shape = values.shape
    known = store.catalog.structure_by_id
    out: dict[int, tuple[float, tuple[int, int, int]]] = {}
    for position in first_hit.tolist():
        flat_index = int(order[position])
        label = int(labels[flat_inv[flat_index]])
        value = float(grouped[position])
        if label == 0 or value <= 0:
            continue
        index = tuple(int(i) for i in np.unravel_index(flat_index, shape, order="F"))
        for sid in (store.catalog.ancestors(label) if label in known else [997]):
            if sid not in out or value > out[sid][0]:
                out[sid] = (value, index)  # type: ignore[assignment]
    return out
