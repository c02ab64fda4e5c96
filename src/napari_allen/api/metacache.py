"""The metadata cache (requests-cache on SQLite), made so that it cannot hurt the user.

- **No pickle.** Responses are stored as JSON (requests-cache's cattrs JSON stage): a crafted
  row can at worst be an invalid response, never code. A row that does not decode (garbage,
  a pickle from an older version, a wrong structure) reads as "not cached" and is fetched
  again; a decoded response that fails validation is dropped (``http.HttpTransport``).
- **A damaged database is moved aside.** Before requests-cache opens the file it is probed
  with plain ``sqlite3``: not SQLite, truncated, malformed, or someone else's database (other
  tables) -> renamed to ``http_cache.sqlite.damaged`` (replacing an older one) with a
  one-line warning, and a new cache is started. Damage found later, mid-session, is handled
  the same way (:func:`is_damage`).
- **Served-from-cache is visible.** :class:`ServedTally` counts responses that came from the
  cache vs the network, per process and per ``with transport.served():`` block, so the CLI
  and the widgets can say "from the cache".
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Tables requests-cache keeps in its SQLite file; any other table means a foreign database.
CACHE_TABLES = frozenset({"responses", "redirects"})
DAMAGED_SUFFIX = ".damaged"
#: Full page check up to this size at start-up (~0.1 s); bigger files rely on the first and
#: last rows here and on damage detection during use (:func:`is_damage`).
QUICK_CHECK_MAX_BYTES = 64 << 20


def json_serializer():
    """requests-cache's JSON pipeline (compact), whose ``loads`` turns *any* decoding failure
    into ``ValueError`` (which requests-cache treats as a cache miss)."""
    from requests_cache.models import CachedResponse
    from requests_cache.serializers.pipeline import SerializerPipeline, Stage
    from requests_cache.serializers.preconf import json_preconf_stage

    def dumps(obj) -> str:
        return json.dumps(obj, separators=(",", ":"))

    inner = SerializerPipeline([json_preconf_stage, Stage(dumps=dumps, loads=json.loads)],
                               name="napari-allen-json", is_binary=False)

    def safe_loads(value):
        try:
            return _checked_loads(value)
        except ValueError as exc:
            _warn_once(f"metadata cache holds an unusable row ({exc}): fetching it again")
            raise

    def _checked_loads(value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("cache row is not UTF-8 JSON (a pickle?)") from None
        try:
            obj = inner.loads(value)
        except Exception as exc:  # noqa: BLE001 - cattrs raises ExceptionGroups, KeyErrors...
            raise ValueError(f"cache row does not decode ({exc.__class__.__name__})") from None
        # Valid JSON of the wrong shape decodes to a response without a body: not a response.
        if not (isinstance(obj, CachedResponse) and isinstance(obj._content, bytes)
                and isinstance(obj.status_code, int) and isinstance(obj.url, str)):
            raise ValueError("cache row is not a complete response")
        return obj

    return SerializerPipeline([Stage(dumps=inner.dumps, loads=safe_loads)],
                              name="napari-allen-json", is_binary=False)


def warm_up() -> None:
    """Pay requests-cache's first-use costs now: cattrs writes its response (un)structure
    functions and the URL normaliser its first key on first use (~30-50 ms of CPU that the
    first response of a command would otherwise wait for). ``napari-allen correlate`` calls it
    on its import thread while the first requests are on their way."""
    import io

    import requests
    from requests.adapters import HTTPAdapter
    from requests_cache.cache_keys import create_key
    from requests_cache.models import CachedResponse
    from urllib3 import HTTPResponse

    url = "http://localhost/api/v2/data/query.json?q=model::Structure,rma::criteria,[id$eq1]"
    request = requests.Request("GET", url).prepare()
    body = b'{"success":true,"msg":[]}'
    raw = HTTPResponse(body=io.BytesIO(body), headers={"Content-Type": "application/json"},
                       status=200, preload_content=False, request_url=url)
    response = HTTPAdapter().build_response(request, raw)
    _ = response.content
    create_key(request)
    serializer = json_serializer()
    serializer.loads(serializer.dumps(CachedResponse.from_response(response)))


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


class _QuietDeserializeErrors(logging.Filter):
    """requests-cache logs every undecodable row at ERROR; :func:`json_serializer` already
    warned (once) with what happens next."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Unable to deserialize")


logging.getLogger("requests_cache.backends.base").addFilter(_QuietDeserializeErrors())


