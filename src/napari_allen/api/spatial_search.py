"""Spatial-search lines for many seed points, concurrently (service
``mouse_connectivity_target_spatial``).

Allen's lines script asks the service once per seed voxel, one after another. Here the seeds are
deduplicated (a seed voxel is asked once, keyed on whole µm), capped, and queried from a thread
pool through the shared, thread-safe :class:`~napari_allen.api.client.AllenClient`, whose cache
makes repeated runs free and whose retries absorb transient faults. A seed that still fails is
recorded in :attr:`SpatialSearchResult.failures`; it never loses the other seeds' lines.

Coordinates are CCF µm ``[AP, DV, ML]`` (= Allen's ``x, y, z``, PIR). Each service record's
``path`` runs from the seed (target) to the injection site; it is kept verbatim in
:attr:`LineRecord.record` so the result can be saved in the script's JSON shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from napari_allen.errors import AllenFormatError
from napari_allen.progress import Cancelled, CancelToken, ProgressCallback, check, report

logger = logging.getLogger(__name__)

DEFAULT_JOBS = 8
SERVICE = "mouse_connectivity_target_spatial"


class TargetSpatialClient(Protocol):
    """The part of :class:`~napari_allen.api.client.AllenClient` used here."""

    def target_spatial_search(self, seed_point_um: Sequence[float], *,
                              section_data_set: int | None = None,
                              cancel: CancelToken | None = None,
                              **filters: Any) -> list[dict]: ...


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
            exp_id = int(_get(record, "id"))
        except (KeyError, TypeError, ValueError) as exc:
            raise AllenFormatError(where, f"malformed spatial-search record: {exc}") from exc
        abbrev = _get(record, "structure-abbrev")
        if not abbrev:
            structures = _get(record, "injection-structures") or []
            if structures and isinstance(structures[0], Mapping):
                abbrev = structures[0].get("abbreviation")
        sid = _get(record, "structure-id")
        density = _get(record, "density")
        seed = coords[0] if seed_um is None else np.asarray(seed_um, dtype=float)
        return cls(
            seed_um=(float(seed[0]), float(seed[1]), float(seed[2])),
            experiment_id=exp_id,
            coords_um=coords,
            densities=densities,
            intensities=intensities,
            target_density=float(density) if density is not None else float(densities[0]),
            injection_structure=str(abbrev or "").strip(),  # Allen pads some ('SUM ')
            structure_id=None if sid is None else int(sid),
            record=dict(record),
        )


@dataclass(frozen=True)
class SeedFailure:
    """A seed whose query failed after the client's retries."""

    seed_um: tuple[float, float, float]
    error: str


@dataclass
class SpatialSearchResult:
    """Lines of a multi-seed search plus per-seed bookkeeping.

    ``n_requested`` seeds were given, ``n_unique`` remained after deduplication, ``n_queried``
    were asked (after the cap); ``failures`` lists the seeds that failed; ``seconds`` is the
    wall time.
    """

    lines: list[LineRecord] = field(default_factory=list)
    failures: list[SeedFailure] = field(default_factory=list)
    n_requested: int = 0
    n_unique: int = 0
    n_queried: int = 0
    seconds: float = 0.0
    section_data_set: int | None = None

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def records(self) -> list[dict]:
        """The service records (the script's ``lines`` list)."""
        return [line.record for line in self.lines]

    def to_frame(self) -> pd.DataFrame:
        """One row per line: seed µm, experiment, injection structure, densities, points."""
        return pd.DataFrame(
            [{
                "seed_ap_um": ln.seed_um[0], "seed_dv_um": ln.seed_um[1],
                "seed_ml_um": ln.seed_um[2], "experiment_id": ln.experiment_id,
                "injection_structure": ln.injection_structure,
                "structure_id": ln.structure_id, "target_density": ln.target_density,
                "n_points": len(ln.coords_um),
            } for ln in self.lines],
            columns=["seed_ap_um", "seed_dv_um", "seed_ml_um", "experiment_id",
                     "injection_structure", "structure_id", "target_density", "n_points"],
        )

    def failures_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"seed_ap_um": f.seed_um[0], "seed_dv_um": f.seed_um[1],
              "seed_ml_um": f.seed_um[2], "error": f.error} for f in self.failures],
            columns=["seed_ap_um", "seed_dv_um", "seed_ml_um", "error"],
        )


