"""Structure surfaces computed from an annotation volume (marching cubes), cached on disk.

A structure's mesh covers its own voxels plus all its descendants' (as Allen's structure
meshes do). Steps: the structure's mask inside its bounding box (from a per-annotation index,
so no full-volume scan per structure), optional block-averaging for large structures, Gaussian
smoothing, :func:`skimage.measure.marching_cubes` at 0.5, quadric decimation
(``fast_simplification``), vertex normals. Vertices are CCF µm ``[AP, DV, ML]`` with voxel
``i`` centred at ``i*resolution`` (the space of every layer in this package).

Cache: ``<cache>/meshes/<annotation key>/`` with the annotation index (compact uint16 labels,
structure ids, bounding boxes) and one ``.npz`` per (structure, parameters). The key is a hash
of the annotation file's bytes, so a changed annotation never reuses old meshes.

Bundled meshes: the package ships the brain outline built in advance from its own 25 µm
annotation (``data/meshes/<same folder>/<same file>``, by ``tools/build_bundled_meshes.py``),
a read-only layer under the cache: the CCF reference then opens without decoding the
annotation (~1 s) or marching cubes (~3 s) on a first run. Each bundled file is used only
when its SHA-256 matches ``data/meshes/SHA256SUMS``; a damaged one is ignored (logged) and the
mesh is built as usual.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config
from ..io.atomic import atomic_open, file_lock, remove_partial_files
from ..io.obj_mesh import Mesh
from ..io.volume import GridVolume
from ..progress import CancelToken, Progress, ProgressCallback, check, report
from .ontology import ROOT_ID, Ontology

#: Mesh format version in the cache file names: bump when the algorithm changes.
_VERSION = 1
#: Structures whose bounding box exceeds this many voxels are meshed at twice the spacing.
_COARSEN_VOXELS = 6_000_000
_LOCK = threading.Lock()
_INDEXES: dict[Path, AnnotationIndex] = {}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshParams:
    """How a mesh is built. ``step``: block size (voxels) averaged before meshing (None: 1 for
    small structures, 2 for large ones); ``sigma``: Gaussian smoothing in (blocked) voxels;
    ``max_faces``: decimation target."""

    step: int | None = None
    sigma: float = 1.0
    max_faces: int = 20_000

    def tag(self, step: int) -> str:
        return f"v{_VERSION}_s{step}_g{self.sigma:g}_f{self.max_faces}"


OUTLINE_PARAMS = MeshParams(step=2, sigma=1.2, max_faces=40_000)


@dataclass
class AnnotationIndex:
    """Compact labels of one annotation: ``labels`` uint16 ``[AP, DV, ML]`` (0 outside,
    ``k+1`` = ``ids[k]``), ``bboxes[k]`` = ``[[start AP, DV, ML], [stop ...]]`` voxels."""

    key: str
    resolution: float
    ids: np.ndarray
    labels: np.ndarray
    bboxes: np.ndarray
    folder: Path

    def bbox_of(self, structure_ids) -> tuple[slice, slice, slice] | None:
        """Bounding box (slices) of the union of ``structure_ids`` present, or None."""
        pos = np.searchsorted(self.ids, structure_ids)
        pos = pos[(pos < len(self.ids))]
        pos = pos[np.isin(self.ids[pos], structure_ids)]
        if len(pos) == 0:
            return None
        lo = self.bboxes[pos, 0].min(axis=0)
        hi = self.bboxes[pos, 1].max(axis=0)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def annotation_key(vol: GridVolume) -> str:
    """A content hash of the annotation: of its source file when there is one (a few ms for
    the bundled 4 MB NRRD; remembered per file size and mtime), else of its voxels."""
    source = Path(str(vol.source)) if vol.source else None
    if source is not None and source.is_file():
        stat = source.stat()
        return _file_key(str(source), stat.st_size, stat.st_mtime_ns, float(vol.resolution),
                         tuple(vol.shape))
    digest = hashlib.sha1(f"{vol.resolution}:{tuple(vol.shape)}".encode())
    digest.update(np.ascontiguousarray(np.asarray(vol.data)).tobytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=16)
def _file_key(path: str, size: int, mtime_ns: int, resolution: float, shape: tuple) -> str:
    digest = hashlib.sha1(f"{resolution}:{shape}".encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _cache_folder(key: str, resolution: float, cache_dir=None) -> Path:
    return config.cache_dir(cache_dir) / "meshes" / f"annotation_{resolution:g}um_{key}"


_INDEX_FILES = ("index_ids.npy", "index_bboxes.npy", "index_labels.npy")


def annotation_index(vol: GridVolume, *, cache_dir=None,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None) -> AnnotationIndex:
    """The compact-label index of ``vol`` (built once, ~8 s at 25 µm; then memory-mapped),
    under ``cache_dir`` (default ``NAPARI_ALLEN_CACHE``)."""
    key = annotation_key(vol)
    folder = _cache_folder(key, vol.resolution, cache_dir)
    with _LOCK:  # per cache folder: tests (and users) may switch NAPARI_ALLEN_CACHE
        index = _stored_index(folder, key, vol.resolution)
        if index is not None:
            return index
        # Mesh children of two docks (or two napari windows) may ask at once: one builds,
        # the other waits for the lock (a sibling of the folder) and then reads what the
        # first wrote.
        folder.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(_index_lock(folder)):
            index = _stored_index(folder, key, vol.resolution)
            if index is None:
                _build_index(vol, folder, progress, cancel)
                index = _stored_index(folder, key, vol.resolution)
                assert index is not None  # just written
        return index


def _index_lock(folder: Path) -> Path:
    return folder.with_name(folder.name + ".index.lock")


def _stored_index(folder: Path, key: str, resolution: float) -> AnnotationIndex | None:
    """The index in ``folder`` (remembered per process; labels memory-mapped), or None when
    it has not been built. Reads only the small id and bounding-box arrays."""
    if folder in _INDEXES:
        return _INDEXES[folder]
    files = [folder / n for n in _INDEX_FILES]
    if not all(p.is_file() for p in files):
        return None
    ids, bboxes = np.load(files[0]), np.load(files[1])
    labels = np.load(files[2], mmap_mode="r")
    index = AnnotationIndex(key, float(resolution), ids, labels, bboxes, folder)
    _INDEXES[folder] = index
    return index


def _bundled_folder(cache_dir=None) -> tuple[GridVolume, str, Path]:
    """The bundled 25 µm annotation's header (nothing decoded), key and cache folder."""
    from .annotation import ccf_annotation_25_header

    vol = ccf_annotation_25_header()
    key = annotation_key(vol)
    return vol, key, _cache_folder(key, vol.resolution, cache_dir)


