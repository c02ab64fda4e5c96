"""Questions asked of a whole-plane store (experiments x 200 µm grids), shared by the
"Whole plane" tab and the command line:

- :func:`genes_at` — which genes are high at a point or in a structure
  (``napari-allen genes-at``, "Which genes are high here?");
- :func:`correlated_genes` — which genes follow a seed gene voxel by voxel, with dask, optionally
  on a distributed cluster (``napari-allen gene-correlation``, "Genes correlated with the
  current gene").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_allen.progress import CancelToken, ProgressCallback

MODES = ("voxel", "structure")


@dataclass
class GenesAt:
    """:func:`genes_at`'s answer: where (text), the voxel and structure used, the ranking."""

    where: str
    voxel: tuple[int, int, int] | None
    structure_id: int | None
    ranked: pd.DataFrame


def genes_at(
    store_path: str | os.PathLike,
    *,
    point_um: Sequence[float] | None = None,
    structure: int | str | None = None,
    mode: str = "voxel",
    top: int | None = 50,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> GenesAt:
    """Rank the store's experiments (genes) by expression, highest first.

    ``structure`` (acronym or id) ranks by the mean over that structure (rolled up);
    otherwise ``point_um`` (``[AP, DV, ML]`` CCF µm) is the place: its 200 µm voxel
    (``mode='voxel'``) or the annotated structure containing it (``mode='structure'``).
    Raises ``ValueError`` for a point outside the grid or the brain, ``KeyError`` for an
    unknown structure.
    """
    from napari_allen.analysis.expression import rank_experiments
    from napari_allen.atlas.annotation import grid_annotation
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.io.plane_store import open_plane_store

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    store = open_plane_store(store_path)
    res = float(store.resolution)
    annotation = np.asarray(grid_annotation().data)
    onto = Ontology.default()
    voxel = None
    if structure is not None and str(structure).strip():
        structure_id = onto.id_of(str(structure).strip())
    else:
        if point_um is None:
            raise ValueError("give a point (AP, DV, ML µm) or a structure")
        point = np.asarray(point_um, dtype=float)[-3:]
        idx = np.rint(point / res).astype(int)
        if not all(0 <= v < s for v, s in zip(idx, annotation.shape, strict=True)):
            raise ValueError(f"{np.round(point).tolist()} µm is outside the "
                             f"{res:g} µm grid")
        voxel = tuple(int(v) for v in idx)
        structure_id = None
        if mode == "structure":
            structure_id = int(annotation[voxel])
            if structure_id == 0:
                raise ValueError(f"voxel {voxel} ({np.round(point).tolist()} µm) is outside "
                                 "the brain")
    if structure_id is None:
        values = store.values_at(voxel, progress=progress, cancel=cancel)
        where = f"voxel {voxel} ({', '.join(f'{v * res:.0f}' for v in voxel)} µm)"
    else:
        mask = np.isin(annotation, onto.descendants(structure_id))
        values = store.mean_in(mask, progress=progress, cancel=cancel)
        where = f"{onto.acronym(structure_id)} ({onto.name(structure_id)})"
    ranked = rank_experiments(values, store.table, top=top)
    return GenesAt(where, voxel, structure_id, ranked)


def seed_indices(store, keys: Sequence[str | int]) -> list[int]:
    """Store rows of ``keys``: experiment ids, or gene acronyms (every experiment of the gene,
    case-insensitive). Raises ``ValueError`` naming a key that matches nothing."""
    table = store.table
    ids = set(table["experiment_id"].astype(int))
    genes = table["gene"].astype(str).str.lower() if "gene" in table else None
    seeds: list[int] = []
    for key in keys:
        text = str(key).strip()
        if text.isdigit() and int(text) in ids:
            seeds.append(store.index_of(int(text)))
            continue
        hits = np.flatnonzero(genes == text.lower()) if genes is not None else []
        if not len(hits):
            raise ValueError(f"{text} is neither a gene nor an experiment of {store.path}")
        seeds.extend(int(h) for h in hits)
    return seeds


def correlated_genes(
    store_path: str | os.PathLike,
    seeds: Sequence[str | int],
    *,
    top: int | None = 50,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """Pairwise-complete Pearson r over the annotated brain voxels between each seed (gene
    acronym or experiment id, :func:`seed_indices`) and every experiment of the store.

    One row per (seed, experiment), the seed itself left out, strongest first per seed:
    ``seed_experiment_id, seed_gene, experiment_id, gene, r`` (``top`` rows per seed).
    """
    from napari_allen.analysis.correlation import dask_gene_correlation
    from napari_allen.atlas.annotation import grid_annotation
    from napari_allen.io.plane_store import open_plane_store

    store = open_plane_store(store_path)
    rows = seed_indices(store, seeds)
    if not rows:
        raise ValueError("give at least one seed gene or experiment id")
    table = store.table
    brain = np.asarray(grid_annotation().data) > 0
    corr = dask_gene_correlation(store.to_dask(missing_as_nan=False), seeds=rows,
                                 voxel_mask=brain, scheduler=scheduler,
                                 progress=progress, cancel=cancel)
    genes = table["gene"] if "gene" in table.columns else pd.Series([""] * len(table))
    ids = table["experiment_id"].astype(int)
    frames = []
    for k, seed in enumerate(rows):
        frame = pd.DataFrame({
            "seed_experiment_id": int(ids.iloc[seed]),
            "seed_gene": genes.iloc[seed],
            "experiment_id": ids,
            "gene": genes,
            "r": corr[k],
        })
        frame = frame[frame["experiment_id"] != frame["seed_experiment_id"]]
        frame = frame.dropna(subset=["r"]).sort_values("r", ascending=False, kind="stable")
        frames.append(frame if top is None else frame.head(int(top)))
    return pd.concat(frames, ignore_index=True)
