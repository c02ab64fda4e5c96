"""Significant projections inside a target region: threshold a projection volume within the
region (CCF annotation on the volume's grid) and tabulate the significant voxels per
structure. Shared by the Connectivity dock's "Threshold" tab and
``napari-allen threshold-projection``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_allen.analysis.projections import THRESHOLD_METHODS
from napari_allen.progress import CancelToken, ProgressCallback, check, report


@dataclass
class ThresholdResult:
    """``mask`` (``[AP, DV, ML]`` bool on the volume's grid), the ``threshold`` used (volume
    units), the per-structure ``table`` of structures holding significant voxels (most
    significant voxels first) and the parameters as ``metadata``."""

    mask: np.ndarray
    threshold: float
    table: pd.DataFrame
    resolution: float
    metadata: dict = field(default_factory=dict)

    @property
    def n_significant(self) -> int:
        return int(self.mask.sum())

    def summary(self) -> str:
        m = self.metadata
        return (f"{self.n_significant} significant voxels ({m.get('method')} {m.get('value'):g}"
                f" -> threshold {self.threshold:.4g}) in {'+'.join(m.get('regions', []))}; "
                f"{len(self.table)} structures")


def threshold_in_regions(
    volume: np.ndarray,
    resolution: float,
    *,
    regions: Sequence[str | int] = ("root",),
    method: str = "percentile",
    value: float = 95.0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ThresholdResult:
    """Threshold ``volume`` (``[AP, DV, ML]`` on a CCF grid of ``resolution`` µm) inside
    ``regions`` (acronyms or ids, descendants included; ``root`` = the brain) with ``method``
    (:data:`~napari_allen.analysis.projections.THRESHOLD_METHODS`) and ``value``.

    Raises ``ValueError`` when the volume is not on that CCF grid or an option is impossible,
    ``KeyError`` for an unknown structure.
    """
    from napari_allen.analysis.projections import (
        region_mask,
        structure_projection_table,
        threshold_projection,
    )
    from napari_allen.atlas.annotation import ccf_annotation_at

    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {THRESHOLD_METHODS}, got {method!r}")
    regions = [str(r) for r in regions] or ["root"]
    volume = np.asarray(volume)
    report(progress, done=0, total=3, message="loading the annotation")
    annotation = ccf_annotation_at(resolution)
    if annotation.shape != volume.shape:
        raise ValueError(f"volume {volume.shape} is not a CCF grid at {resolution:g} µm "
                         f"{annotation.shape}")
    check(cancel)
    report(progress, done=1, total=3, message="thresholding")
    region = region_mask(annotation, regions)
    mask, thr = threshold_projection(volume, region, method=method, value=value)
    check(cancel)
    report(progress, done=2, total=3, message="per-structure table")
    table = structure_projection_table(volume, annotation, resolution, mask=mask)
    if len(table):
        table = table[table["n_significant"] > 0]
        table = table.sort_values("n_significant", ascending=False, kind="stable")
    report(progress, done=3, total=3, message="done")
    meta = {"regions": regions, "method": method, "value": float(value), "threshold": thr}
    return ThresholdResult(mask, float(thr), table.reset_index(drop=True), float(resolution),
                           meta)
