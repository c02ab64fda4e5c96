"""HTTP transport for the Allen API: pooled sessions, timeouts, retries, response validation.

One :class:`HttpTransport` per :class:`~napari_allen.api.client.AllenClient`. It owns

- a requests-cache ``CachedSession`` (SQLite) for metadata: a repeated query is answered from
  disk, and ``offline=True`` answers only from disk; only *valid* responses are stored (HTTP
  200, non-empty, JSON with ``success: true`` or a complete CSV), so an error page, a
  ``success: false`` envelope or a truncated body never poisons the cache;
- a plain ``requests.Session`` for streamed file downloads (grids never go into SQLite).

Retries (exponential backoff with jitter) cover what the Allen API does transiently: HTTP 5xx,
429 and 408, timeouts and dropped connections, ``success: false`` "Informatics service request
failed", HTTP 200 HTML "site unavailable" pages, empty and truncated bodies; they stop after
``retries`` attempts or ``retry_budget`` seconds (default 10 s, restarted whenever a download
makes progress). Query mistakes ("bad syntax", unknown model, HTTP 4xx) raise at once. A server
that cannot be reached at all (connection refused, unknown host) raises
:class:`~napari_allen.errors.AllenUnreachableError` at once: one sentence naming the address,
``NAPARI_ALLEN_API_URL``, ``napari-allen local-api`` and whether cached results exist. Every
other failure raises :class:`~napari_allen.errors.AllenApiError` with the URL and the message.

The metadata cache stores JSON, never pickles, and survives damage (:mod:`.metacache`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..errors import AllenApiError, AllenCacheError, AllenUnreachableError
from ..progress import CancelToken, check
from . import metacache

log = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT = "napari-allen (https://github.com/napari-allen; research use)"
# success:false messages worth retrying (seen intermittently on the real API).
_TRANSIENT_MESSAGES = (
    "informatics service request failed",
    "timeout",
    "timed out",
    "temporarily",
    "unavailable",
    "try again",
    "deadlock",
    "too many",
)
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
RETRY_BUDGET_S = 10.0


class TransientError(Exception):
    """A failure worth retrying (internal; surfaces as a retryable AllenApiError)."""

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def is_transient_message(message: str) -> bool:
    text = message.lower()
    return any(m in text for m in _TRANSIENT_MESSAGES)


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _looks_html(resp: requests.Response, body: bytes) -> bool:
    ctype = resp.headers.get("Content-Type", "").lower()
    head = body[:200].lstrip().lower()
    return "text/html" in ctype or head.startswith((b"<!doctype html", b"<html"))


def _html_message(body: bytes) -> str:
    text = body[:2000].decode("utf-8", "replace")
    lowered = text.lower()
    if "site unavailable" in lowered:
        return "HTML page 'site unavailable' instead of data"
    return "HTML page instead of data: " + " ".join(text.split())[:120]


def _envelope_error(url: str, data: dict, status: int | None) -> Exception:
    message = data.get("msg")
    message = message if isinstance(message, str) else json.dumps(message)[:300]
    if is_transient_message(message):
        return TransientError(message, status)
    return AllenApiError(url, message, status, retryable=False)


def _json_or_none(body: bytes) -> object:
    """The JSON value of ``body``, or None when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def _raise_if_error_envelope(url: str, data: object, status: int) -> None:
    """An Allen ``success: false`` envelope becomes the matching error (never a retry for
    syntax errors), whatever the HTTP status."""
    if isinstance(data, dict) and data.get("success") is False:
        raise _envelope_error(url, data, status)


def _check_response(url: str, resp: requests.Response, data: object) -> None:
    """Checks every metadata response shares: an error envelope (decided by its message,
    whatever the HTTP status: the API may send "bad syntax" with a 500, and syntax errors must
    not be retried), retryable statuses, other failures, empty bodies and HTML error pages."""
    body = resp.content
    status = resp.status_code
    _raise_if_error_envelope(url, data, status)
    if status in _RETRY_STATUS:
        raise TransientError(f"HTTP {status} {resp.reason or ''}".strip(), status,
                             _retry_after(resp))
    if status != 200:
        detail = body[:300].decode("utf-8", "replace").strip() or (resp.reason or "")
        raise AllenApiError(url, f"HTTP {status}: {detail}", status, retryable=False)
    if not body.strip():
        raise TransientError("empty response body", status)
    if _looks_html(resp, body):
        raise TransientError(_html_message(body), status)


