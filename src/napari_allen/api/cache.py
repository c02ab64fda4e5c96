"""The on-disk cache: metadata database location and the verified file store.

Layout under the cache folder (``napari_allen.config.cache_dir``, env ``NAPARI_ALLEN_CACHE``)::

    http_cache.sqlite                         requests-cache database of metadata responses
    files/<host>/grid_data/<id>/<volumes>_200um.zip     grid_data/download zips
    files/<host>/grid_data/<id>/<image>_<res>um.nrrd    grid_data/download_file NRRDs
    files/<host>/ccf_2017/annotation_<res>.nrrd         CCF annotation volumes

``<host>`` keeps files of different servers apart (a synthetic grid of the local test server is
never mistaken for a real one). A file is stored once per (experiment, volume, resolution); it
is streamed to ``<name>.part`` in the same folder, verified (zip integrity and member sizes;
NRRD gzip stream and inflated size; Content-Length), then ``os.replace``-d into place, so the
final name only ever holds a complete, verified file. A ``.part`` left by a killed process is
never trusted: it is resumed with an HTTP ``Range`` request when the server honours it, and the
result is verified like any other download.

Every file is recorded in its folder's manifest (:mod:`napari_allen.io.manifest`: size,
SHA-256, source URL, synthetic flag) just before the rename, and checked against it on every
reuse: a truncated, bit-flipped, emptied or swapped file is downloaded again and reported as
``refetched``, never opened as data. The same holds for a folder the user chose.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple
from urllib.parse import urlsplit

from ..errors import AllenApiError, AllenFormatError
from ..io import manifest
from ..io.provenance import SYNTHETIC_HEADER
from ..progress import Cancelled, CancelToken
from .http import HttpTransport, TransientError

CHUNK = 1 << 16  # 64 KiB: memory per download stays constant whatever the file size
META_DB = "http_cache.sqlite"
log = logging.getLogger(__name__)

def host_tag(url: str) -> str:
    """A folder name for a server: ``api.brain-map.org``, ``127.0.0.1_8765``."""
    netloc = urlsplit(url).netloc or "local"
    return re.sub(r"[^A-Za-z0-9.\-]", "_", netloc)


def metadata_db(cache_root: Path) -> Path:
    return Path(cache_root) / META_DB


def folder_size(path: Path) -> int:
    """Total bytes of the files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


