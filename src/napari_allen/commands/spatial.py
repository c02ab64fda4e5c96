"""``napari-allen spatial-search``: Allen's spatial-search lines script, concurrent and cached
(the workflow itself is :func:`napari_allen.workflows.spatial_search.run_experiment_search`).

Progress goes to stderr; the lines JSON to ``--out`` (or stdout with ``--out -``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from napari_allen.analysis.seeds import (
    DEFAULT_DENSITY_RANGE,
    DEFAULT_INJECTION_THRESHOLD,
    SAMPLE_MODES,
)
from napari_allen.commands._common import CLIENT_OPTIONS, ProgressPrinter, client_from_args
from napari_allen.workflows.seed_search import DEFAULT_JOBS
from napari_allen.workflows.spatial_search import (
    DEFAULT_EXPERIMENT,
    DEFAULT_INJECTION_IMAGE,
    INJECTION_IMAGES,
    run_experiment_search,
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``spatial-search`` to the ``napari-allen`` command line."""
    parser = subparsers.add_parser(
        "spatial-search", parents=[CLIENT_OPTIONS],
        help="spatial-search lines of a connectivity experiment (Allen's lines script)",
        description="Seeds = 100 µm projection-density voxels within [--min, --max] outside "
                    "fibre tracts; one mouse_connectivity_target_spatial query per seed, "
                    "concurrently and cached; writes Allen's lines JSON "
                    "(lines, injectionCoordinates).",
    )
    parser.add_argument("--experiment", type=int, default=DEFAULT_EXPERIMENT,
                        help=f"connectivity experiment id (default {DEFAULT_EXPERIMENT})")
    parser.add_argument("--at", nargs=3, type=float, metavar=("AP", "DV", "ML"), default=None,
                        help="instead of an experiment: lines of all experiments from the "
                             "100 µm voxel containing this CCF point (µm), as the dock's "
                             "'Click to search'")
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


def _write(args: argparse.Namespace, search, injection) -> None:
    if args.out == "-":
        json.dump({"lines": search.result.records(), "injectionCoordinates": injection.tolist()},
                  sys.stdout)
        sys.stdout.write("\n")
    else:
        search.save_json(args.out)


def _point_command(args: argparse.Namespace, client) -> int:
    import numpy as np

    from napari_allen.workflows.spatial_search import search_at_point

    try:
        search = search_at_point(client, args.at,
                                 progress=None if args.quiet else ProgressPrinter())
    except ValueError as exc:
        print(f"napari-allen spatial-search: error: {exc}", file=sys.stderr)
        return 2
    _write(args, search, np.empty((0, 3)))
    result = search.result
    experiments = {line.experiment_id for line in result.lines}
    print(f"seed {search.metadata['seed_um']} µm: {len(result.lines)} lines from "
          f"{len(experiments)} experiments" + ("" if args.out == "-" else f" -> {args.out}"),
          file=sys.stderr)
    return 3 if result.n_failed else 0


def _spatial_search_command(args: argparse.Namespace) -> int:
    if args.at is not None:
        return _point_command(args, client_from_args(args))
    if args.density_min > args.density_max:
        print("napari-allen: error: --min must not exceed --max", file=sys.stderr)
        return 2
    if args.max_seeds is not None and args.max_seeds < 0:
        print("napari-allen: error: --max-seeds must be >= 0", file=sys.stderr)
        return 2
    progress = None if args.quiet else ProgressPrinter()
    fiber_tracts: Any = not args.no_fiber_mask
    if args.fiber_annotation and fiber_tracts:
        from napari_allen.atlas.fiber_tracts import FiberTracts

        fiber_tracts = FiberTracts.from_path(args.fiber_annotation)
    with client_from_args(args) as client:
        search = run_experiment_search(
            client, args.experiment, density_range=(args.density_min, args.density_max),
            max_seeds=args.max_seeds, sample=args.sample, jobs=args.jobs,
            fiber_tracts=fiber_tracts, injection_image=args.injection_image,
            injection_threshold=args.injection_threshold, progress=progress)
    result = search.result
    _write(args, search, search.injection_coordinates)
    print(f"{len(search.seeds)} seeds, {len(result.lines)} lines, {result.n_failed} failed "
          f"seeds, {len(search.injection_coordinates)} injection voxels, "
          f"{result.seconds:.1f} s" + ("" if args.out == "-" else f" -> {args.out}"),
          file=sys.stderr)
    # Partial results are still written; a non-zero code tells scripts some seeds failed.
    return 3 if result.n_failed else 0
