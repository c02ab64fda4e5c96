"""Download every ISH experiment of a plane (or of a gene list) into a whole-plane store.

What forum users ask for and what the whole-plane notebook tried with a multiprocessing pool that
crashed (docs/allen-api-notes.md §13): thousands of ``grid_data/download`` zips, fetched
concurrently through one thread-safe :class:`~napari_allen.api.client.AllenClient` (retries,
timeouts, verified downloads), each volume written into
:class:`~napari_allen.io.plane_store.PlaneStore` as soon as it arrives. The store records finished
experiments, so an interrupted or partly failed run is completed by running it again; failures
are reported per experiment, never abort the batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_allen.api.batch import OK_STATUSES, GridRequest, download_many, iter_downloads
from napari_allen.errors import AllenError, AllenFormatError
from napari_allen.io.manifest import forget_file
from napari_allen.io.plane_store import PlaneStore
from napari_allen.progress import CancelToken, Progress, ProgressCallback, check, report
from napari_allen.workflows import MATRIX_SOURCES
from napari_allen.workflows.structure_similarity import (  # noqa: F401 (UNIONIZE_ONLY: API)
    UNIONIZE_ONLY,
    script_unionize_table,
)

STATUS_COLUMNS = ["experiment_id", "gene", "status", "error"]


@dataclass
class PlaneDownloadResult:
    """Outcome of :func:`download_plane`: the store and one status row per experiment
    (``status`` = ``downloaded``, ``already`` (in the store before this run and still matching
    its manifest entry), ``refetched`` (in the store but damaged since, fetched again) or
    ``failed``)."""

    store: PlaneStore
    statuses: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=STATUS_COLUMNS))

    @property
    def failed(self) -> pd.DataFrame:
        return self.statuses[self.statuses["status"] == "failed"]

    @property
    def complete(self) -> bool:
        return not self.store.pending()

    def summary(self) -> str:
        counts = self.statuses["status"].value_counts()
        return (f"{self.store.path}: {len(self.store)} experiments, "
                f"{int(counts.get('downloaded', 0))} downloaded, "
                f"{int(counts.get('already', 0))} already stored (verified), "
                f"{int(counts.get('refetched', 0))} re-fetched (damaged), "
                f"{int(counts.get('failed', 0))} failed")


def experiment_table(
    client,
    *,
    plane: str | None = None,
    genes: Sequence[str] | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """The experiments to store: the plane's tabular listing, or a gene search (wildcards;
    ``plane`` None = both planes). One row per experiment (first gene when a data set lists
    several), sorted by experiment id so the store's axis order is reproducible."""
    if genes:
        table = client.search_ish(list(genes), plane, cancel=cancel)
    elif plane:
        table = client.ish_plane_listing(plane, cancel=cancel)
    else:
        raise ValueError("give a plane ('coronal'/'sagittal') or a gene list")
    if table.empty:
        what = f"genes {list(genes)}" if genes else f"plane {plane}"
        raise ValueError(f"no ISH experiments found for {what}")
    table = table.dropna(subset=["experiment_id"]).copy()
    table["experiment_id"] = table["experiment_id"].astype(np.int64)
    table = table.drop_duplicates("experiment_id").sort_values("experiment_id", kind="stable")
    return table.reset_index(drop=True)


