"""Layers of the gene-expression workflows (LayerDataTuples, no Qt).

- :func:`plane_store_layers`: a whole-plane store as one lazy 4-D image
  ``(experiment, AP, DV, ML)``; moving the experiment slider reads one chunk (one volume).
  The array is a plain lazy view, not dask: the layer is built in a worker, and napari's one
  global dask cache is not thread-safe (see ``layers/volumes.LAZY_VOXELS``).
- :func:`experiment_at`: the experiment/gene row for a slider position (the widget shows it).
- :func:`connections_layer`: the top correlated structure pairs as 3-D lines between
  structure centroids (µm), features ``source, target, source_acronym, target_acronym, r``,
  coloured and weighted by r.
- :func:`heatmap_rgba` / :func:`correlation_heatmap_layer`: the correlation matrix as colours.
- :func:`expression_table_for`: the per-structure table of a loaded 200 µm grid layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_allen.analysis.expression import structure_centroids, structure_expression
from napari_allen.atlas.ontology import Ontology
from napari_allen.errors import AllenFormatError
from napari_allen.io.plane_store import PlaneStore, open_plane_store
from napari_allen.layers.volumes import LazyView
from napari_allen.space import AXES

LayerDataTuple = tuple
STORE_META_KEY = "napari_allen_plane_store"
LINE_WIDTH_UM = (15.0, 60.0)  # line width (µm) for the lowest and highest r shown


def store_contrast_limits(store: PlaneStore, sample: int = 8) -> tuple[float, float]:
    """Display range from a few written volumes (0 .. 99.5th percentile of valid voxels).

    Reading every volume of a 20,000-experiment store to set a contrast would defeat lazy
    loading, so only ``sample`` completed experiments spread over the store are read.
    """
    done = sorted(store.index_of(e) for e in store.completed())
    if not done:
        return (0.0, 1.0)
    picks = [done[i] for i in np.linspace(0, len(done) - 1, min(sample, len(done))).astype(int)]
    try:
        values = np.concatenate([np.asarray(store.array[i]).ravel() for i in picks])
    except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise many types on bad chunks
        raise AllenFormatError(store.path, f"cannot read written experiments (damaged chunk?): "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from None
    values = values[np.isfinite(values) & (values >= 0)]
    if values.size == 0:
        return (0.0, 1.0)
    high = float(np.percentile(values, 99.5))
    return (0.0, high if high > 0 else 1.0)


def plane_store_layers(path: str | os.PathLike) -> list[LayerDataTuple]:
    """One lazy 4-D image layer ``(experiment, AP, DV, ML)`` for a plane store.

    Scale is ``(1, res, res, res)`` µm; ``-1`` and unwritten experiments show as NaN (each
    slice napari asks for is read from the store and converted then, on any thread). The
    layer metadata holds the experiment table (``experiments``, a DataFrame in axis order) and
    the store path, so a widget can name the gene under the slider with :func:`experiment_at`.
    """
    store = open_plane_store(path)
    res = store.resolution
    plane = store.plane or "ISH"
    kwargs: dict[str, Any] = {
        "name": f"{plane} {store.volume} ({len(store)} experiments)",
        "scale": (1.0, res, res, res),
        "units": ("pixel", "um", "um", "um"),
        "axis_labels": ("experiment", *AXES),
        "colormap": "magma",
        "blending": "additive",
        "contrast_limits": store_contrast_limits(store),
        "metadata": {
            STORE_META_KEY: {
                "path": str(store.path),
                "volume": store.volume,
                "plane": store.plane,
                "resolution": res,
            },
            "experiments": store.table,
        },
    }
    return [(LazyView(store.array, _negative_as_nan, np.float32), kwargs, "image")]


def _negative_as_nan(block: np.ndarray) -> np.ndarray:
    """Allen's ``-1`` (no data) as NaN (unwritten experiments are NaN already), float32."""
    return np.where(block < 0, np.float32(np.nan), block).astype(np.float32, copy=False)


def experiment_at(metadata: Mapping, index: int) -> dict | None:
    """The experiment-table row (as a dict) at experiment-axis ``index``, or None."""
    table = metadata.get("experiments")
    if table is None or not 0 <= int(index) < len(table):
        return None
    return {k: (v.item() if hasattr(v, "item") else v)
            for k, v in table.iloc[int(index)].to_dict().items()}


def describe_experiment(row: Mapping | None) -> str:
    """``"Nrp1 (neuropilin 1) · exp 74272479 · coronal"`` for a table row."""
    if not row:
        return "no experiment"
    gene = row.get("gene") or "?"
    parts = [str(gene)]
    if row.get("gene_name") and str(row["gene_name"]) != "nan":
        parts[0] += f" ({row['gene_name']})"
    parts.append(f"exp {row.get('experiment_id')}")
    if row.get("plane") and str(row["plane"]) != "nan":
        parts.append(str(row["plane"]))
    return " · ".join(parts)


