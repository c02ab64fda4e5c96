"""Grid files served by the local server: real bytes where the package has them, synthetic
(deterministic, flagged) elsewhere, cached in memory so repeated requests are byte-identical and
cheap.

Arrays are ``[AP, DV, ML]``; µm everywhere; ``.raw``/NRRD payloads are x (AP) fastest.
"""

from __future__ import annotations

import gzip
import io
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import formats, synthetic
from ._memo import memoized
from .catalog import (
    CONNECTIVITY_IMAGES,
    CONNECTIVITY_REAL_ID,
    NRP1_ID,
    PRODUCTS,
    Catalog,
    data_path,
)

ISH_SHAPE = (67, 41, 58)
ISH_RESOLUTION = 200
ISH_VOLUMES = ("energy", "density", "intensity")
#: grid_data/download include names of connectivity sets -> download_file image names.
#: ``injection`` = injection_fraction: an inference (docs/allen-api-notes.md, "What the grid
#: zip's injection.raw holds", §14), shared with the client's GRID_ZIP_MEMBERS.
CONNECTIVITY_ZIP_VOLUMES = {"density": "projection_density", "injection": "injection_fraction",
                            "energy": "projection_energy", "intensity": "projection_intensity"}
CONNECTIVITY_RESOLUTIONS = (50, 100)
CCF_SHAPES = {25: (528, 320, 456), 50: (264, 160, 228), 100: (132, 80, 114)}
FIBER_TRACTS = 1009
VENTRICLES = 73
MAJOR_DIVISIONS = (315, 698, 1089, 703, 477, 803, 549, 1097, 313, 771, 354, 512)


class NotServed(LookupError):
    """The server has no such file (unknown id, volume or resolution); message says why."""


@dataclass(frozen=True)
class Payload:
    """Bytes to serve plus whether they are synthetic (or derived from real data)."""

    body: bytes
    synthetic: bool
    content_type: str
    filename: str


def _sizeof(value: Any) -> int:
    if isinstance(value, Payload):
        return len(value.body)
    arrays, _names = value
    return sum(a.nbytes for a in arrays.values())


