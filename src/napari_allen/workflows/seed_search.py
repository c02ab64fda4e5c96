"""Spatial-search lines for many seed points, concurrently (service
``mouse_connectivity_target_spatial``): the seed fan-out shared by the spatial-search workflow,
the widget and the CLI.

Allen's lines script asks the service once per seed voxel, one after another. Here the seeds are
deduplicated (a seed voxel is asked once, keyed on whole µm), capped, and queried - on the
calling thread while the cache answers them, then from a thread pool
(:func:`napari_allen.concurrency.bounded_map`) - through the shared, thread-safe
:class:`~napari_allen.api.client.AllenClient`, whose cache makes repeated runs free and whose
retries absorb transient faults. A seed that still fails is
recorded in :attr:`SpatialSearchResult.failures`; it never loses the other seeds' lines.

Coordinates are CCF µm ``[AP, DV, ML]`` (= Allen's ``x, y, z``, PIR). Each service record's
``path`` runs from the seed (target) to the injection site; it is kept verbatim in
:attr:`napari_allen.io.lines_json.LineRecord.record` so the result can be saved in the script's
JSON shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from napari_allen.concurrency import LinkedToken, Outcome, bounded_map
from napari_allen.io.lines_json import SERVICE, LineRecord
from napari_allen.lazy import lazy_module
from napari_allen.progress import Cancelled, CancelToken, ProgressCallback, check, report

pd = lazy_module("pandas")  # imported at first use: the docks open without it

logger = logging.getLogger(__name__)

DEFAULT_JOBS = 8


class TargetSpatialClient(Protocol):
    """The part of :class:`~napari_allen.api.client.AllenClient` used here."""

    def target_spatial_search(self, seed_point_um: Sequence[float], *,
                              section_data_set: int | None = None,
                              cancel: CancelToken | None = None,
                              **filters: Any) -> list[dict]: ...


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

    def query(seed: np.ndarray, token: CancelToken) -> list[LineRecord]:
        token.check()  # a queued seed started after cancel does no request
        point = [int(v) for v in seed]
        records = client.target_spatial_search(point, section_data_set=section_data_set,
                                               cancel=token, **filters)
        where = f"{SERVICE} seed_point={point[0]},{point[1]},{point[2]}"
        return [LineRecord.from_record(rec, seed_um=seed, where=where) for rec in records or []]

    # Let the client keep one pooled connection per worker (as api.batch does), so that no
    # connection is opened and discarded per query.
    ensure_pool = getattr(getattr(client, "http", None), "ensure_pool", None)
    if ensure_pool is not None:
        ensure_pool(jobs)
    # Results are kept per seed index so the output order is the seed order, whatever order
    # the queries finish in (deterministic output for tests and saved JSON).
    per_seed: list[list[LineRecord] | None] = [None] * total
    errors: dict[int, str] = {}
    outcomes = _cache_first(query, seeds, client=client, jobs=jobs, cancel=cancel)
    for done, outcome in enumerate(outcomes, start=1):
        check(cancel)
        if isinstance(outcome.error, Cancelled):
            raise outcome.error
        if outcome.error is not None:  # one bad seed must not end the search
            exc = outcome.error
            errors[outcome.index] = f"{type(exc).__name__}: {exc}"
            logger.warning("spatial search seed %s failed: %s", outcome.item, exc)
            lines: list[LineRecord] = []
        else:
            lines = per_seed[outcome.index] = outcome.value or []
        if lines and on_lines is not None:
            on_lines(lines)
        report(progress, done=done, total=total, failed=len(errors), message="spatial search")
    check(cancel)
    for lines in per_seed:
        if lines:
            result.lines.extend(lines)
    result.failures = [
        SeedFailure(tuple(float(v) for v in seeds[i]), errors[i])  # type: ignore[arg-type]
        for i in sorted(errors)
    ]
    result.seconds = time.perf_counter() - start
    return result


def _cache_first(query: Callable[[np.ndarray, CancelToken], list[LineRecord]],
                 seeds: np.ndarray, *, client: TargetSpatialClient, jobs: int,
                 cancel: CancelToken | None) -> Iterator[Outcome]:
    """Each seed's :class:`~napari_allen.concurrency.Outcome`, in seed order while the
    metadata cache answers, then in completion order.

    Seeds are asked on this thread, one after another, as long as the client's cache answers
    them; from the first seed that needed the server on, the rest go to ``jobs`` threads
    (:func:`~napari_allen.concurrency.bounded_map`). Why: a cached answer is ~1.4 ms of Python
    and no waiting, so threads gain nothing on it and only contend for the GIL - a cached
    re-run of 400 seeds on 4 threads left napari's main thread a fifth of the GIL (freezes of
    200-300 ms in the Spatial search dock). A client without a served tally (no ``http``)
    goes to the threads at once.
    """
    served_block = getattr(getattr(client, "http", None), "served_block", None)
    start = 0  # the first seed for the threads
    if served_block is not None:
        token = LinkedToken(cancel)
        while start < len(seeds):
            check(cancel)
            seed, value, error = seeds[start], None, None
            with served_block() as served:
                try:
                    value = query(seed, token)
                except Cancelled:
                    raise
                except Exception as exc:  # noqa: BLE001 - handed back, as the threads do
                    error = exc
            yield Outcome(start, seed, value, error)
            start += 1
            if not served.from_cache:  # the server was needed (or nothing was served)
                break
    if start == len(seeds):
        return
    # Bounded queue (2 x jobs, at least jobs + 1): a cancel never waits for 1,000 seeds.
    for outcome in bounded_map(query, seeds[start:], jobs=jobs,
                               window=max(2 * jobs, jobs + 1), cancel=cancel,
                               thread_name="allen-spatial"):
        yield Outcome(outcome.index + start, outcome.item, outcome.value, outcome.error)
