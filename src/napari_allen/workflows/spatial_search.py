"""Allen's spatial-search lines workflow for one experiment, concurrent and cached.

:func:`run_experiment_search` is used by the "Spatial search" dock widget (in a worker) and by
``napari-allen spatial-search``:

1. download (once, cached) the experiment's 100 µm projection density and injection grids;
2. seed voxels = densities in range, outside fibre tracts (bundled 25 µm CCF annotation);
3. one ``mouse_connectivity_target_spatial`` query per seed (``section_data_set`` = the
   experiment), from a thread pool;
4. injection coordinates = injection voxels above the mask threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_allen.analysis.seeds import (
    DEFAULT_DENSITY_RANGE,
    DEFAULT_INJECTION_THRESHOLD,
    injection_coordinates,
    seed_points_um,
    select_seeds,
)
from napari_allen.io.lines_json import LineRecord, write_lines_json
from napari_allen.lazy import lazy_module
from napari_allen.progress import CancelToken, Progress, ProgressCallback, check, report
from napari_allen.workflows.seed_search import DEFAULT_JOBS, SpatialSearchResult, search_seeds

pd = lazy_module("pandas")  # imported at first use: the docks open without it

if TYPE_CHECKING:
    from napari_allen.api.client import AllenClient
    from napari_allen.atlas.fiber_tracts import FiberTracts

DEFAULT_EXPERIMENT = 156394513
DEFAULT_RESOLUTION = 100
#: The injection grid thresholded for ``injectionCoordinates`` (the script's "injection mask").
DEFAULT_INJECTION_IMAGE = "injection_fraction"
INJECTION_IMAGES = ("injection_fraction", "injection_density")


@dataclass
class ExperimentSearch:
    """Everything one experiment's spatial search produced.

    ``seeds``: the seed table (:func:`~napari_allen.analysis.seeds.select_seeds`);
    ``result``: lines and per-seed failures; ``injection_coordinates``: ``(N, 3)`` µm.
    """

    experiment_id: int
    seeds: pd.DataFrame
    result: SpatialSearchResult
    injection_coordinates: np.ndarray
    metadata: dict = field(default_factory=dict)

    @property
    def lines(self) -> list[LineRecord]:
        return self.result.lines

    def save_json(self, path: str | Path) -> Path:
        """Write the script's JSON (``lines``, ``injectionCoordinates``) plus provenance."""
        return write_lines_json(path, self.result.records(), self.injection_coordinates,
                                metadata=self.metadata)


def _scaled(progress: ProgressCallback | None, stage: str) -> ProgressCallback | None:
    """Prefix a sub-step's messages with the stage name."""
    if progress is None:
        return None

    def forward(snap: Progress) -> None:
        progress(Progress(done=snap.done, total=snap.total, failed=snap.failed,
                          bytes_done=snap.bytes_done, bytes_total=snap.bytes_total,
                          message=f"{stage}: {snap.message}" if snap.message else stage))

    return forward


