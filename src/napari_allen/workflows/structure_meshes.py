"""Structure meshes for the viewer: Allen's ``.obj`` files, or computed offline.

:func:`get_structure_mesh` is the one entry point (structure browser, connectivity and
spatial-search docks, demo): ``source="allen"`` downloads Allen's mesh through the client's
file server, ``"computed"`` runs marching cubes on the bundled 25 µm annotation (cached), and
``"auto"`` tries Allen's file first and falls back to the computed mesh when the download
fails (offline, server down, no such file), saying so in ``metadata['fallback']``.

:func:`experiment_target_structures` picks the structures worth showing for connectivity
experiments: their injection structures and their strongest projection targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from napari_allen.atlas.ontology import FIBER_TRACTS_ID, Ontology
from napari_allen.errors import AllenApiError, AllenFormatError
from napari_allen.io.obj_mesh import Mesh
from napari_allen.progress import CancelToken, ProgressCallback

SOURCES = ("auto", "allen", "computed")
#: Roll structures up to this ontology level: areas and nuclei (VPM, SSp-bfd, CP), not
#: cortical layers (st_level 11).
SUMMARY_ST_LEVEL = 9


def get_structure_mesh(structure_id: int | str, *, client=None, source: str = "auto",
                       ontology: Ontology | None = None, cache_dir=None,
                       progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None, process: bool = False) -> Mesh:
    """The mesh of one structure (with descendants), CCF µm ``[AP, DV, ML]`` (see module).
    Computed meshes are cached under ``cache_dir`` (default: the client's cache folder, else
    ``NAPARI_ALLEN_CACHE``); ``process``: built in a child process (the GUI's choice: see
    :func:`iter_structure_meshes`)."""
    from napari_allen.atlas.meshes import structure_mesh

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    onto = ontology or Ontology.default()
    sid = onto.id_of(structure_id)
    fallback = None
    if source in ("auto", "allen") and client is not None:
        try:
            mesh = client.structure_mesh(sid, progress=progress, cancel=cancel)
            mesh.metadata.setdefault("acronym", onto.acronym(sid))
            return mesh
        except (AllenApiError, AllenFormatError) as exc:
            if source == "allen":
                raise
            fallback = f"Allen mesh unavailable ({exc}); computed from the annotation"
    elif source == "allen":
        raise ValueError("source='allen' needs an API client")
    if cache_dir is None and client is not None:
        cache_dir = client.cache_dir
    mesh = structure_mesh(sid, ontology=onto, cache_dir=cache_dir, progress=progress,
                          cancel=cancel, process=process)
    if fallback:
        mesh.metadata["fallback"] = fallback
    return mesh


def iter_structure_meshes(structure_ids: Iterable[int | str], *, client=None,
                          source: str = "computed", ontology: Ontology | None = None,
                          cache_dir=None, progress: ProgressCallback | None = None,
                          cancel: CancelToken | None = None
                          ) -> Iterator[tuple[int, Mesh]]:
    """``(structure id, mesh)`` of each structure, in order, each as soon as it is ready: what
    the docks show. Computed meshes are built by one child process for the whole list
    (:func:`napari_allen.atlas.meshes.iter_structure_meshes`: never holding napari's GIL;
    progress counts structures); Allen's (``source="allen"``/``"auto"``) are downloaded one
    by one, a computed fallback also built in a child process."""
    from napari_allen.atlas.meshes import iter_structure_meshes as computed_meshes

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    onto = ontology or Ontology.default()
    if cache_dir is None and client is not None:
        cache_dir = client.cache_dir
    if source == "computed":
        yield from computed_meshes(structure_ids, ontology=onto, cache_dir=cache_dir,
                                   progress=progress, cancel=cancel)
        return
    for sid in [onto.id_of(s) for s in structure_ids]:
        yield sid, get_structure_mesh(sid, client=client, source=source, ontology=onto,
                                      cache_dir=cache_dir, progress=progress, cancel=cancel,
                                      process=True)


def summary_structure(structure_id: int, ontology: Ontology | None = None) -> int:
    """The structure itself or its nearest ancestor at ``st_level <= 9`` (layer -> area)."""
    onto = ontology or Ontology.default()
    for sid in reversed(onto.ancestors(int(structure_id), include_self=True)):
        level = onto.table.at[sid, "st_level"]
        if pd.notna(level) and int(level) <= SUMMARY_ST_LEVEL:
            return int(sid)
    return int(structure_id)


def _is_tissue(sid: int, onto: Ontology) -> bool:
    """Grey matter worth meshing: not fibre tracts, ventricles or the root."""
    return sid in onto and not onto.membership(FIBER_TRACTS_ID, [sid])[0] and \
        onto.table.at[sid, "depth"] >= 3


def experiment_target_structures(client, experiment_ids: Sequence[int], *, top: int = 4,
                                 injection_structures: Sequence[int] | None = None,
                                 ontology: Ontology | None = None,
                                 cancel: CancelToken | None = None) -> dict[str, list[int]]:
    """``{"injection": [...], "targets": [...]}`` structure ids for connectivity experiments.

    Injection: ``injection_structures`` or the experiments' primary injection structures
    (``structure_id`` of the experiment listing). Targets: the ``top`` structures (areas and
    nuclei, ``st_level <= 9``, grey matter) with the largest projection volume over both
    hemispheres, outside the injection structures, most specific first (an area is dropped
    when one of its sub-areas is listed).
    """
    onto = ontology or Ontology.default()
    ids = [int(e) for e in experiment_ids]
    if injection_structures is None:
        listing = client.connectivity_experiments(cancel=cancel)
        rows = listing[listing["id"].isin(ids)]
        injection_structures = [int(s) for s in rows["structure_id"].dropna()]
    injection = [int(s) for s in dict.fromkeys(injection_structures) if int(s) in onto]
    frame = client.projection_structure_unionize(ids, is_injection=False, hemisphere_ids=[3],
                                                 cancel=cancel)
    if frame.empty:
        return {"injection": injection, "targets": []}
    sids = [int(s) for s in frame["structure_id"]]
    keep = [s in onto and summary_structure(s, onto) == s and _is_tissue(s, onto)
            and not any(s == i or i in onto.ancestors(s) or s in onto.ancestors(i)
                        for i in injection)
            for s in sids]
    frame = frame[keep].assign(summary=[s for s, k in zip(sids, keep, strict=True) if k])
    ranked = _ranked(frame, "projection_volume", 4 * top)
    targets = [s for s in ranked if not any(
        o != s and s in onto.ancestors(o) for o in ranked)][:top]
    return {"injection": injection, "targets": targets}


def _ranked(frame: pd.DataFrame, column: str, n: int) -> list[int]:
    if frame.empty:
        return []
    sums = frame.groupby("summary")[column].sum().sort_values(ascending=False)
    return [int(s) for s in sums.index[:n]]


def structures_at_points(points_um: Iterable, *, top: int = 4,
                         ontology: Ontology | None = None) -> list[int]:
    """The ``top`` summary structures holding most of ``points_um`` (CCF µm, 25 µm
    annotation), grey matter only: e.g. the targets of spatial-search seeds."""
    from napari_allen.atlas.annotation import ccf_annotation_25, structure_id_at

    onto = ontology or Ontology.default()
    pts = np.asarray(list(points_um), dtype=float).reshape(-1, 3)
    if len(pts) == 0:
        return []
    ids = np.atleast_1d(structure_id_at(ccf_annotation_25(), pts))
    counts: dict[int, int] = {}
    for sid in ids[ids > 0]:
        if int(sid) not in onto:
            continue
        summary = summary_structure(int(sid), onto)
        if _is_tissue(summary, onto):
            counts[summary] = counts.get(summary, 0) + 1
    return [s for s, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]