def bundled_annotation_index(*, cache_dir=None, progress: ProgressCallback | None = None,
                             cancel: CancelToken | None = None,
                             process: bool = True) -> AnnotationIndex:
    """The index of the bundled 25 µm annotation (:func:`annotation_index`). When it is not
    on disk yet it is built in a child process (``process``; :mod:`napari_allen.child_process`:
    decoding and indexing never hold this interpreter's GIL), else in this thread; this
    process then only memory-maps it."""
    vol, key, folder = _bundled_folder(cache_dir)
    with _LOCK:
        index = _stored_index(folder, key, vol.resolution)
    if index is not None:
        return index
    if process:
        from ..child_process import ChildUnavailable

        try:
            for _ in _in_child("build_bundled_index",
                               {"cache_dir": str(config.cache_dir(cache_dir))}, folder,
                               what="indexing the 25 µm annotation", progress=progress,
                               cancel=cancel):
                pass
        except ChildUnavailable as exc:
            log.warning("cannot start a child process (%s); indexing the 25 µm annotation in "
                        "a thread of this process instead", exc)
        else:
            with _LOCK:
                index = _stored_index(folder, key, vol.resolution)
            if index is None:
                raise RuntimeError(f"{folder}: the child process reported the annotation "
                                   "index built but it is not there")
            return index
    from .annotation import ccf_annotation_25

    return annotation_index(ccf_annotation_25(), cache_dir=cache_dir, progress=progress,
                            cancel=cancel)