def download_plane(
    client,
    out: str | os.PathLike,
    *,
    plane: str | None = None,
    genes: Sequence[str] | None = None,
    experiments: pd.DataFrame | None = None,
    volume: str = "energy",
    jobs: int = 8,
    keep_zips: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> PlaneDownloadResult:
    """Fill the plane store at ``out`` with every experiment's 200 µm ``volume`` grid.

    The experiments are ``experiments`` (a table with ``experiment_id``, ``gene``...), else
    :func:`experiment_table` for ``plane``/``genes``. An existing store for the same experiments
    is resumed: only missing volumes are fetched. ``jobs`` downloads run at once (threads;
    the work is network-bound). Each verified zip is written into the store and, unless
    ``keep_zips``, removed from the download cache (the store now holds the data).
    Progress counts experiments (``failed`` included); ``cancel`` stops promptly, leaving the
    store consistent (finished experiments stay recorded).
    """
    check(cancel)
    if experiments is None:
        report(progress, done=0, total=None, message="listing experiments")
        experiments = experiment_table(client, plane=plane, genes=genes, cancel=cancel)
    store = PlaneStore.create(out, experiments, volume=volume, plane=plane)
    table = store.table
    gene_column = table["gene"] if "gene" in table.columns else pd.Series([""] * len(table))
    genes_by_id = {int(e): str(g) for e, g in zip(table["experiment_id"], gene_column,
                                                  strict=True)}
    repairing = set(store.damaged())  # written before, damaged since: fetched again
    pending = store.pending()
    waiting = set(pending)
    rows: list[dict] = [
        {"experiment_id": int(e), "gene": genes_by_id.get(int(e), ""), "status": "already",
         "error": ""}
        for e in table["experiment_id"] if int(e) not in waiting
    ]
    total = len(pending)
    written = failed = moved = 0
    report(progress, done=0, total=total, message=f"{total} experiments to download")

    def on_download(snapshot: Progress) -> None:
        # Bytes from the downloads; experiment counts come from the store writes below.
        report(progress, done=written + failed, total=total, failed=failed,
               bytes_done=snapshot.bytes_done, message="downloading")

    # Each verified zip is written into the store (in this thread) while the next ones download
    # (bounded: api.batch.iter_downloads keeps at most 2 x jobs in flight); resumability is per
    # experiment (store.write records it). Leaving the loop (error, cancel) stops the downloads.
    requests = [GridRequest(int(e), (volume,)) for e in pending]
    for _, row in iter_downloads(client, requests, jobs=max(1, int(jobs)), progress=on_download,
                                 cancel=cancel):
        check(cancel)
        eid = int(row["experiment_id"])
        moved += int(row["bytes"] or 0)
        status, text = _store_row(store, row, volume, keep_zips, cancel)
        if status == "downloaded" and eid in repairing:
            status = "refetched"
        if status == "failed":
            failed += 1
        else:
            written += 1
        rows.append({"experiment_id": eid, "gene": genes_by_id.get(eid, ""),
                     "status": status, "error": text})
        report(progress, done=written + failed, total=total, failed=failed, bytes_done=moved,
               message=f"{eid} {genes_by_id.get(eid, '')} {status}")
    check(cancel)
    statuses = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    order = {int(e): i for i, e in enumerate(table["experiment_id"])}
    statuses = statuses.sort_values("experiment_id", key=lambda s: s.map(order), kind="stable")
    return PlaneDownloadResult(store=store, statuses=statuses.reset_index(drop=True))


def _store_row(store: PlaneStore, row: dict, volume: str, keep_zips: bool,
               cancel) -> tuple[str, str]:
    """Write one downloaded zip (an ``api.batch`` result row) into the store."""
    if row["status"] not in OK_STATUSES:
        return "failed", str(row["error"] or row["status"])
    try:
        grid = _volume_from_zip(row["path"], volume, int(row["experiment_id"]), cancel)
        store.write(int(row["experiment_id"]), grid, source_url=row["url"])
    except (AllenError, OSError, ValueError) as exc:
        return "failed", str(exc)
    if not keep_zips:
        # The store now holds the volume; the zip would only double the disk use.
        Path(row["path"]).unlink(missing_ok=True)
        forget_file(row["path"])
    return "downloaded", ""


def _volume_from_zip(path, volume: str, experiment_id: int, cancel) -> np.ndarray:
    from napari_allen.io.gridzip import read_grid_zip

    grids = read_grid_zip(path, cancel=cancel)
    for grid in grids:
        if grid.kind == volume:
            return np.asarray(grid.data, dtype=np.float32)
    found = [g.kind for g in grids]
    raise AllenFormatError(path, f"experiment {experiment_id}: no {volume} grid (found {found})")


# --------------------------------------------------------------------------------------------
# structures x experiments matrices for the structure-similarity workflow
# --------------------------------------------------------------------------------------------
SOURCES = MATRIX_SOURCES


def fetch_grids(
    client,
    experiment_ids: Sequence[int],
    *,
    volume: str = "energy",
    jobs: int = 8,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[dict[int, np.ndarray], pd.DataFrame]:
    """Download (or take from the cache) the experiments' 200 µm grids concurrently.

    Returns ``({experiment_id: [AP, DV, ML] float32 grid}, download_many's result rows)``;
    failed experiments are absent from the dict (their rows say why).
    """
    requests = [GridRequest(int(e), (volume,)) for e in experiment_ids]
    frame = download_many(client, requests, jobs=jobs, progress=progress, cancel=cancel)
    grids: dict[int, np.ndarray] = {}
    for row in frame.itertuples(index=False):
        check(cancel)
        if row.status in OK_STATUSES:
            grids[int(row.experiment_id)] = _volume_from_zip(
                row.path, volume, int(row.experiment_id), cancel)
    return grids, frame


def structure_matrix(
    client,
    experiment_ids: Sequence[int],
    *,
    source: str = "unionize",
    structure_ids: Sequence[int] | None = None,
    ontology=None,
    store: str | os.PathLike | None = None,
    scheduler: str | None = None,
    jobs: int = 8,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[pd.DataFrame, dict[int, float]]:
    """The structures x experiments expression matrix and each structure's volume.

    ``source='unionize'``: StructureUnionize ``expression_energy`` fetched and arranged as
    Allen's correlation script does (:func:`script_unionize_table`): rows the leaves of the
    API's structure graph sorted by id (unless ``structure_ids``), columns the experiments in
    the given order, volume = the last experiment's ``sum_pixels``; the script's structure
    records ride along in ``matrix.attrs["structures"]`` for its ``structures.json``.
    ``source='grids'``: mean energy per structure from the 200 µm grids and
    the bundled gridAnnotation, rolled up (volume = voxel count); grids come from the plane
    ``store`` when given (computed with dask, on the cluster at ``scheduler`` if given), else
    are downloaded. Rows are ``structure_ids`` (default: the ontology's leaves, as the script).
    """
    from napari_allen.analysis.expression import dask_grid_matrix, grid_matrix
    from napari_allen.atlas.ontology import Ontology

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    ids = [int(e) for e in experiment_ids]
    if not ids:
        raise ValueError("no experiments to correlate")
    if source == "unionize":
        return script_unionize_table(client, ids, structure_ids=structure_ids, jobs=jobs,
                                     progress=progress, cancel=cancel).frame()
    ontology = ontology or Ontology.default()
    rows = list(structure_ids) if structure_ids is not None else ontology.leaves()

    from napari_allen.atlas.annotation import grid_annotation

    annotation = np.asarray(grid_annotation().data)
    if store is not None:
        plane_store = PlaneStore.open(store, mode="r")
        missing = set(ids) - plane_store.completed()
        if missing:
            raise ValueError(f"{len(missing)} experiments are not in the store {store} "
                             f"(e.g. {sorted(missing)[:5]}); download them first")
        index = [plane_store.index_of(e) for e in ids]
        data = plane_store.to_dask(missing_as_nan=False)[index]
        matrix = dask_grid_matrix(data, ids, annotation, ontology, structure_ids=rows,
                                  scheduler=scheduler, progress=progress, cancel=cancel)
    else:
        grids, _ = fetch_grids(client, ids, jobs=jobs, progress=progress, cancel=cancel)
        matrix = grid_matrix(grids, annotation, ontology, structure_ids=rows, cancel=cancel)
        matrix = matrix.reindex(columns=ids)
    counts = dict(zip(matrix.index, (annotation_counts(annotation, ontology, matrix.index)),
                      strict=True))
    return matrix, counts


def annotation_counts(annotation: np.ndarray, ontology, structure_ids) -> list[float]:
    """Voxel count of each structure (rolled up) in the annotation."""
    from napari_allen.analysis.expression import StructureMembership

    membership = StructureMembership(annotation, ontology, list(structure_ids))
    return [float(n) for n in membership.n_voxels]
