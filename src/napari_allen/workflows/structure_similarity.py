"""Structure similarity (Allen's correlation script) as one job for the dock and the CLI.

Pick the experiments (ids, a gene list, a whole plane, or everything in a plane store), build
the structures x experiments expression matrix (StructureUnionize ``expression_energy`` or the
200 µm grids, downloaded or read from a plane store with dask, optionally on a cluster), then
correlate structures and keep the TOP_N pairs. The "Similarity" tab and ``napari-allen
correlate`` both call :func:`run_structure_similarity` with the same options.

With StructureUnionize (the script's source) the job is mostly waiting for the API: the
network part runs first and imports nothing heavy, numpy/pandas and the analysis are imported
once the responses are in (``napari-allen correlate`` imports them meanwhile on another
thread, :func:`napari_allen.commands._common.importing_meanwhile`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari_allen.analysis.methods import DEFAULT_METHOD, DEFAULT_TOP_N, METHODS
from napari_allen.progress import CancelToken, ProgressCallback, check, report
from napari_allen.space import SECTION_PLANES
from napari_allen.workflows import MATRIX_SOURCES as SOURCES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from napari_allen.analysis.correlation import Similarity

#: The StructureUnionize columns the correlation reads (the script asks for these and `id`).
UNIONIZE_ONLY = ("structure_id", "sum_pixels", "expression_energy", "section_data_set_id")


@dataclass
class SimilarityOutcome:
    """What :func:`run_structure_similarity` returns: the correlation result, each structure's
    volume (``sum_pixels`` or voxel count, for the script's JSON) and the experiments used."""

    similarity: Similarity
    volumes: dict[int, float]
    experiment_ids: list[int]
    source: str

    def write(self, prefix: str | os.PathLike, ontology=None, *,
              csv: bool = True) -> dict[str, Path]:
        """``PREFIX.structures/.connections/.correlations.json`` (the script's files) and,
        with ``csv``, ``PREFIX.connections.csv``/``.correlations.csv``."""
        if ontology is None and self.similarity.structures is None:
            from napari_allen.atlas.ontology import Ontology

            ontology = Ontology.default()
        return self.similarity.write(prefix, ontology, self.volumes, csv=csv)

    def summary(self) -> str:
        s = self.similarity
        return (f"{len(s.structure_ids)} structures × {s.n_experiments} experiments "
                f"({self.source}, {s.method}); {s.n_connections} connections")


def select_experiments(
    client,
    *,
    experiments: Sequence[int] | None = None,
    genes: Sequence[str] | None = None,
    plane: str | None = None,
    store: str | os.PathLike | None = None,
    first: int | None = None,
    cancel: CancelToken | None = None,
) -> list[int]:
    """The experiment ids to correlate, in this order of precedence: ``experiments`` as given;
    the ISH experiments of ``genes`` (wildcards ``*``, optionally one ``plane``); the data sets
    of ``plane`` that Allen's correlation script lists (expression true, not failed, API order;
    the ``first`` N of them when given); every finished experiment of the plane ``store``."""
    if plane is not None and plane not in SECTION_PLANES:
        raise ValueError(f"plane must be one of {SECTION_PLANES} or None, got {plane!r}")
    if experiments:
        try:
            return [int(e) for e in experiments]
        except (TypeError, ValueError):
            raise ValueError(f"experiment ids must be integers, got {list(experiments)}") \
                from None
    if plane and not genes:
        # Allen's script's data sets: adult mouse ISH in the plane, expression true, not
        # failed, in the API's order; ``first`` = the script's <nprobes> argument.
        records = client.ish_data_set_records(plane, columns=["id"], first=first,
                                              cancel=cancel)
        return [int(r["id"]) for r in records]
    if genes or plane:
        from napari_allen.workflows.plane_download import experiment_table

        table = experiment_table(client, plane=plane, genes=list(genes) if genes else None,
                                 cancel=cancel)
        ids = table["experiment_id"].astype(int).tolist()
        if not ids:
            raise ValueError(f"no ISH experiments for genes={list(genes or [])} "
                             f"plane={plane or 'any'}")
        return ids
    if store is not None:
        from napari_allen.io.plane_store import open_plane_store

        plane_store = open_plane_store(store)
        done = plane_store.completed()
        return [int(e) for e in plane_store.experiment_ids if int(e) in done]
    raise ValueError("choose experiments: ids, genes, a plane or a plane store")


def run_structure_similarity(
    client,
    *,
    experiments: Sequence[int] | None = None,
    genes: Sequence[str] | None = None,
    plane: str | None = None,
    source: str = "unionize",
    method: str = DEFAULT_METHOD,
    first: int | None = None,
    top_n: int = DEFAULT_TOP_N,
    store: str | os.PathLike | None = None,
    scheduler: str | None = None,
    jobs: int = 8,
    ontology=None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SimilarityOutcome:
    """Experiments (:func:`select_experiments`) -> structures x experiments matrix
    (:func:`~napari_allen.workflows.plane_download.structure_matrix`) -> correlation and top
    pairs (:func:`~napari_allen.analysis.correlation.structure_similarity`).

    ``store`` (a plane store folder) makes the grids come from the store (``source`` must be
    ``'grids'``; dask, on the distributed ``scheduler`` address if given); without it grids are
    downloaded with ``jobs`` concurrent requests. Raises ``ValueError`` for impossible options.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if store is not None and source != "grids":
        raise ValueError("a plane store holds grids: use source 'grids' with a store")
    if scheduler and store is None:
        raise ValueError("a dask scheduler is used for plane-store computations only: "
                         "give a plane store too")
    if int(top_n) < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    report(progress, message="choosing experiments")
    if source == "unionize" and plane and not experiments and not genes:
        # The script's data sets of a plane: each listing page's unionizes are requested as
        # soon as the page arrives, while the next pages are listed.
        if plane not in SECTION_PLANES:
            raise ValueError(f"plane must be one of {SECTION_PLANES} or None, got {plane!r}")
        report(progress, message=f"listing the {plane} data sets and fetching their unionizes")
        listed = (int(record["id"])
                  for page in client.ish_data_set_pages(plane, columns=["id"], first=first,
                                                        cancel=cancel)
                  for record in page)
        table = script_unionize_table(client, listed, jobs=jobs, progress=progress,
                                       cancel=cancel)
        return _correlated(table, table.volumes, table.experiment_ids, source, top_n, method,
                           cancel, progress)
    ids = select_experiments(client, experiments=experiments, genes=genes, plane=plane,
                             store=store, first=first, cancel=cancel)
    if not ids:
        raise ValueError("no experiments to correlate")
    report(progress, message=f"{len(ids)} experiments: building the {source} matrix")
    if source == "unionize":  # structures from the API: no ontology, no grids
        table = script_unionize_table(client, ids, jobs=jobs, progress=progress,
                                       cancel=cancel)
        return _correlated(table, table.volumes, ids, source, top_n, method, cancel, progress)
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.workflows.plane_download import structure_matrix

    matrix, volumes = structure_matrix(client, ids, source=source,
                                       ontology=ontology or Ontology.default(),
                                       store=store, scheduler=scheduler, jobs=jobs,
                                       progress=progress, cancel=cancel)
    return _correlated(matrix, volumes, ids, source, top_n, method, cancel, progress)


def _correlated(matrix, volumes, ids, source, top_n, method, cancel, progress
                ) -> SimilarityOutcome:
    """The correlation and top pairs of ``matrix`` (a DataFrame or a
    :class:`UnionizeTable`; the last step of the job)."""
    check(cancel)
    report(progress, message="correlating structures")
    from napari_allen.analysis.correlation import array_similarity, structure_similarity

    if isinstance(matrix, UnionizeTable):
        result = array_similarity(matrix.values, matrix.structure_ids, top_n=int(top_n),
                                  method=method, structures=matrix.structures)
    else:
        result = structure_similarity(matrix, top_n=int(top_n), method=method)
    return SimilarityOutcome(result, volumes, ids, source)


@dataclass
class UnionizeTable:
    """Allen's correlation script's inputs without pandas: ``values`` (structures x
    experiments ``expression_energy``, float64), their ids, the script's structure records
    (``structures.json``) and ``{structure_id: volume}``."""

    values: np.ndarray
    structure_ids: list[int]
    experiment_ids: list[int]
    structures: list[dict]
    volumes: dict[int, float]

    def frame(self) -> tuple[pd.DataFrame, dict[int, float]]:
        """``(matrix, volumes)``: the matrix as a DataFrame (rows ``structure_id``, columns
        ``experiment_id``), the script's records in ``matrix.attrs["structures"]``."""
        import pandas as pd

        matrix = pd.DataFrame(self.values,
                              index=pd.Index(self.structure_ids, name="structure_id"),
                              columns=pd.Index(self.experiment_ids, name="experiment_id"))
        matrix.attrs["structures"] = self.structures
        return matrix, self.volumes


def script_unionize_table(
    client,
    experiment_ids: Sequence[int],
    *,
    structure_ids: Sequence[int] | None = None,
    jobs: int = 8,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> UnionizeTable:
    """Allen's correlation script's inputs, fetched concurrently, as a :class:`UnionizeTable`
    (the correlate job needs no DataFrame: pandas' import alone is a tenth of ``napari-allen
    correlate``; :meth:`UnionizeTable.frame` makes one).

    The structure graph's records (one query) give the rows (leaves sorted by id, unless
    ``structure_ids``) and the records of ``structures.json``
    (:func:`~napari_allen.analysis.correlation.script_structures`); StructureUnionize comes
    one experiment per query, ``jobs`` at a time, with only the columns the script reads.
    ``experiment_ids`` may be an iterator (ids still being listed). ValueError when there is
    no experiment.
    """
    from concurrent.futures import ThreadPoolExecutor

    builders: list = []  # the ScriptMatrixBuilder, made with the first response

    def builder():
        if not builders:
            # numpy and the matrix code: imported once requests are on their way, never
            # before the first one (napari-allen correlate imports them meanwhile).
            from napari_allen.analysis.correlation import ScriptMatrixBuilder

            builders.append(ScriptMatrixBuilder())
            if structure_ids is not None:
                builders[0].set_rows(structure_ids)
        return builders[0]

    # The structure graph is independent of the unionizes: fetch it alongside them (one
    # round trip less on the critical path), on a connection of its own (a full pool would
    # drop one, with a warning, and a later request would connect again).
    ensure_pool = getattr(getattr(client, "http", None), "ensure_pool", None)
    if ensure_pool is not None:
        ensure_pool(jobs + 1)
    with ThreadPoolExecutor(1, thread_name_prefix="allen-structures") as pool:
        structures = pool.submit(client.structure_records, cancel=cancel)

        def reduce(experiment_id: int, records: list[dict]) -> int:
            # Each experiment's column is made as it arrives, while the others are on the
            # way: the rows (the leaves) are known once the structure graph is in.
            matrix = builder()
            if matrix.rows is None and structures.done() and structures.exception() is None:
                from napari_allen.analysis.correlation import script_leaves

                matrix.set_rows(script_leaves(structures.result()))
            matrix.add(experiment_id, records)
            return len(records)

        unionizes = client.structure_unionize_records(
            experiment_ids, columns=UNIONIZE_ONLY, jobs=jobs, progress=progress, cancel=cancel,
            convert=reduce)
        structure_rows = structures.result()
    check(cancel)
    if not unionizes:
        raise ValueError("no experiments to correlate")
    from napari_allen.analysis.correlation import script_structures

    order = list(unionizes)
    matrix = builder()
    leaves, records = script_structures(structure_rows,
                                        last_sum_pixels=matrix.last_sum_pixels(order))
    rows = leaves if structure_ids is None else [int(s) for s in structure_ids]
    matrix.set_rows(rows)
    values = matrix.matrix(order)
    volumes = {int(r["id"]): float(r["volume"]) for r in records
               if r.get("volume") is not None}
    return UnionizeTable(values, list(dict.fromkeys(int(s) for s in rows)),
                          list(dict.fromkeys(int(e) for e in order)), records, volumes)


def structure_acronyms(structure_ids: Sequence[int], ontology=None) -> list[str]:
    """Acronyms for heatmap/table labels (the id as text when the ontology lacks it)."""
    from napari_allen.atlas.ontology import Ontology

    onto = ontology or Ontology.default()
    return [onto.acronym(s) if s in onto else str(s) for s in structure_ids]

