"""Concurrent, resumable batch downloads (e.g. every coronal ISH grid).

``download_many(client, requests, jobs=8)`` runs the requests on a thread pool sharing the
client's connection pool. Each file is streamed to disk in 64 KiB chunks (memory does not grow
with the number of grids), verified and renamed (:func:`napari_allen.api.cache.download_file`);
files already complete are skipped, so re-running an interrupted batch finishes it. Progress
reports items and bytes; cancelling stops every worker at its next chunk, deletes the partial
files and raises :class:`BatchCancelled` carrying the per-item results so far.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..concurrency import bounded_map
from ..errors import AllenError
from ..progress import Cancelled, CancelToken, ProgressCallback, report
from .cache import download_file, host_tag, verify_grid_zip, verify_nrrd
from .client import AllenClient
from .grids import check_volumes

if TYPE_CHECKING:  # result frames only: the download path itself never imports pandas
    import pandas as pd

RESULT_COLUMNS = ["request", "experiment_id", "volume", "resolution", "status", "path", "bytes",
                  "seconds", "error", "url"]
# status values: downloaded | verified (on disk, matches its manifest entry) | refetched
# (on disk but damaged/swapped, downloaded again) | failed | cancelled
OK_STATUSES = ("downloaded", "verified", "refetched")

Verifier = Callable[[Path, str], None]


@dataclass(frozen=True)
class GridRequest:
    """A ``grid_data/download/<id>?include=<volumes>`` zip (200 µm ISH / connectivity grids).
    ``dest``: explicit file path; None = the client's cache."""

    experiment_id: int
    volumes: tuple[str, ...] = ("energy",)
    dest: Path | None = None
    kind: str = field(default="grid_zip", init=False)

    def plan(self, client: AllenClient) -> tuple[str, Path, Verifier]:
        vols = check_volumes(self.volumes)
        target = self.dest or client.grid_zip_path(self.experiment_id, vols)
        return (client.grid_zip_url(self.experiment_id, vols), Path(target),
                lambda p, s: verify_grid_zip(p, vols, s))

    def describe(self) -> dict:
        return {"experiment_id": int(self.experiment_id), "volume": "+".join(self.volumes),
                "resolution": 200}


@dataclass(frozen=True)
class NrrdRequest:
    """A connectivity ``grid_data/download_file/<id>?image=&resolution=`` NRRD."""

    experiment_id: int
    image: str = "projection_density"
    resolution: int = 100
    dest: Path | None = None
    kind: str = field(default="grid_nrrd", init=False)

    def plan(self, client: AllenClient) -> tuple[str, Path, Verifier]:
        url = client.grid_nrrd_url(self.experiment_id, self.image, self.resolution)
        target = self.dest or client.grid_nrrd_path(self.experiment_id, self.image,
                                                    self.resolution)
        return url, Path(target), lambda p, s: verify_nrrd(p, s)

    def describe(self) -> dict:
        return {"experiment_id": int(self.experiment_id), "volume": self.image,
                "resolution": int(self.resolution)}


@dataclass(frozen=True)
class AnnotationRequest:
    """The CCF 2017 annotation NRRD at ``resolution`` µm (file server)."""

    resolution: int = 25
    dest: Path | None = None
    kind: str = field(default="annotation", init=False)

    def plan(self, client: AllenClient) -> tuple[str, Path, Verifier]:
        url = client.annotation_url(self.resolution)
        target = self.dest or client.store.annotation(host_tag(client.files_url),
                                                      self.resolution)
        return url, Path(target), lambda p, s: verify_nrrd(p, s)

    def describe(self) -> dict:
        import pandas as pd

        return {"experiment_id": pd.NA, "volume": "annotation",
                "resolution": int(self.resolution)}


DownloadRequest = GridRequest | NrrdRequest | AnnotationRequest


class BatchCancelled(Cancelled):
    """The batch was cancelled; ``results`` holds one row per request (status so far)."""

    def __init__(self, results: pd.DataFrame) -> None:
        super().__init__("batch download cancelled")
        self.results = results


