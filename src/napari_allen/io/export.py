"""Exports of Allen grids: CSV (one row per voxel with data), NIfTI (RAS affine), MetaImage.

Every writer goes through a temporary sibling file renamed into place only when complete, so
an error or a cancel never leaves a half-written file behind.

**CSV** (:func:`to_csv`): columns ``AP_um, DV_um, ML_um, value`` (voxel centres in CCF µm,
``i * resolution``), plus ``structure_id, acronym`` when an annotation is given. Rows are the
voxels holding data: float grids skip ``-1``/NaN (zero is a measurement and is kept);
integer (annotation) grids skip 0 (outside the brain). Rows come in ML-slab order (the order of
the x-fastest file, read once, sequentially).

**NIfTI** (:func:`to_nifti`): the array keeps its ``[AP, DV, ML]`` order; the affine maps it
to RAS millimetres. CCFv3 is PIR (+x posterior, +y inferior, +z right), so

- ``space="ccf"``: R = +ML, A = -AP, S = -DV, in mm with the CCF origin (corner voxel 0,0,0):
  ``[[0, 0, r, 0], [-r, 0, 0, 0], [0, -r, 0, 0], [0, 0, 0, 1]]`` with ``r = resolution/1000``;
- ``space="mice"``: the MICe-centred world space of the MINC pipeline
  (docs/allen-api-notes.md §13):
  the same axes, shifted so that CCF (AP, DV, ML) = (5.3, 5.3, 5.7) mm is the origin:
  R = ML - 5.7, A = 5.3 - AP, S = 5.3 - DV (mm).

**MetaImage** (:func:`to_metaimage`): Allen's own ``.mhd`` + ``.raw`` (little-endian, x fastest),
readable back by :func:`napari_allen.io.metaimage.read_metaimage`.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback, check, report
from ..space import sample_at_um
from .atomic import atomic_open, atomic_path, atomic_write_text
from .metaimage import format_header
from .volume import GridVolume

#: MICe world origin in CCF mm (AP, DV, ML), from the MINC conversion notebook
#: (docs/allen-api-notes.md §13).
MICE_ORIGIN_MM: tuple[float, float, float] = (5.3, 5.3, 5.7)
NO_DATA = -1
#: Voxels per CSV block (bounds the memory of formatting rows).
CSV_BLOCK_VOXELS = 500_000
#: Disk space always left free by exports.
DISK_MARGIN = 256 << 20


def ras_affine(resolution_um: float, space: str = "ccf") -> np.ndarray:
    """4x4 affine from ``[AP, DV, ML]`` voxel indices to RAS mm (see module doc)."""
    r = float(resolution_um) / 1000.0
    affine = np.array([
        [0.0, 0.0, r, 0.0],    # R <- +ML
        [-r, 0.0, 0.0, 0.0],   # A <- -AP (PIR: AP grows posteriorly)
        [0.0, -r, 0.0, 0.0],   # S <- -DV (PIR: DV grows inferiorly)
        [0.0, 0.0, 0.0, 1.0],
    ])
    if space == "mice":
        ap0, dv0, ml0 = MICE_ORIGIN_MM
        affine[:3, 3] = (-ml0, ap0, dv0)
    elif space != "ccf":
        raise ValueError(f"unknown NIfTI space {space!r} (use 'ccf' or 'mice')")
    return affine


def _valid_mask(block: np.ndarray) -> np.ndarray:
    if block.dtype.kind == "f":
        return np.isfinite(block) & (block != NO_DATA)
    if block.dtype.kind == "i":
        return (block != NO_DATA) & (block != 0)
    return block != 0


def to_csv(
    vol: GridVolume,
    path: str | os.PathLike,
    *,
    annotation: GridVolume | None = None,
    ontology=None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write one row per voxel with data (``AP_um, DV_um, ML_um, value[, structure_id,
    acronym]``); the annotation may have another resolution (looked up through µm).

    ``ontology`` (an :class:`napari_allen.atlas.ontology.Ontology`: ``id in ontology``,
    ``ontology.acronym(id)``) names the annotation's structures; it is required with it."""
    path = Path(path)
    if annotation is not None and ontology is None:
        raise ValueError("to_csv: an annotation needs the ontology that names its structures")
    data = _slab_source(vol.data)
    n_ml = data.shape[2]
    # ML slabs (contiguous in the x-fastest files, so a memory-mapped grid is read once,
    # sequentially) of ~500 k voxels: the formatted rows of a block are Python strings
    # (~300 B a row), so this keeps memory near 150 MB whatever the grid size.
    step = max(1, CSV_BLOCK_VOXELS // max(1, data.shape[0] * data.shape[1]))
    header = ["AP_um", "DV_um", "ML_um", "value"]
    if annotation is not None:
        header += ["structure_id", "acronym"]
    acronyms: dict[int, str] = {0: ""}
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for start in range(0, n_ml, step):
            check(cancel)
            block = np.asarray(data[:, :, start:start + step])
            ap, dv, ml = np.nonzero(_valid_mask(block))
            values = block[ap, dv, ml]
            ml = ml + start
            um = np.column_stack([ap, dv, ml]).astype(float) * vol.resolution
            cols = [um[:, 0], um[:, 1], um[:, 2], values]
            if annotation is not None:
                sids = (np.atleast_1d(sample_at_um(annotation.data, annotation.resolution, um))
                        if len(um) else np.zeros(0, dtype=np.int64))
                for sid in np.unique(sids):
                    if int(sid) not in acronyms:
                        acronyms[int(sid)] = (ontology.acronym(int(sid)) if int(sid) in ontology
                                              else "?")
                cols += [sids, [acronyms[int(s)] for s in sids]]
            writer.writerows(zip(*[_fmt(c) for c in cols], strict=True))
            if len(values):  # a CSV's size is unknown up front: stop before the disk is full
                fh.flush()
                check_disk(path, len(values) * 64)
            report(progress, done=min(start + step, n_ml), total=n_ml,
                   message=f"writing {path.name}")
    return path


def _fmt(column) -> list:
    """Compact text: integers without '.0', floats with full float32 precision."""
    arr = np.asarray(column)
    if arr.dtype.kind == "f":
        if np.all(np.mod(arr, 1) == 0):
            return [str(int(v)) for v in arr]
        return [f"{v:.9g}" for v in arr]
    return arr.tolist()


def _slab_source(data):
    """What the exporters slice ML slabs from: for a memory-mapped file a PlaneReader, which
    releases the pages of each slab once copied (a plain memory map would keep every page of
    a 4.8 GB grid resident by the end of the export)."""
    from .planes import plane_reader_for

    return plane_reader_for(data) or data


def _ml_step(shape, itemsize: int, budget: int = 16 << 20) -> int:
    """ML planes per slab so a slab stays under ``budget`` bytes (a contiguous run in
    Fortran order, so lazy sources read it sequentially)."""
    return max(1, budget // max(1, shape[0] * shape[1] * itemsize))


def check_disk(path: Path, need: int) -> None:
    """Refuse up front to write ``need`` bytes into ``path``'s folder when they do not fit."""
    folder = path.parent if path.parent.exists() else Path(".")
    free = shutil.disk_usage(folder).free
    if need + DISK_MARGIN > free:
        raise AllenFormatError(path, f"needs {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB "
                                     "are free there; choose another folder")


def to_nifti(
    vol: GridVolume,
    path: str | os.PathLike,
    *,
    space: str = "ccf",
    no_data: str = "keep",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Path:
    """Write ``vol`` as NIfTI-1 (``.nii`` or ``.nii.gz``) with the RAS mm affine of ``space``.

    ``no_data="nan"`` writes ``-1`` as NaN (float grids); ``"keep"`` keeps Allen's -1.
    The data are streamed slab by slab (ML planes, <= 16 MB each), so memory stays flat
    whatever the grid size; an uncompressed output that would not fit the disk is refused
    before anything is written.
    """
    import nibabel as nib

    path = Path(path)
    data = vol.data
    dtype = np.dtype(data.dtype).newbyteorder("<")
    gz = path.name.lower().endswith(".gz")
    n_bytes = int(np.prod(data.shape)) * dtype.itemsize
    if not gz:
        check_disk(path, n_bytes + 352)
    affine = ras_affine(vol.resolution, space)
    header = nib.Nifti1Header(endianness="<")
    header.set_data_shape(tuple(int(s) for s in data.shape))
    header.set_data_dtype(dtype)
    header.set_xyzt_units("mm")
    code = 2  # "aligned anatomy": a registered atlas space, not scanner coordinates
    header.set_sform(affine, code=code)
    header.set_qform(affine, code=code)
    mark = " SYNTHETIC (napari-allen-synthetic)" if vol.metadata.get("synthetic") else ""
    header["descrip"] = f"napari-allen {vol.kind} {space} PIR->RAS{mark}".encode()[:79]
    header["vox_offset"] = 352  # 348-byte header + 4-byte extension flag, then the data
    n_ml = data.shape[2]
    step = _ml_step(data.shape, dtype.itemsize)
    data = _slab_source(data)
    nan_for_no_data = no_data == "nan" and dtype.kind == "f"
    with atomic_open(path, "wb") as raw_fh:
        out = gzip.GzipFile(fileobj=raw_fh, mode="wb", compresslevel=6, mtime=0) if gz \
            else raw_fh
        try:
            out.write(header.binaryblock + b"\0\0\0\0")
            for k in range(0, n_ml, step):
                check(cancel)
                slab = np.asarray(data[:, :, k:k + step])
                if nan_for_no_data:
                    slab = np.where(slab == NO_DATA, np.nan, slab)
                out.write(slab.astype(dtype, copy=False).tobytes(order="F"))
                report(progress, done=min(k + step, n_ml), total=n_ml,
                       message=f"writing {path.name}")
        finally:
            if gz:
                out.close()
    return path


def to_metaimage(
    vol: GridVolume,
    path: str | os.PathLike,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[Path]:
    """Write Allen MetaImage: ``<stem>.mhd`` + ``<stem>.raw`` (little-endian, x fastest).

    The ``.raw`` is completed before the ``.mhd`` appears, so a reader never sees a header
    without its full payload. Returns ``[mhd, raw]``.
    """
    mhd = Path(path)
    if mhd.suffix.lower() != ".mhd":
        mhd = mhd.with_suffix(".mhd")
    raw = mhd.with_suffix(".raw")
    data = vol.data
    dtype = np.dtype(data.dtype)
    if dtype.kind == "f" and dtype.itemsize not in (4, 8):
        dtype = np.dtype("f4")
    out_dtype = dtype.newbyteorder("<")
    n_ml = data.shape[2]
    check_disk(raw, int(np.prod(data.shape)) * out_dtype.itemsize)
    # Slabs of whole ML planes (<= ~16 MB): in Fortran order a slab [:, :, k0:k1] is exactly
    # a contiguous run of the .raw (x, then y, then z), and lazy data compute slab by slab.
    step = _ml_step(data.shape, out_dtype.itemsize)
    data = _slab_source(data)
    with atomic_path(raw) as tmp, open(tmp, "wb") as fh:
        for k in range(0, n_ml, step):
            check(cancel)
            slab = np.asarray(data[:, :, k:k + step]).astype(out_dtype, copy=False)
            fh.write(slab.tobytes(order="F"))
            report(progress, done=min(k + step, n_ml), total=n_ml,
                   message=f"writing {raw.name}")
    atomic_write_text(mhd, format_header(vol.shape, vol.resolution, out_dtype, raw.name,
                                         synthetic=bool(vol.metadata.get("synthetic"))))
    return [mhd, raw]