def unique_seeds(seeds_um: Any) -> np.ndarray:
    """Seeds ``(N, 3)`` µm rounded to whole µm, duplicates removed, first occurrence order.

    Allen seeds are voxel centres (multiples of the grid spacing), so whole µm identify a voxel;
    rounding also makes the query URL, hence the cache key, identical for identical voxels.
    """
    pts = np.asarray(seeds_um, dtype=float)
    if pts.size == 0:
        return np.empty((0, 3), dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"seed points must be (N, 3) µm [AP, DV, ML], got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("seed points contain NaN or infinite coordinates")
    rounded = np.rint(pts)
    _, first = np.unique(rounded, axis=0, return_index=True)
    return rounded[np.sort(first)]


def search_seeds(
    client: TargetSpatialClient,
    seeds_um: Any,
    *,
    section_data_set: int | None = None,
    jobs: int = DEFAULT_JOBS,
    max_seeds: int | None = None,
    on_lines: Callable[[list[LineRecord]], None] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **filters: Any,
) -> SpatialSearchResult:
    """Query ``mouse_connectivity_target_spatial`` for each seed (µm ``[AP, DV, ML]``).

    ``section_data_set`` restricts the lines to one experiment (the lines script); None searches
    all experiments (point-and-click). ``filters`` go to the client (``transgenic_lines``,
    ``injection_structures``, ...). Seeds are deduplicated, then the first ``max_seeds`` kept.
    ``jobs`` queries run at once. ``on_lines(lines)`` is called in this thread as each seed
    completes (e.g. to show lines while the search runs). Raises
    :class:`~napari_allen.progress.Cancelled` when ``cancel`` fires; pending seeds are dropped.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    start = time.perf_counter()
    raw = np.asarray(seeds_um, dtype=float)
    if raw.size == 0:
        raw = np.empty((0, 3))
    elif raw.shape == (3,):  # a single point
        raw = raw[None, :]
    seeds = unique_seeds(raw)  # also validates the (N, 3) shape
    result = SpatialSearchResult(n_requested=len(raw), n_unique=len(seeds),
                                 section_data_set=section_data_set)
    if max_seeds is not None:
        if max_seeds < 0:
            raise ValueError(f"max_seeds must be >= 0, got {max_seeds}")
        seeds = seeds[:max_seeds]
    total = len(seeds)
    result.n_queried = total
    check(cancel)
    report(progress, done=0, total=total, message="spatial search")
    if total == 0:
        return result

    def query(seed: np.ndarray) -> list[LineRecord]:
        check(cancel)  # a queued seed started after cancel does no request
        point = [int(v) for v in seed]
        records = client.target_spatial_search(point, section_data_set=section_data_set,
                                               cancel=cancel, **filters)
        where = f"{SERVICE} seed_point={point[0]},{point[1]},{point[2]}"
        return [LineRecord.from_record(rec, seed_um=seed, where=where) for rec in records or []]

    # Let the client keep one pooled connection per worker (as api.batch does), so that no
    # connection is opened and discarded per query.
    ensure_pool = getattr(getattr(client, "http", None), "ensure_pool", None)
    if ensure_pool is not None:
        ensure_pool(jobs)
    # Results are kept per seed index so the output order is the seed order, whatever order
    # the futures finish in (deterministic output for tests and saved JSON).
    per_seed: list[list[LineRecord] | None] = [None] * total
    errors: dict[int, str] = {}
    done = 0
    window = max(2 * jobs, jobs + 1)  # bounded queue: a cancel never waits for 1,000 seeds
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="allen-spatial")
    pending: dict[Future, int] = {}
    next_seed = 0
    try:
        while next_seed < total or pending:
            check(cancel)
            while next_seed < total and len(pending) < window:
                pending[pool.submit(query, seeds[next_seed])] = next_seed
                next_seed += 1
            finished, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                try:
                    lines = future.result()
                except Cancelled:
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad seed must not end the search
                    errors[index] = f"{type(exc).__name__}: {exc}"
                    logger.warning("spatial search seed %s failed: %s", seeds[index], exc)
                    lines = []
                else:
                    per_seed[index] = lines
                done += 1
                if lines and on_lines is not None:
                    on_lines(lines)
                report(progress, done=done, total=total, failed=len(errors),
                       message="spatial search")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for lines in per_seed:
        if lines:
            result.lines.extend(lines)
    result.failures = [
        SeedFailure(tuple(float(v) for v in seeds[i]), errors[i])  # type: ignore[arg-type]
        for i in sorted(errors)
    ]
    result.seconds = time.perf_counter() - start
    return result
