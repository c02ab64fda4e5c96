"""Streamed, size-capped decompression of grid payloads, and the bounded decoded cache.

Compressed Allen grids (gzip NRRD, deflated zip members, compressed MetaImage) cannot be
memory-mapped. Small ones are inflated into one preallocated buffer; large ones (25/10 µm) are
inflated once, chunk by chunk, into a raw file of the decoded cache (``<cache>/decoded/``) and
memory-mapped from there, so peak memory stays at a few MiB whatever the grid size. Output is
capped at the expected size: a payload that inflates beyond it (a decompression bomb or a wrong
header) is rejected without being written out, and a short one is reported as truncated.

The decoded cache cannot hurt the machine:

- entries are keyed by the SHA-256 of the *compressed file* (plus the payload's place in it,
  type and shape), so touching or copying a file reuses its entry instead of adding another
  copy; that hash is read once per file: from the download that streamed it, or from the
  file's manifest entry while the file still matches it;
- its size is capped: ``NAPARI_ALLEN_CACHE_MAX`` (``"2GB"``, ``"500MiB"``, bytes) or by default
  a quarter of the disk space available to it; least-recently-used entries are evicted first; a
  grid larger than the whole cap is decoded into an anonymous temporary file (freed when closed);
- a decode that would not fit the free disk is refused up front with a clear error;
- every entry has a record in the folder's manifest (:mod:`napari_allen.io.manifest`: size,
  inode, mtime, source, synthetic flag), written before the entry appears under its final
  name; an entry is used only while its size, inode and mtime are still the recorded ones,
  and decoded again otherwise (a truncated, edited or swapped entry is never read). Its bytes
  are not hashed: they are what the verified compressed payload inflates to (stream CRC and
  exact size checked). The last use (for eviction) is the file's atime, set explicitly on
  each use.

``napari-allen cache-info`` shows it (:func:`decoded_cache_info`), ``napari-allen cache-prune``
trims it (:func:`prune_decoded_cache`).
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

try:  # zlib-ng inflates the same streams about 3x faster than zlib (the cold-read hot spot)
    from zlib_ng import zlib_ng as _zlib

    _ZLIB_ERRORS: tuple[type[Exception], ...] = (zlib.error, _zlib.error)
except ImportError:  # pragma: no cover - an install without the dependency still works
    _zlib = zlib
    _ZLIB_ERRORS = (zlib.error,)

from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback, check, report
from .atomic import atomic_path
from .manifest import MISSING, Manifest, file_digest

#: Compressed bytes read per step.
_IN_CHUNK = 256 << 10
#: At most this many inflated bytes come out of one call (and are held at once besides the
#: destination). zlib(-ng) and bz2 release the GIL while they inflate, not while they build
#: the output object: with 1 MiB steps a worker decoding a 308 MB 25 µm grid takes the GIL
#: from napari's main thread for ~1-5 ms at a time (16 MiB steps: 10-13 ms), and inflating
#: into cache-sized buffers makes that decode about twice as fast.
_OUT_CHUNK = 1 << 20

#: zlib window bits accepting both gzip and zlib headers.
GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
#: Pseudo "window bits" selecting bzip2 (NRRD ``encoding: bzip2``).
BZIP2 = "bzip2"
#: Largest plausible compression ratio (deflate's theoretical maximum is ~1032:1; bzip2 can go
#: further on constant data, so readers check with this and the inflater caps the output).
MAX_RATIO = 1100

DECODED_FOLDER = "decoded"
CACHE_MAX_ENV = "NAPARI_ALLEN_CACHE_MAX"
#: Default cap: this fraction of the space the decoded cache may use (free + its own size).
DEFAULT_FRACTION = 0.25
#: Disk space always left free when decoding.
DISK_MARGIN = 64 << 20


class _Bz2:
    """bz2 decompressor with an ``eof`` and bounded ``decompress(data, max_length)``; it keeps
    unconsumed input itself (``more`` drains it)."""

    def __init__(self) -> None:
        self._d = bz2.BZ2Decompressor()

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return self._d.needs_input

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.decompress(data, max_length)

    def more(self, max_length: int) -> bytes:
        return self._d.decompress(b"", max_length)


def _decompressor(wbits):
    return _Bz2() if wbits == BZIP2 else _zlib.decompressobj(wbits)


def inflate(
    fh: BinaryIO,
    n_bytes: int,
    write: Callable[[bytes], object],
    source,
    *,
    wbits=GZIP_OR_ZLIB,
    what: str = "compressed data",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Inflate ``fh`` into ``write`` chunk by chunk; exactly ``n_bytes`` must come out."""
    decomp = _decompressor(wbits)
    total = 0

    def emit(out: bytes) -> None:
        nonlocal total
        total += len(out)
        if total > n_bytes:
            raise AllenFormatError(
                source, f"{what} inflates beyond the {n_bytes:,} bytes its header "
                        "declares (corrupt header or decompression bomb)")
        write(out)

    try:
        while not decomp.eof:
            check(cancel)
            data = fh.read(_IN_CHUNK)
            if not data:
                break
            if isinstance(decomp, _Bz2):
                out = decomp.decompress(data, _OUT_CHUNK)
                emit(out)
                while not decomp.eof and not decomp.needs_input:
                    out = decomp.more(_OUT_CHUNK)
                    if not out:
                        break
                    emit(out)
            else:
                while data and not decomp.eof:
                    emit(decomp.decompress(data, _OUT_CHUNK))
                    data = decomp.unconsumed_tail
            report(progress, done=total, total=n_bytes, bytes_done=total,
                   bytes_total=n_bytes, message=f"decoding {Path(str(source)).name}")
        if not decomp.eof and not isinstance(decomp, _Bz2):
            emit(decomp.flush())
    except (*_ZLIB_ERRORS, OSError, ValueError) as exc:
        if isinstance(exc, AllenFormatError):
            raise
        raise AllenFormatError(source, f"corrupt {what}: {exc}") from exc
    except EOFError as exc:
        raise AllenFormatError(source, f"truncated {what}: {exc}") from exc
    if total != n_bytes or not decomp.eof:
        raise AllenFormatError(
            source, f"truncated {what}: inflated {total:,} of the {n_bytes:,} bytes expected")


