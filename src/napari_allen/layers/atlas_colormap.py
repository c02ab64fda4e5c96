"""Atlas colours for Labels layers as napari colormap objects, ready to show.

A Labels layer given a plain ``{value: colour}`` dict makes napari validate the ~1,300
colours and then map all 65,536 uint16 values one by one in Python (its thumbnail and GPU
lookup table), 50-70 ms on the main thread at every annotation layer insert; and napari
formats the ``repr`` of every layer data tuple a reader or sample returns (an error message
built in advance), which for a default ``DirectLabelColormap`` prints 1,300 colour arrays
(~150 ms). So the colormap is built once per ontology and id set as a *template* with napari's
lookup table filled in, and each layer gets its own copy (napari keeps a layer's selected label
on its colormap) sharing that table read-only: inserting the layer then costs what a plain
Labels layer costs. Imports napari (only the reader/layer paths use this module).
"""

from __future__ import annotations

import copy
import weakref

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from ..atlas.ontology import Ontology
from .volumes import _TABLES_LOCK, compact_dtype, extra_ids_key, label_tables


class AtlasLabelColormap(DirectLabelColormap):
    """napari's ``DirectLabelColormap`` with a short ``repr`` (see the module doc)."""

    def __repr__(self) -> str:
        return (f"AtlasLabelColormap({len(self.color_dict)} colours, "
                f"selection={self.selection}, use_selection={self.use_selection})")

    __str__ = __repr__

    def _map_precast(self, values, apply_selection) -> np.ndarray:
        """napari's ``DirectLabelColormap._map_precast`` as one table look-up: napari maps
        each value in a Python loop (~50 ms for the 65,536 entries of its uint16 table, at
        the first atlas Labels layer of a process, on napari's main thread). Same result:
        float32 RGBA per (already cast) texture value."""
        colors = self._values_mapping_to_minimum_values_set(apply_selection)[1]
        table = np.zeros((max(colors) + 1, 4), dtype=np.float32)
        for value, rgba in colors.items():
            table[value] = rgba
        return table[np.asarray(values)]


#: Per-ontology templates, by the sorted extra ids; weak keys: a dropped ontology goes.
_TEMPLATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def atlas_colormap(onto: Ontology, extra_ids: tuple[int, ...] = ()) -> AtlasLabelColormap:
    """The colormap of :func:`~napari_allen.layers.volumes.label_tables`' compact labelling of
    ``onto`` (plus ``extra_ids``): a new object sharing the template's lookup table."""
    key = extra_ids_key(extra_ids)
    with _TABLES_LOCK:
        template = _TEMPLATES.setdefault(onto, {}).get(key)
    if template is None:
        built = _build_template(onto, key)
        with _TABLES_LOCK:
            template = _TEMPLATES[onto].setdefault(key, built)
    return fresh_copy(template)


def fresh_copy(cmap: AtlasLabelColormap) -> AtlasLabelColormap:
    """A new colormap object equal to ``cmap``: its own colour dict, selection, events and
    caches, sharing the colour arrays and napari's lookup tables (both read-only).

    A plain deep copy also copied the ~1,300 colour arrays one by one (~40% of the copy's
    time on napari's main thread at every annotation open); the memo hands ``deepcopy`` a
    new dict over the same arrays instead."""
    memo = {id(cmap.color_dict): dict(cmap.color_dict)}
    out = copy.deepcopy(cmap, memo)  # napari's caches come back empty from a copy
    out._cache_mapping.update(cmap._cache_mapping)
    return out


def template_count() -> int:
    """How many templates exist (all ontologies): tests check that layers reuse them."""
    with _TABLES_LOCK:
        return sum(len(v) for v in _TEMPLATES.values())


def _build_template(onto: Ontology, key: tuple[int, ...]) -> AtlasLabelColormap:
    structure_ids, colors, _ = label_tables(onto, key)
    template = AtlasLabelColormap(color_dict=dict(colors))
    for rgba in template.color_dict.values():  # shared by every copy (fresh_copy)
        rgba.setflags(write=False)
    # napari's value -> RGBA table for the layer's dtype (its thumbnail and GPU texture read
    # it), built once here; None for dtypes above 16 bits (napari maps those per slice).
    mapping = template._get_mapping_from_cache(compact_dtype(len(structure_ids)))
    if mapping is not None:
        mapping.setflags(write=False)
    return template
