"""Connectivity volumes per experiment, injection summaries, and streamed averages.

Builds on :class:`~napari_allen.api.client.AllenClient` (downloads are cached on disk by the
client, once per experiment/image/resolution) and :mod:`napari_allen.analysis.projections`.

Volumes come either as gzip NRRDs from ``/grid_data/download_file`` (any of the six images at
10/25/50/100 µm) or from the 100 µm grid zip of ``/grid_data/download`` (``density.raw`` =
projection density, ``injection.raw`` = injection fraction), as brain_street_view reads them.
All volumes are ``[AP, DV, ML]`` with µm spacing.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_allen.analysis.projections import (
    AveragingOptions,
    AveragingPlan,
    AveragingResult,
    assign_groups,
    injection_summary,
)
from napari_allen.concurrency import bounded_map
from napari_allen.errors import AllenApiError
from napari_allen.lazy import lazy_module
from napari_allen.progress import Cancelled, CancelToken, ProgressCallback, check, report
from napari_allen.space import NRRD_IMAGES, NRRD_RESOLUTIONS

pd = lazy_module("pandas")  # imported at first use: the docks open without it

if TYPE_CHECKING:
    from napari_allen.api.client import AllenClient
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.io.volume import GridVolume

log = logging.getLogger(__name__)

#: Image -> member of the 100 µm grid zip (``/grid_data/download?include=``). The zip's
#: ``injection`` is read as injection_fraction: an inference from Allen's lines script, which
#: thresholds it at 0.5 as an "injection mask" (docs/allen-api-notes.md §14).
GRID_ZIP_MEMBERS: dict[str, str] = {
    "projection_density": "density",
    "projection_energy": "energy",
    "projection_intensity": "intensity",
    "injection_fraction": "injection",
}
SOURCES: tuple[str, ...] = ("nrrd", "grid")


#: Line filter choices besides a named Cre line.
LINE_ANY = "any"
LINE_WILD_TYPE = "wild type"


def expand_structures(keys: Iterable[int | str], ontology: Ontology | None = None) -> list[int]:
    """Structure ids of ``keys`` (acronyms or ids) and all their descendants, in graph order
    (``VIS`` -> VIS, VISal, VISal1, ...), as brain_street_view expands a parent region."""
    from napari_allen.atlas.ontology import Ontology

    onto = ontology or Ontology.default()
    out: dict[int, None] = {}
    for key in keys:
        for sid in onto.descendants(onto.id_of(key)):
            out[sid] = None
    return list(out)


def _line_names(series: pd.Series) -> pd.Series:
    def name(value) -> str:
        if isinstance(value, dict):
            value = value.get("name")
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        return str(value).strip()

    return series.map(name)


def line_filter(line: str | None) -> list | None:
    """The service's ``transgenic_lines`` filter for a line choice: None for ``'any'``,
    ``[0]`` for wild type (also 'wild-type', 'wt', '0'), else ``[line name]``."""
    key = (line or LINE_ANY).strip()
    if key.lower() in (LINE_WILD_TYPE, "wild-type", "wildtype", "wt", "0", ""):
        return [0] if key else None
    return None if key.lower() == LINE_ANY else [key]


def search_experiments(
    client: AllenClient,
    structures: Sequence[int | str],
    *,
    line: str = LINE_ANY,
    primary_structure_only: bool = True,
    target_domain: Sequence[int | str] | None = None,
    ontology: Ontology | None = None,
    expand: bool = True,
) -> pd.DataFrame:
    """Connectivity experiments injected in ``structures`` (and, with ``expand``, their
    descendants), optionally only those projecting to ``target_domain``.

    By default an experiment matches when its *primary* injection structure is one of them
    (``primary_structure_only=True``), as AllenSDK's ``get_experiments(injection_structure_ids=
    ...)`` and brain_street_view select; ``primary_structure_only=False`` also keeps
    experiments whose injection merely touches them (any of their injection structures).

    ``line``: ``'any'``, ``'wild type'`` or a transgenic line name (e.g. ``'Syt6-Cre_KI148'``,
    case-insensitive). The service filters too; the result is filtered again here so the
    answer is right whatever the server does with the filter. Columns as
    ``AllenClient.injection_structure_search`` (``transgenic_line`` '' = wild type).
    """
    if not structures:
        raise ValueError("give at least one injection structure (acronym or id)")
    ids = expand_structures(structures, ontology) if expand else [
        (ontology or _default_ontology()).id_of(s) for s in structures]
    target = (expand_structures(target_domain, ontology) if expand else list(target_domain)) \
        if target_domain else None
    line_key = (line or LINE_ANY).strip()
    lines = line_filter(line)
    frame = client.injection_structure_search(
        ids, transgenic_lines=lines, primary_structure_only=primary_structure_only,
        target_domain=target)
    if frame.empty:
        return frame
    names = _line_names(frame["transgenic_line"]) if "transgenic_line" in frame else None
    if names is not None:
        frame = frame.assign(transgenic_line=names)
        if lines == [0]:
            frame = frame[names == ""]
        elif lines:
            frame = frame[names.str.lower() == line_key.lower()]
    if primary_structure_only and "structure_id" in frame:
        frame = frame[frame["structure_id"].astype("int64").isin(ids)]
    return frame.reset_index(drop=True)


def search_near(
    client: AllenClient,
    seed_um: Sequence[float],
    *,
    structures: Sequence[int | str] | None = None,
    line: str = LINE_ANY,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """Experiments ranked by the distance (µm, column ``distance``) from their injection to
    ``seed_um`` (``[AP, DV, ML]`` CCF µm), optionally only injections in ``structures`` and
    of one ``line`` (:func:`line_filter`). Service ``mouse_connectivity_injection_coordinate``.
    """
    seed = [float(v) for v in seed_um]
    if len(seed) != 3 or not all(np.isfinite(seed)):
        raise ValueError(f"the seed point needs three numbers AP, DV, ML (µm), got {seed_um}")
    filters: dict = {}
    if structures:
        filters["injection_structures"] = list(structures)
    lines = line_filter(line)
    if lines is not None:
        filters["transgenic_lines"] = lines
    frame = client.injection_coordinate_search(seed, cancel=cancel, **filters)
    if "transgenic_line" in frame:
        frame = frame.assign(transgenic_line=_line_names(frame["transgenic_line"]))
    return frame.reset_index(drop=True)


def load_experiments(
    client: AllenClient,
    experiments: Sequence[dict],
    images: Sequence[str],
    resolution: int = 100,
    *,
    source: str = "nrrd",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[tuple[dict, str, GridVolume]]:
    """Yield ``(experiment row, image, GridVolume)`` for each experiment (rows with ``id``)
    and image, one decoded volume at a time, as the downloads finish (cached on disk)."""
    if not experiments:
        raise ValueError("select experiments first")
    if not images:
        raise ValueError("choose at least one image to load")
    for image in images:
        _check_request(image, resolution, source)
    total = len(experiments) * len(images)
    done = 0
    report(progress, done=0, total=total, message="loading experiments")
    for exp in experiments:
        for image in images:
            check(cancel)
            vol = load_volume(client, int(exp["id"]), image, resolution, source=source,
                              cancel=cancel)
            done += 1
            report(progress, done=done, total=total,
                   message=f"loaded {image.replace('_', ' ')} of {exp['id']}")
            yield exp, image, vol


def _default_ontology() -> Ontology:
    from napari_allen.atlas.ontology import Ontology

    return Ontology.default()


def _check_request(image: str, resolution: int, source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"volume source must be one of {SOURCES}, not {source!r}")
    if source == "nrrd":
        if image not in NRRD_IMAGES:
            raise ValueError(f"unknown connectivity image {image!r}; one of {NRRD_IMAGES}")
        if int(resolution) not in NRRD_RESOLUTIONS:
            raise ValueError(f"NRRD resolution must be one of {NRRD_RESOLUTIONS} µm, "
                             f"not {resolution}")
    else:
        if image not in GRID_ZIP_MEMBERS:
            raise ValueError(f"the grid zip holds {sorted(GRID_ZIP_MEMBERS)}, not {image!r}")
        if int(resolution) != 100:
            raise ValueError("the connectivity grid zip exists at 100 µm only")


def download_volume(
    client: AllenClient,
    experiment_id: int,
    image: str = "projection_density",
    resolution: int = 100,
    *,
    source: str = "nrrd",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Make sure one experiment's volume is in the client's cache; return its file path
    (the NRRD, or the grid zip for ``source='grid'``)."""
    _check_request(image, resolution, source)
    if source == "nrrd":
        # decode=True: the download's check inflates straight into the decoded cache that
        # read_downloaded maps, so a cold read inflates once, not twice.
        return client.grid_nrrd(int(experiment_id), image=image, resolution=int(resolution),
                                decode=True, progress=progress, cancel=cancel)
    return client.grid_zip(int(experiment_id), volumes=(GRID_ZIP_MEMBERS[image],),
                           progress=progress, cancel=cancel)