# --------------------------------------------------------------------------------------------
# structure similarity
# --------------------------------------------------------------------------------------------
def connections_layer(
    connections: pd.DataFrame,
    annotation: np.ndarray,
    resolution: float,
    ontology: Ontology | None = None,
    *,
    name: str = "structure correlation",
    hemisphere: str = "right",
) -> LayerDataTuple:
    """Shapes ``line`` layer joining the centroids (µm, ``[AP, DV, ML]``) of correlated pairs.

    ``connections`` has ``source, target, corr`` (:func:`~napari_allen.analysis.correlation.
    top_pairs`). Centroids come from ``annotation`` at ``resolution`` µm in one hemisphere
    (see :func:`~napari_allen.analysis.expression.structure_centroids`); pairs whose structures
    are not in the annotation are left out. Colour (viridis) and width follow r.
    """
    ontology = ontology or Ontology.default()
    ids = sorted(set(connections["source"].astype(int)) | set(connections["target"].astype(int)))
    cents = structure_centroids(annotation, resolution, ids, ontology, hemisphere=hemisphere)
    where = cents.set_index("structure_id")[["ap_um", "dv_um", "ml_um"]]
    src = where.reindex(connections["source"].astype(int)).to_numpy()
    dst = where.reindex(connections["target"].astype(int)).to_numpy()
    ok = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1)
    kept = connections[ok].reset_index(drop=True)
    lines = [np.stack([a, b]) for a, b in zip(src[ok], dst[ok], strict=True)]
    r = kept["corr"].to_numpy(dtype=float)

    def acr(sid: int) -> str:
        return ontology.acronym(sid) if sid in ontology else str(sid)

    features = pd.DataFrame({
        "source": kept["source"].astype(np.int64),
        "target": kept["target"].astype(np.int64),
        "source_acronym": [acr(int(s)) for s in kept["source"]],
        "target_acronym": [acr(int(t)) for t in kept["target"]],
        "r": r,
    })
    lo, hi = (float(r.min()), float(r.max())) if r.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    widths = LINE_WIDTH_UM[0] + (r - lo) / span * (LINE_WIDTH_UM[1] - LINE_WIDTH_UM[0])
    kwargs: dict[str, Any] = {
        "name": name,
        "ndim": 3,  # also when no pair survived (an empty Shapes layer would be 2-D)
        "shape_type": "line",
        "features": features,
        "edge_width": widths.tolist() if r.size else LINE_WIDTH_UM[0],
        "edge_color": "r" if r.size else "white",
        "face_color": "transparent",
        "scale": (1.0, 1.0, 1.0),
        "units": ("um", "um", "um"),
        "axis_labels": AXES,
        "opacity": 0.8,
        "metadata": {"connections": kept, "hemisphere": hemisphere},
    }
    if r.size:
        kwargs["edge_colormap"] = "viridis"
        kwargs["edge_contrast_limits"] = (lo, hi if hi > lo else lo + 1e-6)
    return (lines, kwargs, "shapes")


def heatmap_rgba(corr: np.ndarray, vmin: float = -1.0, vmax: float = 1.0) -> np.ndarray:
    """Blue (vmin) - white (0) - red (vmax) RGBA uint8 image of a correlation matrix.

    NaN is mid grey, so missing pairs are visible, not mistaken for r = 0.
    """
    corr = np.asarray(corr, dtype=np.float64)
    t = np.clip((corr - vmin) / (vmax - vmin), 0.0, 1.0) * 2.0 - 1.0  # -1 .. 1
    rgba = np.empty((*corr.shape, 4), dtype=np.float64)
    neg = np.clip(-t, 0, 1)
    pos = np.clip(t, 0, 1)
    rgba[..., 0] = 1.0 - neg * 0.8
    rgba[..., 1] = 1.0 - (neg + pos) * 0.8
    rgba[..., 2] = 1.0 - pos * 0.8
    rgba[..., 3] = 1.0
    rgba[np.isnan(corr)] = (0.5, 0.5, 0.5, 1.0)
    return (rgba * 255).round().astype(np.uint8)


def correlation_heatmap_layer(
    corr: np.ndarray,
    structure_ids: Sequence[int],
    ontology: Ontology | None = None,
    *,
    name: str = "structure correlation heatmap",
) -> LayerDataTuple:
    """The correlation matrix as a 2-D image layer (r in -1..1, 'PiYG'), rows/columns =
    structures; ``metadata['structures']`` lists id and acronym per row for hover lookups."""
    ontology = ontology or Ontology.default()
    ids = [int(s) for s in structure_ids]
    table = pd.DataFrame({
        "structure_id": ids,
        "acronym": [ontology.acronym(s) if s in ontology else str(s) for s in ids],
    })
    kwargs = {
        "name": name,
        "colormap": "PiYG",
        "contrast_limits": (-1.0, 1.0),
        "axis_labels": ("structure (row)", "structure (column)"),
        "metadata": {"structures": table},
        "interpolation2d": "nearest",
    }
    return (np.asarray(corr, dtype=np.float32), kwargs, "image")


# --------------------------------------------------------------------------------------------
# per-structure table of a loaded layer
# --------------------------------------------------------------------------------------------
def expression_table_for(
    data: np.ndarray,
    annotation: np.ndarray | None = None,
    ontology: Ontology | None = None,
) -> pd.DataFrame:
    """Per-structure expression (rolled up) for a ``[AP, DV, ML]`` 200 µm grid layer's data.

    ``annotation`` defaults to the bundled gridAnnotation; NaN and -1 voxels are excluded.
    """
    if annotation is None:
        from napari_allen.atlas.annotation import grid_annotation

        annotation = np.asarray(grid_annotation().data)
    data = np.asarray(data)
    if data.shape != annotation.shape:
        raise ValueError(
            f"the layer's grid {data.shape} does not match the annotation {annotation.shape}: "
            "per-structure tables need a 200 µm ISH grid (67, 41, 58)"
        )
    return structure_expression(data, annotation, ontology)