class _Tally:
    """Shared counters for progress (workers update them from several threads)."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total, self.callback = total, callback
        self.done = self.failed = self.bytes = 0
        self._lock = threading.Lock()
        self._last = 0.0

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            now = time.monotonic()
            if now - self._last < 0.2:  # throttle: a callback per chunk would flood the UI
                return
            self._last = now
            self._report("downloading")

    def finish(self, failed: bool, message: str) -> None:
        with self._lock:
            self.done += 1
            self.failed += int(failed)
            self._last = time.monotonic()
            self._report(message)

    def _report(self, message: str) -> None:
        report(self.callback, done=self.done, total=self.total, message=message,
               bytes_done=self.bytes, failed=self.failed)


def _row(req, status: str, **extra) -> dict:
    row = {"request": req.kind, **req.describe(), "status": status, "path": "", "bytes": 0,
           "seconds": 0.0, "error": "", "url": ""}
    row.update(extra)
    return row


def _run_one(client: AllenClient, req, tally: _Tally, cancel: CancelToken,
             deep: bool = False) -> dict:
    if cancel.cancelled:
        return _row(req, "cancelled")
    start = time.monotonic()
    try:
        url, target, verify = req.plan(client)
    except ValueError as exc:  # bad id/volume/resolution: report on this row only
        tally.finish(True, f"invalid request {req}")
        return _row(req, "failed", error=str(exc))
    try:
        fetched = download_file(client.http, url, target, verify, on_bytes=tally.add_bytes,
                                cancel=cancel, deep=deep)
    except Cancelled:
        return _row(req, "cancelled", url=url)
    except (AllenError, OSError) as exc:
        row = _row(req, "failed", url=url, error=str(exc), seconds=time.monotonic() - start)
        tally.finish(True, f"failed {target.name}")
        return row
    tally.finish(False, f"{fetched.status} {target.name}")
    return _row(req, fetched.status, url=url, path=str(fetched.path), bytes=fetched.bytes,
                seconds=round(time.monotonic() - start, 3), error=fetched.reason)


def iter_downloads(client: AllenClient, requests: Sequence[DownloadRequest], *, jobs: int = 8,
                   progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None,
                   deep: bool = False) -> Iterator[tuple[int, dict]]:
    """Download the requests with ``jobs`` threads; yield ``(index, result row)`` as each
    finishes (completion order), so a caller can use a file while the others download.

    Rows and ``deep`` as :func:`download_many`'s; a request never started because of a cancel
    yields nothing. Leaving the loop early stops the running downloads (partial files removed).
    """
    requests = list(requests)
    client.http.ensure_pool(jobs)
    tally = _Tally(len(requests), progress)
    report(progress, done=0, total=len(requests), message="starting")

    def run(req: DownloadRequest, token: CancelToken) -> dict:
        return _run_one(client, req, tally, token, deep)

    # A bounded window of submitted work: memory stays flat for 26,000 requests too.
    for outcome in bounded_map(run, requests, jobs=jobs, cancel=cancel,
                               thread_name="allen-download"):
        if outcome.error is not None:
            raise outcome.error  # _run_one reports failures in its row: this is a bug
        yield outcome.index, outcome.value
    if not (cancel is not None and cancel.cancelled):
        report(progress, done=tally.done, total=len(requests), bytes_done=tally.bytes,
               failed=tally.failed, message="done")


def download_rows(client: AllenClient, requests: Sequence[DownloadRequest], *, jobs: int = 8,
                  progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None, deep: bool = False) -> list[dict]:
    """:func:`download_many`'s rows as plain dicts (columns :data:`RESULT_COLUMNS`), in request
    order, without pandas (the ``download`` command's path); a cancel does not raise here:
    requests never started get status ``cancelled``."""
    requests = list(requests)
    rows: list[dict | None] = [None] * len(requests)
    for index, row in iter_downloads(client, requests, jobs=jobs, progress=progress,
                                     cancel=cancel, deep=deep):
        rows[index] = row
    return [row if row is not None else _row(req, "cancelled")
            for req, row in zip(requests, rows, strict=True)]


def download_many(client: AllenClient, requests: Sequence[DownloadRequest], *, jobs: int = 8,
                  progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None, deep: bool = False) -> pd.DataFrame:
    """Download every request with ``jobs`` threads; one result row per request, in order.

    Columns: request, experiment_id, volume, resolution, status, path, bytes, seconds, error,
    url. ``status``: 'downloaded' (new), 'verified' (already on disk and matching its manifest
    entry), 'refetched' (was on disk but damaged or swapped: ``error`` says how, downloaded
    again), 'failed', 'cancelled'. ``deep`` re-hashes every file on disk, changed or not.
    Failures are reported per row, never raised; cancellation raises :class:`BatchCancelled`
    (with the rows) after every worker stopped and removed its partial file.
    """
    import pandas as pd

    rows = download_rows(client, requests, jobs=jobs, progress=progress, cancel=cancel,
                         deep=deep)
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if cancel is not None and cancel.cancelled:
        raise BatchCancelled(frame)
    return frame
