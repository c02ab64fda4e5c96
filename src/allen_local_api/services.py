"""Connected services of the connectivity atlas (docs/allen-api-notes.md §7.2-7.3), hyphenated
keys.

- ``mouse_connectivity_injection_structure``: experiments injected in the given structures
  (descendants included; ``primary_structure_only`` matches the primary structure only), ranked by
  ``sum`` = projection volume (mm³) in ``target_domain`` (default: the whole brain) and
  ``target_hemisphere``;
- ``mouse_connectivity_target_spatial``: experiments whose projection density at the seed voxel
  is at least :data:`SPATIAL_THRESHOLD`, sorted by that density (descending), each with a
  ``path`` of ``{coord, density, intensity}`` from the seed to the injection site, ending at the
  injection coordinate with density 0 and intensity 0;
- ``mouse_connectivity_injection_coordinate``: experiments ranked by the distance (µm) of their
  injection coordinate to the seed.

Common filters: ``injection_structures`` (ids or acronyms), ``primary_structure_only``,
``transgenic_lines`` (ids or names, ``0`` = wild type), ``product_ids``, ``injection_hemisphere``
(``left``/``right``), ``section_data_set(s)``; paging ``start_row``/``num_rows`` (default 2000)
inside the brackets. Densities of synthetic experiments come from the same blob model as their
grids; the real experiment 158375425 uses its real grid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import synthetic
from .catalog import CONNECTIVITY_REAL_ID, Catalog
from .grids import GridStore
from .query import QueryError, page_bounds
from .rma import Query

SERVICE_ROWS = 2000
SPATIAL_THRESHOLD = 0.01
#: Density above which a voxel counts in ``num-voxels``.
VOXEL_THRESHOLD = 0.01
PATH_STEP_UM = 200.0

_COMMON = {"injection_structures", "primary_structure_only", "transgenic_lines", "product_ids",
           "injection_hemisphere", "injection_domain", "start_row", "num_rows"}
SERVICES = {
    "mouse_connectivity_injection_structure": _COMMON | {"target_domain", "target_hemisphere"},
    "mouse_connectivity_target_spatial": _COMMON | {"seed_point", "section_data_set",
                                                    "section_data_sets"},
    "mouse_connectivity_injection_coordinate": _COMMON | {"seed_point"},
}


def _list(text: str | None) -> list[str]:
    return [p.strip().strip("'") for p in (text or "").split(",") if p.strip().strip("'")]


def _bool(params: dict[str, str], key: str) -> bool:
    value = params.get(key, "false").strip().strip("'").lower()
    if value not in ("true", "false"):
        raise QueryError(f"{key} must be true or false, not {value!r}")
    return value == "true"


def _seed(params: dict[str, str]) -> np.ndarray:
    parts = _list(params.get("seed_point"))
    try:
        seed = np.array([float(p) for p in parts])
    except ValueError:
        raise QueryError(f"seed_point must be x,y,z in µm, not {params.get('seed_point')!r}") \
            from None
    if seed.shape != (3,):
        raise QueryError("seed_point must have 3 coordinates (x,y,z µm)")
    return seed


def _structures(catalog: Catalog, keys: list[str]) -> set[int]:
    out: set[int] = set()
    for key in keys:
        try:
            out |= catalog.descendants(catalog.resolve_structure(key))
        except KeyError as exc:
            raise QueryError(str(exc.args[0])) from None
    return out


def _hemisphere(point_z: float) -> str:
    return "right" if point_z >= synthetic.MIDLINE_UM else "left"


def select_experiments(catalog: Catalog, params: dict[str, str]) -> list[dict[str, Any]]:
    """Experiments passing the common filters, in id order."""
    sets = _list(params.get("section_data_set")) + _list(params.get("section_data_sets"))
    if sets:
        # One experiment per query (the spatial search): look it up, do not scan 2,992.
        by_id = catalog.connectivity_by_id
        exps = [by_id[i] for i in sorted({int(v) for v in sets if v.isdigit()}) if i in by_id]
    else:
        exps = _experiments_by_id(catalog)
    if params.get("injection_structures") or params.get("injection_domain"):
        wanted = _structures(catalog, _list(params.get("injection_structures"))
                             + _list(params.get("injection_domain")))
        if _bool(params, "primary_structure_only"):
            exps = [e for e in exps if int(e["structure_id"]) in wanted]
        else:
            exps = [e for e in exps
                    if wanted & set(catalog.injection_structure_ids(e) + [int(e["structure_id"])])]
    if params.get("transgenic_lines"):
        lines = _list(params["transgenic_lines"])
        ids = {int(v) for v in lines if v.isdigit()}
        names = {v.lower() for v in lines if not v.isdigit()}

        def keep(e: dict[str, Any]) -> bool:
            line_id = e.get("transgenic_line_id")
            if line_id is None:
                return 0 in ids
            return int(line_id) in ids or catalog.transgenic_line_name(e).lower() in names
        exps = [e for e in exps if keep(e)]
    if params.get("product_ids"):
        products = {int(v) for v in _list(params["product_ids"]) if v.isdigit()}
        exps = [e for e in exps if int(e.get("product_id") or 0) in products]
    if params.get("injection_hemisphere"):
        side = params["injection_hemisphere"].strip("'").lower()
        if side not in ("left", "right"):
            raise QueryError(f"injection_hemisphere must be left or right, not {side!r}")
        exps = [e for e in exps if _hemisphere(float(e["injection_z"])) == side]
    return exps


def _experiments_by_id(catalog: Catalog) -> list[dict[str, Any]]:
    """The connectivity experiments sorted by id, sorted once per catalog."""
    cached = catalog.__dict__.get("_experiments_by_id")
    if cached is None:
        cached = sorted(catalog.connectivity_experiments, key=lambda e: int(e["data_set_id"]))
        catalog.__dict__["_experiments_by_id"] = cached
    return cached


def base_record(catalog: Catalog, exp: dict[str, Any]) -> dict[str, Any]:
    """The hyphenated service record of one experiment."""
    sid = int(exp["data_set_id"])
    info = catalog.projection_info.get(sid, {})
    structure = catalog.structure_by_id.get(int(exp["structure_id"]), {})
    injection = info.get("injection-structures") or [
        {"id": i, "abbreviation": catalog.structure_by_id[i]["acronym"],
         "name": catalog.structure_by_id[i]["name"],
         "color": catalog.structure_by_id[i]["color_hex_triplet"]}
        for i in catalog.injection_structure_ids(exp) if i in catalog.structure_by_id]
    return {
        "id": sid,
        "name": exp.get("specimen_name"),
        "structure-id": int(exp["structure_id"]),
        "structure-abbrev": exp.get("structure_abbrev"),
        "structure-name": exp.get("structure_name"),
        "structure-color": (info.get("structure-color")
                            or str(structure.get("color_hex_triplet", "")).lower()),
        "injection-structures": injection,
        "injection-coordinates": [exp["injection_x"], exp["injection_y"], exp["injection_z"]],
        "injection-volume": exp.get("injection_volume"),
        "transgenic-line": catalog.transgenic_line_name(exp),
        "gender": exp.get("gender"),
        "strain": exp.get("strain"),
        "product-id": exp.get("product_id"),
    }


def run(catalog: Catalog, store: GridStore, query: Query) -> tuple[list[dict], int, int]:
    """Run a service query: (page of records, start_row, total rows)."""
    name = query.service or ""
    if name not in SERVICES:
        raise QueryError(f"unknown service {name!r}; this server knows "
                         + ", ".join(sorted(SERVICES)))
    params = query.params
    unknown = set(params) - SERVICES[name]
    if unknown:
        raise QueryError(f"service::{name} has no parameter {sorted(unknown)[0]!r}")
    exps = select_experiments(catalog, params)
    if name == "mouse_connectivity_injection_structure":
        rows = _injection_structure(catalog, store, exps, params)
    elif name == "mouse_connectivity_target_spatial":
        rows = _target_spatial(catalog, store, exps, _seed(params))
    else:
        rows = _injection_coordinate(catalog, exps, _seed(params))
    start, num = page_bounds(params, SERVICE_ROWS, cap=None)
    page = rows[start:] if num is None else rows[start:start + num]
    return page, start, len(rows)


# ------------------------------------------------------------------ blob table


class BlobTable:
    """Every experiment's blobs in flat arrays, so a service evaluates all 2,992 experiments
    with a few vectorised numpy calls instead of a Python loop."""

    def __init__(self, catalog: Catalog, store: GridStore) -> None:
        ids, rows = [], []
        for exp in sorted(catalog.connectivity_experiments, key=lambda e: int(e["data_set_id"])):
            sid = int(exp["data_set_id"])
            ids.append(sid)
            rows.extend((len(ids) - 1, b) for b in store.blobs(sid))
        self.ids = np.array(ids)
        self.position = {sid: i for i, sid in enumerate(ids)}
        self.owner = np.array([i for i, _ in rows])
        self.center = np.array([b.center for _, b in rows], dtype=np.float64)
        self.sigma = np.array([b.sigma for _, b in rows])
        self.amplitude = np.array([b.amplitude for _, b in rows])
        self.integral = np.array([b.integral_mm3() for _, b in rows])
        ann = store.ccf_annotation(100)
        index = np.clip(np.rint(self.center / 100.0).astype(int), 0, np.array(ann.shape) - 1)
        self.label = ann[index[:, 0], index[:, 1], index[:, 2]]
        self.right = self.center[:, 2] >= synthetic.MIDLINE_UM
        amp = np.minimum(self.amplitude, 1.0)
        radius = self.sigma * np.sqrt(2 * np.log(np.maximum(amp / VOXEL_THRESHOLD, 1.0)))
        self.voxels = np.floor(4 / 3 * np.pi * radius**3 / 100.0**3)

    def density_at(self, point_um: np.ndarray) -> np.ndarray:
        """Model density of every experiment at one point (clipped to [0, 1], no brain mask)."""
        d2 = np.sum((self.center - point_um) ** 2, axis=1)
        values = self.amplitude * np.exp(-d2 / (2 * self.sigma**2))
        return np.clip(np.bincount(self.owner, weights=values, minlength=len(self.ids)), 0, 1)

    def density_of(self, position: int, point_um: np.ndarray) -> float:
        """:meth:`density_at` for one experiment (its own blobs only: a query naming one
        ``section_data_set`` costs microseconds, not a pass over every experiment's blobs)."""
        start, stop = np.searchsorted(self.owner, [position, position + 1])
        d2 = np.sum((self.center[start:stop] - point_um) ** 2, axis=1)
        values = self.amplitude[start:stop] * np.exp(-d2 / (2 * self.sigma[start:stop] ** 2))
        return float(min(max(values.sum(), 0.0), 1.0))

    def target_sums(self, domain: set[int], hemisphere: str | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Per experiment: (projection volume mm³, voxel count) of blobs centred in the domain."""
        keep = np.isin(self.label, np.fromiter(domain, dtype=np.uint32))
        if hemisphere:
            keep &= self.right if hemisphere == "right" else ~self.right
        n = len(self.ids)
        return (np.bincount(self.owner, weights=self.integral * keep, minlength=n),
                np.bincount(self.owner, weights=self.voxels * keep, minlength=n))


def blob_table(catalog: Catalog, store: GridStore) -> BlobTable:
    """The store's blob table, built once."""
    with store._lock:
        table = store.__dict__.get("_blob_table")
        if table is None:
            table = store.__dict__["_blob_table"] = BlobTable(catalog, store)
        return table


# ------------------------------------------------------------------ injection structure


def _target_stats(catalog: Catalog, store: GridStore, exp: dict[str, Any], domain: set[int],
                  hemisphere: str | None) -> tuple[float, int]:
    """(sum = projection volume mm³, num-voxels) of the real experiment in a target domain."""
    sid = int(exp["data_set_id"])
    ann = store.ccf_annotation(100)
    arrays, _ = store.connectivity_arrays(sid, 100)
    dens = arrays["projection_density"]
    mask = np.isin(ann, np.fromiter(domain, dtype=np.uint32))
    if hemisphere:
        ml = np.arange(ann.shape[2]) * 100.0 >= synthetic.MIDLINE_UM
        mask &= (ml if hemisphere == "right" else ~ml)[None, None, :]
    return float(dens[mask].sum() * 1e-3), int((dens[mask] > VOXEL_THRESHOLD).sum())


def _injection_structure(catalog: Catalog, store: GridStore, exps: list[dict[str, Any]],
                         params: dict[str, str]) -> list[dict[str, Any]]:
    domain_keys = _list(params.get("target_domain")) or ["997"]
    domain = _structures(catalog, domain_keys)
    hemisphere = params.get("target_hemisphere", "").strip("'").lower() or None
    if hemisphere not in (None, "left", "right"):
        raise QueryError(f"target_hemisphere must be left or right, not {hemisphere!r}")
    table = blob_table(catalog, store)
    sums, counts = table.target_sums(domain, hemisphere)
    rows = []
    for exp in exps:
        sid = int(exp["data_set_id"])
        if sid == CONNECTIVITY_REAL_ID:  # the real grid, not the model
            total, voxels = _target_stats(catalog, store, exp, domain, hemisphere)
        else:
            total, voxels = float(sums[table.position[sid]]), int(counts[table.position[sid]])
        rows.append({**base_record(catalog, exp), "num-voxels": voxels, "sum": total})
    rows.sort(key=lambda r: (-r["sum"], r["id"]))
    return rows


# ------------------------------------------------------------------ spatial searches


def density_at(store: GridStore, experiment_id: int, points_um: np.ndarray) -> np.ndarray:
    """Projection density at points ``(n, 3)`` µm (nearest 100 µm voxel; 0 outside the brain)."""
    ann = store.ccf_annotation(100)
    index = np.clip(np.rint(np.asarray(points_um, float) / 100.0).astype(int), 0,
                    np.array(ann.shape) - 1)
    inside = ann[index[:, 0], index[:, 1], index[:, 2]] > 0
    if experiment_id == CONNECTIVITY_REAL_ID:
        arrays, _ = store.connectivity_arrays(experiment_id, 100)
        values = arrays["projection_density"][index[:, 0], index[:, 1], index[:, 2]]
        return np.where(inside, values.astype(np.float64), 0.0)
    centers = index * 100.0  # evaluate at the voxel centre, as the grid does
    return np.where(inside, synthetic.density_at(store.blobs(experiment_id), centers), 0.0)


def _path(store: GridStore, experiment_id: int, seed: np.ndarray,
          injection: list[float]) -> list[dict[str, Any]]:
    """Seed -> injection polyline on 100 µm voxel centres, then the injection point (0, 0)."""
    target = np.asarray(injection, float)
    steps = max(int(math.ceil(np.linalg.norm(target - seed) / PATH_STEP_UM)), 1)
    points = np.rint((seed + (target - seed) * np.linspace(0, 1, steps + 1)[:-1, None])
                     / 100.0) * 100.0
    keep = np.ones(len(points), bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    points = points[keep]
    dens = density_at(store, experiment_id, points)
    path = [{"coord": [float(v) for v in p], "density": round(float(d), 6),
             "intensity": round(float(d) * 400.0, 3)} for p, d in zip(points, dens, strict=True)]
    path.append({"coord": [injection[0], injection[1], injection[2]], "density": 0,
                 "intensity": 0})
    return path


def _target_spatial(catalog: Catalog, store: GridStore, exps: list[dict[str, Any]],
                    seed: np.ndarray) -> list[dict[str, Any]]:
    table = blob_table(catalog, store)
    ann = store.ccf_annotation(100)
    voxel = np.clip(np.rint(seed / 100.0).astype(int), 0, np.array(ann.shape) - 1)
    if ann[tuple(voxel)] == 0:
        return []  # outside the brain: no projection anywhere
    # The grids are evaluated at voxel centres; every experiment at once unless few are asked.
    model = table.density_at(voxel * 100.0) if len(exps) > 8 else None
    rows = []
    for exp in exps:
        sid = int(exp["data_set_id"])
        if sid == CONNECTIVITY_REAL_ID:
            density = float(density_at(store, sid, seed[None, :])[0])
        elif model is None:
            density = table.density_of(table.position[sid], voxel * 100.0)
        else:
            density = float(model[table.position[sid]])
        if density < SPATIAL_THRESHOLD:
            continue
        record = base_record(catalog, exp)
        record["density"] = round(density, 6)
        record["path"] = _path(store, sid, seed, record["injection-coordinates"])
        rows.append(record)
    rows.sort(key=lambda r: (-r["density"], r["id"]))
    return rows


def _injection_coordinate(catalog: Catalog, exps: list[dict[str, Any]],
                          seed: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for exp in exps:
        record = base_record(catalog, exp)
        point = np.asarray(catalog.injection_point(exp))
        record["distance"] = round(float(np.linalg.norm(point - seed)), 3)
        rows.append(record)
    rows.sort(key=lambda r: (r["distance"], r["id"]))
    return rows