class FileStore:
    """Where verified downloads live (see the module docstring for the layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def grid_zip(self, host: str, experiment_id: int, volumes: Sequence[str],
                 resolution: int = 200) -> Path:
        name = "+".join(sorted(volumes))
        folder = self.root / host / "grid_data" / str(int(experiment_id))
        return folder / f"{name}_{int(resolution)}um.zip"

    def grid_nrrd(self, host: str, experiment_id: int, image: str, resolution: int) -> Path:
        return (self.root / host / "grid_data" / str(int(experiment_id))
                / f"{image}_{int(resolution)}um.nrrd")

    def annotation(self, host: str, resolution: int) -> Path:
        return self.root / host / "ccf_2017" / f"annotation_{int(resolution)}.nrrd"

    def contains(self, path: str | os.PathLike) -> bool:
        """Is ``path`` inside this store (rather than a folder the user chose)?"""
        return Path(path).resolve().is_relative_to(self.root.resolve())

    def leftovers(self) -> list[Path]:
        """``.part`` files under the store (downloads interrupted by a killed process)."""
        return sorted(self.root.rglob("*.part")) if self.root.exists() else []


# --- verification ------------------------------------------------------------------------
# The formats are parsed by io/ (one parser per format); this only decides what a failure
# means for a download: damaged bytes are worth fetching again (TransientError), a well-formed
# file that is not what was asked for is not (AllenFormatError).
def verify_grid_zip(path: Path, volumes: Sequence[str], source: str) -> None:
    """Check a ``grid_data/download`` zip: readable, CRCs intact, safe member names, and for
    each requested volume a ``<vol>.mhd`` + ``<vol>.raw`` whose size matches DimSize x
    ElementType. Corruption raises :class:`TransientError` (download again); unsafe or
    missing members raise :class:`AllenFormatError`."""
    from ..io.gridzip import ZIP_ERRORS, bad_member, check_member_name, read_member
    from ..io.metaimage import MAX_HEADER_BYTES, parse_header

    try:
        with _zip_source(path) as source_file, zipfile.ZipFile(source_file) as zf:
            infos = zf.infolist()
            for info in infos:
                check_member_name(info.filename, source)
            try:
                bad = bad_member(source_file, infos)  # testzip's answer, inflated by zlib-ng
            except NotImplementedError:  # encrypted, or another compression: zipfile's test
                bad = zf.testzip()
            if bad is not None:
                raise TransientError(f"{source}: zip member {bad!r} is corrupt (CRC mismatch)")
            by_name = {PurePosixPath(i.filename).name: i for i in infos if not i.is_dir()}
            for vol in volumes:
                mhd, raw = by_name.get(f"{vol}.mhd"), by_name.get(f"{vol}.raw")
                if mhd is None or raw is None:
                    raise AllenFormatError(
                        source, f"zip has no {vol}.mhd/{vol}.raw (members: "
                        f"{', '.join(sorted(by_name)) or 'none'})")
                header = parse_header(read_member(zf, mhd, MAX_HEADER_BYTES, source),
                                      f"{source}!{mhd.filename}")
                if not header.compressed and raw.file_size != header.n_bytes:
                    raise AllenFormatError(source, f"{vol}.raw has {raw.file_size} bytes, "
                                           f"{vol}.mhd promises {header.n_bytes}")
    except zipfile.BadZipFile as exc:
        raise TransientError(f"{source}: not a complete zip file ({exc})") from None
    except AllenFormatError:
        raise
    except ZIP_ERRORS as exc:
        raise TransientError(f"{source}: zip cannot be read ({exc})") from None


#: Zips up to this size are verified from one read into memory (a 200 µm grid: ~240 kB).
ZIP_IN_MEMORY_MAX = 32 << 20


def _zip_source(path: Path):
    """The zip to verify: its bytes read at once when small (zipfile's ~30 seeks and reads of
    a 240 kB grid become one read: each call is a hand-over of the interpreter between 16
    download threads), else the open file."""
    fh = open(path, "rb")  # noqa: SIM115 - closed below or by the caller's with
    if os.fstat(fh.fileno()).st_size > ZIP_IN_MEMORY_MAX:
        return fh
    with fh:
        return io.BytesIO(fh.read())


def verify_nrrd(path: Path, source: str, *, cancel: CancelToken | None = None,
                decode_into: Path | None = None) -> None:
    """Check an attached-data NRRD: header, and a payload (raw, gzip or bzip2) that inflates
    to exactly prod(sizes) x sizeof(type) bytes with an intact stream (CRC, length).

    ``decode_into`` (a cache folder): keep the inflated payload in its decoded cache (keyed
    by the compressed bytes, so the downloaded file finds it) instead of discarding it, for
    callers about to read the grid: the check is then the only inflate."""
    from ..io._decode import BZIP2, GZIP_OR_ZLIB, inflate
    from ..io.nrrd import nrrd_payload, read_nrrd_header

    try:
        header = read_nrrd_header(path)
    except AllenFormatError as exc:  # a cut or garbled header: fetch it again
        raise TransientError(f"{source}: {exc.problem}") from None
    if header.data_file is not None:
        raise AllenFormatError(source, "detached NRRD data files are not accepted")
    expected = header.n_bytes
    with open(path, "rb") as fh:
        fh.seek(header.data_offset)
        if header.encoding == "raw":
            payload = os.fstat(fh.fileno()).st_size - fh.tell()
            if payload != expected:
                raise TransientError(
                    f"{source}: NRRD payload {payload} bytes, expected {expected}")
            return
        if header.encoding not in ("gzip", "bzip2"):
            raise AllenFormatError(source, f"unsupported NRRD encoding {header.encoding!r}")
        if decode_into is not None:
            try:
                nrrd_payload(path, header, cache_dir=decode_into, cache_decoded=True,
                             cancel=cancel)
            except AllenFormatError as exc:  # corrupt or truncated stream: fetch it again
                raise TransientError(f"{source}: {exc.problem}") from None
            return
        total = [0]

        def count(chunk: bytes) -> None:  # the decoded bytes are only counted, never kept
            total[0] += len(chunk)

        try:
            inflate(fh, expected, count, source, what=f"NRRD {header.encoding} payload",
                    wbits=BZIP2 if header.encoding == "bzip2" else GZIP_OR_ZLIB,
                    cancel=cancel)
        except AllenFormatError as exc:
            raise TransientError(f"{source}: {exc.problem}; NRRD inflates to {total[0]} "
                                 f"bytes, expected {expected}") from None


# --- downloads ---------------------------------------------------------------------------
# Per-destination locks with user counts, dropped when unused (a 26,000-grid batch must not
# leave 26,000 locks behind).
_path_locks: dict[str, list] = {}
_path_locks_guard = threading.Lock()


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """One writer per destination: a thread lock in this process, plus an advisory file lock
    (POSIX) so a CLI batch and a napari session cannot write the same ``.part`` at once."""
    key = str(dest)
    with _path_locks_guard:
        entry = _path_locks.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield from _file_locked(dest)
    finally:
        with _path_locks_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _path_locks[key]


def _file_locked(dest: Path) -> Iterator[None]:
    """The advisory file lock part of :func:`_exclusive` (a generator body)."""
    try:
        import fcntl
    except ImportError:  # Windows: in-process locking only
        yield
        return
    lock_path = dest.with_name(dest.name + ".lock")
    while True:
        fh = open(lock_path, "a+b")  # noqa: SIM115 - closed below on every path
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except OSError:  # a file system without flock (some network mounts)
            fh.close()
            fh = None
            break
        try:
            same = os.fstat(fh.fileno()).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # The previous holder removed the lock file after we opened it: lock the new one.
        fh.close()
    try:
        yield
    finally:
        if fh is not None:
            # Remove before unlocking so a waiter on the old inode re-opens (see above).
            with contextlib.suppress(OSError):
                lock_path.unlink()
            fh.close()


Verifier = Callable[[Path, str], None]


class _CancelWatch:
    """One daemon thread that shuts down the sockets of cancelled downloads.

    A download blocked in ``recv`` (a stalled server) would otherwise notice its cancel token
    only when the read timeout expires; shutting the socket down wakes it at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[CancelToken, object]] = {}
        self._thread: threading.Thread | None = None

    def add(self, cancel: CancelToken, resp) -> int:
        key = id(resp)
        with self._lock:
            self._active[key] = (cancel, resp)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="allen-cancel-watch",
                                                daemon=True)
                self._thread.start()
        return key

    def remove(self, key: int) -> None:
        with self._lock:
            self._active.pop(key, None)

    def _run(self) -> None:
        import socket
        import time

        while True:
            time.sleep(0.1)
            with self._lock:
                if not self._active:
                    self._thread = None
                    return
                hits = [(k, r) for k, (c, r) in self._active.items() if c.cancelled]
                for key, _ in hits:
                    self._active.pop(key, None)
            for _, resp in hits:
                sock = getattr(getattr(getattr(resp, "raw", None), "_connection", None),
                               "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


_watch = _CancelWatch()


class Fetched(NamedTuple):
    """What :func:`download_file` did: ``status`` is ``downloaded`` (new file), ``verified``
    (the file on disk matched its manifest entry, no request) or ``refetched`` (the file on
    disk was damaged or swapped and was downloaded again; ``reason`` says what was wrong)."""

    path: Path
    bytes: int
    status: str
    reason: str = ""


DOWNLOADED, VERIFIED, REFETCHED = "downloaded", "verified", "refetched"


def _reusable(dest: Path, url: str, verify: Verifier, deep: bool) -> tuple[bool, str]:
    """May ``dest`` be reused for ``url``? Returns ``(ok, reason it may not)``.

    A recorded file must match its manifest entry (size always, SHA-256 when changed) and
    come from the same URL; a file without an entry (an older napari-allen, a copy) is adopted
    only after the full format check passes, and is then recorded."""
    result = manifest.check_file(dest, deep=deep)
    if result.status == manifest.MISSING:
        return False, ""
    if result.status == manifest.DAMAGED:
        return False, result.reason
    if result.status == manifest.UNRECORDED:
        try:
            verify(dest, str(dest))
        except (TransientError, AllenFormatError) as exc:
            return False, f"fails the format check ({exc})"
        except OSError as exc:
            return False, f"cannot be read ({exc})"
        manifest.record_file(dest, url=url)
        return True, ""
    if result.entry is not None and result.entry.url and result.entry.url != url:
        return False, f"was downloaded from {result.entry.url}, not {url}"
    return True, ""


def download_file(transport: HttpTransport, url: str, dest: Path, verify: Verifier, *,
                  on_bytes: Callable[[int], None] | None = None,
                  cancel: CancelToken | None = None, resume: bool = True,
                  deep: bool = False) -> Fetched:
    """Download ``url`` to ``dest`` (verified, atomic, recorded in the folder's manifest).

    A file already at ``dest`` is reused only when it is still what was recorded
    (:mod:`..io.manifest`; ``deep`` re-hashes even unchanged files); a damaged, truncated or
    swapped file is downloaded again (status ``refetched``, logged with the reason), never
    returned as data. Cancelling deletes the partial file. The outcome (status, or
    ``failed``) is counted in ``transport.served`` for the widgets' and CLI's summaries."""
    try:
        fetched = _download_file(transport, url, dest, verify, on_bytes=on_bytes,
                                 cancel=cancel, resume=resume, deep=deep)
    except Cancelled:
        raise
    except Exception:
        transport.served.add_file("failed")
        raise
    transport.served.add_file(fetched.status)
    return fetched


def _download_file(transport: HttpTransport, url: str, dest: Path, verify: Verifier, *,
                   on_bytes, cancel, resume: bool, deep: bool) -> Fetched:
    ok, reason = _reusable(dest, url, verify, deep)
    if ok:
        return Fetched(dest, 0, VERIFIED)
    if transport.offline:
        what = f"{dest} {reason}" if reason else "this file is not in the download cache"
        raise AllenApiError(url, f"offline: {what}")
    if not dest.parent.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        if reason == "":
            # Another thread/process may have finished it while we waited for the lock.
            ok, reason = _reusable(dest, url, verify, False)
            if ok:
                return Fetched(dest, 0, VERIFIED)
        if reason:
            log.warning("%s %s: downloading it again", dest, reason)
        part = dest.with_name(dest.name + ".part")
        moved = [0]
        seen: dict = {}  # response headers worth keeping, and the running SHA-256
        try:
            transport.retrying(
                url, lambda attempt: _attempt(transport, url, part, verify, on_bytes, cancel,
                                              resume, moved, seen),
                cancel=cancel)
        except (Cancelled, AllenFormatError, AllenApiError):
            # A .part survives only a crash (for resume), never a cancel or a definite failure.
            part.unlink(missing_ok=True)
            raise
        synthetic = seen.get(SYNTHETIC_HEADER, "").strip() in ("1", "true")
        # Record before the rename: a file under its final name always has its entry.
        manifest.record_file(dest, part, url=url, synthetic=synthetic, sha256=seen["sha256"])
        os.replace(part, dest)
        return Fetched(dest, moved[0], REFETCHED if reason else DOWNLOADED, reason)


def _attempt(transport: HttpTransport, url: str, part: Path, verify: Verifier,
             on_bytes, cancel, resume: bool, moved: list[int], seen: dict) -> None:
    offset = part.stat().st_size if (resume and part.exists()) else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = transport.open_stream(url, headers)
    except TransientError as exc:
        if exc.status == 416:
            part.unlink(missing_ok=True)
        raise
    # requests' headers are case-insensitive; keep the one this cache records.
    seen[SYNTHETIC_HEADER] = resp.headers.get(SYNTHETIC_HEADER, "")
    key = _watch.add(cancel, resp) if cancel is not None else None
    try:
        expected, digest = _receive(resp, part, offset, on_bytes, cancel, moved)
    except Exception:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("download cancelled") from None  # the watcher broke the socket
        raise
    finally:
        if key is not None:
            _watch.remove(key)
        resp.close()
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise TransientError(f"{url}: got {size} of {expected} bytes (truncated)")
    # The verifier (and later readers) key decoded payloads by this file's hash: the one
    # computed while streaming, not a second read of the file.
    manifest.remember_digest(part, digest)
    try:
        verify(part, url)
    except TransientError:
        part.unlink(missing_ok=True)  # corrupt content: the next attempt starts from zero
        raise
    seen["sha256"] = digest


def _receive(resp, part: Path, offset: int, on_bytes, cancel, moved: list[int]
             ) -> tuple[int | None, str]:
    """Stream the body into ``part``, appending after a honoured Range request; return the
    expected final size (from Content-Length) or None, and the file's SHA-256 (hashed as it
    streams: no second read of the file)."""
    mode = "wb"
    if offset and resp.status_code == 206 and resp.headers.get(
            "Content-Range", "").startswith(f"bytes {offset}-"):
        mode = "ab"
    else:
        offset = 0  # server ignored the Range: start over
    length = resp.headers.get("Content-Length")
    expected = offset + int(length) if length and length.isdigit() else None
    digest = hashlib.sha256()
    if mode == "ab":
        with open(part, "rb") as fh:
            for block in iter(lambda: fh.read(manifest.HASH_CHUNK), b""):
                digest.update(block)
    with open(part, mode) as fh:
        for chunk in resp.iter_content(CHUNK):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("download cancelled")
            fh.write(chunk)
            digest.update(chunk)
            moved[0] += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return expected, digest.hexdigest()