def build_bundled_index(cache_dir: str, *, progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> None:
    """Build the bundled annotation's index under ``cache_dir`` (what a child process runs
    for :func:`bundled_annotation_index`)."""
    from .annotation import ccf_annotation_25

    annotation_index(ccf_annotation_25(), cache_dir=cache_dir, progress=progress,
                     cancel=cancel)


def _in_child(name: str, kwargs: dict, folder: Path, *, what: str, progress, cancel):
    """Iterate this module's function ``name`` run in a child process (values it emits);
    a child that ends without a result leaves no temporary file in ``folder``."""
    from ..child_process import iter_child

    pids: list[int] = []
    try:
        return (yield from iter_child(f"{__name__}:{name}", kwargs, what=what,
                                      progress=progress, cancel=cancel,
                                      on_started=pids.append))
    except BaseException:
        for pid in pids:  # killed mid-write (a terminated child removes its own)
            remove_partial_files(folder, pid)
        raise


def _build_index(vol: GridVolume, folder: Path, progress, cancel) -> None:
    from scipy import ndimage

    data = vol.data
    n_ap = data.shape[0]
    slabs = range(0, n_ap, 32)  # 32 coronal planes at a time: bounded memory, progress
    import pandas as pd

    ids: set[int] = set()
    for n, start in enumerate(slabs):
        check(cancel)
        # pandas' hash-table unique: ~5x faster than np.unique's sort (~0.05 s per slab),
        # so the worker competes less with napari's main thread for 2 cores
        ids.update(pd.unique(np.asarray(data[start:start + 32]).ravel()).tolist())
        report(progress, done=n, total=2 * len(slabs), message="indexing annotation")
    ids.discard(0)
    id_arr = np.array(sorted(ids), dtype=np.int64)
    if len(id_arr) >= 2 ** 16 - 1:
        raise ValueError(f"{vol.source}: {len(id_arr)} distinct labels do not fit uint16")
    labels = np.zeros(data.shape, dtype=np.uint16)
    lo = np.full((len(id_arr), 3), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.zeros((len(id_arr), 3), dtype=np.int64)
    for n, start in enumerate(slabs):
        check(cancel)
        block = np.asarray(data[start:start + 32]).astype(np.int64)
        pos = np.searchsorted(id_arr, block) + 1
        pos[block == 0] = 0
        labels[start:start + 32] = pos
        # Bounding boxes slab by slab: find_objects holds the GIL throughout (~0.2-0.4 s over
        # the whole 25 µm volume, a freeze of napari's event loop), ~10 ms per slab.
        for k, sl in enumerate(ndimage.find_objects(labels[start:start + 32],
                                                    max_label=len(id_arr))):
            if sl is not None:
                first = (sl[0].start + start, sl[1].start, sl[2].start)
                last = (sl[0].stop + start, sl[1].stop, sl[2].stop)
                lo[k] = np.minimum(lo[k], first)
                hi[k] = np.maximum(hi[k], last)
        report(progress, done=len(slabs) + n, total=2 * len(slabs), message="indexing annotation")
    bboxes = np.zeros((len(id_arr), 2, 3), dtype=np.int64)
    present = hi.any(axis=1)
    bboxes[present, 0] = lo[present]
    bboxes[present, 1] = hi[present]
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (("index_ids.npy", id_arr), ("index_bboxes.npy", bboxes),
                      ("index_labels.npy", labels)):
        with atomic_open(folder / name, "wb") as fh:
            np.save(fh, arr)


def _block_mean(mask: np.ndarray, step: int) -> np.ndarray:
    """Average ``step``^3 blocks (pads with zeros to a multiple of ``step``)."""
    if step == 1:
        return mask.astype(np.float32)
    pad = [(0, (-s) % step) for s in mask.shape]
    m = np.pad(mask, pad).astype(np.float32)
    a, b, c = (s // step for s in m.shape)
    return m.reshape(a, step, b, step, c, step).mean(axis=(1, 3, 5))


def mesh_from_mask(mask: np.ndarray, resolution: float, origin_voxel=(0, 0, 0), *,
                   step: int = 1, sigma: float = 1.0, max_faces: int = 40_000) -> Mesh:
    """A smooth, decimated surface around ``mask`` (bool ``[AP, DV, ML]``, voxel spacing
    ``resolution`` µm, first voxel at index ``origin_voxel`` of the full grid)."""
    from scipy import ndimage
    from skimage.measure import marching_cubes

    field_ = _block_mean(np.asarray(mask, dtype=bool), step)
    pad = 2 + int(np.ceil(2 * sigma))  # room for the smoothed edge: the surface closes
    field_ = np.pad(field_, pad)
    if sigma > 0:
        field_ = ndimage.gaussian_filter(field_, sigma)
    if field_.max() <= 0.5:
        # Too small to survive smoothing: mesh the unsmoothed mask instead.
        field_ = np.pad(_block_mean(np.asarray(mask, dtype=bool), step), pad)
        if field_.max() < 0.5:
            raise ValueError("the mask is empty: nothing to mesh")
    spacing = float(resolution) * step
    verts, faces, _normals, _ = marching_cubes(field_, 0.5, spacing=(spacing,) * 3,
                                               allow_degenerate=False)
    # Block b's centre lies at voxel (b*step + (step-1)/2); padding shifts by `pad` blocks.
    shift = np.asarray(origin_voxel, float) * resolution + (step - 1) / 2 * resolution
    verts = verts - pad * spacing + shift
    if len(faces) > max_faces:
        import fast_simplification

        verts, faces = fast_simplification.simplify(
            verts.astype(np.float32), faces.astype(np.int32),
            target_reduction=1.0 - max_faces / len(faces))
    return Mesh(verts, faces)


def structure_mask(index: AnnotationIndex, structure_id: int, ontology: Ontology
                   ) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """(bool mask inside the bounding box, its first voxel) of a structure and all its
    descendants, or None when none of them is in the annotation."""
    members = np.asarray(ontology.descendants(int(structure_id)), dtype=np.int64)
    box = index.bbox_of(members)
    if box is None:
        return None
    lut = np.zeros(len(index.ids) + 1, dtype=bool)
    pos = np.searchsorted(index.ids, members)
    ok = pos < len(index.ids)
    pos = pos[ok][index.ids[pos[ok]] == members[ok]]
    lut[pos + 1] = True
    return lut[np.asarray(index.labels[box])], tuple(s.start for s in box)


def structure_mesh(structure_id: int, *, annotation: GridVolume | None = None,
                   ontology: Ontology | None = None, params: MeshParams | None = None,
                   cache_dir=None, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None, process: bool = False) -> Mesh:
    """The mesh of ``structure_id`` (with descendants) from ``annotation`` (default: the
    bundled 25 µm CCFv3 annotation), from the disk cache when built before.

    ``process``: build the bundled annotation's meshes (and its index) in a child process
    (:func:`iter_structure_meshes`; a given ``annotation`` is always meshed in this thread).
    ``metadata``: ``structure_id``, ``source`` (how it was made), ``build_seconds`` or
    ``cached: True``. Raises KeyError for ids outside the ontology, ValueError when the
    structure has no voxels in the annotation.
    """
    import time

    from .annotation import ccf_annotation_25, ccf_annotation_25_header

    onto = ontology or Ontology.default()
    sid = onto.id_of(structure_id)
    if process and annotation is None:
        ((_, mesh),) = iter_structure_meshes([sid], ontology=onto, params=params,
                                             cache_dir=cache_dir, progress=progress,
                                             cancel=cancel)
        return mesh
    # The bundled annotation's header finds the caches; its voxels are decoded only to build.
    vol = annotation if annotation is not None else ccf_annotation_25_header()
    if sid == ROOT_ID:
        # The outline needs no index: every labelled voxel is brain.
        index, box = None, tuple(slice(0, n) for n in vol.shape)
        folder = _cache_folder(annotation_key(vol), vol.resolution, cache_dir)
    else:
        if annotation is None:
            vol = ccf_annotation_25()
        index = annotation_index(vol, cache_dir=cache_dir, progress=progress, cancel=cancel)
        box = _structure_box(index, sid, onto, vol.resolution)
        folder = index.folder
    cached, step, meta = _mesh_file(sid, onto, vol, box, params, folder)
    found = _stored_mesh(cached, meta)
    if found is not None:
        return found
    check(cancel)
    t0 = time.perf_counter()
    if annotation is None:
        vol = ccf_annotation_25()
    if index is None:
        mask, origin = np.asarray(vol.data) != 0, (0, 0, 0)
    else:
        masked = structure_mask(index, sid, onto)
        assert masked is not None  # bbox_of found members above
        mask, origin = masked
    report(progress, done=0, total=1, message=f"meshing {onto.acronym(sid)}")
    params = params or (OUTLINE_PARAMS if sid == ROOT_ID else MeshParams())
    mesh = mesh_from_mask(mask, vol.resolution, origin, step=step, sigma=params.sigma,
                          max_faces=params.max_faces)
    check(cancel)  # a cancelled build writes nothing

    with atomic_open(cached, "wb") as fh:
        np.savez(fh, vertices=mesh.vertices, faces=mesh.faces, normals=mesh.normals)
    mesh.metadata.update(meta, cached=False, cache_file=str(cached),
                         build_seconds=round(time.perf_counter() - t0, 3))
    report(progress, done=1, total=1, message=f"meshed {onto.acronym(sid)}")
    return mesh


def _structure_box(index: AnnotationIndex, sid: int, onto: Ontology, resolution: float
                   ) -> tuple[slice, slice, slice]:
    box = index.bbox_of(np.asarray(onto.descendants(sid), dtype=np.int64))
    if box is None:
        raise ValueError(f"structure {onto.acronym(sid)} ({sid}) has no voxels in the "
                         f"{resolution:g} µm annotation")
    return box


def _mesh_file(sid: int, onto: Ontology, vol: GridVolume, box, params: MeshParams | None,
               folder: Path) -> tuple[Path, int, dict]:
    """(cache file, block step, metadata) of a structure's mesh with ``params``."""
    params = params or (OUTLINE_PARAMS if sid == ROOT_ID else MeshParams())
    n_box = int(np.prod([s.stop - s.start for s in box]))
    step = params.step or (2 if n_box > _COARSEN_VOXELS else 1)
    cached = folder / f"structure_{sid}_{params.tag(step)}.npz"
    source = (f"marching cubes of the {vol.resolution:g} µm annotation ({vol.source}), "
              f"{params.tag(step)}")
    meta = {"structure_id": sid, "acronym": onto.acronym(sid), "source": source,
            "resolution_um": float(vol.resolution)}
    return cached, step, meta


def _stored_mesh(cached: Path, meta: dict) -> Mesh | None:
    """The mesh from the cache, else from the meshes shipped with the package, else None."""
    if cached.is_file():
        return _load_mesh(cached, {**meta, "cached": True, "cache_file": str(cached)})
    bundled = _bundled_mesh(cached.parent.name, cached.name)
    if bundled is not None:
        return _load_mesh(bundled, {**meta, "cached": True, "bundled": True,
                                    "cache_file": str(bundled)})
    return None


def cached_structure_mesh(structure_id: int, *, ontology: Ontology | None = None,
                          params: MeshParams | None = None, cache_dir=None) -> Mesh | None:
    """A structure's mesh of the bundled 25 µm annotation when it is on disk (the cache or
    the meshes shipped with the package), else None: decodes, indexes and meshes nothing
    (a few ms). None too while the annotation's index is not built."""
    onto = ontology or Ontology.default()
    sid = onto.id_of(structure_id)
    vol, key, folder = _bundled_folder(cache_dir)
    if sid == ROOT_ID:
        box = tuple(slice(0, n) for n in vol.shape)
    else:
        with _LOCK:
            index = _stored_index(folder, key, vol.resolution)
        if index is None:
            return None
        box = _structure_box(index, sid, onto, vol.resolution)
    cached, _step, meta = _mesh_file(sid, onto, vol, box, params, folder)
    return _stored_mesh(cached, meta)


def iter_structure_meshes(structure_ids, *, ontology: Ontology | None = None,
                          params: MeshParams | None = None, cache_dir=None,
                          progress: ProgressCallback | None = None,
                          cancel: CancelToken | None = None, process: bool = True
                          ) -> Iterator[tuple[int, Mesh]]:
    """``(structure id, mesh)`` of each of ``structure_ids`` (ids or acronyms), in order, each
    as soon as it is ready, from the bundled 25 µm annotation (:func:`structure_mesh`).

    Meshes already on disk load here. The others (and the annotation index, the first time)
    are built by one child process (``process``; :mod:`napari_allen.child_process`: the
    numpy/scipy/scikit-image steps never hold this interpreter's GIL, which napari's event
    loop needs), which writes them into the mesh cache while this side loads each finished
    file; with a custom ontology, or when no process can be started (logged), they are built
    in this thread. ``progress`` counts structures (``done``/``total``); the message says
    which one and its own step. Errors as :func:`structure_mesh` (KeyError, ValueError,
    :class:`~napari_allen.progress.Cancelled`, ...)."""
    onto = ontology or Ontology.default()
    sids = [onto.id_of(s) for s in structure_ids]
    n = len(sids)
    first = 0
    for sid in sids:  # ready ones at once, until the first that must be built
        report(progress, done=first, total=n, message=f"{onto.acronym(sid)}: meshing")
        mesh = cached_structure_mesh(sid, ontology=onto, params=params, cache_dir=cache_dir)
        if mesh is None:
            break
        yield sid, mesh
        first += 1
    rest = sids[first:]
    if not rest:
        return
    if process and onto is Ontology.default():
        from ..child_process import ChildUnavailable

        _, _, folder = _bundled_folder(cache_dir)
        kwargs = {"structure_ids": rest, "first": first, "total": n,
                  "params": None if params is None else dataclasses.asdict(params),
                  "cache_dir": str(config.cache_dir(cache_dir))}
        names = ", ".join(onto.acronym(s) for s in rest)
        try:
            for built in _in_child("build_structure_meshes", kwargs, folder,
                                   what=f"meshing {names} from the 25 µm annotation",
                                   progress=progress, cancel=cancel):
                yield int(built["structure_id"]), _load_mesh(Path(built["cache_file"]),
                                                             built["metadata"])
            return
        except ChildUnavailable as exc:  # raised before anything was emitted
            log.warning("cannot start a child process (%s); meshing %s in a thread of this "
                        "process instead", exc, names)
    for sid, mesh in zip(rest, _meshes_in_order(rest, onto, params, cache_dir, first, n,
                                                progress, cancel), strict=True):
        yield sid, mesh


def build_structure_meshes(structure_ids: list[int], first: int, total: int,
                           params: dict | None, cache_dir: str, *,
                           progress: ProgressCallback | None = None,
                           cancel: CancelToken | None = None, emit=None) -> int:
    """Mesh ``structure_ids`` into the mesh cache under ``cache_dir``, emitting each one's
    ``{"structure_id", "cache_file", "metadata"}`` once its file is complete (what a child
    process runs for :func:`iter_structure_meshes`; ``first``/``total`` place these
    structures in the caller's count). Returns how many."""
    onto = Ontology.default()
    mesh_params = None if params is None else MeshParams(**params)
    meshes = _meshes_in_order(structure_ids, onto, mesh_params, cache_dir, first, total,
                              progress, cancel)
    for sid, mesh in zip(structure_ids, meshes, strict=True):
        if emit is not None:
            emit({"structure_id": int(sid), "cache_file": mesh.metadata["cache_file"],
                  "metadata": mesh.metadata})
    return len(structure_ids)


def _meshes_in_order(sids, onto: Ontology, params, cache_dir, first: int, total: int,
                     progress, cancel) -> Iterator[Mesh]:
    """:func:`structure_mesh` of each, in this thread; progress counts structures."""
    for k, sid in enumerate(sids, start=first):
        yield structure_mesh(sid, ontology=onto, params=params, cache_dir=cache_dir,
                             progress=_counting(progress, k, total, onto.acronym(sid)),
                             cancel=cancel)


def _counting(progress: ProgressCallback | None, k: int, n: int, acronym: str
              ) -> ProgressCallback | None:
    """The progress callback for structure ``k`` of ``n``: ``done``/``total`` count
    structures; the structure's own steps (the first time: indexing the annotation) show in
    the message."""
    if progress is None:
        return None

    def within(snap: Progress) -> None:
        detail = f" {snap.done}/{snap.total}" if snap.total else ""
        progress(Progress(done=k, total=n, message=f"{acronym}: {snap.message}{detail}"))

    return within


def _load_mesh(path: Path, metadata: dict) -> Mesh:
    with np.load(path) as npz:
        return Mesh(npz["vertices"], npz["faces"], npz["normals"], metadata)


def bundled_meshes_dir() -> Path:
    """Meshes shipped with the package: ``<annotation cache folder name>/<mesh file>``."""
    from importlib import resources

    return Path(str(resources.files("napari_allen").joinpath("data", "meshes")))


def _bundled_mesh(folder: str, name: str) -> Path | None:
    """The bundled copy of cache file ``folder/name``, if there is one whose SHA-256 matches
    ``SHA256SUMS`` (a damaged copy is logged and ignored: the mesh is then built)."""
    root = bundled_meshes_dir()
    path = root / folder / name
    if not path.is_file():
        return None
    from ..io.manifest import sha256_file

    expected = _bundled_sums(root).get(f"{folder}/{name}")
    actual = sha256_file(path)
    if expected != actual:
        log.warning("%s: SHA-256 %s does not match %s in %s; ignoring it (the mesh is built "
                    "instead)", path, actual, expected, root / "SHA256SUMS")
        return None
    return path


def _bundled_sums(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``root/SHA256SUMS`` (``sha256sum`` format)."""
    try:
        text = (root / "SHA256SUMS").read_text(encoding="utf-8")
    except OSError:
        return {}
    sums = {}
    for line in text.splitlines():
        digest, _, rel = line.strip().partition("  ")
        if digest and rel:
            sums[rel.strip()] = digest.lower()
    return sums


def brain_outline(**kwargs) -> Mesh:
    """The whole-brain surface (root, id 997): smooth, decimated, µm (see
    :func:`structure_mesh`)."""
    return structure_mesh(ROOT_ID, **kwargs)
