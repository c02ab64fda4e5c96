"""LayerDataTuples for Allen grids: expression/connectivity images and annotation labels.

- :func:`image_layer`: ``-1`` (no data) becomes NaN, contrast limits come from the valid voxels,
  magma (ISH) / inferno (connectivity) colormap, additive blending, MIP in 3-D.
- :func:`labels_layer`: structure ids coloured by the ontology (a napari ``DirectLabelColormap``
  with its lookup tables built once per ontology, :mod:`.atlas_colormap`)
  with ``features`` (``index, structure_id, acronym, name``) so hovering shows the structure;
  values are compacted to uint16 (see :func:`labels_layer`).
- :func:`volume_layer`: picks one from the volume kind.

All layers live in CCF µm: ``scale`` = spacing, ``units`` µm, ``axis_labels`` AP/DV/ML
(:func:`napari_allen.space.layer_space_kwargs`). Lazy data (memmap, dask, > 10^7 voxels)
stay lazy: the layer gets a dask array whose chunks read, per slice napari asks for, only the
needed ML planes (:mod:`napari_allen.io.planes`) and convert just that slice (-1 -> NaN, or
structure id -> compact label); contrast limits are estimated from 8 ML planes (contiguous in
Fortran-ordered files) rather than from the whole grid.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io.planes import plane_reader_for
from ..io.volume import GridVolume
from ..space import ISH_VOLUMES, layer_space_kwargs

if TYPE_CHECKING:
    import pandas as pd

    from ..atlas.ontology import Ontology

# pandas and the ontology (which needs pandas) are imported where labels are built: an image
# never needs them, and importing pandas costs ~0.7 s on napari's main thread (napari itself
# imports it only for its first Labels layer), paid by the first sample or file opened.

LayerDataTuple = tuple[Any, dict, str]
log = logging.getLogger(__name__)

#: Arrays with more voxels than this are handled lazily (10^7 voxels = 40 MB of float32).
#: Smaller memory-mapped grids (100 and 50 µm) are read whole where the layer is built (a
#: worker): a plain array costs napari nothing per slice, and it keeps dask out of layers that
#: napari slices on the main thread while our workers build others - napari's one global dask
#: cache is not thread-safe (its ``_finish`` clears the start times of a concurrent compute,
#: which then fails with a ``KeyError`` naming a chunk).
LAZY_VOXELS = 10_000_000
NO_DATA = -1

_MASK_KINDS = {"data_mask"}
_METADATA_KEYS = ("experiment_id", "gene", "plane", "resolution", "kind", "source", "synthetic")


def _is_lazy(data) -> bool:
    return not isinstance(data, np.ndarray) or data.size > LAZY_VOXELS


def _contrast_sample(data) -> np.ndarray:
    """All voxels of small grids; for large ones up to 8 evenly spaced ML planes (each plane
    ``[:, :, k]`` is one contiguous run in a Fortran-ordered file, so this reads little)."""
    if not _is_lazy(data):
        return np.asarray(data)
    n_ml = data.shape[2]
    picks = np.unique(np.linspace(0, n_ml - 1, num=min(8, n_ml)).round().astype(int))
    source = plane_reader_for(data) or data
    return np.stack([np.asarray(source[:, :, int(k)]) for k in picks], axis=-1)


def valid_contrast_limits(data) -> tuple[float, float]:
    """``(min, 99.9th percentile)`` of the voxels holding data (not -1, finite; the max if the
    percentile equals the min); ``(0, 1)`` if there are none."""
    sample = _contrast_sample(data)
    if sample.dtype.kind == "f":
        valid = sample[np.isfinite(sample) & (sample != NO_DATA)]
    elif sample.dtype.kind == "i":
        valid = sample[sample != NO_DATA]
    else:
        valid = sample.ravel()
    if valid.size == 0:
        return 0.0, 1.0
    lo = float(valid.min())
    # The 99.9th percentile, not the max: a few saturated voxels (projection density reaches
    # 1.0 while 99.9 % of voxels are below 0.25) would otherwise leave the volume dark.
    hi = high_percentile(valid, 99.9)
    if hi <= lo:
        hi = float(valid.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def high_percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of an array without NaNs, for
    ``q`` near 100, without partitioning the whole array: the two order statistics needed
    lie above a threshold read from a strided subsample, so only the few values above it
    are partitioned (~2 ms instead of ~20 ms for a 100 µm grid; opening a file runs on
    napari's main thread). The threshold is checked to leave enough values above it (else
    ``np.percentile`` itself runs), so the result never depends on the sample."""
    values = np.asarray(values).ravel()
    n = values.size
    pos = (n - 1) * (q / 100.0)  # numpy's virtual index for 'linear'
    below = int(np.floor(pos))
    above = min(below + 1, n - 1)
    if n >= 65_536 and 90.0 <= q < 100.0:
        sample = values[::max(1, n // 16_384)]
        # Well under the sample's q-th percentile (5x the tail, minus 1 %): enough values
        # reach it unless the sample is very unrepresentative (then the check below fails).
        k = int((q - 5.0 * (100.0 - q) - 1.0) / 100.0 * (sample.size - 1))
        threshold = np.partition(sample, k)[k]
        top = values[values >= threshold]
        offset = n - top.size  # how many values lie below the threshold
        if offset <= below:
            top = np.partition(top, (below - offset, above - offset))
            a, b = top[below - offset], top[above - offset]  # numpy scalars: numpy's dtype
            t = pos - below
            # numpy's own interpolation (``_lerp``), in the same dtype: the same bits
            return float(b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t)
    return float(np.percentile(values, q))


def _minus_one_to_nan(block: np.ndarray) -> np.ndarray:
    out = np.asarray(block, dtype=np.float32).copy()
    out[out == NO_DATA] = np.nan
    return out


def no_data_as_nan(data):
    """``-1`` -> NaN as float32 (a lazy dask view for lazy data; unsigned data unchanged)."""
    if data.dtype.kind == "u":
        return data
    if _is_lazy(data):
        return _to_dask(data, _minus_one_to_nan, np.float32)
    return _minus_one_to_nan(data)


class LazyView:
    """A read-only array-like that slices its source first, then applies ``transform`` to the
    (small) result. Given to ``dask.array.from_array``, it lets dask fuse napari's slice into
    the read: only the displayed plane is read and converted. (Elementwise dask ops after
    ``from_array`` would instead convert whole chunks; and ``from_array`` copies plain numpy
    inputs - a 308 MB copy for a 25 µm memmap.) napari also takes it as layer data as it
    is, without dask (``layers/expression.plane_store_layers``): one read per slice."""

    def __init__(self, array, transform, dtype) -> None:
        self._array = array
        self._transform = transform
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        return self._transform(np.asarray(self._array[index]))


def _to_dask(data, transform, dtype):
    """Lazy dask view of ``data`` with ``transform`` applied per slice (see LazyView)."""
    import dask.array as da

    if isinstance(data, da.Array):
        return data.map_blocks(transform, dtype=dtype)
    # Memmapped files are sliced through a PlaneReader, which releases the pages it touched:
    # a coronal slice of a 10 µm grid then never leaves 4.8 GB mapped in the process.
    source = plane_reader_for(data) or data
    # name=False: a random name; tokenizing a memmap would hash (read) all of its bytes.
    return da.from_array(LazyView(source, transform, dtype), chunks=_chunks(data),
                         asarray=True, name=False, meta=np.empty((0, 0, 0), dtype=dtype))


def _chunks(data) -> tuple[int, int, int]:
    """Whole-AP x whole-DV slabs of a few ML planes (<= 64 MB): in Fortran-ordered files each
    slab is one contiguous run, so any slice reads few, sequential runs."""
    n_ap, n_dv, n_ml = data.shape
    plane = n_ap * n_dv * np.dtype(data.dtype).itemsize
    return (n_ap, n_dv, int(max(1, min(n_ml, (64 << 20) // max(plane, 1)))))


def layer_metadata(vol: GridVolume) -> dict:
    """Layer ``metadata``: the documented keys first, then everything else known."""
    meta = {key: vol.metadata[key] for key in _METADATA_KEYS if key in vol.metadata}
    meta.update({k: v for k, v in vol.metadata.items() if k not in meta})
    meta.update(kind=vol.kind, resolution=vol.resolution, source=vol.source,
                shape=vol.shape, axes=("AP", "DV", "ML"), units="um", no_data_value=NO_DATA,
                allen_grid=True)
    return meta


def _colormap(kind: str) -> str:
    if kind in ISH_VOLUMES or kind == "unknown":
        return "magma"
    if kind in _MASK_KINDS:
        return "gray"
    return "inferno"


def image_layer(vol: GridVolume, **overrides) -> LayerDataTuple:
    """An Image LayerDataTuple for an expression/connectivity grid (see module doc)."""
    kwargs: dict = {
        "name": vol.name,
        "colormap": _colormap(vol.kind),
        "blending": "additive",
        "rendering": "mip",
        "contrast_limits": valid_contrast_limits(vol.data),
        "metadata": layer_metadata(vol),
        **layer_space_kwargs(vol.resolution),
    }
    kwargs.update(overrides)
    return no_data_as_nan(vol.data), kwargs, "image"


def compact_dtype(n_ids: int) -> np.dtype:
    """The smallest unsigned dtype holding compact values ``0..n_ids+1`` (exact for any
    count: uint16 up to 65,534 ids, uint32 beyond; never a wrap)."""
    return np.dtype(np.uint16 if n_ids + 1 <= np.iinfo(np.uint16).max else np.uint32)


def compact_labels(data, structure_ids: np.ndarray):
    """Structure ids -> compact label values: 0 stays 0, ``structure_ids[i]`` becomes ``i+1``,
    any other id becomes ``len(structure_ids)+1`` ("unknown"). dtype :func:`compact_dtype`;
    lazy data stay lazy."""
    relabel = compact_relabeller(structure_ids)
    if _is_lazy(data):
        return _to_dask(data, relabel, compact_dtype(len(structure_ids)))
    return relabel(data)


def compact_relabeller(structure_ids: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The function mapping an in-memory block of structure ids to compact values (the rule
    of :func:`compact_labels`), for whole arrays and for each slice napari reads of a lazy
    or multiscale annotation (on napari's main thread: it must be quick)."""
    ids = np.asarray(structure_ids, dtype=np.int64)  # sorted (np.unique)
    unknown = len(ids) + 1
    dtype = compact_dtype(len(ids))
    by_dtype: dict[np.dtype, np.ndarray] = {}

    def relabel(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if len(ids) == 0:
            return np.where(block == 0, 0, unknown).astype(dtype)
        # Search in the block's own dtype when every id fits it (files and pyramid stores
        # keep uint32 ids): no int64 copy of the block, ~3x faster per 25 µm plane.
        table = by_dtype.get(block.dtype)
        if table is None:
            fits = (block.dtype.kind in "ui" and np.iinfo(block.dtype).min <= ids[0]
                    and ids[-1] <= np.iinfo(block.dtype).max)
            table = by_dtype.setdefault(block.dtype, ids.astype(block.dtype) if fits else ids)
        if table.dtype != block.dtype:
            block = block.astype(np.int64)
        pos = np.minimum(np.searchsorted(table, block), len(ids) - 1)
        out = np.where(table[pos] == block, pos + 1, unknown).astype(dtype)
        out[block == 0] = 0
        return out

    return relabel


#: napari colours a direct (dict) label colormap without numba only for values below 2**16.
DIRECT_COLORMAP_MAX = 2**16


def _direct_colormap_ok(n_ids: int) -> bool:
    if n_ids + 1 < DIRECT_COLORMAP_MAX:
        return True
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def _id_labels_layer(vol: GridVolume, onto: Ontology, name: str | None,
                     **overrides) -> LayerDataTuple:
    """Fallback for more distinct ids than napari can colour through a compact direct
    colormap (> 65,534 without numba): the layer holds the exact structure ids (uint32) with
    napari's cyclic colours, and ``features`` (``index`` = structure id) so hovering still
    names each structure."""
    ids = np.unique(np.asarray(vol.data)).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.uint32).max):
        raise ValueError(f"{vol.source or 'annotation'}: structure ids outside 0..2**32-1 "
                         f"({ids.min()}..{ids.max()}) cannot be shown as labels")
    data = np.asarray(vol.data).astype(np.uint32, copy=False)
    known = onto.table.reindex(ids)
    background = ids == 0
    acronyms = np.where(background, "", known["acronym"].fillna("?").astype(str).to_numpy())
    import pandas as pd

    names = np.where(background, "background",
                     known["name"].fillna("structure not in the ontology").astype(str)
                     .to_numpy())
    features = pd.DataFrame({"index": ids, "structure_id": ids,
                             "acronym": acronyms.astype(object), "name": names.astype(object)})
    meta = layer_metadata(vol)
    meta.update(label_values="ids")
    log.warning("%s: %d distinct label values exceed what napari can colour by the atlas "
                "without numba; showing exact ids with cyclic colours (pip install numba "
                "for atlas colours)", vol.source or vol.name, len(ids))
    kwargs: dict = {"name": name or vol.name, "features": features, "opacity": 0.6,
                    "metadata": meta, **layer_space_kwargs(vol.resolution)}
    kwargs.update(overrides)
    return data, kwargs, "labels"


#: Per-ontology label tables (see :func:`label_tables`); weak keys: a dropped ontology goes.
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def label_tables(onto: Ontology, extra_ids: tuple[int, ...] = ()
                 ) -> tuple[np.ndarray, dict, pd.DataFrame]:
    """``(structure_ids, colour dict, features)`` of the compact labelling of ``onto``'s ids
    plus ``extra_ids`` (ids not in the ontology), built once per ontology and id set and
    cached: a 1,327-structure ontology costs ~0.2 s to tabulate, which every annotation layer
    would otherwise pay on the main thread. Treat the returned objects as read-only
    (layers get a copy of the features and their own colormap object,
    :func:`napari_allen.layers.atlas_colormap.atlas_colormap`).

    Compact value ``k`` (1-based) is ``structure_ids[k-1]``; ``len(structure_ids)+1`` is
    "unknown"; ``features`` row ``k`` describes value ``k``."""
    key = extra_ids_key(extra_ids)
    with _TABLES_LOCK:
        per_onto = _TABLES.setdefault(onto, {})
        if key not in per_onto:
            per_onto[key] = _build_label_tables(onto, key)
        return per_onto[key]


def extra_ids_key(extra_ids) -> tuple[int, ...]:
    """The cache key of an extra-id set (sorted, without the background 0): label tables and
    their colormaps (``layers/atlas_colormap``) must agree on it."""
    return tuple(sorted({int(i) for i in extra_ids} - {0}))


def _build_label_tables(onto: Ontology, extra: tuple[int, ...]
                        ) -> tuple[np.ndarray, dict, pd.DataFrame]:
    table = onto.table
    known = table.index.to_numpy(dtype=np.int64)
    structure_ids = np.unique(np.concatenate([known[known != 0],
                                              np.asarray(extra, dtype=np.int64)]))
    structure_ids.setflags(write=False)
    in_onto = np.isin(structure_ids, known)
    rows = table.reindex(structure_ids)
    hexes = rows["color_hex"].fillna("808080").astype(str).str.zfill(6)
    rgb = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in hexes],
                   dtype=float) / 255.0
    unknown_color = (0.5, 0.5, 0.5, 1.0)
    colors: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for value, (ok, (r, g, b)) in enumerate(zip(in_onto, rgb, strict=True), start=1):
        colors[value] = (float(r), float(g), float(b), 1.0) if ok else unknown_color
    colors[len(structure_ids) + 1] = unknown_color
    acronyms = np.where(in_onto, rows["acronym"].astype(object).to_numpy(), "?")
    names = np.where(in_onto, rows["name"].astype(object).to_numpy(),
                     [f"unknown structure {s}" for s in structure_ids])
    import pandas as pd

    n = len(structure_ids)
    features = pd.DataFrame({
        "index": np.arange(n + 2),
        "structure_id": np.concatenate([[0], structure_ids, [-1]]),
        "acronym": np.concatenate([[""], acronyms, ["?"]]).astype(object),
        "name": np.concatenate([["background"], names,
                                ["structure not in the ontology"]]).astype(object),
    })
    return structure_ids, colors, features


def labels_layer(
    vol_or_array: GridVolume | np.ndarray,
    resolution: float | None = None,
    ontology: Ontology | None = None,
    name: str | None = None,
    **overrides,
) -> LayerDataTuple:
    """A Labels LayerDataTuple coloured by the atlas ontology, with hover features.

    ``vol_or_array`` is an annotation GridVolume or an ``[AP, DV, ML]`` id array (then
    ``resolution`` in µm is required).

    Structure ids reach 614,454,xxx, and napari's direct colormap needs numba for label values
    above 2**16; so the layer holds *compact* uint16 values instead (0 = background, ``i+1`` =
    ``metadata['structure_ids'][i]``), with ``features`` ``index, structure_id, acronym, name``
    so hovering shows the real structure. Colours and features cover the whole ontology (plus
    any unknown ids of small arrays), so a lazy 25/10 µm annotation is never scanned; lazy
    data are relabelled chunk by chunk (dask) as napari slices them.

    Exact for any number of ids: beyond 65,534 the compact values are uint32; when napari
    could not colour those (no numba) the layer keeps the exact uint32 ids instead
    (``metadata['label_values'] == 'ids'``, cyclic colours, same hover features).
    """
    if isinstance(vol_or_array, GridVolume):
        vol = vol_or_array
    else:
        if resolution is None:
            raise ValueError("labels_layer needs the resolution (µm) for a bare array")
        vol = GridVolume(data=vol_or_array, resolution=resolution, kind="annotation")
    from ..atlas.ontology import Ontology

    onto = ontology or Ontology.default()
    extra: tuple[int, ...] = ()
    if not _is_lazy(vol.data):
        present = np.unique(np.asarray(vol.data)).astype(np.int64)
        extra = tuple(present[~np.isin(present, onto.table.index.to_numpy())].tolist())
        if not _direct_colormap_ok(len(onto.table) + len(extra)):
            return _id_labels_layer(vol, onto, name, **overrides)
    from .atlas_colormap import atlas_colormap  # imports napari: only when a layer is built

    structure_ids, _, features = label_tables(onto, extra)
    data = compact_labels(vol.data, structure_ids)
    meta = layer_metadata(vol)
    meta.update(structure_ids=structure_ids, label_values="compact")
    kwargs: dict = {
        "name": name or vol.name,
        "colormap": atlas_colormap(onto, extra),  # napari's object, lookup tables ready
        "features": features.copy(),
        "opacity": 0.6,
        "metadata": meta,
        **layer_space_kwargs(vol.resolution),
    }
    kwargs.update(overrides)
    return data, kwargs, "labels"


def structure_ids_of(labels_data, metadata: dict) -> np.ndarray:
    """Inverse of the compact labelling: layer values -> structure ids (unknown -> -1)."""
    values = np.asarray(labels_data).astype(np.int64)
    if metadata.get("label_values") != "compact":
        return values
    lut = np.concatenate([[0], np.asarray(metadata["structure_ids"], dtype=np.int64), [-1]])
    return lut[values]


def volume_layer(vol: GridVolume, **overrides) -> LayerDataTuple:
    """Labels for annotation kinds, Image for everything else."""
    if vol.is_labels:
        return labels_layer(vol, **overrides)
    return image_layer(vol, **overrides)
