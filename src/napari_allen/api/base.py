"""The core every domain API shares: API and file-server URLs, the HTTP transport (retries,
metadata cache), the verified file store and RMA paging (:class:`ApiBase`).

The domain modules (:mod:`.ish`, :mod:`.connectivity`, :mod:`.ontology`, :mod:`.grids`) build
their queries on it, as AllenSDK's per-domain APIs build on its ``RmaApi``;
:class:`~napari_allen.api.client.AllenClient` combines them. The client is thread-safe: widget
workers and batch download threads share one instance.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta

from .. import config
from ..errors import AllenApiError
from ..progress import CancelToken, ProgressCallback, check, report
from . import rma
from .cache import FileStore, host_tag, metadata_db
from .http import HttpTransport

DEFAULT_FILES_URL = "http://download.alleninstitute.org"
FILES_URL_ENV = "NAPARI_ALLEN_FILES_URL"
ID_CHUNK = 100  # ids per $in list: keeps URLs well under server limits


def resolve_files_url(api_url: str, override: str | None = None) -> str:
    """Base URL of the file server holding the CCF annotation volumes.

    ``override``, else ``$NAPARI_ALLEN_FILES_URL``, else — when the API URL is not Allen's
    (e.g. the local server) — the API URL itself, else ``http://download.alleninstitute.org``.
    """
    url = override or os.environ.get(FILES_URL_ENV)
    if not url:
        url = DEFAULT_FILES_URL if api_url.rstrip("/") == config.DEFAULT_API_URL else api_url
    return url.rstrip("/")


def chunks(values: Sequence, size: int) -> Iterable[list]:
    """``values`` in lists of at most ``size`` (for ``$in`` lists)."""
    for i in range(0, len(values), size):
        yield list(values[i:i + size])


def checked_ids(values, what: str = "experiment id") -> list[int]:
    """Validated integer ids (one value or many), duplicates dropped, order kept."""
    if isinstance(values, (int, str)):
        values = [values]
    out = []
    for v in values:
        try:
            out.append(int(rma.integer(v)))
        except rma.RmaValueError:
            raise ValueError(f"{what} must be an integer, got {v!r}") from None
    return list(dict.fromkeys(out))


class ApiBase:
    """Client core of the Allen Brain Atlas API (and its file server).

    Parameters: ``base_url`` (default ``napari_allen.config.api_base_url()``), ``cache_dir``
    (default ``napari_allen.config.cache_dir()``), ``timeout`` (connect, read) in seconds,
    ``retries`` and ``backoff`` (seconds, doubled per attempt, with jitter), ``offline``
    (answer only from the caches), ``files_base_url`` (see :func:`resolve_files_url`),
    ``page_size`` (rows per RMA page), ``pool_size`` (connections kept per host),
    ``expire_after`` (metadata cache lifetime).
    """

    def __init__(self, base_url: str | None = None, cache_dir: str | os.PathLike | None = None,
                 *, timeout: tuple[float, float] = (5, 60), retries: int = 5,
                 backoff: float = 0.5, offline: bool = False,
                 files_base_url: str | None = None, page_size: int = 2000,
                 pool_size: int = 16,
                 expire_after: timedelta | int = timedelta(days=30)) -> None:
        self.base_url = config.api_base_url(base_url)
        self.files_url = resolve_files_url(self.base_url, files_base_url)
        self.cache_dir = config.cache_dir(cache_dir)
        self.offline = offline
        self.page_size = int(page_size)
        self.http = HttpTransport(metadata_db(self.cache_dir), timeout=timeout, retries=retries,
                                  backoff=backoff, offline=offline, pool_size=pool_size,
                                  expire_after=expire_after)
        self.store = FileStore(self.cache_dir / "files")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_url={self.base_url!r}, "
                f"cache_dir={str(self.cache_dir)!r}, offline={self.offline})")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiBase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- low-level query helpers ---------------------------------------------------------
    def rma_url(self, q: str, fmt: str = "json") -> str:
        """``<base>/api/v2/data/query.<fmt>?q=<stages>`` with AllenSDK-style encoding."""
        return f"{self.base_url}/api/v2/data/query.{fmt}?" + rma.encode_query({"q": q})

    def service_url(self, stage: str) -> str:
        """``<base>/api/v2/data/query.json?criteria=service::...``
        (docs/allen-api-notes.md §7.2)."""
        return f"{self.base_url}/api/v2/data/query.json?" + rma.encode_query({"criteria": stage})

    def query_rows(self, query: rma.RmaQuery, *, page_size: int | None = None,
                   limit: int | None = None,
                   progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> list[dict]:
        """All records of a model query, page by page (``start_row`` advances by the rows
        received; stops on an empty page or ``msg: {}``, or when ``total_rows`` is reached);
        with ``limit``, only the first ``limit`` records (pages no larger than needed: the
        first N of a listing are one request, not every page of it)."""
        return [row for page in self.query_pages(query, page_size=page_size, limit=limit,
                                                 progress=progress, cancel=cancel)
                for row in page]

    def query_pages(self, query: rma.RmaQuery, *, page_size: int | None = None,
                    limit: int | None = None,
                    progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> Iterator[list[dict]]:
        """:meth:`query_rows` one page at a time, each as soon as it arrives (the next page is
        requested when the caller asks for it): work on the first rows can start while the
        listing goes on."""
        size = int(page_size or self.page_size)
        received = 0  # rows the server sent (start_row advances by them)
        yielded = 0
        while True:
            check(cancel)
            if limit is not None:
                if received >= limit:
                    return
                size = min(size, int(limit) - received)
            url = self.rma_url(query.stages(start_row=received, num_rows=size))
            env = self.http.get_json(url, cancel=cancel)
            page = records_of(env, url)
            if not page:
                return
            received += len(page)
            total = int_or_none(env.get("total_rows"))
            report(progress, done=received, total=total,
                   message=f"{query.model}: {received} rows")
            kept = page if limit is None else page[:max(0, int(limit) - yielded)]
            yielded += len(kept)
            if kept:
                yield kept
            if total is not None and received >= total:
                return
            if total is None and len(page) < size:
                return

    def service_rows(self, query: rma.ServiceQuery, *, page_size: int | None = None,
                     cancel: CancelToken | None = None) -> list[dict]:
        """All records of a connected service; paging goes inside the service brackets.

        Some services ignore paging (docs/allen-api-notes.md §4): a page that brings no new ids
        ends the loop, so a server repeating its first page cannot loop us forever.
        """
        size = int(page_size or 2000)
        rows: list[dict] = []
        seen: set = set()
        start = 0
        while True:
            check(cancel)
            url = self.service_url(query.stage(start_row=start, num_rows=size))
            env = self.http.get_json(url, cancel=cancel)
            page = records_of(env, url)
            new = [r for r in page if _row_key(r) not in seen]
            if not new:
                break
            seen.update(_row_key(r) for r in new)
            rows.extend(new)
            start += len(page)
            total = int_or_none(env.get("total_rows"))
            if total is not None and start >= total:
                break
            if total is None and len(page) < size:
                break
        return rows

    @property
    def api_host(self) -> str:
        """The API server's cache folder name (``api.brain-map.org``, ``127.0.0.1_8765``)."""
        return host_tag(self.base_url)


# --- response envelopes --------------------------------------------------------------------
def int_or_none(value) -> int | None:
    """``int(value)``, or None when it is not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def records_of(env: dict, url: str) -> list[dict]:
    """The records of a successful envelope's ``msg``; AllenApiError naming ``url`` else."""
    msg = env.get("msg")
    if isinstance(msg, list):
        return msg
    if isinstance(msg, dict):
        return []  # {} is how the services say "no rows"
    raise AllenApiError(url, f"unexpected msg in a successful response: {str(msg)[:200]}")


def _row_key(row: dict):
    return row.get("id", repr(sorted(row.items()))[:500]) if isinstance(row, dict) else repr(row)
