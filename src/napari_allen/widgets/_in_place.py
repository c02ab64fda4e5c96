"""A new layer's content shown by the same-named layer already in the viewer, in place.

Replacing a layer costs napari a removal, which it ends with a full ``gc.collect()``
(140-250 ms with napari's heap on the benchmark machine), and an insert (the layer's
controls and vispy node). Setting the new data and settings on the layer already shown
costs a re-slice and a redraw of that layer, and keeps its place, selection and identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: In a layer's napari state but not set here: ``name`` is the same by definition;
#: ``properties`` is Labels' older spelling of ``features``.
_NOT_SET = frozenset({"name", "properties"})
#: Not in napari's state but part of what a new layer shows (the limits slider's extent).
_EXTRA = ("contrast_limits_range",)
#: Set after the rest, in this order, even if equal before: setting the data (or the
#: colormap) may reset them.
_LAST = ("contrast_limits_range", "contrast_limits")


def update_in_place(existing: Any, new: Any) -> bool:
    """Give ``existing`` (a napari layer in a viewer) the data and every setting napari records
    for ``new`` (``as_layer_data_tuple``: transforms, units, axis labels, colours, contrast
    limits, features, metadata, visibility...). False, with ``existing`` untouched, when that
    cannot be done in place: another layer type or number of dims, or a setting fixed at
    construction (``multiscale``, ``rgb``) that differs."""
    # __class__, not type(): a dock's viewer hands out layers in napari's PublicOnlyProxy.
    cls = existing.__class__
    if cls is not new.__class__ or existing.ndim != new.ndim:
        return False
    data, state, _ = new.as_layer_data_tuple()
    current = existing.as_layer_data_tuple()[1]
    for key in _EXTRA:
        if hasattr(new, key):
            state[key], current[key] = getattr(new, key), getattr(existing, key)
    changed = []
    for key, value in state.items():
        if key in _NOT_SET or (key not in _LAST and _equal(value, current.get(key))):
            continue
        if not _settable(cls, key):
            return False
        changed.append(key)
    existing.data = data
    for key in sorted(changed, key=lambda k: _LAST.index(k) + 1 if k in _LAST else 0):
        setattr(existing, key, state[key])
    return True


def _settable(cls: type, key: str) -> bool:
    attr = getattr(cls, key, None)
    return isinstance(attr, property) and attr.fset is not None


def _equal(a: Any, b: Any) -> bool:
    """Whether two napari state values are the same (arrays, tables and evented models
    included); anything that cannot be compared counts as different."""
    if a is b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):  # e.g. a text or colour encoding
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and type(a) is type(b):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        try:
            return bool(np.array_equal(a, b, equal_nan=True))  # grids mark "no data" NaN
        except TypeError:  # not a numeric array
            return bool(np.array_equal(a, b))
    if hasattr(a, "equals") and type(a) is type(b):  # pandas tables
        try:
            return bool(a.equals(b))
        except Exception:  # noqa: BLE001 - not comparable: treated as changed
            return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - ambiguous or not comparable: treated as changed
        return False
