"""Reading the pyramid stores this package writes, without zarr (io/pyramid.py).

The stores are plain Zarr v3 (any zarr reader opens them), but in napari's process zarr costs
an import of ~0.25 s and, per read, round trips through its I/O thread; both land on napari's
main thread (the first open of a cached pyramid in a session, each plane shown). The layout is
fixed by the writer (:class:`napari_allen.io.pyramid._ChunkWriter`): 64^3 chunks (edge chunks
full size), AP-fastest bytes (transpose ``(2, 1, 0)``), little-endian, Blosc, then the
CRC-32C of the Blosc bytes (Zarr v3's ``crc32c`` codec: 4 bytes, little-endian), keys
``c/<i>/<j>/<k>``, missing chunk = fill value. :func:`direct_level` returns a reader for a
level whose ``zarr.json`` says exactly that, else None (the caller then uses zarr). Arrays are
``[AP, DV, ML]``.

A damaged chunk is never shown: one whose checksum does not match (a flipped bit Blosc would
still decode into wrong voxels), that the codec refuses, of the wrong size, or listed in the
store's map of written chunks (:func:`chunks_written`) but missing. The read raises an
:class:`~napari_allen.errors.AllenFormatError` naming the chunk, and the store is set aside
(``<store>.damaged-<pid>``, removed by the next conversion's cache clean-up), so every later
read of it raises too and the next open of the source file converts it again.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import google_crc32c
import numpy as np

from ..errors import AllenFormatError

#: The codec chain the writer produces (names and the settings reading depends on).
_TRANSPOSE = [2, 1, 0]
_CODECS = ["transpose", "bytes", "blosc", "crc32c"]


def crc32c_bytes(data: bytes) -> bytes:
    """The 4 bytes Zarr v3's ``crc32c`` codec appends: CRC-32C of ``data``, little-endian."""
    return int(google_crc32c.value(data)).to_bytes(4, "little")