def parse_json_body(url: str, resp: requests.Response) -> dict:
    """Validate a JSON response and return the envelope (``success`` true), or raise
    :class:`TransientError` (retry) / :class:`AllenApiError` (do not retry)."""
    body = resp.content
    # The cache's filter (_cacheable) already parsed this very body: decode it once (a
    # 1,300-row StructureUnionize page costs several ms per json.loads).
    memo = getattr(resp, "_napari_allen_json", None)
    if memo is not None and memo[0] is body:
        data = memo[1]
    else:
        data = _json_or_none(body) if body.strip() else None
        with contextlib.suppress(AttributeError):  # a response class with __slots__
            resp._napari_allen_json = (body, data)
    _check_response(url, resp, data)
    if data is None:
        raise TransientError(f"truncated or invalid JSON ({len(body)} bytes)", resp.status_code)
    if not isinstance(data, dict):
        raise AllenApiError(url, f"unexpected JSON ({type(data).__name__}, not an envelope)",
                            resp.status_code)
    if data.get("success") is not True:
        raise AllenApiError(url, f"response without success: true ({str(data)[:200]})",
                            resp.status_code)
    return data


def parse_csv_body(url: str, resp: requests.Response) -> str:
    """Validate a CSV response (complete rows, same field count as the header); return text."""
    body = resp.content
    status = resp.status_code
    # An error envelope instead of the CSV?
    data = _json_or_none(body) if body.lstrip().startswith(b"{") else None
    _check_response(url, resp, data)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise TransientError("CSV body is not UTF-8 (truncated mid-character?)", status) from None
    framed = "Content-Length" in resp.headers or "chunked" in resp.headers.get(
        "Transfer-Encoding", "").lower()
    if not framed and not text.endswith("\n"):
        # A close-delimited body cut anywhere, even inside the last field, ends here.
        raise TransientError("CSV ends without a final newline (truncated body?)", status)
    try:
        rows = csv.reader(io.StringIO(text), strict=True)
        header = next(rows, None)
        if not header:
            raise TransientError("CSV without a header row", status)
        for n, row in enumerate(rows, start=2):
            if row and len(row) != len(header):
                # A body cut mid-row shows up as a short last row.
                raise TransientError(f"CSV row {n} has {len(row)} fields, header has "
                                     f"{len(header)} (truncated body?)", status)
    except csv.Error as exc:
        raise TransientError(f"malformed CSV ({exc}; truncated body?)", status) from None
    return text


def unreachable_reason(exc: BaseException) -> str | None:
    """'connection refused' / 'unknown host' when ``exc`` says the server cannot be reached
    at all (retrying cannot help), else None (timeouts, resets: worth retrying)."""
    seen: set[int] = set()
    stack: list = [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror) or type(err).__name__ == "NameResolutionError":
            return "unknown host"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        stack.extend([getattr(err, "reason", None), err.__cause__, err.__context__])
        stack.extend(a for a in getattr(err, "args", ()) if isinstance(a, BaseException))
    return None


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _cacheable(resp: requests.Response) -> bool:
    """requests-cache filter: store only responses that would pass validation."""
    if resp.status_code != 200:
        return False
    url = resp.url or ""
    try:
        if ".csv" in url.split("?")[0]:
            parse_csv_body(url, resp)
        else:
            parse_json_body(url, resp)
    except (TransientError, AllenApiError):
        return False
    return True


