"""Multiscale layers of 10/25 µm grids backed by the chunked pyramid cache (io/pyramid.py).

:func:`multiscale_layer_for_file` is what the reader returns for a large grid file:

- pyramid already in the cache: a multiscale Image/Labels over its levels, instantly;
- not yet: the conversion starts in the background (a converter process of its own, so it
  never holds the GUI's interpreter lock) and the same layer is returned at once, its levels
  reading as empty (0) until the pyramid is complete; then the layer is refreshed on
  napari's main thread (when a Qt event loop runs) and shows the data.

Either way napari never scans the volume: contrast limits come from the pyramid's statistics
(or the kind's natural range while converting), label colours and features from the cached
per-ontology tables (:func:`napari_allen.layers.volumes.label_tables`). Levels are read-only
array-likes (``shape``, ``dtype``, ``ndim``, ``__getitem__``) that slice the Zarr level first
and convert only the slice (``-1`` -> NaN; structure id -> compact label), like the lazy
single-scale layers of :mod:`napari_allen.layers.volumes`. Arrays ``[AP, DV, ML]``, µm.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io.pyramid import (
    PyramidJob,
    level_shapes,
    open_pyramid,
    pyramid_path,
    start_pyramid_job,
)
from ..io.volume import LABEL_KINDS, GridVolume
from ..progress import Cancelled, main_thread_caller
from ..space import layer_space_kwargs
from .activity import show_job_progress
from .prebuilt import layer_type_name
from .volumes import (
    _colormap,
    _minus_one_to_nan,
    compact_dtype,
    compact_relabeller,
    label_tables,
    layer_metadata,
)

if TYPE_CHECKING:
    from ..atlas.ontology import Ontology

LayerDataTuple = tuple
log = logging.getLogger(__name__)

#: Grids with at least this many voxels open as multiscale pyramids (the 25 µm grid has 77 M).
MULTISCALE_VOXELS = 50_000_000


#: Slices each level keeps for napari's repeated requests of the same plane.
_RECENT_SLICES = 3
#: Store levels whose recent slices are kept for layers opened later (see _shared_recent).
_SHARED_LEVELS = 12
_SHARED: OrderedDict = OrderedDict()
_RECENT_LOCK = threading.Lock()


def _shared_recent(key: tuple) -> dict:
    """The recent-slices dict of one complete store level shown one way (``key`` = store path,
    level, conversion): a layer opened again (or refreshed when its conversion ends) then
    shows the planes already read without decoding their chunks again (a full-resolution
    25 µm plane crosses 40 chunks, ~50 ms on the main thread). Complete stores never change
    (a changed source file gets another store). The last ``_SHARED_LEVELS`` are kept."""
    with _RECENT_LOCK:
        recent = _SHARED.pop(key, None)
        recent = {} if recent is None else recent
        _SHARED[key] = recent
        while len(_SHARED) > _SHARED_LEVELS:
            _SHARED.popitem(last=False)
        return recent


def _index_key(index) -> tuple | None:
    """A hashable key for basic indices (ints, slices, Ellipsis); None for fancy ones."""
    items = index if isinstance(index, tuple) else (index,)
    key = []
    for item in items:
        if isinstance(item, slice):
            key.append(("s", item.start, item.stop, item.step))
        elif item is Ellipsis:
            key.append(("e",))
        elif isinstance(item, (int, np.integer)):
            key.append(("i", int(item)))
        else:
            return None
    return tuple(key)


class PyramidLevel:
    """One level as a read-only array-like; reads 0 until ``job`` (if any) has finished."""

    def __init__(self, shape, dtype, transform, out_dtype, *, job: PyramidJob | None = None,
                 level: int = 0, array=None, recent: dict | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(out_dtype)
        self.ndim = len(self.shape)
        self._source_dtype = np.dtype(dtype)
        self._transform = transform
        self._job = job
        self._level = level
        self._array = array
        # Recent converted slices: this level's own, or shared by every layer showing the
        # same store level the same way (:func:`_shared_recent`).
        self._recent: dict = {} if recent is None else recent

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def _source(self):
        if self._array is None and self._job is not None and self._job.pyramid is not None:
            self._array = self._job.pyramid.levels[self._level]
        return self._array

    def __getitem__(self, index):
        # Lazy like a dask or zarr-v2 array: napari first cuts the displayed dims of a whole
        # level (data[:, a:b, c:d]) and only then picks the plane; reading at the first step
        # would read the whole level.
        return _LevelView(self, tuple(range(n) for n in self.shape))[index]

    def read(self, index: tuple):
        """Read and convert ``index`` (ints and slices, one per axis) now."""
        source = self._source()
        if source is None:  # still converting: an empty (background) view of the right shape
            shape = np.empty(self.shape, dtype=bool)[index].shape
            return self._transform(np.zeros(shape, dtype=self._source_dtype))
        # napari slices the same plane several times while it adds a layer (refresh, draw,
        # thumbnail): the last few results are kept (read-only) for those repeats.
        key = _index_key(index)
        with _RECENT_LOCK:
            cached = self._recent.get(key) if key is not None else None
        if cached is not None:
            return cached
        out = np.asarray(self._transform(np.asarray(source[index])))
        if key is not None:
            out.setflags(write=False)
            with _RECENT_LOCK:
                self._recent[key] = out
                while len(self._recent) > _RECENT_SLICES:
                    self._recent.pop(next(iter(self._recent)))
        return out

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[...], dtype=dtype)


class _LevelView:
    """A not-yet-read selection of a :class:`PyramidLevel`: one ``range`` (kept axis) or
    ``int`` (dropped axis) per level axis. Basic indexing composes; ``np.asarray`` reads."""

    def __init__(self, level: PyramidLevel, axes: tuple) -> None:
        self._level = level
        self._axes = axes
        self.shape = tuple(len(a) for a in axes if isinstance(a, range))
        self.ndim = len(self.shape)
        self.dtype = level.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, index):
        items = index if isinstance(index, tuple) else (index,)
        if any(item is Ellipsis for item in items):
            at = next(i for i, item in enumerate(items) if item is Ellipsis)
            fill = (slice(None),) * (self.ndim - (len(items) - 1))
            items = items[:at] + fill + items[at + 1:]
        items = items + (slice(None),) * (self.ndim - len(items))
        if len(items) > self.ndim or not all(
                isinstance(i, (slice, int, np.integer)) for i in items):
            return np.asarray(self)[index]  # fancy indexing: read, then index in memory
        it = iter(items)
        axes = tuple(a[next(it)] if isinstance(a, range) else a for a in self._axes)
        view = _LevelView(self._level, axes)
        return view if view.ndim else np.asarray(view)[()]  # a single voxel: its value

    def __array__(self, dtype=None, copy=None):
        index = tuple(slice(a.start, a.stop, a.step) if isinstance(a, range) else int(a)
                      for a in self._axes)
        if any(isinstance(a, range) and (a.step < 0 or len(a) == 0) for a in self._axes):
            full = tuple(slice(None) if isinstance(a, range) else int(a) for a in self._axes)
            out = np.asarray(self._level.read(full))
            out = out[tuple(slice(a.start, a.stop if a.stop >= 0 else None, a.step)
                            for a in self._axes if isinstance(a, range))]
        else:
            out = self._level.read(index)
        return np.asarray(out, dtype=dtype)


def _image_transform(dtype: np.dtype):
    if np.dtype(dtype).kind == "u":
        return lambda block: block, np.dtype(dtype)
    return _minus_one_to_nan, np.dtype(np.float32)


def _default_limits(kind: str, dtype: np.dtype) -> tuple[float, float]:
    """Limits to use while the statistics are unknown (converting)."""
    if "fraction" in kind or "density" in kind or kind == "data_mask":
        return 0.0, 1.0
    if np.dtype(dtype).kind == "u" and np.dtype(dtype).itemsize == 1:
        return 0.0, 255.0
    return 0.0, 1.0


def multiscale_layer(vol: GridVolume, levels: list, *, stats: dict | None = None,
                     ontology: Ontology | None = None, store: str | os.PathLike | None = None,
                     **overrides) -> LayerDataTuple:
    """A multiscale Image or Labels LayerDataTuple over ``levels`` (raw-valued array-likes,
    level 0 = ``vol``'s grid). ``vol`` gives name, kind, resolution and metadata (its data
    are not read). ``store``: the complete pyramid store the levels read (now or once
    converted), so layers of the same store share recently read slices."""
    meta = layer_metadata(vol)
    meta.update(multiscale=True, level_shapes=[tuple(lv.shape) for lv in levels])
    space = layer_space_kwargs(vol.resolution)
    if vol.kind in LABEL_KINDS:
        from ..atlas.ontology import Ontology  # pandas: only for labels
        from .atlas_colormap import atlas_colormap  # imports napari

        onto = ontology or Ontology.default()
        structure_ids, _, features = label_tables(onto)
        relabel = compact_relabeller(structure_ids)
        how = ("labels", hashlib.sha1(structure_ids.tobytes()).hexdigest())
        data = [_wrap(lv, relabel, compact_dtype(len(structure_ids)),
                      _recent_for(store, k, how)) for k, lv in enumerate(levels)]
        meta.update(structure_ids=structure_ids, label_values="compact")
        kwargs = {"name": vol.name, "colormap": atlas_colormap(onto),
                  "features": features.copy(),
                  "opacity": 0.6, "metadata": meta, "multiscale": True, **space}
        kwargs.update(overrides)
        return data, kwargs, "labels"
    transform, out_dtype = _image_transform(vol.dtype)
    how = ("image", out_dtype.str)
    data = [_wrap(lv, transform, out_dtype, _recent_for(store, k, how))
            for k, lv in enumerate(levels)]
    if stats and stats.get("n_valid"):
        lo, hi = float(stats["min"]), float(stats["p999"])
        if hi <= lo:
            hi = float(stats["max"]) if stats["max"] > lo else lo + 1.0
    else:
        lo, hi = _default_limits(vol.kind, vol.dtype)
    kwargs = {"name": vol.name, "colormap": _colormap(vol.kind), "blending": "additive",
              "rendering": "mip", "contrast_limits": (lo, hi), "metadata": meta,
              "multiscale": True, **space}
    kwargs.update(overrides)
    return data, kwargs, "image"


def _recent_for(store, level: int, how: tuple) -> dict | None:
    return None if store is None else _shared_recent((str(store), level, how))


def _wrap(level, transform, out_dtype, recent: dict | None = None) -> PyramidLevel:
    if isinstance(level, PyramidLevel):
        return PyramidLevel(level.shape, level._source_dtype, transform, out_dtype,
                            job=level._job, level=level._level, array=level._array,
                            recent=recent)
    return PyramidLevel(level.shape, level.dtype, transform, out_dtype, array=level,
                        recent=recent)


def pyramid_layer(store: str | os.PathLike, **overrides) -> LayerDataTuple | None:
    """The layer of a complete pyramid store (None if the store is not complete)."""
    pyr = open_pyramid(store)
    if pyr is None:
        return None
    attrs = pyr.attrs
    vol = GridVolume(data=pyr.levels[0], resolution=pyr.resolution, kind=attrs["kind"],
                     metadata=dict(attrs.get("metadata") or {}),
                     source=str((attrs.get("source") or {}).get("path", "")))
    return multiscale_layer(vol, list(pyr.levels), stats=attrs.get("stats"), store=pyr.store,
                            **overrides)


def multiscale_layer_for_file(path: str | os.PathLike, describe) -> LayerDataTuple | None:
    """The reader's multiscale layer for a large grid file, or None for small grids.

    ``describe(path) -> GridVolume`` must be cheap (header only: its ``data`` only needs
    ``shape``/``dtype``). The grid is read and converted in a converter process (the
    package's reader: :func:`napari_allen.io.pyramid.start_pyramid_job`).
    """
    path = Path(path)
    done = pyramid_layer(pyramid_path(path))
    if done is not None:
        return done
    info = describe(path)
    if info is None or int(np.prod(info.shape)) < MULTISCALE_VOXELS:
        return None
    caller = main_thread_caller()
    note = (f"{path.name}: building a multiscale cache in the background (once; progress in "
            "the activity dock); the layer fills in when it is ready")

    def before(job: PyramidJob) -> None:
        # With a GUI, the conversion, its activity-dock bar (cancelable) and the note all
        # start once napari has inserted and drawn the layer: each in a later event-loop
        # turn than the open, none competing with it.
        _gui_turns(caller)
        show_job_progress(job, caller, f"{path.name}: multiscale cache")
        caller(lambda: _notify(note))

    job = start_pyramid_job(path, before=None if caller is None else before)
    levels = [PyramidLevel(shape, info.dtype, lambda b: b, info.dtype, job=job, level=k)
              for k, shape in enumerate(level_shapes(info.shape))]
    layer = multiscale_layer(info, levels, store=job.target)
    layer[1]["metadata"]["pyramid"] = "converting"
    job.add_done_callback(_refresh_layers_when_done)
    if caller is None:
        _notify(note)
    return layer


#: A new conversion starts once the GUI thread answers this many queued calls in a row within
#: ``_GUI_QUIET_S`` each (idle), or after ``_GUI_WAIT_S`` at most.
_GUI_QUIET_PROBES = 3
_GUI_QUIET_S = 0.02
_GUI_WAIT_S = 3.0


def _gui_turns(caller, timeout_s: float = _GUI_WAIT_S) -> None:
    """Block (in the conversion's job thread) until the GUI thread is idle, or ``timeout_s``.

    The reader runs on the GUI thread, and napari inserts and first draws the layer right
    after it returns (~0.3 s); a conversion starting at once competes with that insert for
    the cores (2 here: even a niced converter process starting its interpreter made the
    insert's longest gap longer on a loaded machine; in the thread fallback also for the
    interpreter lock, which doubled the insert). Idle means: ``_GUI_QUIET_PROBES`` calls queued
    one after the other each ran within ``_GUI_QUIET_S`` (napari's activity bar runs nested
    event loops inside the open, so one answered call alone does not mean the insert is
    over)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < _GUI_QUIET_PROBES:
        ran = threading.Event()
        sent = time.monotonic()
        caller(ran.set)
        if not ran.wait(max(0.0, deadline - sent)):
            return
        quiet = quiet + 1 if time.monotonic() - sent <= _GUI_QUIET_S else 0
        time.sleep(0.01)


def _notify(text: str) -> None:
    log.info(text)
    if "napari" in sys.modules:
        try:
            from napari.utils.notifications import show_info

            show_info(text)
        except Exception:  # noqa: BLE001 - a message must never break reading
            pass


def _refresh_layers_when_done(job: PyramidJob) -> None:
    """Refresh the viewer's layers showing ``job``'s levels, on the main thread."""
    if job.error is not None:
        log.warning("multiscale cache of %s failed: %s", job.target, job.error)
    caller = main_thread_caller()  # None headless: the next slice napari asks for shows it
    if caller is None:
        return

    def refresh() -> None:
        import napari

        viewer = napari.current_viewer()
        if viewer is None:
            return
        for layer in list(viewer.layers):
            data = getattr(layer, "data", None)
            levels = list(data) if getattr(layer, "multiscale", False) else []
            if any(isinstance(lv, PyramidLevel) and lv._job is job for lv in levels):
                if job.error is None and job.pyramid is not None:
                    layer.metadata = {**layer.metadata, "pyramid": "ready"}
                    stats = job.pyramid.attrs.get("stats") or {}
                    if layer_type_name(layer) == "image" and stats.get("n_valid"):
                        hi = stats["p999"] if stats["p999"] > stats["min"] else stats["max"]
                        if hi > stats["min"]:
                            layer.contrast_limits = (stats["min"], hi)
                else:  # cancelled from the activity dock, or failed: reopen to retry
                    layer.metadata = {**layer.metadata, "pyramid": "cancelled"
                                      if isinstance(job.error, Cancelled) else "failed"}
                layer.refresh()

    caller(refresh)
