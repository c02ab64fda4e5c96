"""LayerDataTuples for connectivity: per-experiment volumes, injection sites, group averages,
significance masks. Grids are ``[AP, DV, ML]`` with µm scale; Points are µm with scale 1.
No Qt here: widgets add the tuples on the main thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from napari_allen.analysis.projections import (
    AveragingResult,
    injection_centroid,
    injection_voxels_um,
)
from napari_allen.atlas.ontology import Ontology
from napari_allen.space import AXES, UNITS, layer_space_kwargs

LayerDataTuple = tuple[Any, dict, str]

#: Colormap per connectivity image (injections green so they stand out over projections).
COLORMAPS: dict[str, str] = {
    "projection_density": "magma",
    "projection_energy": "inferno",
    "density": "magma",
    "energy": "inferno",
    "injection_density": "green",
    "injection_fraction": "green",
    "injection_energy": "green",
    "injection": "green",
    "data_mask": "gray",
}


def _napari_at_least(major: int, minor: int) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = version("napari").split(".")
    except PackageNotFoundError:
        return True
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return True


def _points_projection_kwargs() -> dict:
    """Show points in every 2-D slice: ``projection_mode='all'`` (napari >= 0.9), else the
    older ``out_of_slice_display``."""
    if _napari_at_least(0, 9):
        return {"projection_mode": "all"}
    return {"out_of_slice_display": True}


def _line_text(value) -> str:
    if isinstance(value, Mapping):
        value = value.get("name")
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def experiment_label(experiment_id: int, structure: str | None = None) -> str:
    """``"exp 158375425, VPM"`` (or ``"exp 158375425"``)."""
    structure = (structure or "").strip()
    return f"exp {int(experiment_id)}, {structure}" if structure else f"exp {int(experiment_id)}"


def experiment_volume_layer(vol, experiment: Mapping | None = None, **overrides) -> LayerDataTuple:
    """An image layer for one experiment's volume, e.g.
    ``"projection density (exp 158375425, VPM)"``; ``experiment`` (a search-result row) goes to
    ``metadata['experiment']``. ``vol`` is a :class:`~napari_allen.io.volume.GridVolume`."""
    from napari_allen.layers.volumes import image_layer

    exp = dict(experiment or {})
    exp_id = exp.get("id", vol.metadata.get("experiment_id"))
    image = vol.metadata.get("image", vol.kind)
    kind_text = str(image).replace("_", " ")
    name = (f"{kind_text} ({experiment_label(exp_id, exp.get('structure_abbrev'))})"
            if exp_id is not None else vol.name)
    metadata = dict(vol.metadata)
    if image == "injection_density":
        try:  # where the injection really is, next to the metadata coordinates
            metadata["injection_centroid_um"] = injection_centroid(
                vol.data, vol.resolution).round(1).tolist()
        except ValueError:
            metadata["injection_centroid_um"] = None
    if exp:
        metadata["experiment"] = {k: _plain(v) for k, v in exp.items()}
    kwargs = {"name": name, "colormap": COLORMAPS.get(str(image), "magma"),
              "blending": "additive", "metadata": metadata}
    kwargs.update(overrides)
    return image_layer(vol, **kwargs)


def _plain(value):
    """JSON-friendly scalars for layer metadata."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _structure_colors(structure_ids, ontology: Ontology) -> np.ndarray:
    colors = np.ones((len(structure_ids), 4), dtype=float)
    for i, sid in enumerate(structure_ids):
        if pd.notna(sid) and int(sid) in ontology:
            colors[i, :3] = np.asarray(ontology.rgb(int(sid))) / 255.0
    return colors