class ByteLRU:
    """A thread-safe LRU (payloads or ``(arrays, synthetic names)``) bounded by total bytes."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._building: dict[Any, threading.Lock] = {}

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            lock = self._building.setdefault(key, threading.Lock())
        with lock:  # one builder per key; concurrent requests wait for it
            with self._lock:
                if key in self._items:
                    return self._items[key]
            payload = build()
            with self._lock:
                self._items[key] = payload
                self._size += _sizeof(payload)
                while self._size > self.max_bytes and len(self._items) > 1:
                    _, old = self._items.popitem(last=False)
                    self._size -= _sizeof(old)
                self._building.pop(key, None)
            return payload


def _read_nrrd_array(path_bytes: bytes) -> np.ndarray:
    """Decode one of the bundled gzip NRRDs to ``[AP, DV, ML]`` (the product's NRRD parser)."""
    from napari_allen.io.elements import array_from_bytes
    from napari_allen.io.nrrd import MAX_HEADER_BYTES, parse_nrrd_header

    header = parse_nrrd_header(path_bytes[:MAX_HEADER_BYTES + 1], "bundled NRRD")
    raw = gzip.decompress(path_bytes[header.data_offset:])
    return array_from_bytes(raw, header.dtype, header.sizes)


class GridStore:
    """Builds and caches every grid payload; shared by all servers of a process."""

    def __init__(self, catalog: Catalog, cache_bytes: int = 256 * 2**20) -> None:
        self.catalog = catalog
        self.cache = ByteLRU(cache_bytes)
        self._arrays = ByteLRU(128 * 2**20)  # small LRU of decoded arrays (unionize, search)
        self._lock = threading.RLock()

    # ------------------------------------------------------------- annotation volumes
    @memoized
    def grid_annotation_zip(self) -> bytes:
        return data_path("annotation", "P56_Mouse_gridAnnotation.zip").read_bytes()

    @memoized
    def grid_annotation(self) -> np.ndarray:
        """gridAnnotation ``[AP, DV, ML]`` uint32 (67x41x58, 200 µm)."""
        with zipfile.ZipFile(data_path("annotation", "P56_Mouse_gridAnnotation.zip")) as zf:
            raw = zf.read("gridAnnotation.raw")
        return np.frombuffer(raw, dtype="<u4").reshape(ISH_SHAPE, order="F")

    @memoized
    def annotation_25_bytes(self) -> bytes:
        return data_path("annotation", "annotation_25.nrrd").read_bytes()

    def _annotation_25_planes(self):
        """The real 25 µm annotation's ML planes as ``(DV, AP)`` uint32 arrays, decompressed one
        at a time (never holding the 308 MB volume)."""
        data = self.annotation_25_bytes
        start = data.index(b"\n\n") + 2
        nx, ny, nz = CCF_SHAPES[25]
        plane_bytes = nx * ny * 4
        decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = memoryview(data)[start:]
        for z in range(nz):
            # max_length bounds the output to one plane (the file inflates ~75x).
            plane = decomp.decompress(pending, plane_bytes)
            pending = decomp.unconsumed_tail
            while len(plane) < plane_bytes:
                more = decomp.decompress(pending, plane_bytes - len(plane))
                pending = decomp.unconsumed_tail
                if not more:
                    raise ValueError(f"annotation_25.nrrd ends at ML plane {z} of {nz}")
                plane += more
            yield np.frombuffer(plane, "<u4").reshape(ny, nx)

    @memoized
    def _ccf_subsampled(self) -> dict[int, np.ndarray]:
        """The 50 and 100 µm annotation, subsampled from the real 25 µm file plane by plane:
        50 µm voxel i = 25 µm voxel 2i."""
        with self._lock:
            planes50 = [grid[::2, ::2].T.copy()  # (x, y)
                        for z, grid in enumerate(self._annotation_25_planes()) if z % 2 == 0]
            ann50 = np.stack(planes50, axis=2)
            return {50: ann50, 100: np.ascontiguousarray(ann50[::2, ::2, ::2])}

    @memoized
    def fiber_annotation_zip(self) -> Payload:
        """``annotationFiber.mhd/.raw`` in a zip (well-known file 197646984 of Allen's lines
        demo): the 25 µm annotation with every voxel outside the fibre tracts (structure 1009
        and descendants) set to 0, uint32, x fastest; streamed plane by plane from the real
        file (the raw volume is 308 MB, the zip about a megabyte)."""
        tracts = np.sort(np.fromiter(self.catalog.descendants(FIBER_TRACTS), dtype=np.uint32))
        last = len(tracts) - 1
        buf = io.BytesIO()
        with self._lock, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr("annotationFiber.mhd", formats.mhd_header(
                "annotationFiber", CCF_SHAPES[25], 25, np.dtype("<u4")))
            with zf.open("annotationFiber.raw", "w", force_zip64=True) as out:
                for plane in self._annotation_25_planes():  # (DV, AP): AP fastest, as .raw
                    nearest = tracts[np.minimum(np.searchsorted(tracts, plane), last)]
                    out.write(np.where(nearest == plane, plane, 0).astype("<u4").tobytes())
        return Payload(buf.getvalue(), False, "application/zip", "annotationFiber.zip")

    def ccf_annotation(self, resolution: int) -> np.ndarray:
        """CCF 2017 annotation ``[AP, DV, ML]`` uint32 at 50 or 100 µm."""
        return self._ccf_subsampled[resolution]

    def annotation_nrrd(self, resolution: int) -> Payload:
        """``annotation_<res>.nrrd``: the real 25 µm file, 50/100 µm subsampled from it."""
        if resolution == 25:
            return Payload(self.annotation_25_bytes, False, "application/octet-stream",
                           "annotation_25.nrrd")
        if resolution not in (50, 100):
            raise NotServed(f"annotation_{resolution}.nrrd is not served by the local server: "
                            "it serves 25 µm (the real file) and 50/100 µm (subsampled from it);"
                            " 10 µm would be 4.8 GB in memory")
        return self.cache.get(("annotation", resolution), lambda: Payload(
            formats.nrrd_bytes(self.ccf_annotation(resolution), resolution), True,
            "application/octet-stream", f"annotation_{resolution}.nrrd"))

    # ------------------------------------------------------------- structure helpers
    def structure_mesh_obj(self, structure_id: int) -> Payload:
        """``structure_meshes/<id>.obj``: a surface of the structure and its descendants in
        Allen's ``.obj`` layout (``v``/``vn``/``f a//a``; CCF µm, x y z = AP DV ML), made here
        by marching cubes of the real annotation at 50 µm — Allen's own files come from finer
        data, so these are marked synthetic."""
        if structure_id not in self.catalog.structure_by_id:
            raise NotServed(f"no Structure with id {structure_id}")

        def build() -> Payload:
            from napari_allen.atlas.meshes import mesh_from_mask
            from napari_allen.io.obj_mesh import format_obj

            mask = self.structure_mask(structure_id, 50)
            found = np.argwhere(mask)
            if len(found) == 0:
                raise NotServed(f"structure {structure_id} has no voxels in the annotation")
            lo, hi = found.min(axis=0), found.max(axis=0) + 1
            crop = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            mesh = mesh_from_mask(crop, 50, tuple(int(v) for v in lo), sigma=1.0)
            body = format_obj(mesh, comment=f"structure {structure_id}: napari-allen local "
                                            "server, marching cubes of the 50 µm annotation")
            return Payload(body, True, "text/plain", f"{structure_id}.obj")

        return self.cache.get(("structure_mesh", structure_id), build)

    def label_index(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted unique labels, inverse index ``[AP, DV, ML]``) of the 200 µm gridAnnotation
        or the 100 µm CCF annotation, for fast per-label sums."""
        with self._lock:
            cache = self.__dict__.setdefault("_label_cache", {})
            if resolution not in cache:
                ann = self.grid_annotation if resolution == 200 else self.ccf_annotation(100)
                labels, inverse = np.unique(ann.ravel(order="F"), return_inverse=True)
                cache[resolution] = (labels, inverse.reshape(ann.shape, order="F"))
            return cache[resolution]

    def structure_mask(self, structure_id: int, resolution: int) -> np.ndarray:
        """Boolean mask ``[AP, DV, ML]`` of a structure and its descendants (cached as flat
        indices, which are small)."""
        ann = self.grid_annotation if resolution == 200 else self.ccf_annotation(resolution)
        cache = self.__dict__.setdefault("_mask_cache", {})
        key = (structure_id, resolution)
        if key not in cache:
            ids = np.fromiter(self.catalog.descendants(structure_id), dtype=np.uint32)
            cache[key] = np.flatnonzero(np.isin(ann, ids))
        mask = np.zeros(ann.shape, dtype=bool)
        mask.ravel()[cache[key]] = True
        return mask

    @memoized
    def ish_candidates(self) -> list[int]:
        """Structures (depth 4-7, 15-900 voxels at 200 µm, not fibre tracts or ventricles) that
        synthetic ISH sets express in."""
        counts = self.rolled_counts(200)
        excluded = self.catalog.descendants(FIBER_TRACTS) | self.catalog.descendants(VENTRICLES)
        return sorted(sid for sid, n in counts.items()
                      if 15 <= n <= 900 and sid not in excluded
                      and 4 <= self.catalog.structure_by_id[sid]["depth"] <= 7)

    def rolled_counts(self, resolution: int) -> dict[int, int]:
        """Voxel count of every structure including its descendants."""
        labels, inverse = self.label_index(resolution)
        direct = dict(zip(labels.tolist(), np.bincount(inverse.ravel()).tolist(), strict=True))
        return self.rollup(direct)

    def rollup(self, direct: dict[int, float]) -> dict[int, float]:
        """Sum per-label values up the hierarchy (labels missing from the ontology go to root)."""
        out: dict[int, float] = {}
        known = self.catalog.structure_by_id
        for label, value in direct.items():
            if label == 0:
                continue
            chain = self.catalog.ancestors(label) if label in known else [997]
            for sid in chain:
                out[sid] = out.get(sid, 0) + value
        return out

    @memoized
    def target_centroids(self) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
        """Connectivity target candidates at 100 µm: id -> (left centroid µm, right centroid µm,
        major division id). Depth 6-7 structures with >= 20 voxels per side."""
        ann = self.ccf_annotation(100)
        labels, inverse = self.label_index(100)
        coords = np.indices(ann.shape).astype(np.float64) * 100.0
        right = coords[2] >= synthetic.MIDLINE_UM
        flat_inv = inverse.ravel()
        sums = {}
        for side, sel in (("L", ~right.ravel()), ("R", right.ravel())):
            n = np.bincount(flat_inv[sel], minlength=len(labels))
            s = [np.bincount(flat_inv[sel], weights=coords[a].ravel()[sel], minlength=len(labels))
                 for a in range(3)]
            sums[side] = (n, s)
        excluded = self.catalog.descendants(FIBER_TRACTS) | self.catalog.descendants(VENTRICLES)
        out: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        direct = {side: {int(lab): (sums[side][0][i], [sums[side][1][a][i] for a in range(3)])
                         for i, lab in enumerate(labels.tolist())} for side in sums}
        rolled: dict[str, dict[int, tuple[float, np.ndarray]]] = {"L": {}, "R": {}}
        for side in ("L", "R"):
            for label, (n, s) in direct[side].items():
                if label == 0 or label not in self.catalog.structure_by_id:
                    continue
                for sid in self.catalog.ancestors(label):
                    cn, cs = rolled[side].get(sid, (0.0, np.zeros(3)))
                    rolled[side][sid] = (cn + n, cs + np.asarray(s))
        for sid, rec in self.catalog.structure_by_id.items():
            if not 6 <= rec["depth"] <= 7 or sid in excluded:
                continue
            nl, sl = rolled["L"].get(sid, (0.0, np.zeros(3)))
            nr, sr = rolled["R"].get(sid, (0.0, np.zeros(3)))
            if nl < 20 or nr < 20:
                continue
            major = next((a for a in self.catalog.ancestors(sid) if a in MAJOR_DIVISIONS), 0)
            out[sid] = (sl / nl, sr / nr, major)
        return out

    # ------------------------------------------------------------- ISH grids
    def _real_nrp1_energy(self) -> np.ndarray:
        with zipfile.ZipFile(data_path("ish", "Nrp1_P56_coronal_74272479_200um.zip")) as zf:
            raw = zf.read("energy.raw")
        return np.frombuffer(raw, dtype="<f4").reshape(ISH_SHAPE, order="F")

    def ish_arrays(self, experiment_id: int) -> tuple[dict[str, np.ndarray], set[str]]:
        """energy/density/intensity ``[AP, DV, ML]`` and the names that are synthetic."""
        return self._arrays.get(("ish-arrays", experiment_id),
                                lambda: self._build_ish_arrays(experiment_id))

    def _build_ish_arrays(self, experiment_id: int) -> tuple[dict[str, np.ndarray], set[str]]:
        if experiment_id == NRP1_ID:
            energy = self._real_nrp1_energy()
            arrays = {"energy": energy,
                      **synthetic.ish_companions_from_energy(experiment_id, energy)}
            synthetic_names = {"density", "intensity"}
        else:
            arrays = synthetic.ish_volumes(
                experiment_id, self.catalog.plane_of(experiment_id), self.grid_annotation,
                self.ish_candidates, lambda sid: self.structure_mask(sid, 200))
            synthetic_names = set(ISH_VOLUMES)
        return arrays, synthetic_names

    def data_set_xml(self, experiment_id: int, synthetic_flag: bool) -> bytes:
        """data_set.xml as in the real zips (no genes, empty ``<plane_of_section/>``)."""
        rec = self.catalog.section_data_set_by_id[experiment_id]
        body = {k: v for k, v in rec.items() if not k.startswith("_")}
        body.pop("plane_of_section_id", None)
        body["products"] = [PRODUCTS[rec["_product"]]]
        body["specimen"] = {"id": rec["specimen_id"], "name": rec["_specimen_name"],
                            "sex": rec["_sex"], "donor": {"strain": "C57BL/6J"}}
        body["plane_of_section"] = None
        body["age"] = "P56"
        if synthetic_flag:
            body["synthetic"] = True
        text = formats.xml_record("section-data-set", body, declaration=True)
        # The real file writes the plane as an empty, underscored element.
        text = text.replace('<plane-of-section nil="true"/>', "<plane_of_section/>")
        return (text + "\n").encode()

    def grid_download(self, experiment_id: int, include: list[str] | None) -> Payload:
        """``/grid_data/download/<id>[?include=...]`` zip."""
        rec = self.catalog.section_data_set_by_id.get(experiment_id)
        if rec is None:
            raise NotServed(f"no SectionDataSet with id {experiment_id}")
        if experiment_id in self.catalog.connectivity_by_id:
            return self._connectivity_zip(experiment_id, include)
        if not self.catalog.is_ish(experiment_id):
            raise NotServed(f"SectionDataSet {experiment_id} has no 3-D grid (not an ISH or "
                            "connectivity experiment)")
        names = list(include) if include else ["energy"]
        bad = [n for n in names if n not in ISH_VOLUMES]
        if bad:
            raise NotServed(f"unknown volume {bad[0]!r} for ISH SectionDataSet {experiment_id};"
                            f" choose from {', '.join(ISH_VOLUMES)}")
        key = ("zip", experiment_id, tuple(names), include is None)
        return self.cache.get(key, lambda: self._ish_zip(experiment_id, names, include is None))

    def _ish_zip(self, experiment_id: int, names: list[str], with_xml: bool) -> Payload:
        if experiment_id == NRP1_ID and with_xml:
            body = data_path("ish", "Nrp1_P56_coronal_74272479_200um.zip").read_bytes()
            return Payload(body, False, "application/zip", f"{experiment_id}.zip")
        arrays, synthetic_names = self.ish_arrays(experiment_id)
        is_synth = any(n in synthetic_names for n in names)
        members: list[tuple[str, bytes, tuple[int, ...]]] = []
        if with_xml:
            members.append(("data_set.xml", self.data_set_xml(experiment_id, is_synth),
                            formats.XML_DATE))
        for name in names:
            members.append((f"{name}.raw", formats.raw_bytes(arrays[name]), formats.VOLUME_DATE))
            members.append((f"{name}.mhd", formats.mhd_header(name, ISH_SHAPE, ISH_RESOLUTION,
                                                              np.dtype("<f4"),
                                                              name in synthetic_names),
                            formats.VOLUME_DATE))
        return Payload(formats.zip_bytes(members, is_synth), is_synth, "application/zip",
                       f"{experiment_id}.zip")

    # ------------------------------------------------------------- connectivity grids
    def blobs(self, experiment_id: int) -> list[synthetic.Blob]:
        """The synthetic blob model of a connectivity experiment (cached per id)."""
        return self._blobs(experiment_id)

    @memoized
    def _blob_cache(self) -> dict[int, list[synthetic.Blob]]:
        return {}

    def _blobs(self, experiment_id: int) -> list[synthetic.Blob]:
        cache = self._blob_cache
        if experiment_id in cache:
            return cache[experiment_id]
        exp = self.catalog.connectivity_by_id[experiment_id]
        point = self.catalog.injection_point(exp)
        right = point[2] >= synthetic.MIDLINE_UM
        major = next((a for a in self.catalog.ancestors(int(exp["structure_id"]))
                      if a in MAJOR_DIVISIONS), 0) if int(exp["structure_id"]) in \
            self.catalog.structure_by_id else 0
        own = set(self.catalog.injection_structure_ids(exp)) | {int(exp["structure_id"])}
        same, other = [], []
        for sid, (left_c, right_c, div) in sorted(self.target_centroids.items()):
            if sid in own:
                continue
            center = right_c if right else left_c
            (same if div == major and major else other).append(center)
        blobs = synthetic.connectivity_blobs(experiment_id, point,
                                             float(exp.get("injection_volume") or 0.01),
                                             same, other)
        cache[experiment_id] = blobs
        return blobs

    def _real_connectivity(self, image: str) -> bytes | None:
        if image not in ("projection_density", "injection_density", "injection_fraction",
                         "data_mask"):
            return None
        path = data_path("connectivity", str(CONNECTIVITY_REAL_ID), f"{image}_100.nrrd")
        return path.read_bytes()

    def connectivity_arrays(self, experiment_id: int, resolution: int = 100
                            ) -> tuple[dict[str, np.ndarray], set[str]]:
        """The six images ``[AP, DV, ML]`` float32 and which of them are synthetic."""
        return self._arrays.get(("conn-arrays", experiment_id, resolution),
                                lambda: self._build_conn_arrays(experiment_id, resolution))

    def _build_conn_arrays(self, experiment_id: int, resolution: int
                           ) -> tuple[dict[str, np.ndarray], set[str]]:
        if experiment_id not in self.catalog.connectivity_by_id:
            raise NotServed(f"no connectivity experiment with id {experiment_id}")
        if experiment_id == CONNECTIVITY_REAL_ID:
            real = {img: _read_nrrd_array(b) for img in CONNECTIVITY_IMAGES
                    if (b := self._real_connectivity(img)) is not None}
            arrays = dict(real)
            arrays["projection_energy"] = (real["projection_density"] * 400.0).astype("<f4")
            arrays["injection_energy"] = (real["injection_density"] * 400.0).astype("<f4")
            synthetic_names = {"projection_energy", "injection_energy"}
            if resolution != 100:  # nearest-neighbour upsampling of the real 100 µm grids
                factor = 100 // resolution
                arrays = {k: np.repeat(np.repeat(np.repeat(v, factor, 0), factor, 1), factor, 2)
                          for k, v in arrays.items()}
                synthetic_names = set(arrays)
        else:
            brain = self.ccf_annotation(resolution) > 0
            arrays = synthetic.connectivity_volumes(experiment_id, self.blobs(experiment_id),
                                                    brain, resolution)
            synthetic_names = set(arrays)
        return arrays, synthetic_names

    def grid_download_file(self, experiment_id: int, image: str, resolution: int) -> Payload:
        """``/grid_data/download_file/<id>?image=&resolution=`` gzip NRRD."""
        if experiment_id not in self.catalog.connectivity_by_id:
            raise NotServed(f"no connectivity experiment with id {experiment_id}")
        if image not in CONNECTIVITY_IMAGES:
            raise NotServed(f"unknown image {image!r}; choose one of "
                            + ", ".join(CONNECTIVITY_IMAGES))
        if resolution not in CONNECTIVITY_RESOLUTIONS:
            raise NotServed(f"resolution {resolution} µm is not served by the local server "
                            "(50 and 100 µm only; 10/25 µm grids would need 300 MB-5 GB each)")
        key = ("nrrd", experiment_id, image, resolution)

        def build() -> Payload:
            name = f"{image}_{resolution}.nrrd"
            if experiment_id == CONNECTIVITY_REAL_ID and resolution == 100:
                real = self._real_connectivity(image)
                if real is not None:
                    return Payload(real, False, "application/octet-stream", name)
            arrays, synth = self.connectivity_arrays(experiment_id, resolution)
            return Payload(formats.nrrd_bytes(arrays[image], resolution, image in synth),
                           image in synth, "application/octet-stream", name)
        return self.cache.get(key, build)

    def _connectivity_zip(self, experiment_id: int, include: list[str] | None) -> Payload:
        names = list(include) if include else ["density"]
        bad = [n for n in names if n not in CONNECTIVITY_ZIP_VOLUMES]
        if bad:
            raise NotServed(f"unknown volume {bad[0]!r} for connectivity SectionDataSet "
                            f"{experiment_id}; choose from "
                            + ", ".join(CONNECTIVITY_ZIP_VOLUMES))

        def build() -> Payload:
            arrays, synth = self.connectivity_arrays(experiment_id, 100)
            members = []
            is_synth = False
            if include is None:
                members.append(("data_set.xml", self.data_set_xml(experiment_id, True),
                                formats.XML_DATE))
            for name in names:
                image = CONNECTIVITY_ZIP_VOLUMES[name]
                if image == "projection_intensity":
                    dens = arrays["projection_density"]
                    data = np.where(dens > 0, arrays["projection_energy"] /
                                    np.where(dens > 0, dens, 1), 0).astype("<f4")
                    made_up = True
                else:
                    data = arrays[image]
                    made_up = image in synth
                is_synth |= made_up
                members.append((f"{name}.raw", formats.raw_bytes(data), formats.VOLUME_DATE))
                members.append((f"{name}.mhd", formats.mhd_header(name, data.shape, 100,
                                                                  np.dtype("<f4"), made_up),
                                formats.VOLUME_DATE))
            return Payload(formats.zip_bytes(members, is_synth), is_synth, "application/zip",
                           f"{experiment_id}.zip")
        return self.cache.get(("conn-zip", experiment_id, tuple(names), include is None), build)


_STORE: GridStore | None = None
_STORE_LOCK = threading.Lock()


def grid_store(catalog: Catalog) -> GridStore:
    """The process-wide grid store."""
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            _STORE = GridStore(catalog)
        return _STORE

