"""Layers of spatial-search lines: 3-D Shapes paths, a 2-D-visible Vectors companion, injection
points and the fibre-tract Labels (LayerDataTuples, no Qt).

Coordinates are CCF µm ``[AP, DV, ML]`` with scale 1 and µm units, so the layers overlay the
grid layers (scale = resolution). A 3-D Shapes path only shows in a 2-D slice when it lies
wholly inside it (napari #1334), hence the companion: the same paths split into Vectors
segments drawn whatever the slice (``projection_mode='all'`` where napari has it, as in 0.9;
``out_of_slice_display`` on older versions).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_allen.io.lines_json import LAYER_META_KEY, LineRecord, read_lines_json
from napari_allen.space import layer_space_kwargs

if TYPE_CHECKING:
    from napari_allen.atlas.fiber_tracts import FiberTracts
    from napari_allen.atlas.ontology import Ontology

LayerDataTuple = tuple

#: A qualitative palette (Okabe-Ito then Tableau-like), one colour per experiment, cycling.
PALETTE: tuple[str, ...] = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf",
)
COLOR_BY: tuple[str, ...] = ("experiment", "target_density")
LINE_WIDTH_UM = 20.0
INJECTION_POINT_SIZE_UM = 100.0


def _hex_rgba(text: str) -> tuple[float, float, float, float]:
    text = text.lstrip("#")
    return (int(text[0:2], 16) / 255, int(text[2:4], 16) / 255, int(text[4:6], 16) / 255, 1.0)


def experiment_colors(experiments: Sequence[int]) -> dict[int, tuple[float, float, float, float]]:
    """A stable colour per experiment id: ids sorted, palette assigned in order (cycling)."""
    unique = sorted({int(e) for e in experiments})
    return {e: _hex_rgba(PALETTE[i % len(PALETTE)]) for i, e in enumerate(unique)}


def _layer_supports(layer_type: str, keyword: str) -> bool:
    import napari.layers

    cls = getattr(napari.layers, layer_type)
    return keyword in inspect.signature(cls.__init__).parameters


def _show_all_slices(layer_type: str) -> dict:
    """Keyword showing out-of-slice items in 2-D, for this napari version."""
    if _layer_supports(layer_type, "projection_mode"):
        return {"projection_mode": "all"}
    if _layer_supports(layer_type, "out_of_slice_display"):
        return {"out_of_slice_display": True}
    return {}


def _as_lines(lines: Sequence[LineRecord | Mapping]) -> list[LineRecord]:
    return [ln if isinstance(ln, LineRecord) else LineRecord.from_record(ln) for ln in lines]


def lines_layers(
    lines: Sequence[LineRecord | Mapping],
    injection_coordinates: Any = None,
    *,
    name: str = "spatial search",
    color_by: str = "experiment",
    metadata: Mapping | None = None,
    companion: bool = True,
    paths: bool = True,
) -> list[LayerDataTuple]:
    """LayerDataTuples for spatial-search lines (records as served, or :class:`LineRecord`).

    Returns, in order: the Shapes path layer ``"<name> lines"`` (features ``experiment``,
    ``target_density``, ``injection_structure``, ``record_index``, seed µm), the Vectors
    companion ``"<name> lines (2-D)"`` when ``companion``, and the Points layer
    ``"<name> injection sites"`` when injection coordinates (µm ``(N, 3)``) are given. The
    Shapes metadata keeps the records so the layer can be saved as the lines JSON.

    ``paths=False`` leaves the Shapes layer out (the Vectors companion alone): napari
    triangulates every Shapes path (~0.1 ms a path with its compiled ``bermuda`` backend,
    0.3-3 ms in pure Python), too slow to repeat for the growing partial results of a
    running search.
    """
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    parsed = _as_lines(lines)
    space = layer_space_kwargs(1.0)  # paths are already in µm
    injection = (np.empty((0, 3)) if injection_coordinates is None
                 else np.asarray(injection_coordinates, dtype=float).reshape(-1, 3))
    layer_meta = {
        LAYER_META_KEY: {
            **dict(metadata or {}),
            "records": [ln.record for ln in parsed],
            "injection_coordinates": injection.tolist(),
        }
    }
    out: list[LayerDataTuple] = []
    if parsed:
        # napari needs two vertices per path; a one-point path (seed at the injection) is
        # drawn as a zero-length segment.
        path_data = [ln.coords_um if len(ln.coords_um) > 1
                     else np.repeat(ln.coords_um, 2, axis=0) for ln in parsed]
        features = pd.DataFrame({
            "experiment": np.array([ln.experiment_id for ln in parsed], dtype=np.int64),
            "target_density": np.array([ln.target_density for ln in parsed], dtype=float),
            "injection_structure": [ln.injection_structure for ln in parsed],
            "record_index": np.arange(len(parsed), dtype=np.int64),
            "seed_ap_um": [ln.seed_um[0] for ln in parsed],
            "seed_dv_um": [ln.seed_um[1] for ln in parsed],
            "seed_ml_um": [ln.seed_um[2] for ln in parsed],
        })
        colors = experiment_colors(features["experiment"])
        if color_by == "experiment":
            edge = {"edge_color": np.array([colors[int(e)] for e in features["experiment"]])}
        else:
            edge = {"edge_color": "target_density", "edge_colormap": "viridis"}
        if paths:
            out.append(_shapes_layer(path_data, features, layer_meta, name, edge, space))
        if companion:
            out.append(_vectors_companion(path_data, features, colors, name, color_by, space))
    if len(injection):
        out.append((injection, {
            "name": f"{name} injection sites",
            "size": INJECTION_POINT_SIZE_UM,
            "face_color": "red",
            "border_color": "white",
            "symbol": "disc",
            "metadata": {LAYER_META_KEY: {**dict(metadata or {}),
                                           "injection_coordinates": injection.tolist()}},
            **space,
        }, "points"))
    return out


def _shapes_layer(paths: list[np.ndarray], features: pd.DataFrame, layer_meta: dict, name: str,
                  edge: dict, space: dict) -> LayerDataTuple:
    """The 3-D path layer (see :func:`lines_layers`)."""
    return (paths, {
        "name": f"{name} lines",
        "shape_type": "path",
        "edge_width": LINE_WIDTH_UM,
        "face_color": "transparent",
        "features": features,
        "metadata": layer_meta,
        **edge,
        **space,
    }, "shapes")


def _vectors_companion(paths: list[np.ndarray], features: pd.DataFrame, colors: dict,
                       name: str, color_by: str, space: dict) -> LayerDataTuple:
    """Every path split into (start, displacement) segments: Vectors data ``(M, 2, 3)``."""
    segments, owner = [], []
    for i, path in enumerate(paths):
        starts, ends = path[:-1], path[1:]
        segments.append(np.stack([starts, ends - starts], axis=1))
        owner.append(np.full(len(starts), i))
    data = np.concatenate(segments) if segments else np.empty((0, 2, 3))
    line = np.concatenate(owner) if owner else np.empty(0, dtype=int)
    vec_features = features.iloc[line].reset_index(drop=True)
    if color_by == "experiment":
        edge = {"edge_color": np.array([colors[int(e)] for e in vec_features["experiment"]])}
    else:
        edge = {"edge_color": "target_density", "edge_colormap": "viridis"}
    return (data, {
        "name": f"{name} lines (2-D)",
        "edge_width": LINE_WIDTH_UM,
        "length": 1.0,
        "vector_style": "line",
        "features": vec_features,
        **edge,
        **_show_all_slices("Vectors"),
        **space,
    }, "vectors")


def read_lines_json_layers(path: str | os.PathLike) -> list[LayerDataTuple]:
    """The layers of a lines JSON file (the plugin reader's entry for these files)."""
    doc = read_lines_json(path)
    meta = dict(doc.metadata)
    meta.setdefault("source", str(path))
    return lines_layers(doc.lines, doc.injection_coordinates, name=Path(path).stem,
                        metadata=meta)


def fiber_tract_layer(fiber_tracts: FiberTracts, resolution: float = 100.0, *,
                      ontology: Ontology | None = None,
                      name: str = "fibre tracts") -> LayerDataTuple:
    """An atlas-coloured Labels layer of the fibre tracts on the grid at ``resolution`` µm
    (default 100 µm: 1.2 M voxels, light enough to overlay connectivity grids)."""
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.layers.volumes import labels_layer

    labels = fiber_tracts.tract_labels(resolution)
    # Context, not content: faint enough that the lines inside stay visible in 3-D.
    return labels_layer(labels, float(resolution), ontology=ontology or Ontology.default(),
                        name=name, opacity=0.25)