def run_experiment_search(
    client: AllenClient,
    experiment_id: int = DEFAULT_EXPERIMENT,
    *,
    density_range: Sequence[float] = DEFAULT_DENSITY_RANGE,
    max_seeds: int | None = None,
    sample: str = "spread",
    jobs: int = DEFAULT_JOBS,
    fiber_tracts: FiberTracts | None | bool = True,
    injection_image: str = DEFAULT_INJECTION_IMAGE,
    injection_threshold: float = DEFAULT_INJECTION_THRESHOLD,
    on_lines: Callable[[list[LineRecord]], None] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ExperimentSearch:
    """Spatial-search lines of one experiment (see the module doc for the steps).

    ``fiber_tracts``: True = the bundled CCF annotation's tracts, False/None = keep all seeds,
    or a :class:`~napari_allen.atlas.fiber_tracts.FiberTracts`. ``max_seeds``/``sample`` cap the
    seeds (:func:`~napari_allen.analysis.seeds.select_seeds`); ``jobs`` concurrent queries.
    """
    from napari_allen.io.nrrd import read_nrrd

    if injection_image not in INJECTION_IMAGES:
        raise ValueError(f"injection image must be one of {INJECTION_IMAGES}, "
                         f"got {injection_image!r}")
    experiment_id = int(experiment_id)
    report(progress, message=f"downloading projection density of {experiment_id}")
    density_path = client.grid_nrrd(experiment_id, "projection_density", DEFAULT_RESOLUTION,
                                    progress=_scaled(progress, "projection density"),
                                    cancel=cancel)
    density = read_nrrd(density_path, kind="projection_density", cache_dir=client.cache_dir)
    check(cancel)
    tracts: FiberTracts | None
    if fiber_tracts is True:
        from napari_allen.atlas.fiber_tracts import FiberTracts

        report(progress, message="loading fibre tracts (25 µm CCF annotation)")
        tracts = FiberTracts.default()
    else:
        tracts = fiber_tracts or None
    seeds = select_seeds(density, density_range=density_range, fiber_tracts=tracts,
                         max_seeds=max_seeds, sample=sample, cancel=cancel)
    report(progress, message=f"downloading {injection_image.replace('_', ' ')}")
    injection_path = client.grid_nrrd(experiment_id, injection_image, DEFAULT_RESOLUTION,
                                      progress=_scaled(progress, "injection"), cancel=cancel)
    injection = injection_coordinates(read_nrrd(injection_path, kind=injection_image,
                                                cache_dir=client.cache_dir),
                                      threshold=injection_threshold)
    result = search_seeds(client, seed_points_um(seeds), section_data_set=experiment_id,
                          jobs=jobs, on_lines=on_lines, progress=_scaled(progress, "lines"),
                          cancel=cancel)
    metadata = {
        "experiment": experiment_id,
        "density_range": [float(v) for v in density_range],
        "resolution_um": DEFAULT_RESOLUTION,
        "fiber_tracts": None if tracts is None else (tracts.source or "CCF annotation"),
        "seeds": len(seeds),
        "seeds_in_range": int(seeds.attrs.get("in_range", len(seeds))),
        "seeds_in_fiber_tracts": int(seeds.attrs.get("in_fiber_tracts", 0)),
        "seeds_capped": int(seeds.attrs.get("capped", 0)),
        "failed_seeds": [list(f.seed_um) for f in result.failures],
        "injection_image": injection_image,
        "injection_threshold": float(injection_threshold),
        # Where the grids and lines came from (the local test server serves synthetic grids).
        "api": str(getattr(client, "base_url", "")),
    }
    return ExperimentSearch(experiment_id, seeds, result, injection, metadata)


@dataclass
class PointSearch:
    """:func:`search_at_point`'s answer: the snapped ``seed_um`` and the lines from it."""

    seed_um: np.ndarray
    result: SpatialSearchResult

    @property
    def metadata(self) -> dict:
        return {"seed_um": [float(v) for v in self.seed_um]}

    def save_json(self, path: str | Path) -> Path:
        """The lines JSON (no injection coordinates: the lines span many experiments)."""
        return write_lines_json(path, self.result.records(), np.empty((0, 3)),
                                metadata=self.metadata)


def search_at_point(
    client: AllenClient,
    point_um: Sequence[float],
    *,
    resolution: int = DEFAULT_RESOLUTION,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> PointSearch:
    """Spatial search across all experiments from the ``resolution`` µm voxel containing
    ``point_um`` (``[AP, DV, ML]`` CCF µm; snapped to the voxel centre so nearby clicks reuse
    one cached query). Raises ``ValueError`` for a point outside the atlas."""
    from napari_allen.analysis.seeds import snap_to_voxel
    from napari_allen.space import GRID_SHAPES

    point = np.asarray(point_um, dtype=float)[-3:]
    seed = snap_to_voxel(point, resolution, GRID_SHAPES[resolution])
    if seed is None:
        raise ValueError(f"{np.round(point, 0).tolist()} µm is outside the atlas")
    result = search_seeds(client, [seed], jobs=1, progress=progress, cancel=cancel)
    return PointSearch(seed, result)
