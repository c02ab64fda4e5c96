"""Streamed, size-capped decompression of grid payloads, in memory or into a cached file.

Compressed Allen grids (gzip NRRD, deflated zip members) cannot be memory-mapped. Small ones
are inflated in memory; large ones (25/10 µm) are inflated once, chunk by chunk, into a raw file
under the cache folder (``<cache>/decoded/``) and memory-mapped from there, so peak memory
stays at a few MiB whatever the grid size. Output is capped at the expected size: a payload
that inflates beyond it (a decompression bomb or a wrong header) is rejected without being
written out, and a short one is reported as truncated. Files are written to ``*.part`` and
renamed only when complete, so nothing half-written is ever reused.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..config import cache_dir
from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback, check, report
from .atomic import atomic_path

_IN_CHUNK = 1 << 20  # compressed bytes read per step
_OUT_CHUNK = 16 << 20  # at most this many inflated bytes held at once

#: zlib window bits accepting both gzip and zlib headers.
GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
#: Raw deflate (zip members).
RAW_DEFLATE = -zlib.MAX_WBITS


def inflate(
    fh: BinaryIO,
    n_bytes: int,
    write: Callable[[bytes], object],
    source,
    *,
    wbits: int = GZIP_OR_ZLIB,
    what: str = "compressed data",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Inflate ``fh`` into ``write`` chunk by chunk; exactly ``n_bytes`` must come out."""
    decomp = zlib.decompressobj(wbits)
    total = 0
    try:
        while not decomp.eof:
            check(cancel)
            data = fh.read(_IN_CHUNK)
            if not data:
                break
            while data and not decomp.eof:
                out = decomp.decompress(data, _OUT_CHUNK)
                data = decomp.unconsumed_tail
                total += len(out)
                if total > n_bytes:
                    raise AllenFormatError(
                        source, f"{what} inflates beyond the {n_bytes:,} bytes its header "
                                "declares (corrupt header or decompression bomb)")
                write(out)
            report(progress, done=total, total=n_bytes, bytes_done=total,
                   bytes_total=n_bytes, message=f"decoding {Path(str(source)).name}")
        if not decomp.eof:
            out = decomp.flush()
            total += len(out)
            if total > n_bytes:
                raise AllenFormatError(source, f"{what} inflates beyond {n_bytes:,} bytes")
            write(out)
    except zlib.error as exc:
        raise AllenFormatError(source, f"corrupt {what}: {exc}") from exc
    except EOFError as exc:
        raise AllenFormatError(source, f"truncated {what}: {exc}") from exc
    if total != n_bytes or not decomp.eof:
        raise AllenFormatError(
            source, f"truncated {what}: inflated {total:,} of the {n_bytes:,} bytes expected")


def inflate_to_array(fh: BinaryIO, n_bytes: int, dtype: np.dtype, shape, source,
                     **kwargs) -> np.ndarray:
    """Inflate into memory and return a native-endian Fortran-ordered array of ``shape``."""
    buf = bytearray()
    inflate(fh, n_bytes, buf.extend, source, **kwargs)
    flat = np.frombuffer(bytes(buf), dtype=dtype)
    return flat.astype(np.dtype(dtype).newbyteorder("="), copy=True).reshape(shape, order="F")


def cache_key(path: str | os.PathLike, *extra: object) -> str:
    """A key that changes when the file changes (absolute path, size, mtime) plus extras."""
    st = Path(path).stat()
    text = "|".join([str(Path(path).resolve()), str(st.st_size), str(st.st_mtime_ns),
                     *map(str, extra)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def decoded_memmap(
    key: str,
    fill: Callable[[Callable[[bytes], object]], None],
    n_bytes: int,
    dtype: np.dtype,
    shape,
) -> np.memmap:
    """Memory-map the decoded payload cached under ``key``; if absent, ``fill(write)`` writes
    exactly ``n_bytes`` of it first (``fill`` raises on bad data; nothing partial is kept)."""
    folder = cache_dir() / "decoded"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key}.raw"
    if not (target.exists() and target.stat().st_size == n_bytes):
        # atomic_path: a unique temporary name (two threads may decode the same grid at
        # once), removed on errors or cancel, renamed only when complete.
        with atomic_path(target) as part:
            with open(part, "wb") as out:
                fill(out.write)
            if part.stat().st_size != n_bytes:
                raise RuntimeError(f"decoded {part.stat().st_size} bytes, expected {n_bytes}")
    return np.memmap(target, dtype=dtype, mode="r", shape=tuple(shape), order="F")


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