def inflate_to_array(fh: BinaryIO, n_bytes: int, dtype: np.dtype, shape, source,
                     **kwargs) -> np.ndarray:
    """Inflate into one preallocated buffer (peak memory ``n_bytes`` + one chunk) and return a
    native-endian Fortran-ordered array of ``shape``."""
    buf = np.empty(n_bytes, dtype=np.uint8)
    pos = 0

    def write(chunk: bytes) -> None:
        nonlocal pos
        buf[pos:pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        pos += len(chunk)

    inflate(fh, n_bytes, write, source, **kwargs)
    dtype = np.dtype(dtype)
    arr = buf.view(dtype)
    if not dtype.isnative:
        arr = arr.byteswap().view(dtype.newbyteorder("="))
    return arr.reshape(tuple(shape), order="F")


def copy_capped(
    fh: BinaryIO,
    n_bytes: int,
    write: Callable[[bytes], object],
    source,
    *,
    what: str = "data",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Copy an (already decoding) stream into ``write``; exactly ``n_bytes`` must come out."""
    total = 0
    while True:
        check(cancel)
        chunk = fh.read(min(_OUT_CHUNK, n_bytes + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > n_bytes:
            raise AllenFormatError(source, f"{what} is larger than the {n_bytes:,} bytes "
                                           "its header declares")
        write(chunk)
        report(progress, done=total, total=n_bytes, bytes_done=total, bytes_total=n_bytes,
               message=f"decoding {Path(str(source)).name}")
    if total != n_bytes:
        raise AllenFormatError(source, f"truncated {what}: {total:,} of {n_bytes:,} bytes")


# --- content keys ------------------------------------------------------------------------
def content_key(path: str | os.PathLike, offset: int, length: int, *extra: object) -> str:
    """A cache key for the ``length`` bytes of ``path`` at ``offset``, from the SHA-256 of
    the whole file (:func:`file_digest`) plus ``offset``, ``length`` and ``extra`` (type,
    shape...). The same file gives the same key wherever it lives and whatever its mtime."""
    text = "|".join([file_digest(path), str(int(offset)), str(int(length)), *map(str, extra)])
    return hashlib.sha256(text.encode()).hexdigest()[:40]


# --- the bounded decoded cache -----------------------------------------------------------
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def parse_size(text: str) -> int:
    """``"2GB"`` -> 2e9 bytes, ``"500MiB"``, ``"1.5G"``, ``"123456"``; ValueError otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match[2].lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 2GB, 500MB, 1GiB or bytes)")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def decoded_folder(cache_root: str | os.PathLike | None = None) -> Path:
    """``<cache root>/decoded`` (the configured cache folder when ``cache_root`` is None)."""
    if cache_root is None:
        from ..config import cache_dir  # the one fallback; callers should pass the folder

        cache_root = cache_dir()
    return Path(cache_root) / DECODED_FOLDER


def _entries(folder: Path) -> list[tuple[float, int, Path]]:
    """``(last use, bytes, raw path)`` of every entry, least recently used first. The last use
    is the file's access time, which :func:`_touch` sets explicitly (whatever the mount's
    atime policy) while keeping the mtime the manifest recorded."""
    out = []
    if not folder.is_dir():
        return out
    for raw in folder.glob("*.raw"):
        try:
            st = raw.stat()
        except OSError:
            continue
        out.append((st.st_atime, st.st_size, raw))
    out.sort()
    return out


def _touch(raw: Path, mtime_ns: int | None = None) -> None:
    """Mark ``raw`` as just used (atime = now, mtime unchanged so the manifest still matches;
    ``mtime_ns`` = its current mtime when the caller knows it)."""
    with contextlib.suppress(OSError):
        if mtime_ns is None:
            mtime_ns = raw.stat().st_mtime_ns
        os.utime(raw, ns=(time.time_ns(), mtime_ns))


def cache_max_bytes(folder: Path) -> int:
    """The cap: ``$NAPARI_ALLEN_CACHE_MAX`` or a quarter of (free disk + current entries)."""
    env = os.environ.get(CACHE_MAX_ENV, "").strip()
    if env:
        try:
            return parse_size(env)
        except ValueError as exc:
            raise AllenFormatError(f"${CACHE_MAX_ENV}", str(exc)) from None
    folder.mkdir(parents=True, exist_ok=True)
    used = sum(size for _, size, _ in _entries(folder))
    return int((shutil.disk_usage(folder).free + used) * DEFAULT_FRACTION)


def _remove_entry(raw: Path) -> None:
    with contextlib.suppress(OSError):
        raw.unlink()
    with contextlib.suppress(OSError, ValueError):
        Manifest(raw.parent).forget(raw.name)


def _evict(folder: Path, need: int, cap: int, keep: set[Path] = frozenset()) -> None:
    """Remove least-recently-used entries until ``need`` more bytes fit under ``cap``."""
    entries = _entries(folder)
    total = sum(size for _, size, _ in entries)
    for _, size, raw in entries:
        if total + need <= cap:
            break
        if raw in keep:
            continue
        _remove_entry(raw)
        total -= size


def _check_disk(folder: Path, need: int, source) -> None:
    free = shutil.disk_usage(folder).free
    if need + DISK_MARGIN > free:
        raise AllenFormatError(source, f"decoding needs {need / 1e9:.2f} GB of disk in "
                                       f"{folder}, only {free / 1e9:.2f} GB free; free some "
                                       "space or point NAPARI_ALLEN_CACHE at a larger disk")


_key_locks: dict[str, threading.Lock] = {}
_key_locks_guard = threading.Lock()


@contextlib.contextmanager
def _key_lock(key: str):
    with _key_locks_guard:
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        yield
    with _key_locks_guard:
        if not lock.locked():
            _key_locks.pop(key, None)


def decoded_memmap(
    key: str,
    fill: Callable[[Callable[[bytes], object]], None],
    n_bytes: int,
    dtype: np.dtype,
    shape,
    *,
    folder: str | os.PathLike | None = None,
    source: object = "",
    synthetic: bool = False,
) -> np.memmap:
    """Memory-map the decoded payload cached under ``key`` in ``<folder>/decoded``; if absent,
    ``fill(write)`` writes exactly ``n_bytes`` of it first (``fill`` raises on bad data; nothing
    partial is kept). ``folder`` is the cache root (default: the configured one)."""
    target_folder = decoded_folder(folder)
    target = target_folder / f"{key}.raw"
    with _key_lock(key):
        manifest = Manifest(target_folder)
        # The manifest's reuse test: the recorded size, inode and mtime (a changed entry is
        # decoded again: its bytes carry no hash of their own).
        found = manifest.check(target.name)
        if found.ok and found.entry is not None and found.entry.size == n_bytes:
            _touch(target, found.entry.mtime_ns)  # the LRU stamp
            # A str, not a Path: numpy resolves Path names (a syscall per folder level).
            return np.memmap(str(target), dtype=dtype, mode="r", shape=tuple(shape),
                             order="F")
        if found.status != MISSING:
            _remove_entry(target)
        target_folder.mkdir(parents=True, exist_ok=True)
        cap = cache_max_bytes(target_folder)
        if n_bytes > cap:
            return _anonymous_memmap(target_folder, fill, n_bytes, dtype, shape, source)
        _evict(target_folder, n_bytes, cap)
        _check_disk(target_folder, n_bytes, source)
        # atomic_path: a unique temporary name (two processes may decode the same grid at
        # once), removed on errors or cancel, renamed only when complete.
        with atomic_path(target) as part:
            with open(part, "wb") as out:
                fill(out.write)
            st = part.stat()
            if st.st_size != n_bytes:
                raise AllenFormatError(source, f"decoded {st.st_size:,} bytes, expected "
                                               f"{n_bytes:,}")
            # The record first: an entry under its final name always has one (os.replace keeps
            # the inode and mtime recorded here). No SHA-256 of the decoded bytes: they are
            # what the verified compressed bytes (the key) inflate to, with the stream's own
            # CRC and exact size checked; a changed entry is decoded again, not re-hashed.
            manifest.record(target.name, part, url=str(source), synthetic=bool(synthetic),
                            sha256="")
    return np.memmap(str(target), dtype=dtype, mode="r", shape=tuple(shape), order="F")


def _anonymous_memmap(folder: Path, fill, n_bytes: int, dtype, shape, source) -> np.memmap:
    """Decode into an unlinked temporary file (a grid larger than the whole cache cap): the
    disk space is returned when the array is released."""
    _check_disk(folder, n_bytes, source)
    with tempfile.TemporaryFile(dir=folder, prefix=".uncached-") as fh:
        fill(fh.write)
        fh.flush()
        if fh.tell() != n_bytes:
            raise AllenFormatError(source, f"decoded {fh.tell():,} bytes, expected {n_bytes:,}")
        # The map holds its own reference to the file; closing ours leaves the data reachable.
        return np.memmap(fh, dtype=dtype, mode="r", shape=tuple(shape), order="F")


def decoded_cache_info(cache_root: str | os.PathLike | None = None) -> dict:
    """``{folder, entries, bytes, max_bytes}`` of the decoded cache."""
    folder = decoded_folder(cache_root)
    entries = _entries(folder)
    try:
        cap = cache_max_bytes(folder)
    except AllenFormatError:
        cap = None
    return {"folder": str(folder), "entries": len(entries),
            "bytes": sum(size for _, size, _ in entries), "max_bytes": cap}


def prune_decoded_cache(cache_root: str | os.PathLike | None = None,
                        max_bytes: int | None = None) -> tuple[int, int]:
    """Trim the decoded cache to ``max_bytes`` (default: its cap), least recently used first;
    also removes leftovers (``.part``, records without data). Returns ``(entries removed,
    bytes freed)``."""
    folder = decoded_folder(cache_root)
    if not folder.is_dir():
        return 0, 0
    before = _entries(folder)
    cap = cache_max_bytes(folder) if max_bytes is None else int(max_bytes)
    _evict(folder, 0, cap)
    for path in folder.iterdir():
        if path.name.endswith(".part"):
            with contextlib.suppress(OSError):
                path.unlink()
    after = {raw for _, _, raw in _entries(folder)}
    gone = [(size, raw) for _, size, raw in before if raw not in after]
    return len(gone), sum(size for size, _ in gone)