def read_downloaded(path: Path, experiment_id: int, image: str, source: str,
                    cache_dir: Path | None = None) -> GridVolume:
    """Read a file from :func:`download_volume` as a GridVolume tagged with the experiment.

    With ``cache_dir`` (the client's cache folder) the volume is memory-mapped whatever its
    size: the compressed payload is inflated once into that folder's bounded decoded cache
    (``decoded/``, keyed by the SHA-256 of the compressed bytes, capped, LRU, in the
    manifest; :mod:`napari_allen.io._decode`) and mapped from there on every later read.
    Allen's 100 µm NRRDs and zips are gzip/deflate: inflating one takes ~30 ms, mapping the
    decoded entry well under 1 ms, so averaging hundreds of cached experiments is bounded by
    arithmetic, not decompression, and holds no decoded copy in memory.
    """
    meta = {"experiment_id": int(experiment_id), "image": image, "source_kind": source}
    cached = cache_dir is not None
    if source == "nrrd":
        from napari_allen.io.nrrd import read_nrrd

        return read_nrrd(path, kind=image, metadata=meta, cache_dir=cache_dir,
                         cache_decoded=cached)
    from napari_allen.io.gridzip import read_grid_zip

    member = GRID_ZIP_MEMBERS[image]
    vols = read_grid_zip(path, cache_dir=cache_dir, cache_decoded=cached)
    for vol in vols:
        if vol.kind == member or str(vol.metadata.get("member", "")).startswith(member + "."):
            vol.metadata.update(meta)
            vol.kind = image if image in _kinds() else vol.kind
            return vol
    from napari_allen.errors import AllenFormatError

    raise AllenFormatError(path, f"grid zip has no {member}.mhd/.raw volume "
                                 f"(found {[v.kind for v in vols]})")


