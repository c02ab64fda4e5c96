"""Build napari layer objects from LayerDataTuples away from the main thread.

Constructing some layers is expensive: a Shapes layer triangulates every path (~0.5 ms per
path, 1.1 s for 2,000 spatial-search lines), a Vectors layer with tens of thousands of segments
builds its mesh, a Labels layer converts a 1,300-entry colour dict. None of that needs Qt or
the viewer, so a worker thread can build the layer and the main thread only inserts the
finished object (``viewer.add_layer``), which costs no more than napari's own scene-graph work.

The layers are not attached to any viewer until added; build each one in a single thread and
hand it over (the task runner's ``emit``/result does that). The CPU time each build took is
kept (:func:`build_cpu_seconds`): it tells a dock what napari would spend doing the same
again on the main thread (a Shapes layer's data setter triangulates every path anew).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari.layers import Layer

LayerDataTuple = tuple

#: CPU seconds each layer built here took (weak keys: forgotten with the layer).
_build_cpu_s: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_build_cpu_lock = threading.Lock()


def build_layer(layer_tuple: LayerDataTuple) -> Layer:
    """A napari layer from ``(data, kwargs, layer_type)`` (kwargs and type optional)."""
    from napari.layers import Layer

    data, kwargs, layer_type = (tuple(layer_tuple) + ({}, "image"))[:3]
    # This thread's CPU time, not the wall clock: a build slowed down by other threads
    # holding the GIL (the main thread, a pool of queries) did not cost more work.
    start = time.thread_time()
    layer = Layer.create(data, dict(kwargs or {}), layer_type)
    with _build_cpu_lock:
        _build_cpu_s[layer] = time.thread_time() - start
    return layer


def build_cpu_seconds(layer: Any) -> float | None:
    """The CPU seconds :func:`build_layer` took to construct ``layer`` (napari's work:
    triangulating a Shapes layer's paths, a Vectors mesh, colour tables), or None for a
    layer not built there."""
    with _build_cpu_lock:
        return _build_cpu_s.get(layer)


def build_layers(layer_tuples: Iterable[LayerDataTuple]) -> list[Layer]:
    """:func:`build_layer` for each tuple, in order."""
    return [build_layer(t) for t in layer_tuples]


def layer_type_name(layer: Any) -> str:
    """``"image"``, ``"labels"``, ``"shapes"``... for a napari layer (public API only: the
    class name, as napari's own ``layer_type`` strings are the lower-cased class names).

    ``__class__``, not ``type()``: a plugin dock's viewer hands out its layers wrapped in
    napari's ``PublicOnlyProxy``, whose ``type()`` is the proxy (a same-named layer would then
    never match and each update would add a duplicate ``name [1]``)."""
    return layer.__class__.__name__.lower()
