"""`GridVolume`: one Allen 3-D grid as read from a file, before it becomes a napari layer.

``data`` is ``[AP, DV, ML]`` (CCFv3 PIR order, x fastest on disk) and holds the raw values:
``-1`` (no data) is kept here and turned into NaN only for display (``layers/volumes.py``).
It may be a numpy array, a ``numpy.memmap`` or a dask array: large grids stay lazy.
``resolution`` is the isotropic voxel spacing in µm; voxel ``i`` is centred at ``i*resolution``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ..space import GRID_SHAPES, GRID_VOLUMES, NRRD_IMAGES

#: Every volume kind the package knows. Annotation kinds hold uint32 structure ids.
KINDS: tuple[str, ...] = (*GRID_VOLUMES, "annotation", "fiber_annotation", *NRRD_IMAGES,
                          "unknown")
LABEL_KINDS: frozenset[str] = frozenset({"annotation", "fiber_annotation"})

# File stems (lower case, resolution suffix removed) -> kind. Allen's own names.
_STEM_KINDS: dict[str, str] = {
    **{name: name for name in (*GRID_VOLUMES, *NRRD_IMAGES)},
    "gridannotation": "annotation",
    "annotation": "annotation",
    "annotationfiber": "fiber_annotation",
    "fiber_annotation": "fiber_annotation",
}
# Allen suffixes the resolution (annotation_25, projection_density_100).
_RESOLUTION_SUFFIX = re.compile(
    r"_(" + "|".join(str(r) for r in sorted(GRID_SHAPES, reverse=True)) + r")(um)?$")


def kind_from_name(name: str | PurePath) -> str:
    """Volume kind from an Allen file name: ``energy.raw`` -> ``energy``,
    ``projection_density_100.nrrd`` -> ``projection_density``, ``gridAnnotation.mhd`` ->
    ``annotation``; ``unknown`` if the name is not one of Allen's."""
    stem = PurePath(str(name)).name.lower()
    for suffix in (".nii.gz", ".nrrd", ".mhd", ".mha", ".raw", ".nhdr", ".zip"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = _RESOLUTION_SUFFIX.sub("", stem)
    if stem in _STEM_KINDS:
        return _STEM_KINDS[stem]
    # Names like "12345_energy" or "Nrp1_energy": use the last token.
    for key, kind in sorted(_STEM_KINDS.items(), key=lambda kv: -len(kv[0])):
        if stem.endswith(("_" + key, "-" + key)):
            return kind
    return "unknown"


@dataclass
class GridVolume:
    """One Allen grid in ``[AP, DV, ML]`` order with its spacing (µm) and provenance.

    ``metadata`` holds whatever is known: ``experiment_id``, ``gene``, ``plane``,
    ``resolution``, ``kind``, ``source``, ``synthetic`` (True for the local server's
    generated grids), ``element_type``, ``member`` (zip member), ...
    """

    data: Any
    resolution: float
    kind: str = "unknown"
    metadata: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown volume kind {self.kind!r}; expected one of {KINDS}")
        self.resolution = float(self.resolution)
        if not self.resolution > 0:
            raise ValueError(f"resolution must be positive (µm), got {self.resolution}")
        if len(self.data.shape) != 3:
            raise ValueError(f"a grid volume is 3-D [AP, DV, ML], got shape {self.data.shape}")
        self.metadata.setdefault("kind", self.kind)
        self.metadata.setdefault("resolution", self.resolution)
        if self.source:
            self.metadata.setdefault("source", self.source)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def is_labels(self) -> bool:
        """True for structure-id volumes (grid/CCF annotation, fibre-tract annotation)."""
        return self.kind in LABEL_KINDS

    @property
    def name(self) -> str:
        """A layer name: ``"Nrp1 energy (exp 74272479)"``, ``"annotation (25 µm)"``, ..."""
        known = "experiment_id" in self.metadata or "gene" in self.metadata
        if self.kind != "unknown":
            kind = self.kind
        elif known or not self.source:
            kind = "grid"
        else:
            kind = PurePath(self.source).stem
        kind = kind.replace("_", " ")
        gene = self.metadata.get("gene")
        exp = self.metadata.get("experiment_id")
        head = f"{gene} {kind}" if gene else kind
        if self.metadata.get("synthetic"):
            head += " [synthetic]"  # the local server's generated data, never Allen's
        if exp is not None:
            return f"{head} (exp {exp})"
        res = self.resolution
        res_text = f"{int(res)}" if float(res).is_integer() else f"{res:g}"
        return f"{head} ({res_text} µm)"
