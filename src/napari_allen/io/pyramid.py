"""A chunked multiscale cache (OME-Zarr-style pyramid) for 10/25 µm grids, written once.

Allen grids are stored AP-fastest: an ML (sagittal) plane is one contiguous run of the file but
an AP (coronal) or DV (horizontal) plane touches every page of it (5-20 s for a 4.8 GB 10 µm
grid). Here a grid is rewritten once into a Zarr v3 group of 64^3-voxel chunks (Blosc-LZ4),
so a full-resolution plane along *any* axis reads only the chunks it crosses, plus
down-sampled levels so napari can show the whole brain from a small level.

Layout (``<cache>/pyramids/<key>.zarr``): arrays ``"0"``, ``"1"``, ... (level ``k`` is level 0
sampled every ``2**k`` voxels: *nearest*, never interpolated, so labels keep exact uint32 ids
and images keep exact values; voxel ``i`` of level ``k`` is level-0 voxel ``i * 2**k``, centred
at ``i * 2**k * resolution`` µm); the ``ome`` attribute holds OME-Zarr 0.5 ``multiscales``
(axes AP/DV/ML in micrometres, a scale per level) and ``napari_allen`` holds the source's
identity, shape, dtype, kind, metadata and value statistics of the coarsest level.

Conversion streams the source ML slab by ML slab (contiguous on disk: a single sequential
read), writing every level from each slab; it runs in ``<key>.zarr.part`` and records after
each slab how far it got, so an interrupted conversion (killed, napari closed) resumes where it
stopped; only a complete store is renamed to its final name and trusted. Background
conversions (:func:`start_pyramid_job`) run :func:`convert_file` in a converter process of
their own (:mod:`napari_allen.child_process`; a thread where no process can be started);
cancelling one removes its partial store. The cache is kept under a size cap
(``NAPARI_ALLEN_CACHE_MAX`` as for decoded grids; least recently used pyramids go first).

Arrays are ``[AP, DV, ML]``; no Qt or napari here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import cache_dir
from ..progress import Cancelled, CancelToken, ProgressCallback, check, report
from .atomic import file_lock
from .pyramid_chunks import chunks_written, crc32c_bytes, encode_chunk_map
from .volume import GridVolume

#: 2: every chunk ends with its CRC-32C, and the store lists the chunks written (attrs
#: ``chunk_maps``): a bit flip or a lost chunk file is detected, never shown.
PYRAMID_VERSION = 2
#: Chunk edge (voxels) at every level; also the ML slab read per conversion step (64: a
#: full-resolution 10 µm plane crosses ~260 chunks; 32 meant ~1,000 and 2-3x slower reads).
CHUNK = 64
#: Levels are added while the largest level dimension exceeds this (voxels), at most 5 extra
#: (so 2**k divides CHUNK for every level k).
COARSEST_MAX = 256
MAX_EXTRA_LEVELS = 5  # 2**5 < CHUNK: every level stays slab-aligned
NO_DATA = -1
#: Threads compressing and writing chunks (Blosc releases the GIL).
_WRITE_THREADS = 2
ATTRS_KEY = "napari_allen"
log = logging.getLogger(__name__)


def level_shapes(shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Shapes of every level: level ``k`` is ``ceil(n / 2**k)`` per axis."""
    shapes = [tuple(int(s) for s in shape)]
    while max(shapes[-1]) > COARSEST_MAX and len(shapes) <= MAX_EXTRA_LEVELS:
        shapes.append(tuple(-(-s // 2) for s in shapes[-1]))
    return shapes  # type: ignore[return-value]


def source_identity(path: str | os.PathLike) -> dict:
    """What identifies the source file version: resolved path, size and mtime (ns)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def pyramid_key(path: str | os.PathLike) -> str:
    """A cache key that changes when the source file changes (or the layout version does)."""
    text = json.dumps({**source_identity(path), "version": PYRAMID_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def pyramid_folder(cache_root: str | os.PathLike | None = None) -> Path:
    folder = cache_dir(cache_root) / "pyramids"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pyramid_path(path: str | os.PathLike, cache_root: str | os.PathLike | None = None) -> Path:
    """Where the complete pyramid of ``path`` lives (it may not exist yet)."""
    return pyramid_folder(cache_root) / f"{pyramid_key(path)}.zarr"


@dataclass
class Pyramid:
    """An opened, complete pyramid: ``levels[k]`` are read-only arrays ``[AP, DV, ML]``
    (``shape``, ``dtype``, basic indexing; :mod:`.pyramid_chunks`)."""

    store: Path
    levels: list
    attrs: dict

    @property
    def resolution(self) -> float:
        return float(self.attrs["resolution"])

    @property
    def kind(self) -> str:
        return str(self.attrs["kind"])

    @property
    def scales_um(self) -> list[float]:
        """Voxel spacing (µm) of each level."""
        return [self.resolution * 2 ** k for k in range(len(self.levels))]


#: Stores opened in this process: path -> (zarr.json's mtime and size, the opened pyramid).
_OPENED: dict[str, tuple[tuple[int, int], Pyramid]] = {}


def open_pyramid(store: str | os.PathLike) -> Pyramid | None:
    """Open a complete, verified pyramid store; None if absent, partial or inconsistent.

    A store opened before (and whose ``zarr.json`` is unchanged) is not opened again
    (opening reads a metadata document per level)."""
    store = Path(store)
    if store.suffix == ".part":
        return None
    try:
        st = (store / "zarr.json").stat()
    except OSError:
        return None  # every small grid opened asks this: a stat only
    stamp = (int(st.st_mtime_ns), int(st.st_size))
    known = _OPENED.get(str(store))
    if known is not None and known[0] == stamp:
        with contextlib.suppress(OSError):
            os.utime(store)  # least-recently-used eviction reads this
        return known[1]
    try:
        group = json.loads((store / "zarr.json").read_text())
        attrs = dict((group.get("attributes") or {}).get(ATTRS_KEY) or {})
        if not attrs.get("complete") or attrs.get("version") != PYRAMID_VERSION:
            return None
        shapes = level_shapes(tuple(attrs["shape"]))
        levels = _open_levels(store, len(shapes), attrs.get("chunk_maps"))
        if [tuple(a.shape) for a in levels] != shapes or any(
                np.dtype(a.dtype) != np.dtype(attrs["dtype"]).newbyteorder("=")
                for a in levels):
            return None
    except (KeyError, ValueError, OSError, TypeError):
        return None
    with contextlib.suppress(OSError):
        os.utime(store)  # least-recently-used eviction reads this
    pyramid = Pyramid(store=store, levels=levels, attrs=attrs)
    _OPENED[str(store)] = (stamp, pyramid)
    return pyramid


def _open_levels(store: Path, n_levels: int, chunk_maps: list) -> list:
    """The levels as read-only arrays: read directly when they have the layout this module
    writes (no zarr import, no I/O-thread round trips on napari's main thread; each chunk's
    CRC-32C checked, and a chunk listed in ``chunk_maps`` but missing is damage, not fill),
    else with zarr. ValueError/KeyError/TypeError when the maps are missing or malformed."""
    from .pyramid_chunks import decode_chunk_map, direct_level

    if not isinstance(chunk_maps, list) or len(chunk_maps) != n_levels:
        raise ValueError(f"{store}: no map of the chunks written for each level")
    levels = [direct_level(store / str(k), present=decode_chunk_map(m))
              for k, m in enumerate(chunk_maps)]
    if all(level is not None for level in levels):
        return levels
    import zarr

    group = zarr.open_group(str(store), mode="r")
    return [group[str(k)] for k in range(n_levels)]


def _ome_attrs(resolution: float, n_levels: int, name: str) -> dict:
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in ("AP", "DV", "ML")]
    datasets = [{"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": [resolution * 2 ** k] * 3}]} for k in range(n_levels)]
    return {"version": "0.5", "multiscales": [{"name": name, "axes": axes,
                                               "datasets": datasets}]}


def _jsonable(meta: dict) -> dict:
    out = {}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except TypeError:
            value = str(value)
        out[str(key)] = value
    return out


def _value_stats(data: np.ndarray) -> dict:
    """min / max / 99.9th percentile of the voxels holding data (not -1, finite)."""
    flat = np.asarray(data).ravel()
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat) & (flat != NO_DATA)]
    elif flat.dtype.kind == "i":
        flat = flat[flat != NO_DATA]
    if flat.size == 0:
        return {"min": 0.0, "max": 1.0, "p999": 1.0, "n_valid": 0}
    return {"min": float(flat.min()), "max": float(flat.max()),
            "p999": float(np.percentile(flat, 99.9)), "n_valid": int(flat.size)}


def _create_part(part: Path, vol: GridVolume, identity: dict) -> Any:
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec

    if part.exists():
        shutil.rmtree(part)
    group = zarr.open_group(str(part), mode="w")
    dtype = np.dtype(vol.dtype).newbyteorder("<")
    for k, shape in enumerate(level_shapes(vol.shape)):
        # Chunks are stored AP-fastest (transpose (2, 1, 0)), as Allen files are: a chunk is
        # then cut from a source slab by copying runs of CHUNK values, never transposing.
        group.create_array(str(k), shape=shape, dtype=dtype, chunks=(CHUNK,) * 3,
                           filters=[TransposeCodec(order=(2, 1, 0))],
                           compressors=[BloscCodec(cname="lz4", clevel=1,
                                                   shuffle=_shuffle_name(dtype)),
                                        Crc32cCodec()],
                           fill_value=0, chunk_key_encoding={"name": "default",
                                                             "separator": "/"})
    attrs = {"version": PYRAMID_VERSION, "complete": False, "done_ml": 0,
             "shape": list(vol.shape), "dtype": dtype.str, "resolution": vol.resolution,
             "kind": vol.kind, "name": vol.name, "metadata": _jsonable(vol.metadata),
             "source": identity}
    group.attrs.update({ATTRS_KEY: attrs,
                        "ome": _ome_attrs(vol.resolution, len(level_shapes(vol.shape)),
                                          vol.name)})
    return group


def _resume_or_create(part: Path, vol: GridVolume, identity: dict) -> tuple[Any, int]:
    """The partial store to continue (and the ML plane to continue from), or a new one."""
    import zarr

    if (part / "zarr.json").is_file():
        try:
            group = zarr.open_group(str(part), mode="r+")
            attrs = dict(group.attrs.get(ATTRS_KEY) or {})
            if (attrs.get("version") == PYRAMID_VERSION and attrs.get("source") == identity
                    and attrs.get("shape") == list(vol.shape)
                    and np.dtype(attrs.get("dtype")) == np.dtype(vol.dtype).newbyteorder("<")):
                done = int(attrs.get("done_ml", 0))
                if done % CHUNK == 0 or done == vol.shape[2]:
                    return group, done
        except (ValueError, OSError, KeyError, TypeError):
            pass
    return _create_part(part, vol, identity), 0


def _slab_reader(data) -> Callable[[int, int], np.ndarray]:
    """``read(k0, k1) -> data[:, :, k0:k1]`` as a native-endian array. A whole-file
    Fortran-ordered memory map (as the readers make them) is read with plain sequential
    ``readinto`` calls: ML slabs are contiguous in the file, and reading them avoids a page
    fault per 4 KiB and keeps nothing mapped (RSS stays at one slab)."""
    if isinstance(data, np.memmap) and data.flags.f_contiguous and data.filename:
        path, offset = data.filename, int(data.offset)
        plane = data.shape[0] * data.shape[1]
        dtype = data.dtype

        def read_file(k0: int, k1: int) -> np.ndarray:
            out = np.empty(plane * (k1 - k0), dtype=dtype)
            with open(path, "rb", buffering=0) as fh:
                fh.seek(offset + k0 * plane * dtype.itemsize)
                view = memoryview(out).cast("B")
                got = 0
                while got < len(view):
                    n = fh.readinto(view[got:])
                    if not n:
                        raise OSError(f"{path}: file ended while reading ML planes {k0}-{k1}")
                    got += n
            slab = out.reshape((data.shape[0], data.shape[1], k1 - k0), order="F")
            return slab.astype(dtype.newbyteorder("="), copy=False)

        return read_file

    def read(k0: int, k1: int) -> np.ndarray:
        slab = np.asarray(data[:, :, k0:k1])
        return slab.astype(slab.dtype.newbyteorder("="), copy=False)

    return read


def discard_partial(target: str | os.PathLike) -> bool:
    """Remove the partial store of ``target`` (a cancelled conversion) unless a conversion
    holds its lock now (another process converting the same grid). True if nothing is left."""
    target = Path(target)
    part = target.with_name(target.name + ".part")
    with file_lock(target.with_name(target.name + ".lock"), wait=False) as locked:
        if locked:
            shutil.rmtree(part, ignore_errors=True)
    return not part.exists()


def _shuffle_name(dtype: np.dtype) -> str:
    return "bitshuffle" if np.dtype(dtype).itemsize == 1 else "shuffle"


class _ChunkWriter:
    """Writes whole chunks of one level straight into the Zarr v3 store: AP-fastest bytes
    (the array's transpose filter), Blosc-LZ4 then CRC-32C like the array's codecs, key
    ``c/i/j/k``.
    Going around zarr's array writer avoids its per-slab transposition and bookkeeping (3-5x
    faster here); :mod:`.pyramid_chunks` (or zarr) reads the result, and the tests compare
    every value."""

    def __init__(self, folder: Path, shape, dtype: np.dtype, pool) -> None:
        import numcodecs

        self.folder = folder
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        shuffle = (numcodecs.Blosc.BITSHUFFLE if self.dtype.itemsize == 1
                   else numcodecs.Blosc.SHUFFLE)
        self.codec = numcodecs.Blosc(cname="lz4", clevel=1, shuffle=shuffle, blocksize=0)
        self.pool = pool

    def write_ml_chunk(self, block_row: np.ndarray, c: int) -> list:
        """Write every chunk of ML chunk index ``c`` from ``block_row`` (``[AP, DV, <=CHUNK]``,
        the level's whole AP x DV extent). Returns futures (wait before trusting the store)."""
        futures = []
        n_ap, n_dv = self.shape[0], self.shape[1]
        # One pass finds the AP x DV columns holding data: most chunks of a brain grid are
        # empty (fill value: no chunk file, as zarr's write_empty_chunks=False).
        occupied = block_row.any(axis=2)
        for i in range(0, n_ap, CHUNK):
            for j in range(0, n_dv, CHUNK):
                path = self.folder / "c" / str(i // CHUNK) / str(j // CHUNK) / str(c)
                if not occupied[i:i + CHUNK, j:j + CHUNK].any():
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()  # a stale chunk of an interrupted run
                    continue
                sub = block_row[i:i + CHUNK, j:j + CHUNK, :]
                futures.append(self.pool.submit(self._write_one, sub, path))
        return futures

    def _write_one(self, sub: np.ndarray, path: Path) -> None:
        block = np.zeros((CHUNK,) * 3, dtype=self.dtype, order="F")
        block[:sub.shape[0], :sub.shape[1], :sub.shape[2]] = sub
        encoded = self.codec.encode(block.ravel(order="F"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded + crc32c_bytes(encoded))  # the array's crc32c codec


class _LevelBuffer:
    """The ML chunk row being filled for level ``k >= 1`` (``2**k``-subsampled planes)."""

    def __init__(self, writer: _ChunkWriter, factor: int) -> None:
        self.writer = writer
        self.factor = factor
        self.c = -1
        self.rows: np.ndarray | None = None

    def start(self, c: int, prefill: np.ndarray | None = None) -> None:
        n_ap, n_dv, n_ml = self.writer.shape
        depth = min(CHUNK, n_ml - c * CHUNK)
        self.c = c
        self.rows = np.zeros((n_ap, n_dv, depth), dtype=self.writer.dtype, order="F")
        if prefill is not None and prefill.shape[2]:
            self.rows[:, :, :prefill.shape[2]] = prefill

    def add(self, sub: np.ndarray, plane0: int) -> list:
        """Put level planes ``plane0 ...`` (``sub``); write finished chunk rows."""
        futures: list = []
        done = 0
        while done < sub.shape[2]:
            plane = plane0 + done
            c = plane // CHUNK
            if c != self.c:
                self.start(c)
            offset = plane - c * CHUNK
            take = min(sub.shape[2] - done, self.rows.shape[2] - offset)
            self.rows[:, :, offset:offset + take] = sub[:, :, done:done + take]
            done += take
            if offset + take == self.rows.shape[2]:  # row complete
                futures += self.writer.write_ml_chunk(self.rows, self.c)
                self.c, self.rows = -1, None
        return futures


def build_pyramid(
    vol: GridVolume,
    target: str | os.PathLike,
    *,
    identity: dict | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Pyramid:
    """Write ``vol`` (``[AP, DV, ML]``, any lazy array) as a pyramid at ``target`` (a
    ``.zarr`` folder); resumes a matching ``target.part`` left by an interrupted run.

    ``identity`` (default: the volume's source file) must match for a partial store to be
    resumed. Raises :class:`Cancelled` when ``cancel`` is set (the partial store stays, to be
    resumed). Returns the opened pyramid.
    """
    target = Path(target)
    identity = identity or (source_identity(vol.source) if vol.source else
                            {"path": str(target), "size": 0, "mtime_ns": 0})
    part = target.with_name(target.name + ".part")
    with file_lock(target.with_name(target.name + ".lock")):
        done_pyramid = open_pyramid(target)
        if done_pyramid is not None:
            return done_pyramid
        group, start = _resume_or_create(part, vol, identity)
        shapes = level_shapes(vol.shape)
        levels = [group[str(k)] for k in range(len(shapes))]
        n_ml = vol.shape[2]
        read = _slab_reader(vol.data)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=_WRITE_THREADS) as pool, \
                ThreadPoolExecutor(max_workers=1) as reader:
            writers = [_ChunkWriter(part / str(k), shape, levels[k].dtype, pool)
                       for k, shape in enumerate(shapes)]
            buffers = [_LevelBuffer(w, 2 ** k) for k, w in enumerate(writers)][1:]
            for buf in buffers:  # resuming inside a coarse chunk row: refill it from level 0
                f = buf.factor
                c = (start // f) // CHUNK
                if start and (start // f) % CHUNK:
                    buf.start(c, np.asarray(levels[0][::f, ::f, c * CHUNK * f:start:f]))
            starts = list(range(start, n_ml, CHUNK))
            # The next slab is read (page faults, copy: no GIL) while this one is written.
            ahead = reader.submit(read, starts[0], min(n_ml, starts[0] + CHUNK)) \
                if starts else None
            for n, k0 in enumerate(starts):
                check(cancel)
                k1 = min(n_ml, k0 + CHUNK)
                slab = ahead.result()
                ahead = (reader.submit(read, starts[n + 1], min(n_ml, starts[n + 1] + CHUNK))
                         if n + 1 < len(starts) else None)
                futures = writers[0].write_ml_chunk(slab, k0 // CHUNK)
                for buf in buffers:
                    # k0 is a multiple of CHUNK >= f: the slab's first plane is on the grid.
                    sub = slab[::buf.factor, ::buf.factor, ::buf.factor]
                    futures += buf.add(sub, k0 // buf.factor)
                for fut in futures:
                    fut.result()  # raises the writer's error, if any
                attrs = dict(group.attrs[ATTRS_KEY])
                attrs["done_ml"] = k1
                group.attrs[ATTRS_KEY] = attrs
                report(progress, done=k1, total=n_ml,
                       message=f"building the multiscale cache of "
                               f"{Path(vol.source).name or 'grid'} ({k1}/{n_ml} ML planes, "
                               f"{time.perf_counter() - t0:.0f} s)")
        attrs = dict(group.attrs[ATTRS_KEY])
        attrs.update(stats=_value_stats(levels[-1][...]), complete=True, done_ml=n_ml,
                     chunk_maps=[encode_chunk_map(chunks_written(part / str(k), shape))
                                 for k, shape in enumerate(shapes)])
        group.attrs[ATTRS_KEY] = attrs
        if target.exists():
            shutil.rmtree(target)
        os.replace(part, target)
    enforce_cap(target.parent, keep={target})
    opened = open_pyramid(target)
    if opened is None:  # pragma: no cover - would mean the rename lost data
        raise RuntimeError(f"pyramid {target} failed verification after writing")
    return opened


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def cache_cap_bytes(folder: Path) -> int | None:
    """The cache cap shared with the decoded-grid cache, when configured (else None)."""
    env = os.environ.get("NAPARI_ALLEN_CACHE_MAX", "").strip()
    if not env:
        return None
    try:
        from ._decode import parse_size  # the decoded cache's parser, when present
    except ImportError:
        parse_size = int  # type: ignore[assignment]
    try:
        return int(parse_size(env))
    except ValueError:
        return None


def enforce_cap(folder: Path, keep: set[Path] = frozenset()) -> None:
    """Remove least recently used complete pyramids until the folder fits the cap."""
    for aside in folder.glob("*.zarr.damaged-*"):  # set aside by a reader: never read again
        shutil.rmtree(aside, ignore_errors=True)
    cap = cache_cap_bytes(folder)
    if cap is None:
        return
    stores = [(p.stat().st_mtime, p) for p in folder.glob("*.zarr") if p.is_dir()]
    sizes = {p: _folder_size(p) for _, p in stores}
    total = sum(sizes.values())
    for _, store in sorted(stores):
        if total <= cap:
            break
        if store in keep:
            continue
        shutil.rmtree(store, ignore_errors=True)
        total -= sizes[store]


# --- background conversion, one job per source file -------------------------------------
@dataclass
class PyramidJob:
    """A background conversion. ``done`` is set when it ends (``pyramid`` or ``error``).

    ``mode`` is ``"process"`` (a converter process: :func:`convert_file` run by
    :mod:`napari_allen.child_process`) or ``"thread"``
    once the conversion has started; ``pid`` is the converter process's id while it runs."""

    key: str
    target: Path
    done: threading.Event = field(default_factory=threading.Event)
    pyramid: Pyramid | None = None
    error: BaseException | None = None
    fraction: float = 0.0
    message: str = ""
    mode: str = ""
    pid: int | None = None
    cancel_token: CancelToken = field(default_factory=CancelToken)
    callbacks: list = field(default_factory=list)
    progress_callbacks: list = field(default_factory=list)

    def cancel(self) -> None:
        """Stop the conversion; its partial store is removed (nothing of it is kept)."""
        self.cancel_token.cancel()

    def add_done_callback(self, fn: Callable[[PyramidJob], object]) -> None:
        """Call ``fn(job)`` when the job ends (now, if it already has), in the job's thread."""
        with _JOBS_LOCK:
            if not self.done.is_set():
                self.callbacks.append(fn)
                return
        fn(self)

    def add_progress_callback(self, fn: Callable[[PyramidJob], object]) -> None:
        """Call ``fn(job)`` after each progress step (``fraction``/``message`` updated), in
        the job's thread, until the job ends."""
        self.progress_callbacks.append(fn)


_JOBS: dict[str, PyramidJob] = {}
_JOBS_LOCK = threading.Lock()


def conversions_running() -> bool:
    """Whether any background conversion of this process has not ended yet."""
    with _JOBS_LOCK:
        return any(not job.done.is_set() for job in _JOBS.values())


def convert_file(source: str, target: str, identity: dict, *,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> None:
    """Read ``source`` (one grid, the package's reader) and build its pyramid at ``target``:
    what a converter process runs (:func:`start_pyramid_job`)."""
    vol = read_single_grid(source, progress=progress, cancel=cancel)
    build_pyramid(vol, target, identity=identity, progress=progress, cancel=cancel)


def read_single_grid(path: str | os.PathLike, **kwargs) -> GridVolume:
    """The one grid of ``path`` (the package's reader; ``kwargs``: ``progress``, ``cancel``)."""
    from . import read_volumes

    vols = read_volumes(path, **kwargs)
    if len(vols) != 1:
        from ..errors import AllenFormatError

        raise AllenFormatError(path, f"holds {len(vols)} grids; a multiscale cache is built "
                                     "for single-grid files")
    return vols[0]


def start_pyramid_job(path: str | os.PathLike,
                      open_volume: Callable[..., GridVolume] | None = None, *,
                      cache_root: str | os.PathLike | None = None,
                      before: Callable[[PyramidJob], object] | None = None) -> PyramidJob:
    """Convert ``path`` in the background (or return the job already doing it).

    Without ``open_volume`` the file is read by the package's reader in a converter process
    of its own (:func:`convert_file` in :mod:`napari_allen.child_process`: the conversion
    never holds this interpreter's GIL, which napari's event loop needs); when no process can
    be started the same runs in a thread, with a logged warning. A given
    ``open_volume(progress=, cancel=)`` (which returns the grid; it may decode the file first)
    cannot cross to another interpreter and runs in the thread. ``before(job)``, if given,
    runs first in the job's thread (e.g. waiting until the GUI has shown the layer, so neither
    a converter process's start-up nor a thread competes with it for the cores or the
    interpreter)."""
    key = pyramid_key(path)
    target = pyramid_folder(cache_root) / f"{key}.zarr"
    identity = source_identity(path)
    with _JOBS_LOCK:
        job = _JOBS.get(key)
        # Reuse a running job, or a finished one whose store still exists in this cache
        # folder (the cache may have been moved or cleared since: then convert again).
        if job is not None and job.target == target and (
                not job.done.is_set() or (job.error is None and target.exists())):
            return job
        job = PyramidJob(key=key, target=target)
        _JOBS[key] = job

    def progress(p) -> None:
        total = getattr(p, "total", None) or 0
        job.fraction = float(getattr(p, "done", 0) or 0) / total if total else job.fraction
        job.message = getattr(p, "message", "") or job.message
        for fn in list(job.progress_callbacks):
            with contextlib.suppress(Exception):  # a display must never break the conversion
                fn(job)

    def in_thread(read: Callable[..., GridVolume]) -> Pyramid:
        job.mode = "thread"
        vol = read(progress=progress, cancel=job.cancel_token)
        return build_pyramid(vol, target, identity=identity, progress=progress,
                             cancel=job.cancel_token)

    def in_process() -> Pyramid:
        from ..child_process import ChildUnavailable, run_in_child

        job.mode = "process"
        try:
            run_in_child(f"{__name__}:convert_file",
                         {"source": str(path), "target": str(target), "identity": identity},
                         what=f"{path}: building the multiscale cache", progress=progress,
                         cancel=job.cancel_token,
                         on_started=lambda pid: setattr(job, "pid", pid))
        except ChildUnavailable as exc:
            log.warning("%s: cannot start the multiscale-cache converter process (%s); "
                        "converting in a thread of this process instead", path, exc)
            return in_thread(lambda **kw: read_single_grid(path, **kw))
        finally:
            job.pid = None
        done = open_pyramid(target)
        if done is None:
            raise RuntimeError(f"{path}: the converter process reported the multiscale cache "
                               f"{target} complete but it does not verify")
        return done

    def run() -> None:
        try:
            if before is not None:
                before(job)
            job.cancel_token.check()
            job.pyramid = in_process() if open_volume is None else in_thread(open_volume)
            job.fraction = 1.0
        except (Exception, Cancelled) as exc:  # noqa: BLE001 - reported through the job
            job.error = exc
            if isinstance(exc, Cancelled):
                discard_partial(target)
        finally:
            with _JOBS_LOCK:
                job.done.set()
                callbacks, job.callbacks = list(job.callbacks), []
            for fn in callbacks:
                with contextlib.suppress(Exception):
                    fn(job)

    threading.Thread(target=run, name=f"napari-allen pyramid {key[:8]}", daemon=True).start()
    return job


class _Described:
    """Shape and dtype of a grid not read yet (enough for :class:`GridVolume`)."""

    def __init__(self, shape, dtype) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3


def describe_grid(path: str | os.PathLike) -> GridVolume | None:
    """A :class:`GridVolume` of ``path`` without reading (or decoding) its payload: its
    ``data`` has only ``shape`` and ``dtype``. None for files holding several grids (zips,
    folders). Raw-encoded files are simply memory-mapped (that reads nothing either)."""
    from . import file_metadata, read_volumes
    from .volume import kind_from_name

    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".zip":
        return None
    if suffix in (".nrrd", ".nhdr"):
        from .nrrd import read_nrrd_header

        header = read_nrrd_header(path)
        if isinstance(header, tuple):  # (fields dict, data offset)
            fields = header[0]
            encoding = str(fields.get("encoding", "")).strip().lower()
            if encoding != "raw":
                from .nrrd import _dtype, _resolution

                sizes = tuple(int(s) for s in fields["sizes"])
                return GridVolume(data=_Described(sizes, _dtype(fields, path)),
                                  resolution=_resolution(fields, sizes, path),
                                  kind=kind_from_name(path.name),
                                  metadata={"format": "nrrd", **file_metadata(path)},
                                  source=str(path))
        elif getattr(header, "encoding", "raw") != "raw":
            from .nrrd import preflight

            preflight(path, header)  # everything but the decoding: fail now, not later
            return GridVolume(data=_Described(header.sizes, header.dtype),
                              resolution=header.resolution(path),
                              kind=kind_from_name(path.name),
                                  metadata={"format": "nrrd", **file_metadata(path)},
                              source=str(path))
    vols = read_volumes(path)
    return vols[0] if len(vols) == 1 else None