#: Where earlier versions kept a ``.npy`` copy of every decoded connectivity volume.
_LEGACY_DECODED = "connectivity-decoded"
_legacy_checked: set[str] = set()


def _drop_legacy_copies(cache_dir: Path) -> None:
    """Remove the ``.npy`` copies earlier versions wrote beside the downloads (a second,
    uncapped decoded copy of every volume; the decoded cache replaces them). Once per folder
    and process."""
    key = str(cache_dir)
    if key in _legacy_checked:
        return
    _legacy_checked.add(key)
    legacy = Path(cache_dir) / _LEGACY_DECODED
    if legacy.is_dir():
        log.info("removing %s (superseded by the decoded cache)", legacy)
        shutil.rmtree(legacy, ignore_errors=True)


def _kinds() -> tuple[str, ...]:
    from napari_allen.io.volume import KINDS

    return KINDS


def load_volume(
    client: AllenClient,
    experiment_id: int,
    image: str = "projection_density",
    resolution: int = 100,
    *,
    source: str = "nrrd",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> GridVolume:
    """One experiment's volume (``[AP, DV, ML]``, raw values, ``resolution`` µm)."""
    path = download_volume(client, experiment_id, image, resolution, source=source,
                           progress=progress, cancel=cancel)
    check(cancel)
    _drop_legacy_copies(client.cache_dir)
    return read_downloaded(path, experiment_id, image, source, client.cache_dir)


class _Raised:
    """An exception of ``prepare`` carried out of a worker (never a per-experiment failure)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def iter_volumes(
    client: AllenClient,
    experiment_ids: Sequence[int],
    image: str = "projection_density",
    resolution: int = 100,
    *,
    source: str = "nrrd",
    prefetch: int = 8,
    failures: dict[int, str] | None = None,
    prepare: Callable[[int, GridVolume], Any] | None = None,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(experiment_id, GridVolume)`` in order, one decoded volume at a time.

    Up to ``prefetch`` downloads and decodes run ahead in threads (files go to the client's
    disk cache, decoded payloads to its bounded decoded cache); volumes are memory-mapped, so
    memory holds no decoded copy whatever the count.
    With a ``failures`` dict, experiments that cannot be downloaded/read are recorded there
    (id -> message) and skipped; without one the first failure raises.
    ``prepare(experiment_id, volume)`` runs in the same worker right after the read (numpy
    work that releases the GIL) and its result is yielded instead of the volume; an exception
    it raises ends the iteration (it is not an experiment's failure). ``jobs`` threads do
    this (default ``prefetch``: one per download in flight).
    """
    _check_request(image, resolution, source)
    ids = [int(e) for e in experiment_ids]
    total = len(ids)
    failed = 0
    report(progress, done=0, total=total, message=f"loading {image}")
    ahead = max(1, int(prefetch))

    _drop_legacy_copies(client.cache_dir)

    def fetch(exp_id: int, token: CancelToken):
        path = download_volume(client, exp_id, image, resolution, source=source, cancel=token)
        check(token)
        # Decoded in the worker too (zlib and SHA-256 release the GIL): the volume arrives
        # memory-mapped from the decoded cache, so the window costs no volume-sized memory.
        volume = read_downloaded(path, exp_id, image, source, client.cache_dir)
        if prepare is None:
            return volume
        try:
            return prepare(exp_id, volume)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer below
            return _Raised(exc)

    done = 0
    # Downloads and decodes run ahead in input order (bounded: ``prefetch`` volumes); leaving
    # the loop stops them (concurrency.bounded_map).
    threads = ahead if jobs is None else max(1, min(ahead, int(jobs)))
    for outcome in bounded_map(fetch, ids, jobs=threads, window=ahead, ordered=True,
                               cancel=cancel, thread_name="connectivity-load"):
        check(cancel)
        exp_id = outcome.item
        if isinstance(outcome.value, _Raised):
            raise outcome.value.error
        try:
            if outcome.error is not None:
                raise outcome.error
            volume = outcome.value
        except Exception as exc:  # noqa: BLE001 - reported per experiment below
            if isinstance(exc, Cancelled) or failures is None:
                raise
            failures[exp_id] = str(exc)
            failed += 1
            log.warning("experiment %s skipped: %s", exp_id, exc)
            done += 1
            report(progress, done=done, total=total, failed=failed,
                   message=f"experiment {exp_id} failed")
            continue
        done += 1
        report(progress, done=done, total=total, failed=failed,
               message=f"loaded experiment {exp_id}")
        yield exp_id, volume
    check(cancel)


def fetch_injection_summary(
    client: AllenClient,
    experiment_ids: Iterable[int],
    *,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """Injection volume (mm³), intensity and densest voxel (µm) per experiment.

    From ProjectionStructureUnionize rows with ``is_injection`` true, structure 997 (root),
    hemisphere 3 (both), only those rows (requests run concurrently; answers are kept in the
    client's metadata cache, so a repeated average asks nothing). Indexed by experiment id;
    experiments without such a row are absent.
    """
    ids = sorted({int(e) for e in experiment_ids})
    rows = client.projection_structure_unionize(
        ids, is_injection=True, hemisphere_ids=[3], structure_ids=[997], cancel=cancel)
    return injection_summary(rows)


#: Refuse averages needing more working memory than this (bytes) unless asked.
DEFAULT_MAX_AVERAGE_BYTES = 6e9


def check_average_memory(resolution: int, n_groups: int, *,
                         max_bytes: float = DEFAULT_MAX_AVERAGE_BYTES) -> float:
    """Estimated working memory (bytes) of a streamed average; ValueError above ``max_bytes``.

    Per group a float64 sum, a float32 mean and a uint16 missing count; plus the float32
    volume being processed and half a volume of temporaries: 14 B per voxel per group + 6.
    """
    from napari_allen.space import GRID_SHAPES

    shape = GRID_SHAPES.get(int(resolution))
    if shape is None:
        raise ValueError(f"no CCF grid at {resolution} µm")
    voxels = float(np.prod(shape))
    need = voxels * (14 * max(1, n_groups) + 6)
    if need > max_bytes:
        raise ValueError(
            f"averaging {n_groups} group(s) at {resolution} µm needs about {need / 1e9:.1f} GB "
            f"of memory (limit {max_bytes / 1e9:.1f} GB): use a coarser resolution "
            "(100 or 50 µm) or fewer groups")
    return need


def average_experiments(
    client: AllenClient,
    experiments: pd.DataFrame,
    options: AveragingOptions,
    *,
    resolution: int = 100,
    source: str = "nrrd",
    ontology: Ontology | None = None,
    prefetch: int = 8,
    max_memory_bytes: float = DEFAULT_MAX_AVERAGE_BYTES,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> AveragingResult:
    """Download (cached) and average the projection density of ``experiments`` per group.

    ``experiments`` is a search result (``id, structure_id, structure_abbrev,
    transgenic_line, injection_x/y/z`` µm, ``gender``, ``strain``). Injection volumes and
    intensities come from ProjectionStructureUnionize (also filling a missing injection
    coordinate from the densest injection voxel). Experiments outside every group are not
    downloaded; failed downloads are listed in ``result.skipped``.

    The injection summary request runs while the downloads start; each worker then downloads
    (or finds cached), decodes and prepares one experiment (normalise, subtract the other
    hemisphere: :meth:`AveragingPlan.contribution`, numpy that releases the GIL), ``prefetch``
    at a time within a memory budget (:func:`_prepared_window`); the calling thread only adds
    the prepared volumes to the group sums, in input order (reproducible sums).
    """
    experiments = experiments.reset_index(drop=True).copy()
    if experiments.empty:
        raise ValueError("no experiments to average")
    group_index, groups = assign_groups(experiments, options, ontology)
    check_average_memory(resolution, len(groups), max_bytes=max_memory_bytes)
    candidates = _candidates(experiments, group_index, options)
    report(progress, done=0, total=len(candidates), message="fetching injection summaries")

    def make_plan() -> AveragingPlan:
        summary = _summary(client, experiments, options, cancel)
        return AveragingPlan(_fill_coordinates(experiments, summary), options,
                             resolution=resolution, injection=summary, ontology=ontology)

    def prepare(exp_id: int, volume: GridVolume):
        return planned.result().contribution(exp_id, volume.data)  # waits for the summary

    failures: dict[int, str] = {}
    window = _prepared_window(resolution, prefetch)
    # Threads: one per download in flight, or, when every file is already on disk (the work
    # is then arithmetic only), one per core: more would only contend for the interpreter.
    cached = _all_downloaded(client, candidates, "projection_density", resolution, source)
    jobs = min(window, max(2, os.cpu_count() or 2)) if cached else window
    with ThreadPoolExecutor(1, thread_name_prefix="connectivity-summary") as summary_pool:
        planned = summary_pool.submit(contextvars.copy_context().run, make_plan)
        for _exp_id, contribution in iter_volumes(
                client, candidates, "projection_density", resolution, source=source,
                prefetch=window, jobs=jobs, failures=failures, prepare=prepare,
                progress=progress, cancel=cancel):
            if contribution is not None:
                planned.result().add(contribution)
        check(cancel)
        plan = planned.result()  # the summary's own error, if it failed
    result = plan.result()
    result.skipped.update(failures)
    if failures:
        result.table.loc[result.table["ExperimentID"].isin(list(failures)), "Used"] = False
    return result


#: Volumes being prepared or waiting to be summed may hold this many bytes at once.
PREPARED_BYTES = 256e6


def _prepared_window(resolution: int, prefetch: int) -> int:
    """How many experiments run ahead (download, decode, per-volume arithmetic): ``prefetch``
    while their float32 work (about one volume each: half a volume of result, half of
    temporaries) fits :data:`PREPARED_BYTES`, down to one at a time (8 at 100 µm, 6 at 50,
    1 at 25 µm)."""
    from napari_allen.space import GRID_SHAPES

    each = 4.0 * float(np.prod(GRID_SHAPES.get(int(resolution), GRID_SHAPES[100])))
    return int(max(1, min(max(1, int(prefetch)), PREPARED_BYTES // each)))


def _all_downloaded(client: AllenClient, experiment_ids: Sequence[int], image: str,
                    resolution: int, source: str) -> bool:
    """Are all these volumes' files in the client's cache (a cheap look: reuse still verifies
    each one against its manifest entry)?"""
    if source == "nrrd":
        paths = (client.grid_nrrd_path(e, image, resolution) for e in experiment_ids)
    else:
        paths = (client.grid_zip_path(e, (GRID_ZIP_MEMBERS[image],)) for e in experiment_ids)
    return all(os.path.exists(p) for p in paths)


def _candidates(experiments: pd.DataFrame, group_index: np.ndarray,
                options: AveragingOptions) -> list[int]:
    """Experiments whose volume the average may need, known before the injection summary:
    those in a group, or every one when a grouping coordinate is missing (the summary fills
    it, and the bins may move)."""
    ids = experiments["id"].astype("int64").to_numpy()
    column = {"ap": "injection_x", "dv": "injection_y", "ml": "injection_z"}.get(
        options.group_by)
    if column is not None:
        coords = pd.to_numeric(experiments.get(column, pd.Series(np.nan, index=experiments.index)),
                               errors="coerce")
        if coords.isna().any():
            return ids.tolist()
    return ids[np.asarray(group_index) >= 0].tolist()


def _summary(client: AllenClient, experiments: pd.DataFrame, options: AveragingOptions,
             cancel: CancelToken | None) -> pd.DataFrame:
    """The injection summary; without normalisation an unavailable one only leaves the
    exported table's columns empty."""
    try:
        return fetch_injection_summary(client, experiments["id"], cancel=cancel)
    except AllenApiError as exc:
        if options.normalization == "injection_volume":
            raise
        log.warning("injection summaries unavailable (%s); table columns left empty", exc)
        return injection_summary(pd.DataFrame())


def _fill_coordinates(experiments: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """``experiments`` with missing injection coordinates taken from the densest injection
    voxel (``max_voxel_x/y/z`` µm of the summary)."""
    out = experiments.copy()
    for axis, col in (("x", "injection_x"), ("y", "injection_y"), ("z", "injection_z")):
        if col not in out:
            out[col] = np.nan
        coords = pd.to_numeric(out[col], errors="coerce")
        if len(summary):
            out[col] = coords.fillna(out["id"].map(summary[f"max_voxel_{axis}"]))
    return out
