"""Slice a Fortran-ordered grid file without keeping the file mapped into the process.

Allen grids are x (AP) fastest, so the file is a sequence of contiguous ML planes, each
``AP x DV`` values. An AP (coronal) slice needs one value from every ``AP`` run, i.e. it touches
every page of the file. Through a plain ``numpy.memmap`` those pages stay mapped and count in
the process's RSS (4.8 GB for a 10 µm grid) until the kernel reclaims them.

:class:`PlaneReader` slices its own read-only memory map, copies the (small) result, then tells
the kernel (``madvise(MADV_DONTNEED)``) that the ML planes it touched are no longer needed: the
pages leave the process (they stay in the page cache, so the next slice is still fast). Peak
memory is one chunk of planes per thread, whatever the grid size. Where ``madvise`` is missing
(Windows), planes are read with ``os.pread`` into a reused buffer instead.

It is a read-only array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__`` with ints and
slices) for ``dask.array.from_array``; :func:`plane_reader_for` builds one from a whole-file
Fortran-ordered ``numpy.memmap`` as this package's readers create them.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref

import numpy as np

_CAN_RELEASE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")


class PlaneReader:
    """Array-like view of an ``[AP, DV, ML]`` grid stored x-fastest at ``offset`` in ``path``."""

    def __init__(self, path: str | os.PathLike, offset: int, shape, dtype) -> None:
        self.path = os.fspath(path)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self._plane_items = self.shape[0] * self.shape[1]
        self._plane_bytes = self._plane_items * self.dtype.itemsize
        n_bytes = self._plane_bytes * self.shape[2]
        if os.path.getsize(self.path) < self.offset + n_bytes:
            raise OSError(f"{self.path}: file ended before the {n_bytes:,} bytes of the grid")
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        weakref.finalize(self, os.close, self._fd)
        self._array = None
        if _CAN_RELEASE and n_bytes:
            self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
            self._array = np.frombuffer(self._map, dtype=self.dtype, count=self._plane_items
                                        * self.shape[2], offset=self.offset
                                        ).reshape(self.shape, order="F")
        self._local = threading.local()  # pread buffers, one per thread (dask is parallel)

    def _release(self, first: int, last: int) -> None:
        """Drop ML planes ``first..last`` (inclusive) from this process's resident memory."""
        start = self.offset + first * self._plane_bytes
        stop = self.offset + (last + 1) * self._plane_bytes
        start -= start % mmap.PAGESIZE  # madvise needs a page-aligned start
        self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def _plane(self, k: int) -> np.ndarray:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = bytearray(self._plane_bytes)
        start = self.offset + k * self._plane_bytes
        view, pos = memoryview(buf), 0
        while pos < self._plane_bytes:
            data = os.pread(self._fd, self._plane_bytes - pos, start + pos)
            if not data:
                raise OSError(f"{self.path}: file ended while reading ML plane {k}")
            view[pos:pos + len(data)] = data
            pos += len(data)
        flat = np.frombuffer(buf, dtype=self.dtype, count=self._plane_items)
        return flat.reshape(self.shape[:2], order="F")

    def __getitem__(self, index):
        if not isinstance(index, tuple):
            index = (index,)
        if len(index) > 3 or any(not isinstance(i, (int, np.integer, slice)) for i in index):
            if self._array is not None:  # fancy indexing: rare, plain (unreleased) mapping
                return np.array(self._array[index])
            raise IndexError(f"PlaneReader supports ints and slices only, got {index!r}")
        ap, dv, ml = (*index, *(slice(None),) * (3 - len(index)))
        planes = np.arange(self.shape[2])[ml]
        if self._array is not None:
            out = np.array(self._array[ap, dv, ml])  # copy: the result must not be a view
            if np.size(planes):
                self._release(int(np.min(planes)), int(np.max(planes)))
            return out
        if np.ndim(planes) == 0:  # an int: the ML axis disappears
            return np.array(self._plane(int(planes))[ap, dv])
        parts = [np.array(self._plane(int(k))[ap, dv]) for k in planes]
        if not parts:
            probe = np.empty(self.shape[:2], dtype=self.dtype)[ap, dv]
            return np.empty(probe.shape + (0,), dtype=self.dtype)
        return np.stack(parts, axis=-1)


def plane_reader_for(data) -> PlaneReader | None:
    """A PlaneReader over a whole-file Fortran-ordered 3-D memmap, else None."""
    if not isinstance(data, np.memmap) or data.ndim != 3:
        return None
    filename = getattr(data, "filename", None)
    if not filename or not data.flags.f_contiguous:
        return None
    # Only a memmap as our readers create it (not a view into one): its base is the mmap.
    if isinstance(data.base, np.ndarray):
        return None
    return PlaneReader(filename, data.offset, data.shape, data.dtype)