def injection_sites_layer(
    experiments: pd.DataFrame,
    *,
    ontology: Ontology | None = None,
    name: str = "injection sites",
    size: float = 250.0,
) -> LayerDataTuple:
    """Points at each experiment's metadata injection coordinates (µm ``[AP, DV, ML]`` =
    ``injection_x/y/z``), coloured by injection structure, with features ``experiment,
    structure, line, volume`` for hover and tables. Rows without coordinates are left out."""
    onto = ontology or Ontology.default()
    coords = experiments[["injection_x", "injection_y", "injection_z"]].apply(
        pd.to_numeric, errors="coerce").to_numpy(float)
    keep = np.isfinite(coords).all(axis=1)
    rows = experiments[keep]
    features = pd.DataFrame({
        "experiment": rows["id"].astype("int64").to_numpy(),
        "structure": rows.get("structure_abbrev", pd.Series([""] * len(rows))).astype(str)
        .str.strip().to_numpy(),
        "line": [(_line_text(v) or "wild type") for v in rows.get(
            "transgenic_line", pd.Series([None] * len(rows)))],
        "volume": pd.to_numeric(rows.get("injection_volume", np.nan), errors="coerce"),
    }).reset_index(drop=True)
    sids = rows["structure_id"].to_numpy() if "structure_id" in rows else [None] * len(rows)
    kwargs = {
        "name": name,
        "features": features,
        "face_color": _structure_colors(sids, onto) if len(rows) else "white",
        "border_color": "white",
        "size": float(size),
        "symbol": "star",
        "units": UNITS,
        "axis_labels": AXES,
        "metadata": {"kind": "injection_sites", "experiment_ids": features["experiment"].tolist()},
        **_points_projection_kwargs(),
    }
    return coords[keep], kwargs, "points"


def injection_voxels_layer(
    vol,
    *,
    threshold: float = 0.5,
    experiment: Mapping | None = None,
    ontology: Ontology | None = None,
) -> LayerDataTuple:
    """Points at the voxels of an injection fraction/density volume above ``threshold``
    (default 0.5, Allen's lines example), in µm, coloured by the injection structure."""
    exp = dict(experiment or {})
    exp_id = exp.get("id", vol.metadata.get("experiment_id"))
    pts = injection_voxels_um(np.asarray(vol.data), vol.resolution, threshold)
    n = len(pts)
    features = pd.DataFrame({
        "experiment": np.full(n, -1 if exp_id is None else int(exp_id), dtype=np.int64),
        "structure": [str(exp.get("structure_abbrev", "")).strip()] * n,
        "line": [_line_text(exp.get("transgenic_line")) or "wild type"] * n,
        "volume": np.full(n, float(exp.get("injection_volume", np.nan) or np.nan)),
    })
    onto = ontology or Ontology.default()
    sid = exp.get("structure_id")
    color = _structure_colors([sid], onto)[0]
    label = experiment_label(exp_id, exp.get("structure_abbrev")) if exp_id is not None else ""
    kwargs = {
        "name": f"injection voxels > {threshold:g} ({label})" if label
        else f"injection voxels > {threshold:g}",
        "features": features,
        "face_color": color,
        "border_width": 0,
        "size": float(vol.resolution),
        "symbol": "square",
        "opacity": 0.6,
        "units": UNITS,
        "axis_labels": AXES,
        "metadata": {"kind": "injection_voxels", "threshold": float(threshold),
                     "experiment_id": exp_id, "source": vol.source},
        **_points_projection_kwargs(),
    }
    return pts, kwargs, "points"


def _contrast(data: np.ndarray, symmetric: bool) -> tuple[float, float]:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        hi = float(np.percentile(np.abs(finite), 99.9)) or 1.0
        return -hi, hi
    lo, hi = float(finite.min()), float(np.percentile(finite, 99.9))
    return lo, hi if hi > lo else lo + 1.0