def probe(path: Path) -> str | None:
    """Why the SQLite file at ``path`` cannot be used as the cache, or None when it can (or
    does not exist yet)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None  # an empty file is a fresh database to SQLite
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head.startswith(b"SQLite format 3\x00"):
        return "is not an SQLite database"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return f"cannot be opened ({exc})"
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        foreign = tables - CACHE_TABLES
        if foreign:
            return f"is another program's database (tables {', '.join(sorted(foreign))})"
        for table in sorted(tables):
            # Touch the first and the last rows of each table: a truncated file fails here.
            con.execute(f"SELECT * FROM {table} ORDER BY rowid LIMIT 1").fetchall()  # noqa: S608
            con.execute(f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1").fetchall()  # noqa: S608
        if size <= QUICK_CHECK_MAX_BYTES:
            row = con.execute("PRAGMA quick_check(1)").fetchone()
            if row is None or row[0] != "ok":
                return f"fails SQLite's integrity check ({row[0] if row else 'no answer'})"
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return None  # in use by another process: fine
        return f"is damaged ({exc})"
    except sqlite3.DatabaseError as exc:
        return f"is damaged ({exc})"
    finally:
        con.close()
    return None


def move_aside(path: Path, reason: str) -> Path:
    """Rename the damaged database (and its WAL/SHM files) to ``<name>.damaged`` and warn."""
    aside = path.with_name(path.name + DAMAGED_SUFFIX)
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            with contextlib.suppress(OSError):
                os.replace(src, Path(str(aside) + suffix))
    # One line, with what happened and where the old file went.
    log.warning("metadata cache %s %s: moved aside to %s, starting a new cache",
                path, reason, aside.name)
    return aside


def is_damage(exc: BaseException) -> bool:
    """Is this sqlite3 error a damaged database (rather than a busy or read-only one)?"""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        return any(s in text for s in ("malformed", "no such table", "no such column",
                                       "not a database", "disk i/o error"))
    return True


def count_responses(path: Path) -> int:
    """How many responses the cache holds (0 if it cannot be read)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        return int(con.execute("SELECT count(*) FROM responses").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        con.close()


#: Download statuses counted by :meth:`ServedTally.add_file`, in the order they are reported.
FILE_STATUSES = ("downloaded", "verified", "refetched", "failed")
_FILE_WORDS = {"refetched": "re-fetched"}


@dataclass
class Served:
    """Responses seen: metadata from the network and from the cache, and file downloads by
    status (``downloaded`` / ``verified`` / ``refetched`` / ``failed``)."""

    network: int = 0
    cache: int = 0
    files: dict[str, int] = field(default_factory=dict)

    @property
    def from_cache(self) -> bool:
        """True when every response came from the cache (and there was at least one)."""
        return self.cache > 0 and self.network == 0

    @property
    def label(self) -> str:
        """'' (all fresh), 'from the cache', or 'partly from the cache (k of n responses)'."""
        if self.cache == 0:
            return ""
        if self.network == 0:
            return "from the cache"
        return f"partly from the cache ({self.cache} of {self.cache + self.network} responses)"

    @property
    def files_label(self) -> str:
        """'' (no file fetched) or e.g. '2 downloaded, 3 verified, 1 re-fetched, 0 failed'
        (verified = already on disk and matching its manifest entry, no request)."""
        if not self.files:
            return ""
        return ", ".join(f"{self.files.get(s, 0)} {_FILE_WORDS.get(s, s)}"
                         for s in FILE_STATUSES)


# The blocks counting for the current context: a ContextVar (not a thread-local) so work that
# bounded_map fans out to pool threads is counted in the block of the task that started it.
_BLOCKS: contextvars.ContextVar[tuple[Served, ...]] = contextvars.ContextVar(
    "napari_allen_served_blocks", default=())


class ServedTally:
    """Process-wide :class:`Served` counts plus the blocks active in the current context."""

    def __init__(self) -> None:
        self.total = Served()
        self._lock = threading.Lock()

    def add(self, from_cache: bool) -> None:
        with self._lock:
            for served in (self.total, *_BLOCKS.get()):
                if from_cache:
                    served.cache += 1
                else:
                    served.network += 1

    def add_file(self, status: str) -> None:
        """Count one file request's outcome (one of :data:`FILE_STATUSES`)."""
        with self._lock:
            for served in (self.total, *_BLOCKS.get()):
                served.files[status] = served.files.get(status, 0) + 1

    @contextlib.contextmanager
    def block(self) -> Iterator[Served]:
        """Count the responses of this context (this thread, and the pool threads that
        :func:`~napari_allen.concurrency.bounded_map` starts from it) inside the block."""
        served = Served()
        token = _BLOCKS.set((*_BLOCKS.get(), served))
        try:
            yield served
        finally:
            _BLOCKS.reset(token)
