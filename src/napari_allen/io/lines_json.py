"""The spatial-search lines JSON of Allen's lines example script.

Shape (top-level keys as the script writes them)::

    {"lines": [<target-spatial service record>, ...],
     "injectionCoordinates": [[x, y, z], ...],
     "napari-allen": {...}}                      # optional provenance, ignored by the script

Each line is a ``mouse_connectivity_target_spatial`` record as served (hyphenated keys, ``id``,
``structure-abbrev``, ``density``, ...) whose ``path`` is a list of
``{"coord": [x, y, z], "density": d, "intensity": i}`` from the seed to the injection site.
Coordinates are CCF µm, ``x, y, z`` = ``[AP, DV, ML]``; injection coordinates are the µm centres
of the injection voxels above the mask threshold.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_allen.errors import AllenFormatError
from napari_allen.io.atomic import atomic_write_text

#: The service whose records are the lines.
SERVICE = "mouse_connectivity_target_spatial"
LINES_KEY = "lines"
INJECTION_KEY = "injectionCoordinates"
META_KEY = "napari-allen"
#: Key of the layer metadata holding the source document (written by layers/lines.py).
LAYER_META_KEY = "spatial_search"

# Enough to see the top-level keys of any file we or the script wrote, small enough to sniff
# every *.json napari offers the plugin without reading the payload.
_SNIFF_BYTES = 64 * 1024
#: Largest lines file read (a 1,000-line search result is a few MB; parsed JSON takes up to
#: ~20x its size in Python objects, so this also bounds memory near 300 MB).
MAX_JSON_BYTES = 16 * 2**20
#: ``experiment_id`` of a line without an ``id`` (a path drawn or edited in napari).
NO_EXPERIMENT = -1


@dataclass
class LinesDocument:
    """A parsed lines JSON: service records, injection coordinates ``(N, 3)`` µm, metadata."""

    lines: list[dict] = field(default_factory=list)
    injection_coordinates: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    metadata: dict = field(default_factory=dict)
    source: str = ""


def _get(record: Mapping, key: str, default: Any = None) -> Any:
    """A service field by its served (hyphenated) name, tolerating underscores."""
    if key in record:
        return record[key]
    return record.get(key.replace("-", "_"), default)


@dataclass
class LineRecord:
    """One spatial-search line: a path from a seed (target) back to an injection site.

    ``coords_um`` is ``(N, 3)`` µm ``[AP, DV, ML]`` from the seed end to the injection;
    ``densities``/``intensities`` are the per-point values; ``target_density`` is the record's
    ``density`` (projection density at the seed); ``injection_structure`` the primary injection
    structure's acronym. ``record`` is the service record as served.
    """

    seed_um: tuple[float, float, float]
    experiment_id: int
    coords_um: np.ndarray
    densities: np.ndarray
    intensities: np.ndarray
    target_density: float
    injection_structure: str
    structure_id: int | None
    record: dict = field(repr=False)

    @property
    def injection_um(self) -> np.ndarray:
        """The injection end of the path (µm)."""
        return self.coords_um[-1]

    @classmethod
    def from_record(cls, record: Mapping, seed_um: Sequence[float] | None = None,
                    where: str = SERVICE) -> LineRecord:
        """Parse one target-spatial record; AllenFormatError naming ``where`` if malformed."""
        path = _get(record, "path")
        if not isinstance(path, list) or not path:
            raise AllenFormatError(where, "spatial-search record without a 'path' list")
        try:
            coords = np.array([p["coord"] for p in path], dtype=float).reshape(len(path), 3)
            densities = np.array([p.get("density", np.nan) for p in path], dtype=float)
            intensities = np.array([p.get("intensity", np.nan) for p in path], dtype=float)
            exp = _get(record, "id")
            exp_id = NO_EXPERIMENT if exp is None else int(exp)
            abbrev = _get(record, "structure-abbrev")
            if not abbrev:
                structures = _get(record, "injection-structures") or []
                if structures and isinstance(structures[0], Mapping):
                    abbrev = structures[0].get("abbreviation")
            sid = _get(record, "structure-id")
            sid = None if sid is None else int(sid)
            density = _get(record, "density")
            density = float(density) if density is not None else float(densities[0])
            seed = coords[0] if seed_um is None else np.asarray(seed_um, dtype=float)
        except (KeyError, TypeError, ValueError, OverflowError, IndexError,
                AttributeError) as exc:
            raise AllenFormatError(where, f"malformed spatial-search record: {exc}") from exc
        return cls(
            seed_um=(float(seed[0]), float(seed[1]), float(seed[2])),
            experiment_id=exp_id,
            coords_um=coords,
            densities=densities,
            intensities=intensities,
            target_density=density,
            injection_structure=str(abbrev or "").strip(),  # Allen pads some ('SUM ')
            structure_id=sid,
            record=_light_record(record),
        )


def _light_point(point: Any) -> Any:
    """A path point with its ``coord`` list as a tuple: a tuple of numbers leaves the garbage
    collector's tracking at its first collection, a list never does (JSON and :func:`_clean`
    write both as ``[x, y, z]``)."""
    if isinstance(point, dict) and type(point.get("coord")) is list:
        return {k: tuple(v) if k == "coord" else v for k, v in point.items()}
    return point


def _light_record(record: Mapping) -> dict:
    """A copy of ``record`` whose path points hold tuples (:func:`_light_point`). A line is
    kept as long as its layer: ~20 points, two tracked objects each as parsed, that every
    full garbage collection of napari's process would walk (~18,000 for a 400-line search);
    as tuples, only the point dicts stay tracked, until a full collection finds them holding
    nothing but numbers and text and untracks them too."""
    out = dict(record)
    if isinstance(out.get("path"), list):
        out["path"] = [_light_point(p) for p in out["path"]]
    return out


def looks_like_lines_json(path: str | os.PathLike) -> bool:
    """Cheap sniff: a ``.json`` file holding a JSON object with a ``"lines"`` or
    ``"injectionCoordinates"`` key near its start. Never parses the whole file."""
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError:
        return False
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        return False
    return f'"{LINES_KEY}"' in text or f'"{INJECTION_KEY}"' in text


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays -> Python, NaN -> None (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_number(value: Any) -> bool:
    """A finite JSON number (bools are not numbers here)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_record(record: Any, where: str, i: int) -> dict:
    """Validate one line record (types and ranges of every field the reader uses) so that
    whatever the writer accepts the reader reads back; AllenFormatError naming ``where``."""
    if not isinstance(record, Mapping):
        raise AllenFormatError(where, f"lines[{i}] is not an object")
    path = record.get("path")
    if not isinstance(path, list) or not path:
        raise AllenFormatError(where, f"lines[{i}] has no 'path' list")
    for j, point in enumerate(path):
        coord = point.get("coord") if isinstance(point, Mapping) else None
        if not isinstance(coord, (list, tuple)) or len(coord) != 3:
            raise AllenFormatError(where, f"lines[{i}].path[{j}] has no [x, y, z] 'coord'")
        if not all(_is_number(c) for c in coord):
            raise AllenFormatError(
                where, f"lines[{i}].path[{j}].coord is not 3 finite numbers: {coord!r:.80}")
        for key in ("density", "intensity"):
            value = point.get(key)
            if value is not None and not _is_number(value):
                raise AllenFormatError(where, f"lines[{i}].path[{j}].{key} is not a finite "
                                              f"number: {value!r:.40}")
    for key in ("id", "structure-id", "structure_id"):
        value = record.get(key)
        if value is not None and not (_is_number(value) and float(value).is_integer()
                                      and 0 <= value < 2**63):
            raise AllenFormatError(where, f"lines[{i}].{key} is not an id: {value!r:.40}")
    density = record.get("density")
    if density is not None and not _is_number(density):
        raise AllenFormatError(where, f"lines[{i}].density is not a finite number: "
                                      f"{density!r:.40}")
    for key in ("structure-abbrev", "structure_abbrev"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise AllenFormatError(where, f"lines[{i}].{key} is not text: {value!r:.40}")
    structures = record.get("injection-structures", record.get("injection_structures"))
    if structures is not None and not isinstance(structures, list):
        raise AllenFormatError(where, f"lines[{i}].injection-structures is not a list")
    LineRecord.from_record(record, where=where)  # the reader's own parse must succeed too
    return dict(record)


def _coords(value: Any, where: str) -> np.ndarray:
    if value is None:
        return np.empty((0, 3))
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple,
                                                                            np.ndarray)):
        raise AllenFormatError(where, f"'{INJECTION_KEY}' is not a list of [x, y, z]")
    if any(isinstance(v, bool) for row in value if isinstance(row, (list, tuple)) for v in row):
        raise AllenFormatError(where, f"'{INJECTION_KEY}' holds true/false, not numbers")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise AllenFormatError(where, f"'{INJECTION_KEY}' is not a list of [x, y, z]") from None
    if arr.size == 0:
        return np.empty((0, 3))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise AllenFormatError(where, f"'{INJECTION_KEY}' must be [[x, y, z], ...], "
                                      f"got an array of shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AllenFormatError(where, f"'{INJECTION_KEY}' holds non-finite coordinates")
    return arr


def write_lines_json(path: str | os.PathLike, lines: Sequence[Mapping],
                     injection_coordinates: Any = (), *,
                     metadata: Mapping | None = None) -> Path:
    """Write the script's JSON (atomically). ``lines`` are service records with ``path``;
    ``injection_coordinates`` ``(N, 3)`` µm. Returns the path."""
    where = str(path)
    records = [_check_record(rec, where, i) for i, rec in enumerate(lines)]
    doc: dict[str, Any] = {
        LINES_KEY: _clean(records),
        INJECTION_KEY: _clean(_coords(injection_coordinates, where)),
    }
    if metadata:
        doc[META_KEY] = _clean(dict(metadata))
    return atomic_write_text(path, json.dumps(doc, separators=(",", ":")))


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON (JSON has no NaN/Infinity)")


def read_lines_json(path: str | os.PathLike) -> LinesDocument:
    """Read and validate a lines JSON; AllenFormatError naming the file on any problem
    (not a regular file, too large, not UTF-8 JSON, NaN/Infinity, nesting too deep, wrong
    types in any field the reader uses)."""
    from .metaimage import open_regular

    where = str(path)
    with open_regular(path) as fh:
        raw = fh.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise AllenFormatError(where, f"larger than {MAX_JSON_BYTES // 2**20} MiB: not a "
                                      "spatial-search lines file")
    try:
        doc = json.loads(raw.decode("utf-8-sig"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise AllenFormatError(where, f"not UTF-8 text ({exc})") from exc
    except RecursionError:
        raise AllenFormatError(where, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and NaN/Infinity
        raise AllenFormatError(where, f"not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(doc, Mapping) or (LINES_KEY not in doc and INJECTION_KEY not in doc):
        raise AllenFormatError(where, f"not a spatial-search lines file (needs '{LINES_KEY}' "
                                      f"and/or '{INJECTION_KEY}')")
    lines = doc.get(LINES_KEY) or []
    if not isinstance(lines, list):
        raise AllenFormatError(where, f"'{LINES_KEY}' must be a list")
    meta = doc.get(META_KEY) or {}
    return LinesDocument(
        lines=[_check_record(rec, where, i) for i, rec in enumerate(lines)],
        injection_coordinates=_coords(doc.get(INJECTION_KEY), where),
        metadata=dict(meta) if isinstance(meta, Mapping) else {},
        source=where,
    )


def write_lines_json_from_layer(path: str | os.PathLike, data: Any, meta: Mapping) -> list[str]:
    """napari single-layer writer for a lines Shapes layer: ``data`` is the list of paths
    (µm, last three axes ``[AP, DV, ML]``), ``meta`` the layer attributes.

    Each shape's coordinates are written as its ``path`` (so edits in napari are kept); the
    rest of each record (experiment id, densities, structure) comes from the layer's metadata
    through the ``record_index`` feature, when present. Returns ``[path]``, or ``[]`` if the
    layer holds no path.
    """
    layer_meta = (meta.get("metadata") or {}).get(LAYER_META_KEY) or {}
    source_records = list(layer_meta.get("records") or [])
    features = meta.get("features")
    record_index = _feature_column(features, "record_index")
    experiment = _feature_column(features, "experiment")
    shapes = list(data or [])
    if not shapes:
        return []
    records = []
    for i, shape in enumerate(shapes):
        coords = np.asarray(shape, dtype=float)[:, -3:]
        base: dict = {}
        if record_index is not None and i < len(record_index):
            k = int(record_index[i])
            if 0 <= k < len(source_records):
                base = dict(source_records[k])
        old_path = base.get("path") or []
        if len(old_path) == len(coords):
            path_points = [dict(p, coord=[float(c) for c in xyz])
                           for p, xyz in zip(old_path, coords, strict=True)]
        else:  # edited shape, or no source record: coordinates only
            path_points = [{"coord": [float(c) for c in xyz]} for xyz in coords]
        base["path"] = path_points
        if "id" not in base and experiment is not None and i < len(experiment):
            # napari fills the features of a newly drawn shape (NaN, -1 or a copy): only a
            # real experiment id is written; a line without one reads back as NO_EXPERIMENT.
            try:
                exp = float(experiment[i])
            except (TypeError, ValueError):
                exp = math.nan
            if math.isfinite(exp) and exp >= 0 and exp.is_integer():
                base["id"] = int(exp)
        records.append(base)
    extra = {k: v for k, v in layer_meta.items() if k not in ("records", "injection_coordinates")}
    injection = layer_meta.get("injection_coordinates")
    write_lines_json(path, records, () if injection is None else injection,
                     metadata=extra or None)
    return [str(path)]


def _feature_column(features: Any, name: str) -> list | None:
    """A feature column as a list from a DataFrame or a dict of arrays, else None."""
    if features is None:
        return None
    try:
        if name not in features:
            return None
        return list(np.asarray(features[name]))
    except TypeError:
        return None
