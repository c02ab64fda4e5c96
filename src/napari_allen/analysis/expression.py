"""Per-structure gene expression from 200 µm ISH grids, and structures x experiments matrices.

A grid (``[AP, DV, ML]``, raw Allen values, ``-1`` = no data) and an annotation of the same
shape (structure ids, 0 = outside the brain) give, for every structure, statistics over its
*valid* voxels (-1/NaN excluded). With ``rollup=True`` (the default) a structure covers the
voxels of all its descendants, so ``Isocortex`` summarises every cortical area, the way
StructureUnionize reports parents.

The voxel -> structure assignment is a sparse (voxels x structures) membership matrix, so many
experiments are summarised with one sparse product instead of a loop over structures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from napari_allen.atlas.ontology import Ontology
from napari_allen.progress import CancelToken, ProgressCallback, check, report

EXPRESSION_COLUMNS = [
    "structure_id", "acronym", "name", "depth", "graph_order",
    "n_voxels", "n_valid", "mean", "std", "max", "sum",
]


class StructureMembership:
    """Which voxels of an annotation belong to which structures.

    ``matrix`` is a sparse (n_voxels x n_structures) 0/1 CSC matrix over the flattened
    ``[AP, DV, ML]`` grid (C order); column ``k`` is ``structure_ids[k]`` and, with ``rollup``,
    contains the voxels of that structure and all its descendants.
    """

    def __init__(
        self,
        annotation: np.ndarray,
        ontology: Ontology | None = None,
        structure_ids: Sequence[int] | None = None,
        *,
        rollup: bool = True,
    ) -> None:
        self.ontology = ontology or Ontology.default()
        labels = np.asarray(annotation).ravel()
        self.shape = tuple(np.asarray(annotation).shape)
        voxels = np.flatnonzero(labels)
        present, inverse = np.unique(labels[voxels], return_inverse=True)
        present = [int(p) for p in present]
        # Each present label contributes to itself and (rolled up) to its ancestors.
        owners: dict[int, list[int]] = {}
        # A plain dict walk: Ontology.ancestors goes through pandas per step (10x slower).
        parents = {int(k): (None if pd.isna(v) else int(v))
                   for k, v in self.ontology.table["parent_id"].items()}
        for k, label in enumerate(present):
            chain = [label]
            while rollup and chain[-1] in parents and parents[chain[-1]] is not None:
                chain.append(parents[chain[-1]])
            for sid in chain:
                owners.setdefault(int(sid), []).append(k)
        if structure_ids is None:
            order = self.ontology.table.index
            known = [int(s) for s in order if int(s) in owners]
            unknown = sorted(s for s in owners if s not in self.ontology)
            structure_ids = known + unknown
        self.structure_ids = np.asarray([int(s) for s in structure_ids], dtype=np.int64)
        rows, cols = [], []
        for col, sid in enumerate(self.structure_ids):
            for k in owners.get(int(sid), ()):
                rows.append(k)
                cols.append(col)
        label_to_structure = sparse.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(present), len(self.structure_ids))
        )
        voxel_to_label = sparse.csr_matrix(
            (np.ones(len(voxels)), (voxels, inverse)), shape=(labels.size, len(present))
        )
        self.matrix = (voxel_to_label @ label_to_structure).tocsc()
        self.matrix.data[:] = 1.0
        self.n_voxels = np.asarray(self.matrix.sum(axis=0)).ravel().astype(np.int64)

    def _flat(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if values.shape[-3:] != self.shape:
            raise ValueError(
                f"grid shape {values.shape[-3:]} does not match the annotation {self.shape}"
            )
        return values.reshape((-1, int(np.prod(self.shape)))).astype(np.float64)

    def sums(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a grid or a stack ``(n, AP, DV, ML)``: per structure (sum, sum of squares,
        valid count), each ``(n, n_structures)``. -1 and NaN voxels are excluded."""
        flat = self._flat(values)
        valid = np.isfinite(flat) & (flat >= 0)  # -1 is Allen's only negative value: no data
        v0 = np.where(valid, flat, 0.0)
        mt = self.matrix.T.tocsr()
        total = (mt @ v0.T).T
        squares = (mt @ (v0 * v0).T).T
        count = (mt @ valid.T.astype(np.float64)).T
        return np.asarray(total), np.asarray(squares), np.asarray(count)

    def means(self, values: np.ndarray) -> np.ndarray:
        """Mean over valid voxels per structure, ``(n, n_structures)``; NaN without data."""
        total, _, count = self.sums(values)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def maxima(self, values: np.ndarray) -> np.ndarray:
        """Max over valid voxels per structure for one grid, ``(n_structures,)``; NaN if none."""
        flat = self._flat(values)[0]
        flat = np.where(np.isfinite(flat) & (flat >= 0), flat, -np.inf)
        out = np.full(len(self.structure_ids), np.nan)
        indptr, indices = self.matrix.indptr, self.matrix.indices
        for col in range(len(self.structure_ids)):
            members = indices[indptr[col]:indptr[col + 1]]
            if members.size:
                best = flat[members].max()
                out[col] = best if np.isfinite(best) else np.nan
        return out