class EnvOnceSession(requests.Session):
    """A ``requests.Session`` that reads the environment's proxy and CA-bundle settings once
    per host instead of on every request.

    requests scans ``os.environ`` twice per request for them (``merge_environment_settings``:
    ~0.4 ms of Python, 0.2 s of a 400-grid batch, all of it holding the GIL the other download
    threads need). The answer depends only on the scheme and host, the request's own options
    and the session's settings, so it is kept per such key; an environment changed after the
    first request to a host is not seen by this session (a new client sees it).
    """

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        try:
            key = (parts.scheme, parts.netloc, _frozen(proxies), stream, verify, cert,
                   _frozen(self.proxies), self.stream, self.verify, self.cert)
            memo = self.__dict__.setdefault("_env_settings", {})
            settings = memo.get(key)
        except TypeError:  # an unhashable option (a custom cert tuple of lists...)
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            memo[key] = settings
        # A copy: requests may add to the proxies of one request.
        return {**settings, "proxies": dict(settings["proxies"] or {})}


def _frozen(mapping) -> tuple | None:
    return None if mapping is None else tuple(sorted(mapping.items()))


class HttpTransport:
    """Sessions, timeouts and the retry loop (thread-safe: sessions are shared read-only;
    requests' connection pools and requests-cache's SQLite backend lock internally)."""

    def __init__(self, cache_path: Path | None, *, timeout: tuple[float, float] = (5, 60),
                 retries: int = 5, backoff: float = 0.5, offline: bool = False,
                 pool_size: int = 16, expire_after: timedelta | int = timedelta(days=30),
                 retry_budget: float = RETRY_BUDGET_S) -> None:
        self.timeout = timeout
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.retry_budget = float(retry_budget)
        self.offline = offline
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.expire_after = expire_after
        self.served = metacache.ServedTally()
        self._lock = threading.Lock()
        self._pool_size = 0
        self._generation = 0  # bumped when a damaged cache is replaced mid-session
        # Opened on first use: a batch of grid downloads never touches SQLite.
        self._meta: requests.Session | None = None
        self.files = EnvOnceSession()
        self.files.headers["User-Agent"] = USER_AGENT
        self.ensure_pool(pool_size)

    def _open_meta(self) -> requests.Session:
        """The metadata session: a JSON-serialised SQLite cache after checking the file
        (a damaged or foreign one is moved aside, :mod:`.metacache`), or a plain session."""
        if self.cache_path is None:
            session = EnvOnceSession()
        else:
            import requests_cache

            reason = metacache.probe(self.cache_path)
            if reason:
                metacache.move_aside(self.cache_path, reason)
            try:
                session = self._cached_session()
            except sqlite3.DatabaseError as exc:
                if not metacache.is_damage(exc):
                    raise AllenCacheError(f"metadata cache {self.cache_path} cannot be "
                                          f"used: {exc}") from None
                metacache.move_aside(self.cache_path, f"is damaged ({exc})")
                session = self._cached_session()
            assert isinstance(session, requests_cache.CachedSession)
        session.headers["User-Agent"] = USER_AGENT
        return session

    def _cached_session(self) -> requests.Session:
        import requests_cache

        class CachedSession(requests_cache.CachedSession, EnvOnceSession):
            """requests-cache's session, reading the environment once (EnvOnceSession)."""

        return CachedSession(
            str(self.cache_path), backend="sqlite", expire_after=self.expire_after,
            allowable_codes=(200,), allowable_methods=("GET",), filter_fn=_cacheable,
            stale_if_error=True, serializer=metacache.json_serializer(),
            # Write-ahead log: concurrent workers' cache writes no longer serialise on
            # one SQLite journal (1,000 spatial-search seeds: 15.8 s -> 3.6 s under load).
            wal=True,
        )

    def _replace_damaged_cache(self, generation: int, exc: BaseException) -> None:
        """A cache operation hit a damaged database: move it aside and reopen (once per
        generation, however many threads noticed)."""
        with self._lock:
            if generation != self._generation:
                return  # another thread already replaced it
            self._generation += 1
            old = self._meta
            if old is not None:
                with contextlib.suppress(Exception):
                    old.close()
            if self.cache_path is not None:
                metacache.move_aside(self.cache_path, f"is damaged ({exc})")
            self._meta = self._open_meta()
            _mount(self._meta, self._pool_size)

    @property
    def meta(self) -> requests.Session:
        """The metadata session (the SQLite cache is checked and opened on first use)."""
        session = self._meta
        if session is None:
            with self._lock:
                if self._meta is None:
                    self._meta = self._open_meta()
                    _mount(self._meta, self._pool_size)
                session = self._meta
        return session

    @property
    def cached(self) -> bool:
        return self.cache_path is not None and hasattr(self.meta, "cache")

    def ensure_pool(self, size: int) -> None:
        """Size the connection pools for ``size`` concurrent requests per host."""
        with self._lock:
            if size <= self._pool_size:
                return
            self._pool_size = size
            for session in (self._meta, self.files):
                if session is not None:
                    _mount(session, size)

    def close(self) -> None:
        if self._meta is not None:
            self._meta.close()
        self.files.close()

    # --- the retry loop ------------------------------------------------------------------
    def retrying(self, url: str, attempt_fn: Callable[[int], T], *,
                 cancel: CancelToken | None = None,
                 progress: Callable[[], int] | None = None) -> T:
        """Call ``attempt_fn(attempt)`` until it returns; retry on :class:`TransientError`,
        dropped connections and timeouts with exponential backoff and jitter, within
        ``retries`` attempts and ``retry_budget`` seconds (the clock restarts when
        ``progress()`` - e.g. bytes received - grew during the attempt). A server that cannot
        be reached at all fails at once (:class:`AllenUnreachableError`)."""
        last: Exception | None = None
        status: int | None = None
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            check(cancel)
            wait: float | None = None
            mark = progress() if progress is not None else 0
            try:
                return attempt_fn(attempt)
            except TransientError as exc:
                last, status, wait = exc, exc.status, exc.retry_after
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                reason = unreachable_reason(exc)
                if reason is not None:
                    raise AllenUnreachableError(url, _address(url), reason,
                                                self.cache_note(url)) from None
                last, status = exc, None
            except requests.RequestException as exc:  # invalid URL, too many redirects...
                raise AllenApiError(url, f"{exc.__class__.__name__}: {exc}") from exc
            if attempt == self.retries:
                break
            if progress is not None and progress() > mark:
                started = time.monotonic()  # a slow but moving download keeps its budget
            delay = min(MAX_BACKOFF_S, self.backoff * 2 ** attempt)
            delay *= random.uniform(0.5, 1.5)  # jitter: parallel workers must not retry in step
            if wait is not None:
                delay = max(delay, min(wait, MAX_BACKOFF_S))
            if time.monotonic() - started + delay > self.retry_budget:
                last = TransientError(f"{_describe(last)}; retries stopped after "
                                      f"{time.monotonic() - started:.1f} s", status)
                break
            log.info("retrying %s in %.2f s after: %s", url, delay, last)
            if cancel is not None:
                if cancel.wait(delay):
                    cancel.check()
            else:
                time.sleep(delay)
        message = _describe(last)
        raise AllenApiError(url, f"{message} (gave up after {attempt + 1} attempts)",
                            status, retryable=True)

    def cache_note(self, url: str) -> str:
        """Whether cached results exist, for messages about an unreachable server."""
        if self.cache_path is None:
            return "there is no metadata cache"
        n = metacache.count_responses(self.cache_path)
        if n == 0:
            return "no results are cached yet"
        return (f"{n} cached responses exist (offline mode, --offline, answers from them; "
                "this exact query is not among them)")

    # --- metadata requests ---------------------------------------------------------------
    def _get_meta(self, url: str) -> requests.Response:
        """GET through the cache; a damaged cache database is replaced and the request
        repeated; a cache that cannot be written (read-only, full) is bypassed."""
        for _ in range(2):
            generation, session = self._generation, self.meta
            try:
                resp = self._get_meta_once(session, url)
            except sqlite3.DatabaseError as exc:
                if metacache.is_damage(exc):
                    self._replace_damaged_cache(generation, exc)
                    continue
                if self.offline:
                    raise AllenCacheError(f"metadata cache {self.cache_path} cannot be read: "
                                          f"{exc}") from None
                log.warning("metadata cache %s unusable (%s): fetching without it",
                            self.cache_path, exc)
                resp = self.files.get(url, timeout=self.timeout)
            self.served.add(bool(getattr(resp, "from_cache", False)))
            return resp
        raise AllenCacheError(f"metadata cache {self.cache_path} is damaged again right after "
                              "being rebuilt (is the disk failing?)")

    def _get_meta_once(self, session: requests.Session, url: str) -> requests.Response:
        if self.offline:
            if not hasattr(session, "cache"):
                raise AllenApiError(url, "offline mode needs the metadata cache", None)
            resp = session.get(url, only_if_cached=True, timeout=self.timeout)
            if resp.status_code == 504:
                raise AllenApiError(url, "offline: this query is not in the cache", 504)
            return resp
        return session.get(url, timeout=self.timeout)

    def _drop_cached(self, resp: requests.Response) -> bool:
        """Delete a cached response that failed validation (edited, damaged, or stored by an
        older version); True if it came from the cache."""
        if not (getattr(resp, "from_cache", False) and self.cached):
            return False
        with contextlib.suppress(sqlite3.Error):
            self.meta.cache.delete(requests=[resp.request])
        log.warning("dropped an invalid cached response for %s; fetching it again", resp.url)
        return True

    @contextlib.contextmanager
    def served_block(self):
        """``with transport.served_block() as served:`` counts this thread's metadata responses
        from the cache vs the network (``served.label``: '', 'from the cache', ...)."""
        with self.served.block() as served:
            yield served

    def get_json(self, url: str, *, cancel: CancelToken | None = None) -> dict:
        """GET ``url`` (query string already encoded) and return the validated JSON envelope."""
        return self._get_validated(url, parse_json_body, cancel)

    def get_csv(self, url: str, *, cancel: CancelToken | None = None) -> str:
        """GET a CSV listing and return its validated text."""
        return self._get_validated(url, parse_csv_body, cancel)

    def _get_validated(self, url: str, parse, cancel: CancelToken | None):
        """GET a metadata URL (through the cache) and ``parse(url, response)`` it, retrying
        transient failures; an invalid cached response is dropped, never served again."""

        def attempt(_: int):
            resp = self._get_meta(url)
            try:
                return parse(url, resp)
            except (TransientError, AllenApiError):
                if not self._drop_cached(resp):
                    raise
                if self.offline:
                    raise AllenApiError(url, "offline: the cached response is invalid") from None
            # The invalid cached copy is gone: fetch it from the server at once (no backoff).
            return parse(url, self._get_meta(url))

        return self.retrying(url, attempt, cancel=cancel)

    def open_stream(self, url: str, headers: dict | None = None) -> requests.Response:
        """Open a streamed download; raise TransientError/AllenApiError on a bad status or an
        error page. The caller closes the response."""
        if self.offline:
            raise AllenApiError(url, "offline: this file is not in the download cache")
        resp = self.files.get(url, headers=headers or {}, stream=True, timeout=self.timeout)
        status = resp.status_code
        if status in (200, 206):
            ctype = resp.headers.get("Content-Type", "").lower()
            if "text/html" in ctype or "application/json" in ctype:
                # Allen reports failures as HTML/JSON pages with status 200; a grid never is.
                body = resp.content[:4000]
                resp.close()
                if "application/json" in ctype:
                    _raise_if_error_envelope(url, _json_or_none(body), status)
                    raise AllenApiError(url, f"JSON instead of a file: {body[:200]!r}", status)
                raise TransientError(_html_message(body), status)
            return resp
        body = resp.content[:2000]
        resp.close()
        if status == 416:
            # Our Range start lies past the server's file: the partial file is not a prefix
            # of it. The caller discards the partial file and starts over.
            raise TransientError("HTTP 416: partial file does not match the server's file",
                                 status)
        _raise_if_error_envelope(url, _json_or_none(body), status)
        if status in _RETRY_STATUS:
            raise TransientError(f"HTTP {status}", status, _retry_after(resp))
        detail = body[:300].decode("utf-8", "replace").strip() or (resp.reason or "")
        raise AllenApiError(url, f"HTTP {status}: {detail}", status)


def _mount(session: requests.Session, size: int) -> None:
    # Retries are ours (they understand Allen's HTTP-200 failures), not urllib3's.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(1, size), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, requests.Timeout):
        return f"timed out ({exc.__class__.__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({exc.__class__.__name__}: {str(exc)[:200]})"
    return str(exc) or exc.__class__.__name__