def chunks_written(folder: str | Path, shape: tuple[int, ...], chunk: int = 64) -> np.ndarray:
    """Which chunks of the level at ``folder`` (array ``shape``) have a file: bool, one
    element per chunk ``[i, j, k]``."""
    grid = np.zeros([-(-int(n) // chunk) for n in shape], dtype=bool)
    root = Path(folder) / "c"
    for dirpath, _dirs, files in os.walk(root):
        parts = Path(dirpath).relative_to(root).parts
        if len(parts) != 2:
            continue
        for name in files:
            key = (*parts, name)
            if all(k.isdigit() for k in key):
                i, j, k = map(int, key)
                if i < grid.shape[0] and j < grid.shape[1] and k < grid.shape[2]:
                    grid[i, j, k] = True
    return grid


def encode_chunk_map(grid: np.ndarray) -> dict:
    """A JSON-able form of a :func:`chunks_written` map (bits packed, base64)."""
    return {"shape": list(grid.shape),
            "bits": base64.b64encode(np.packbits(grid.ravel())).decode("ascii")}


def decode_chunk_map(doc: dict) -> np.ndarray:
    """The map :func:`encode_chunk_map` wrote; ValueError/KeyError/TypeError when malformed."""
    shape = tuple(int(n) for n in doc["shape"])
    bits = np.frombuffer(base64.b64decode(doc["bits"], validate=True), dtype=np.uint8)
    n = int(np.prod(shape))
    if len(shape) != 3 or len(bits) != -(-n // 8):
        raise ValueError("the chunk map does not match its shape")
    return np.unpackbits(bits, count=n).astype(bool).reshape(shape)


def direct_level(folder: str | Path, present: np.ndarray | None = None
                 ) -> ChunkedLevel | None:
    """A :class:`ChunkedLevel` over the array at ``folder`` if its metadata is the writer's
    layout, else None. ``present``: the chunks written (:func:`chunks_written`); a missing
    chunk listed there is damage. Raises OSError/ValueError for unreadable metadata."""
    folder = Path(folder)
    meta = json.loads((folder / "zarr.json").read_text())
    try:
        codecs = meta["codecs"]
        names = [c["name"] for c in codecs]
        chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
        separator = meta["chunk_key_encoding"]["configuration"]["separator"]
        ok = (meta.get("zarr_format") == 3 and meta.get("node_type") == "array"
              and meta["chunk_grid"]["name"] == "regular"
              and meta["chunk_key_encoding"]["name"] == "default" and separator == "/"
              and names == _CODECS
              and list(codecs[0]["configuration"]["order"]) == _TRANSPOSE
              and codecs[1].get("configuration", {}).get("endian", "little") == "little"
              and len(set(chunks)) == 1 and len(chunks) == 3
              and not meta.get("storage_transformers"))
        if not ok:
            return None
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        fill = meta.get("fill_value", 0)
    except (KeyError, TypeError, IndexError):
        return None
    level = ChunkedLevel(folder, tuple(int(s) for s in meta["shape"]), dtype, int(chunks[0]),
                         fill)
    if present is not None:
        expected = tuple(-(-n // level.chunk) for n in level.shape)
        if present.shape != expected:
            raise ValueError(f"{folder}: the chunk map has shape {present.shape}, "
                             f"the level {expected}")
        level.present = present
    return level


class ChunkedLevel:
    """A read-only array-like over one level: ``shape``, ``dtype``, ``ndim`` and basic
    indexing (ints, slices with any step, Ellipsis); values native-endian."""

    def __init__(self, folder: Path, shape: tuple[int, int, int], dtype: np.dtype,
                 chunk: int, fill) -> None:
        self.folder = folder
        self.shape = shape
        self.ndim = 3
        self._stored = np.dtype(dtype)
        self.dtype = self._stored.newbyteorder("=")
        self.chunk = chunk
        self.fill = fill
        #: The error of the first damaged chunk met: every later read raises it too (the
        #: store is set aside; nothing more is read from it).
        self.damaged: AllenFormatError | None = None
        #: Which chunks were written (None: unknown, a missing file is the fill value).
        self.present: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __repr__(self) -> str:
        return f"<ChunkedLevel {self.folder} shape={self.shape} dtype={self.dtype}>"

    def _block(self, key: tuple[int, int, int]) -> np.ndarray | None:
        if self.damaged is not None:
            raise self.damaged
        if self.present is not None and not self.present[key]:
            return None  # a chunk the writer never wrote: the fill value
        path = self.folder.joinpath("c", *map(str, key))
        try:
            stored = path.read_bytes()
        except FileNotFoundError:
            if not self.folder.is_dir():  # the store went (set aside after damage, deleted)
                self.damaged = AllenFormatError(
                    self.folder.parent, "the multiscale cache is gone (set aside as damaged, "
                    "or deleted); open the file again to rebuild it")
                raise self.damaged from None
            if self.present is None:
                return None  # no map of the chunks written: zarr's rule, the fill value
            self.damaged = _set_aside(path, self.folder.parent,
                                      FileNotFoundError("written, now missing"))
            raise self.damaged from None
        encoded, checksum = stored[:-4], stored[-4:]
        if len(stored) < 4 or crc32c_bytes(encoded) != checksum:
            self.damaged = _set_aside(path, self.folder.parent,
                                      ValueError("its CRC-32C checksum does not match"))
            raise self.damaged
        try:
            raw = _blosc_decode(encoded)
            return np.frombuffer(raw, dtype=self._stored).reshape((self.chunk,) * 3,
                                                                  order="F")
        except (RuntimeError, ValueError) as exc:  # Blosc refused it, or the wrong size
            self.damaged = _set_aside(path, self.folder.parent, exc)
            raise self.damaged from exc

    def __getitem__(self, index) -> np.ndarray:
        axes = _axes(index, self.shape)
        out_shape = tuple(len(r) for r, _ in axes)
        out = np.full(out_shape, self.fill, dtype=self.dtype)
        if out.size:
            per_axis = [_split(r, self.chunk) for r, _ in axes]
            for ci, oi, li in per_axis[0]:
                for cj, oj, lj in per_axis[1]:
                    for ck, ok, lk in per_axis[2]:
                        block = self._block((ci, cj, ck))
                        if block is None:
                            continue  # never written: the fill value
                        if all(isinstance(s, slice) for s in (oi, oj, ok, li, lj, lk)):
                            out[oi, oj, ok] = block[li, lj, lk]
                        else:
                            out[np.ix_(*map(_positions, (oi, oj, ok)))] = \
                                block[np.ix_(*map(_positions, (li, lj, lk)))]
        dropped = tuple(0 if drop else slice(None) for _, drop in axes)
        return out[dropped]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)


def _blosc_decode(encoded: bytes) -> bytes:
    """One Blosc chunk, decoded by the calling thread alone. numcodecs decodes on blosc's
    thread pool when called from the main thread (napari slices there); for ~1 MB chunks on
    a 2-core machine that is about twice as slow as one thread (a 25 µm coronal plane: 40
    chunks, ~35 -> ~18 ms), and slower still when the other core is busy. numcodecs offers
    only its module-wide switch: it is set for the call and restored (other threads default
    to one thread anyway)."""
    from numcodecs import blosc

    before = blosc.use_threads
    blosc.use_threads = False
    try:
        return blosc.decompress(encoded)
    finally:
        blosc.use_threads = before


def _set_aside(chunk: Path, store: Path, exc: BaseException) -> AllenFormatError:
    """A damaged chunk: move its store aside (``<store>.damaged-<pid>``, so the next open of
    the source file converts it again instead of trusting it) and return the error to raise,
    naming the chunk and what happened."""
    aside = store.with_name(f"{store.name}.damaged-{os.getpid()}")
    try:
        store.rename(aside)
        what = f"the cache was moved to {aside} and is rebuilt at the next open of its file"
    except OSError as move_error:
        what = f"delete {store} to rebuild it ({move_error})"
    return AllenFormatError(chunk, f"damaged multiscale cache chunk ({exc}); {what}")


def _axes(index, shape) -> list[tuple[range, bool]]:
    """Per axis: the voxel positions selected and whether the axis is dropped (an int)."""
    items = index if isinstance(index, tuple) else (index,)
    if any(item is Ellipsis for item in items):
        at = next(i for i, item in enumerate(items) if item is Ellipsis)
        items = items[:at] + (slice(None),) * (len(shape) - len(items) + 1) + items[at + 1:]
    items = items + (slice(None),) * (len(shape) - len(items))
    if len(items) != len(shape):
        raise IndexError(f"too many indices for an array of shape {shape}")
    axes = []
    for item, n in zip(items, shape, strict=True):
        if isinstance(item, slice):
            axes.append((range(*item.indices(n)), False))
        elif isinstance(item, (int, np.integer)):
            i = int(item) + (n if item < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {item} is out of bounds for an axis of size {n}")
            axes.append((range(i, i + 1), True))
        else:
            raise IndexError(f"only integers and slices index a pyramid level, not {item!r}")
    return axes


def _split(r: range, chunk: int) -> list[tuple[int, slice | np.ndarray, slice | np.ndarray]]:
    """``r``'s positions grouped by chunk: (chunk index, output positions, in-chunk
    positions), as slices for unit steps."""
    if r.step == 1:
        groups = []
        start = r.start
        while start < r.stop:
            c = start // chunk
            stop = min(r.stop, (c + 1) * chunk)
            groups.append((c, slice(start - r.start, stop - r.start),
                           slice(start - c * chunk, stop - c * chunk)))
            start = stop
        return groups
    positions = np.asarray(r)
    which = positions // chunk
    return [(int(c), np.nonzero(which == c)[0], positions[which == c] - int(c) * chunk)
            for c in np.unique(which)]


def _positions(s) -> np.ndarray:
    return np.arange(s.start, s.stop) if isinstance(s, slice) else s
