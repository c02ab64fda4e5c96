"""ISH jobs of the "Gene expression" dock and the ISH commands: search experiments, load their
200 µm grids, per-structure expression of one grid.

- :func:`search` — ``napari-allen search-ish`` / the Search tab;
- :func:`iter_grids` — ``napari-allen download`` / "Load selected" (one volume at a time);
- :func:`structure_table` and :func:`grid_from_source` — ``napari-allen expression-table`` /
  the "Per structure" tab.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_allen.lazy import lazy_module
from napari_allen.progress import CancelToken, ProgressCallback, check, report
from napari_allen.space import ISH_VOLUMES

pd = lazy_module("pandas")  # imported at first use: the docks open without it

#: Search-result columns users read first (the rest stay for metadata).
SEARCH_COLUMNS = ["experiment_id", "gene", "gene_name", "plane", "section_thickness"]


def search(
    client,
    genes: Sequence[str],
    *,
    plane: str | None = None,
    field: str = "acronym",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """ISH experiments of ``genes`` (acronyms or names, ``*`` wildcards, case-insensitive),
    one row per experiment in API order, :data:`SEARCH_COLUMNS` first."""
    genes = [g for g in genes if str(g).strip()]
    if not genes:
        raise ValueError("type a gene acronym or name first (wildcards *, e.g. Htr*)")
    frame = client.search_ish(genes, plane, field=field, progress=progress, cancel=cancel)
    if "experiment_id" in frame:
        frame = frame.drop_duplicates("experiment_id")
    cols = [c for c in SEARCH_COLUMNS if c in frame.columns]
    return frame[cols + [c for c in frame.columns if c not in cols]].reset_index(drop=True)


def _plain(value: Any) -> Any:
    """numpy/pandas scalars -> Python values for layer metadata (NaN/NA -> None)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def iter_grids(
    client,
    experiments: Sequence[Mapping[str, Any]],
    volumes: Sequence[str] = ("energy",),
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Iterator:
    """Yield each experiment's grids (:class:`~napari_allen.io.volume.GridVolume`, ``[AP, DV,
    ML]`` 200 µm) as they arrive; search-result columns (gene, plane, ...) go into metadata.
    ``experiments``: rows with at least ``experiment_id``."""
    volumes = [v for v in volumes if v in ISH_VOLUMES]
    if not experiments or not volumes:
        raise ValueError("select experiments and at least one of energy/density/intensity")
    rows = list(experiments)
    for n, row in enumerate(rows):
        check(cancel)
        eid = int(row["experiment_id"])
        for vol in client.grid_volumes(eid, volumes, cancel=cancel):
            for key in SEARCH_COLUMNS:
                value = _plain(row.get(key))
                if value is not None:
                    vol.metadata[key] = value
            yield vol
        report(progress, done=n + 1, total=len(rows), message=f"loaded {eid}")


def structure_table(data: np.ndarray, *, rollup: bool = True) -> pd.DataFrame:
    """Per-structure expression of a 200 µm ``[AP, DV, ML]`` grid against the bundled
    gridAnnotation (NaN and -1 excluded), in ontology order; ``rollup`` includes each
    structure's descendants. Raises ``ValueError`` for another grid shape."""
    from napari_allen.analysis.expression import structure_expression
    from napari_allen.atlas.annotation import grid_annotation

    annotation = np.asarray(grid_annotation().data)
    data = np.asarray(data)
    if data.shape != annotation.shape:
        raise ValueError(f"grid {data.shape} is not the 200 µm ISH grid {annotation.shape}: "
                         "per-structure tables need a 200 µm expression grid")
    return structure_expression(data, annotation, rollup=rollup)


def grid_from_source(client, source: str, volume: str = "energy", *,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None):
    """The expression grid of ``source``: a grid file/zip/folder, or a SectionDataSet id
    (downloaded, cached). Raises ``ValueError`` naming what is wrong."""
    if Path(source).exists():
        from napari_allen.io import read_volumes

        grids = [v for v in read_volumes(source) if not v.is_labels]
        chosen = [v for v in grids if v.kind == volume] or grids
        if not chosen:
            raise ValueError(f"{source}: no expression grid found")
        return chosen[0]
    if str(source).isdigit():
        (grid,) = client.grid_volumes(int(source), (volume,), progress=progress, cancel=cancel)
        return grid
    raise ValueError(f"{source} is neither a file nor an experiment id")
