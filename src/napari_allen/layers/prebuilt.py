"""Build napari layer objects from LayerDataTuples away from the main thread.

Constructing some layers is expensive: a Shapes layer triangulates every path (~0.5 ms per
path, 1.1 s for 2,000 spatial-search lines), a Vectors layer with tens of thousands of segments
builds its mesh, a Labels layer converts a 1,300-entry colour dict. None of that needs Qt or
the viewer, so a worker thread can build the layer and the main thread only inserts the
finished object (``viewer.add_layer``), which costs no more than napari's own scene-graph work.

The layers are not attached to any viewer until added; build each one in a single thread and
hand it over (the task runner's ``emit``/result does that).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari.layers import Layer

LayerDataTuple = tuple


def build_layer(layer_tuple: LayerDataTuple) -> Layer:
    """A napari layer from ``(data, kwargs, layer_type)`` (kwargs and type optional)."""
    from napari.layers import Layer

    data, kwargs, layer_type = (tuple(layer_tuple) + ({}, "image"))[:3]
    return Layer.create(data, dict(kwargs or {}), layer_type)


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
