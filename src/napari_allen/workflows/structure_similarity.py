"""Structure similarity (Allen's correlation script) as one job for the dock and the CLI.

Pick the experiments (ids, a gene list, a whole plane, or everything in a plane store), build
the structures x experiments expression matrix (StructureUnionize ``expression_energy`` or the
200 µm grids, downloaded or read from a plane store with dask, optionally on a cluster), then
correlate structures and keep the TOP_N pairs. The "Similarity" tab and ``napari-allen
correlate`` both call :func:`run_structure_similarity` with the same options.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_allen.analysis.correlation import DEFAULT_METHOD, DEFAULT_TOP_N, METHODS, Similarity
from napari_allen.progress import CancelToken, ProgressCallback, check, report
from napari_allen.space import SECTION_PLANES
from napari_allen.workflows.plane_download import SOURCES

#: Plane choices of the experiment selection (None = any plane).


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
                f"({self.source}, {s.method}); {len(s.connections)} connections")


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
    from napari_allen.workflows.plane_download import experiment_table

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
    from napari_allen.analysis.correlation import structure_similarity
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.workflows.plane_download import structure_matrix

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
    ids = select_experiments(client, experiments=experiments, genes=genes, plane=plane,
                             store=store, first=first, cancel=cancel)
    if not ids:
        raise ValueError("no experiments to correlate")
    if source != "unionize":  # the unionize path takes its structures from the API
        ontology = ontology or Ontology.default()
    report(progress, message=f"{len(ids)} experiments: building the {source} matrix")
    matrix, volumes = structure_matrix(client, ids, source=source, ontology=ontology,
                                       store=store, scheduler=scheduler, jobs=jobs,
                                       progress=progress, cancel=cancel)
    check(cancel)
    report(progress, message="correlating structures")
    result = structure_similarity(matrix, top_n=int(top_n), method=method)
    return SimilarityOutcome(result, volumes, ids, source)


def structure_acronyms(structure_ids: Sequence[int], ontology=None) -> list[str]:
    """Acronyms for heatmap/table labels (the id as text when the ontology lacks it)."""
    from napari_allen.atlas.ontology import Ontology

    onto = ontology or Ontology.default()
    return [onto.acronym(s) if s in onto else str(s) for s in structure_ids]

