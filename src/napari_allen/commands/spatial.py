"""``napari-allen spatial-search``: Allen's spatial-search lines script, concurrent and cached.

Also home of :func:`run_experiment_search`, the whole workflow as one Qt-free function that the
"Spatial search" dock widget runs in a worker too:

1. download (once, cached) the experiment's 100 µm projection density and injection grids;
2. seed voxels = densities in range, outside fibre tracts (bundled 25 µm CCF annotation);
3. one ``mouse_connectivity_target_spatial`` query per seed (``section_data_set`` = the
   experiment), from a thread pool;
4. injection coordinates = injection voxels above the mask threshold.

Progress goes to stderr; the lines JSON to ``--out`` (or stdout with ``--out -``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_allen.analysis.seeds import (
    DEFAULT_DENSITY_RANGE,
    DEFAULT_INJECTION_THRESHOLD,
    SAMPLE_MODES,
    injection_coordinates,
    seed_points_um,
    select_seeds,
)
from napari_allen.api.spatial_search import (
    DEFAULT_JOBS,
    LineRecord,
    SpatialSearchResult,
    search_seeds,
)
from napari_allen.io.lines_json import write_lines_json
from napari_allen.progress import CancelToken, Progress, ProgressCallback, check, report

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
    density = read_nrrd(density_path, kind="projection_density")
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
    injection = injection_coordinates(read_nrrd(injection_path, kind=injection_image),
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


# --- command line ---------------------------------------------------------------------------
def _stderr_progress(snapshot: Progress) -> None:
    total = f" {snapshot.done}/{snapshot.total}" if snapshot.total else ""
    failed = f" ({snapshot.failed} failed)" if snapshot.failed else ""
    print(f"{snapshot.message}{total}{failed}", file=sys.stderr, flush=True)


def _throttled(callback: ProgressCallback, every: int = 50) -> ProgressCallback:
    """Print stage changes, every ``every`` items, and the last one (1,000 seeds, few lines)."""
    last: dict[str, Any] = {"message": None}

    def forward(snap: Progress) -> None:
        new_stage = snap.message != last["message"]
        if new_stage or not snap.total or snap.done % every == 0 or snap.done == snap.total:
            last["message"] = snap.message
            callback(snap)

    return forward


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``spatial-search`` to the ``napari-allen`` command line."""
    parser = subparsers.add_parser(
        "spatial-search",
        help="spatial-search lines of a connectivity experiment (Allen's lines script)",
        description="Seeds = 100 µm projection-density voxels within [--min, --max] outside "
                    "fibre tracts; one mouse_connectivity_target_spatial query per seed, "
                    "concurrently and cached; writes Allen's lines JSON "
                    "(lines, injectionCoordinates).",
    )
    parser.add_argument("--experiment", type=int, default=DEFAULT_EXPERIMENT,
                        help=f"connectivity experiment id (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--min", dest="density_min", type=float,
                        default=DEFAULT_DENSITY_RANGE[0], help="lowest seed density (0.04)")
    parser.add_argument("--max", dest="density_max", type=float,
                        default=DEFAULT_DENSITY_RANGE[1], help="highest seed density (0.3)")
    parser.add_argument("--max-seeds", type=int, default=None,
                        help="cap on the number of seeds (default: all)")
    parser.add_argument("--sample", choices=SAMPLE_MODES, default="spread",
                        help="which seeds a cap keeps (default: spread over the volume)")
    parser.add_argument("--jobs", type=_positive_int, default=DEFAULT_JOBS,
                        help=f"concurrent queries (default {DEFAULT_JOBS})")
    parser.add_argument("--no-fiber-mask", action="store_true",
                        help="do not skip seeds inside fibre tracts")
    parser.add_argument("--fiber-annotation", metavar="PATH", default=None,
                        help="fibre tracts from this file instead of the bundled 25 µm CCF "
                             "annotation: Allen's legacy annotationFiber (.mhd/.raw/.zip) or "
                             "a CCF annotation (.nrrd)")
    parser.add_argument("--injection-image", choices=INJECTION_IMAGES,
                        default=DEFAULT_INJECTION_IMAGE,
                        help="grid thresholded for injectionCoordinates")
    parser.add_argument("--injection-threshold", type=float,
                        default=DEFAULT_INJECTION_THRESHOLD, help="(default 0.5)")
    parser.add_argument("--out", "-o", required=True,
                        help="lines JSON to write ('-' for stdout)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=_spatial_search_command)


def _spatial_search_command(args: argparse.Namespace) -> int:
    from napari_allen.api.client import AllenClient

    if args.density_min > args.density_max:
        print("napari-allen: error: --min must not exceed --max", file=sys.stderr)
        return 2
    if args.max_seeds is not None and args.max_seeds < 0:
        print("napari-allen: error: --max-seeds must be >= 0", file=sys.stderr)
        return 2
    progress = None if args.quiet else _throttled(_stderr_progress)
    fiber_tracts: Any = not args.no_fiber_mask
    if args.fiber_annotation and fiber_tracts:
        from napari_allen.atlas.fiber_tracts import FiberTracts

        fiber_tracts = FiberTracts.from_path(args.fiber_annotation)
    with AllenClient() as client:
        search = run_experiment_search(
            client, args.experiment, density_range=(args.density_min, args.density_max),
            max_seeds=args.max_seeds, sample=args.sample, jobs=args.jobs,
            fiber_tracts=fiber_tracts, injection_image=args.injection_image,
            injection_threshold=args.injection_threshold, progress=progress)
    result = search.result
    if args.out == "-":
        json.dump({"lines": result.records(),
                   "injectionCoordinates": search.injection_coordinates.tolist()},
                  sys.stdout)
        sys.stdout.write("\n")
    else:
        search.save_json(args.out)
    print(f"{len(search.seeds)} seeds, {len(result.lines)} lines, {result.n_failed} failed "
          f"seeds, {len(search.injection_coordinates)} injection voxels, "
          f"{result.seconds:.1f} s" + ("" if args.out == "-" else f" -> {args.out}"),
          file=sys.stderr)
    # Partial results are still written; a non-zero code tells scripts some seeds failed.
    return 3 if result.n_failed else 0