def structure_expression(
    values: np.ndarray,
    annotation: np.ndarray,
    ontology: Ontology | None = None,
    *,
    structure_ids: Sequence[int] | None = None,
    rollup: bool = True,
    membership: StructureMembership | None = None,
) -> pd.DataFrame:
    """Expression statistics per structure for one grid.

    ``values`` and ``annotation`` are ``[AP, DV, ML]`` arrays of the same shape (200 µm ISH grid
    and gridAnnotation). Returns one row per structure (all structures with annotated voxels,
    in ontology graph order, unless ``structure_ids`` is given) with columns
    ``structure_id, acronym, name, depth, graph_order, n_voxels`` (annotated voxels),
    ``n_valid`` (voxels with data), ``mean, std, max, sum`` (of the valid voxels' values;
    NaN where ``n_valid == 0``). ``rollup`` includes descendants' voxels.
    """
    ontology = ontology or Ontology.default()
    membership = membership or StructureMembership(
        annotation, ontology, structure_ids, rollup=rollup
    )
    total, squares, count = (a[0] for a in membership.sums(values))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        var = np.where(count > 0, squares / np.maximum(count, 1) - mean * mean, np.nan)
    std = np.sqrt(np.clip(var, 0.0, None))
    table = _describe(membership.structure_ids, ontology)
    table["n_voxels"] = membership.n_voxels
    table["n_valid"] = count.astype(np.int64)
    table["mean"] = mean
    table["std"] = std
    table["max"] = membership.maxima(values)
    table["sum"] = np.where(count > 0, total, np.nan)
    return table[EXPRESSION_COLUMNS]


def _describe(structure_ids: Iterable[int], ontology: Ontology) -> pd.DataFrame:
    rows = []
    for sid in structure_ids:
        sid = int(sid)
        if sid in ontology:
            info = ontology.table.loc[sid]
            rows.append((sid, info["acronym"], info["name"], int(info["depth"]),
                         int(info["graph_order"])))
        else:
            rows.append((sid, "?", f"unknown structure {sid}", -1, -1))
    return pd.DataFrame(rows, columns=["structure_id", "acronym", "name", "depth", "graph_order"])