def average_layers(result: AveragingResult, *, stack: bool = False) -> list[LayerDataTuple]:
    """Image layers for an averaging result: one per group (name like
    ``"mean projection density, AP 5800 µm (n=12)"``) or, with ``stack=True``, one layer
    with a leading group axis. Hemisphere-subtracted means get a diverging colormap with
    symmetric contrast (ipsilateral positive)."""
    opts = result.options
    subtracted = opts.subtract_hemisphere
    what = "mean projection density"
    if opts.normalization == "injection_volume":
        what += " / injection volume"
    if subtracted:
        what += ", ipsi - contra"
    common = {
        "colormap": "PiYG" if subtracted else "magma",
        "blending": "translucent" if subtracted else "additive",
    }
    base_meta = {
        "kind": "projection_average",
        "options": {"normalization": opts.normalization,
                    "subtract_hemisphere": opts.subtract_hemisphere,
                    "ipsilateral": opts.ipsilateral, "group_by": opts.group_by,
                    "bins": opts.bins},
        "experiments": result.table.to_dict("records"),
        "skipped": dict(result.skipped),
    }
    if not result.groups:
        return []
    if stack:
        data = result.stack()
        space = layer_space_kwargs(result.resolution)
        kwargs = {
            "name": f"{what} (stack of {len(result.groups)} groups)",
            "scale": (1.0, *space["scale"]),
            "units": ("pixel", *space["units"]),
            "axis_labels": ("group", *space["axis_labels"]),
            "contrast_limits": _contrast(data, subtracted),
            "metadata": {**base_meta, "groups": [
                {"index": g.info.index, "name": g.info.name, "experiments": g.experiment_ids,
                 "center_um": g.info.center_um} for g in result.groups]},
            **common,
        }
        return [(data, kwargs, "image")]
    layers = []
    for group in result.groups:
        label = "" if result.options.group_by == "none" else f"{group.info.name} "
        kwargs = {
            "name": f"{what}, {label}(n={group.n_experiments})",
            "contrast_limits": _contrast(group.mean, subtracted),
            "metadata": {**base_meta, "group": group.info.name,
                         "group_center_um": group.info.center_um,
                         "group_axis": group.info.axis,
                         "experiment_ids": list(group.experiment_ids)},
            **layer_space_kwargs(result.resolution),
            **common,
        }
        layers.append((group.mean, kwargs, "image"))
    return layers


def individual_stack_layer(result: AveragingResult) -> LayerDataTuple | None:
    """The processed per-experiment volumes of a result (``keep_individual=True``) as one
    layer with a leading experiment axis (ids in ``metadata['experiment_ids']``), or None."""
    if not result.individual:
        return None
    ids = list(result.individual)
    data = np.stack([result.individual[i] for i in ids])
    space = layer_space_kwargs(result.resolution)
    subtracted = result.options.subtract_hemisphere
    kwargs = {
        "name": f"processed projections ({len(ids)} experiments)",
        "scale": (1.0, *space["scale"]),
        "units": ("pixel", *space["units"]),
        "axis_labels": ("experiment", *space["axis_labels"]),
        "contrast_limits": _contrast(data, subtracted),
        "colormap": "PiYG" if subtracted else "magma",
        "blending": "translucent" if subtracted else "additive",
        "metadata": {"kind": "projection_individual", "experiment_ids": ids},
    }
    return data, kwargs, "image"


def mask_layer(
    mask: np.ndarray,
    resolution: float,
    *,
    name: str = "significant projections",
    color: tuple[float, float, float, float] = (1.0, 0.2, 0.2, 1.0),
    metadata: dict | None = None,
) -> LayerDataTuple:
    """A Labels layer (1 = significant voxel) on the ``resolution`` µm grid."""
    data = np.asarray(mask, dtype=bool).astype(np.uint8)
    kwargs = {
        "name": name,
        "colormap": {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), 1: tuple(color)},
        "opacity": 0.6,
        "metadata": dict(metadata or {}),
        "features": pd.DataFrame({"index": [0, 1], "significant": [False, True]}),
        **layer_space_kwargs(resolution),
    }
    return data, kwargs, "labels"