# --------------------------------------------------------------------------------------------
# structures x experiments matrices
# --------------------------------------------------------------------------------------------
def grid_matrix(
    volumes: Mapping[int, np.ndarray] | Iterable[tuple[int, np.ndarray]],
    annotation: np.ndarray,
    ontology: Ontology | None = None,
    *,
    structure_ids: Sequence[int] | None = None,
    rollup: bool = True,
    batch: int = 64,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """Structures x experiments matrix of mean energy per structure, computed from grids.

    ``volumes`` maps experiment id -> ``[AP, DV, ML]`` grid (or yields ``(id, grid)`` pairs,
    e.g. lazily from a plane store). Grids are processed ``batch`` at a time, so memory stays
    bounded for thousands of experiments.
    """
    ontology = ontology or Ontology.default()
    membership = StructureMembership(annotation, ontology, structure_ids, rollup=rollup)
    items = volumes.items() if isinstance(volumes, Mapping) else volumes
    total = len(volumes) if isinstance(volumes, Mapping) else None
    ids: list[int] = []
    blocks: list[np.ndarray] = []
    pending_ids: list[int] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            blocks.append(membership.means(np.stack(pending)))
            ids.extend(pending_ids)
            pending.clear()
            pending_ids.clear()
            report(progress, done=len(ids), total=total, message="summarising grids")

    for exp_id, grid in items:
        check(cancel)
        pending_ids.append(int(exp_id))
        pending.append(np.asarray(grid, dtype=np.float32))
        if len(pending) >= batch:
            flush()
    flush()
    values = np.concatenate(blocks, axis=0).T if blocks else np.zeros(
        (len(membership.structure_ids), 0)
    )
    matrix = pd.DataFrame(
        values,
        index=pd.Index(membership.structure_ids, name="structure_id"),
        columns=pd.Index(ids, name="experiment_id"),
    )
    return matrix


def rank_experiments(
    values: np.ndarray,
    table: pd.DataFrame,
    *,
    top: int | None = None,
) -> pd.DataFrame:
    """Rank experiments (genes) by ``values`` (one per row of ``table``), highest first.

    ``values`` is e.g. the energy at the cursor voxel or the mean energy in a structure for
    every experiment of a plane store; NaN (no data) rows are dropped. Returns ``rank`` (1 =
    highest), the table's columns (``experiment_id, gene, ...``) and ``value``; ``top`` keeps
    the first rows only.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(table),):
        raise ValueError(f"{values.shape[0]} values for {len(table)} experiments")
    ranked = table.reset_index(drop=True).copy()
    ranked["value"] = values
    ranked = ranked[np.isfinite(values)]
    ranked = ranked.sort_values("value", ascending=False, kind="stable")
    if top is not None:
        ranked = ranked.head(int(top))
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked.reset_index(drop=True)


def structure_centroids(
    annotation: np.ndarray,
    resolution: float,
    structure_ids: Sequence[int],
    ontology: Ontology | None = None,
    *,
    hemisphere: str = "right",
    rollup: bool = True,
) -> pd.DataFrame:
    """Centroid (µm, ``[AP, DV, ML]``) of each structure's voxels in ``annotation``.

    Bilateral structures would otherwise have centroids on the midline, so by default only the
    right hemisphere is used (ML index above the grid's centre: Allen's right, PIR);
    ``hemisphere`` may be ``"left"`` or ``"both"``. A structure absent from that hemisphere
    falls back to all its voxels; one absent from the annotation gets NaN. Returns
    ``structure_id, ap_um, dv_um, ml_um, n_voxels``.
    """
    if hemisphere not in ("right", "left", "both"):
        raise ValueError(f"hemisphere must be right, left or both, got {hemisphere!r}")
    annotation = np.asarray(annotation)
    membership = StructureMembership(annotation, ontology, structure_ids, rollup=rollup)
    coords = np.indices(annotation.shape).reshape(3, -1).T.astype(np.float64)
    n_ml = annotation.shape[2]
    side = {
        "right": coords[:, 2] > (n_ml - 1) / 2.0,
        "left": coords[:, 2] < (n_ml - 1) / 2.0,
        "both": np.ones(len(coords), dtype=bool),
    }[hemisphere]
    matrix = membership.matrix
    sided = sparse.diags(side.astype(np.float64)) @ matrix
    n_side = np.asarray(sided.sum(axis=0)).ravel()
    use_side = n_side > 0
    sums_side = np.asarray(sided.T @ coords)
    sums_all = np.asarray(matrix.T @ coords)
    counts = np.where(use_side, n_side, membership.n_voxels).astype(np.float64)
    sums = np.where(use_side[:, None], sums_side, sums_all)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.nan)
    centre *= float(resolution)
    return pd.DataFrame({
        "structure_id": membership.structure_ids,
        "ap_um": centre[:, 0], "dv_um": centre[:, 1], "ml_um": centre[:, 2],
        "n_voxels": counts.astype(np.int64),
    })


def dask_grid_matrix(
    volumes,
    experiment_ids: Sequence[int],
    annotation: np.ndarray,
    ontology: Ontology | None = None,
    *,
    structure_ids: Sequence[int] | None = None,
    rollup: bool = True,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """:func:`grid_matrix` over a lazy ``(experiment, AP, DV, ML)`` dask array (e.g. a plane
    store), chunk by chunk, on the local scheduler or on the dask cluster at ``scheduler``."""
    import dask.array as da

    from napari_allen.analysis.correlation import _compute, rechunk_method

    ontology = ontology or Ontology.default()
    membership = StructureMembership(annotation, ontology, structure_ids, rollup=rollup)
    data = volumes if isinstance(volumes, da.Array) else da.from_array(np.asarray(volumes))
    data = data.rechunk({0: 1, 1: -1, 2: -1, 3: -1}, method=rechunk_method())
    n_struct = len(membership.structure_ids)
    means = data.map_blocks(
        membership.means, drop_axis=[2, 3], chunks=(data.chunks[0], (n_struct,)),
        dtype=np.float64,
    )
    values = _compute(means, scheduler=scheduler, progress=progress, cancel=cancel)
    return pd.DataFrame(
        values.T,
        index=pd.Index(membership.structure_ids, name="structure_id"),
        columns=pd.Index([int(e) for e in experiment_ids], name="experiment_id"),
    )
