"""The whole-plane store: every ISH experiment of a plane in one chunked Zarr array.

Layout of ``<name>.zarr/`` (a Zarr group, format 3):

- array ``energy`` (or ``density``/``intensity``): float32, shape
  ``(n_experiments, AP, DV, ML)`` = ``(n, 67, 41, 58)`` at 200 µm, one chunk per experiment
  (a slider step reads exactly one chunk, ~637 kB raw, less compressed);
- values are Allen's raw values: ``-1`` = no data in that experiment (kept as served);
  ``NaN`` = the experiment is not written yet (the array's fill value);
  :meth:`PlaneStore.to_dask` turns both into NaN for display by default;
- ``experiments.csv``: the experiment/gene table, one row per index of the experiment axis
  (``experiment_id, gene, gene_name, plane, section_thickness, ...``);
- ``completed.txt``: ids of experiments fully written, one per line, appended after each
  chunk is on disk (so an interrupted run resumes where it stopped);
- ``.napari-allen-manifest.jsonl`` (:mod:`napari_allen.io.manifest`): size and SHA-256 of each
  written chunk file; a completed experiment whose chunk was damaged since counts as pending
  again (:meth:`PlaneStore.damaged`), so resuming re-fetches it;
- group attributes (``napari_allen_plane_store``): format version, plane, volume kind,
  resolution (µm), axes ``[experiment, AP, DV, ML]``, units, the experiment ids and genes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_allen.errors import AllenFormatError
from napari_allen.io.atomic import atomic_write_text
from napari_allen.io.manifest import DAMAGED, MISSING, Manifest
from napari_allen.progress import CancelToken, ProgressCallback, check, report
from napari_allen.space import ISH_VOLUMES

STORE_ATTR = "napari_allen_plane_store"
FORMAT_VERSION = 1
TABLE_NAME = "experiments.csv"
COMPLETED_NAME = "completed.txt"
ISH_SHAPE: tuple[int, int, int] = (67, 41, 58)


def looks_like_plane_store(path: str | os.PathLike) -> bool:
    """True for a folder written by :class:`PlaneStore` (cheap: reads two small files)."""
    path = Path(path)
    meta = path / "zarr.json"
    if not (path.is_dir() and meta.is_file() and (path / TABLE_NAME).exists()):
        return False
    try:
        with open(meta, "rb") as fh:
            head = fh.read(1 << 20)
    except OSError:
        return False
    # The attribute name alone decides (no parse): a damaged store is still claimed, so
    # opening it explains what is wrong.
    return STORE_ATTR.encode() in head


class PlaneStore:
    """A whole-plane store on disk (see the module docstring for the layout).

    Create with :meth:`create` (or resume an existing one with the same experiments), open
    with :meth:`open`. Writing is thread-safe for distinct experiments.
    """

    def __init__(self, path: Path, group, table: pd.DataFrame) -> None:
        self.path = Path(path)
        self._group = group
        self.attrs: dict[str, Any] = dict(group.attrs[STORE_ATTR])
        self.volume: str = self.attrs["volume"]
        self.array = group[self.volume]
        self.table = table.reset_index(drop=True)
        ids = self.table["experiment_id"].astype(np.int64).to_numpy()
        self._index = {int(e): i for i, e in enumerate(ids)}
        self._lock = threading.Lock()
        self.manifest = Manifest(self.path)

    # --- construction ---------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        table: pd.DataFrame,
        *,
        volume: str = "energy",
        plane: str | None = None,
        resolution: float = 200.0,
        grid_shape: Sequence[int] = ISH_SHAPE,
        overwrite: bool = False,
    ) -> PlaneStore:
        """Create a store for the experiments in ``table`` (needs ``experiment_id``).

        If ``path`` already holds a store with the same experiment ids and volume, it is opened
        and kept (resume). A different store there is an error unless ``overwrite``.
        """
        import zarr

        path = Path(path)
        if volume not in ISH_VOLUMES:
            raise ValueError(f"volume must be one of {ISH_VOLUMES}, got {volume!r}")
        if "experiment_id" not in table.columns:
            raise ValueError("the experiment table needs an 'experiment_id' column")
        table = table.drop_duplicates("experiment_id").reset_index(drop=True)
        ids = table["experiment_id"].astype(np.int64).tolist()
        if path.exists() and not overwrite:
            if looks_like_plane_store(path):
                store = cls.open(path)
                if store.experiment_ids.tolist() == ids and store.volume == volume:
                    return store
                raise AllenFormatError(
                    path, "holds a plane store with other experiments or another volume; "
                    "choose another folder or pass overwrite=True"
                )
            occupied = not path.is_dir() or any(path.iterdir())
            if occupied:
                raise AllenFormatError(path, "exists and is not a napari-allen plane store")
        shape = (len(ids), *(int(s) for s in grid_shape))
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        group.create_array(
            volume, shape=shape, chunks=(1, *shape[1:]), dtype="float32",
            fill_value=np.nan, dimension_names=["experiment", "AP", "DV", "ML"],
        )
        genes = table["gene"].astype(str).tolist() if "gene" in table.columns else []
        group.attrs[STORE_ATTR] = {
            "format_version": FORMAT_VERSION,
            "volume": volume,
            "plane": plane or _single(table, "plane"),
            "resolution_um": float(resolution),
            "axes": ["experiment", "AP", "DV", "ML"],
            "units": ["", "um", "um", "um"],
            "missing": "-1 = no data in the experiment (as served); NaN = not written yet",
            "table": TABLE_NAME,
            "completed": COMPLETED_NAME,
            "experiment_ids": ids,
            "genes": genes,
        }
        atomic_write_text(path / TABLE_NAME, table.to_csv(index=False))
        (path / COMPLETED_NAME).write_text("", encoding="utf-8")
        return cls(path, group, table)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r+") -> PlaneStore:
        """Open an existing store (``mode='r'`` for read-only). AllenFormatError naming the
        store for anything missing or inconsistent (attributes, array, table)."""
        import zarr

        path = Path(path)
        if not looks_like_plane_store(path):
            raise AllenFormatError(path, "is not a napari-allen plane store (no zarr.json with "
                                   f"'{STORE_ATTR}' attributes and {TABLE_NAME})")
        for meta in (path / "zarr.json", *path.glob("*/zarr.json")):
            if meta.is_file() and meta.stat().st_size > MAX_META_BYTES:
                raise AllenFormatError(meta, "implausibly large Zarr metadata")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
            attrs = group.attrs.get(STORE_ATTR)
        except Exception as exc:  # noqa: BLE001 - zarr raises many types for broken metadata
            raise AllenFormatError(path, f"broken plane store metadata (zarr.json): "
                                   f"{type(exc).__name__}: {str(exc)[:200]}") from None
        _check_attrs(attrs, path)
        table = _read_table(path)
        try:
            array = group[attrs["volume"]]
        except Exception as exc:  # noqa: BLE001
            raise AllenFormatError(path, f"the store's array {attrs['volume']!r} is missing or "
                                   f"broken: {type(exc).__name__}: {str(exc)[:200]}") from None
        shape = tuple(getattr(array, "shape", ()))
        if len(shape) != 4 or min(shape[1:], default=0) <= 0:
            raise AllenFormatError(path, f"array {attrs['volume']!r} has shape {shape}, not "
                                   "(experiment, AP, DV, ML)")
        if np.dtype(array.dtype).kind != "f":
            raise AllenFormatError(path, f"array {attrs['volume']!r} holds {array.dtype}, not "
                                   "floats")
        store = cls(path, group, table)
        if store.array.shape[0] != len(store.table):
            raise AllenFormatError(path, f"{TABLE_NAME} has {len(store.table)} rows but the "
                                   f"array holds {store.array.shape[0]} experiments")
        return store

    # --- bookkeeping -------------------------------------------------------------------
    @property
    def experiment_ids(self) -> np.ndarray:
        return self.table["experiment_id"].astype(np.int64).to_numpy()

    @property
    def resolution(self) -> float:
        """Voxel spacing in µm."""
        return float(self.attrs["resolution_um"])

    @property
    def plane(self) -> str | None:
        return self.attrs.get("plane")

    def __len__(self) -> int:
        return len(self.table)

    def index_of(self, experiment_id: int) -> int:
        try:
            return self._index[int(experiment_id)]
        except KeyError:
            raise KeyError(f"experiment {experiment_id} is not in the store {self.path}") from None

    def completed(self) -> set[int]:
        """Ids of experiments whose volume is fully written (a missing or damaged log counts
        as nothing written)."""
        try:
            with open(self.path / COMPLETED_NAME, "rb") as fh:
                text = fh.read(64 << 20).decode("utf-8", errors="replace")
        except OSError:
            return set()
        # A line cut by a crash mid-write is ignored (not a valid id of this store).
        done = set()
        for line in text.splitlines():
            line = line.strip()
            if line.isascii() and line.isdigit() and int(line) in self._index:
                done.add(int(line))
        return done

    def pending(self) -> list[int]:
        """Ids still to write, in table order: never written, or written but damaged since
        (:meth:`damaged`)."""
        done = self.completed() - set(self.damaged())
        return [int(e) for e in self.experiment_ids if int(e) not in done]

    def _chunk_name(self, experiment_id: int) -> str:
        """The experiment's chunk file, relative to the store folder (``energy/c/<i>/0/0/0``)."""
        key = self.array.metadata.encode_chunk_key((self.index_of(experiment_id), 0, 0, 0))
        return f"{self.volume}/{key}"

    def damaged(self, *, deep: bool = False) -> list[int]:
        """Completed experiments whose chunk file no longer matches its manifest entry
        (truncated, edited, swapped or deleted). Cheap: a stat per chunk, a hash only for
        changed files (all of them with ``deep``)."""
        bad = []
        recorded = self.manifest.entries()
        for eid in sorted(self.completed()):
            name = self._chunk_name(eid)
            if name not in recorded:
                continue  # an all-NaN grid has no chunk file; a store of an older version
            status = self.manifest.check(name, deep=deep).status
            if status in (DAMAGED, MISSING):
                bad.append(eid)
        return bad

    def _record(self, experiment_ids: Iterable[int], url: str = "") -> None:
        for eid in experiment_ids:
            name = self._chunk_name(eid)
            if (self.path / name).is_file():  # zarr writes no file for an all-fill chunk
                self.manifest.record(name, url=url)

    # --- data --------------------------------------------------------------------------
    def write(self, experiment_id: int, data: np.ndarray, *, source_url: str = "") -> None:
        """Write one experiment's ``[AP, DV, ML]`` grid and record it as complete (and its
        chunk in the manifest, with the URL it came from)."""
        index = self.index_of(experiment_id)
        data = np.asarray(data, dtype=np.float32)
        if data.shape != tuple(self.array.shape[1:]):
            raise AllenFormatError(
                f"experiment {experiment_id}",
                f"grid shape {data.shape} does not match the store's {self.array.shape[1:]}",
            )
        self.array[index] = data
        self._record([experiment_id], source_url)
        with self._lock, open(self.path / COMPLETED_NAME, "a", encoding="utf-8") as fh:
            fh.write(f"{int(experiment_id)}\n")
            fh.flush()

    def write_many(self, experiment_ids: Sequence[int], grids: np.ndarray) -> None:
        """Write a stack ``(k, AP, DV, ML)`` for ``experiment_ids``; consecutive store positions
        go in one call (zarr encodes the chunks together), then all are recorded complete."""
        grids = np.asarray(grids, dtype=np.float32)
        index = [self.index_of(e) for e in experiment_ids]
        if grids.shape != (len(index), *self.array.shape[1:]):
            raise AllenFormatError(
                f"experiments {list(experiment_ids)[:3]}...",
                f"stack shape {grids.shape} does not match {len(index)} x "
                f"{self.array.shape[1:]}",
            )
        if index and index == list(range(index[0], index[0] + len(index))):
            self.array[index[0]:index[-1] + 1] = grids
        else:
            for k, i in enumerate(index):
                self.array[i] = grids[k]
        self._record(experiment_ids)
        with self._lock, open(self.path / COMPLETED_NAME, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{int(e)}\n" for e in experiment_ids))
            fh.flush()

    def read(self, experiment_id: int) -> np.ndarray:
        """One experiment's raw grid (``-1`` kept; NaN if not written)."""
        return np.asarray(self.array[self.index_of(experiment_id)])

    def to_dask(self, missing_as_nan: bool = True):
        """The lazy ``(experiment, AP, DV, ML)`` dask array (one chunk per experiment).

        With ``missing_as_nan`` Allen's ``-1`` becomes NaN (display, statistics); reading one
        experiment touches one chunk only.
        """
        import dask.array as da

        # inline_array: each task holds the (small) zarr handle itself, so slicing one
        # experiment does not carry graph bookkeeping that grows with the store size.
        data = da.from_zarr(self.array, inline_array=True)
        if missing_as_nan:
            data = data.map_blocks(_minus_one_to_nan, dtype=np.float32)
        return data

    def values_at(
        self,
        voxel: Sequence[int],
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Value at one ``[AP, DV, ML]`` voxel index in every experiment (NaN = no data)."""
        ap, dv, ml = (int(v) for v in voxel)
        shape = self.array.shape[1:]
        if not all(0 <= v < s for v, s in zip((ap, dv, ml), shape, strict=True)):
            raise IndexError(f"voxel {tuple(voxel)} is outside the grid {tuple(shape)}")
        out = np.empty(len(self), dtype=np.float32)
        for start, stop in self._batches():
            check(cancel)
            out[start:stop] = self.array[start:stop, ap, dv, ml]
            report(progress, done=stop, total=len(self), message="reading voxel values")
        return np.where(out < 0, np.nan, out)

    def mean_in(
        self,
        mask: np.ndarray,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Mean over the ``[AP, DV, ML]`` boolean ``mask`` of each experiment's valid voxels."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(self.array.shape[1:]):
            raise ValueError(f"mask shape {mask.shape} != grid {self.array.shape[1:]}")
        out = np.full(len(self), np.nan)
        for start, stop in self._batches():
            check(cancel)
            block = np.asarray(self.array[start:stop])[:, mask].astype(np.float64)
            valid = np.isfinite(block) & (block >= 0)
            count = valid.sum(axis=1)
            total = np.where(valid, block, 0.0).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start:stop] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            report(progress, done=stop, total=len(self), message="averaging over the structure")
        return out

    def _batches(self, size: int = 64) -> Iterable[tuple[int, int]]:
        for start in range(0, len(self), size):
            yield start, min(len(self), start + size)


def _check_attrs(attrs: Any, path: Path) -> None:
    """The store's attributes must say what the reader relies on (volume, resolution)."""
    if not isinstance(attrs, dict):
        raise AllenFormatError(path, f"'{STORE_ATTR}' attributes are not an object")
    version = attrs.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or \
            not 1 <= version <= FORMAT_VERSION:
        raise AllenFormatError(path, f"plane store format_version {version!r} is not one this "
                               f"version reads (1..{FORMAT_VERSION})")
    if attrs.get("volume") not in ISH_VOLUMES:
        raise AllenFormatError(path, f"plane store volume {attrs.get('volume')!r} is not one of "
                               f"{ISH_VOLUMES}")
    res = attrs.get("resolution_um")
    if not isinstance(res, (int, float)) or isinstance(res, bool) or not np.isfinite(res) \
            or res <= 0:
        raise AllenFormatError(path, f"plane store resolution_um {res!r} is not a positive "
                               "number")
    plane = attrs.get("plane")
    if plane is not None and not isinstance(plane, str):
        raise AllenFormatError(path, f"plane store plane {plane!r} is not text")


#: Largest experiments.csv read (26,000 experiments are ~3 MB).
MAX_TABLE_BYTES = 64 << 20
#: Largest zarr.json parsed (a store's is a few kB plus its id list).
MAX_META_BYTES = 16 << 20


def _read_table(path: Path) -> pd.DataFrame:
    from .metaimage import open_regular

    table_path = path / TABLE_NAME
    with open_regular(table_path) as fh:
        if os.fstat(fh.fileno()).st_size > MAX_TABLE_BYTES:
            raise AllenFormatError(table_path, "implausibly large experiment table")
        try:
            table = pd.read_csv(fh)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError,
                pd.errors.EmptyDataError) as exc:
            raise AllenFormatError(table_path, f"not a readable CSV table: "
                                   f"{str(exc)[:200]}") from None
    if "experiment_id" not in table.columns:
        raise AllenFormatError(table_path, "has no experiment_id column")
    ids = pd.to_numeric(table["experiment_id"], errors="coerce")
    if ids.isna().any() or (ids < 0).any() or (ids != ids.round()).any():
        raise AllenFormatError(table_path, "experiment_id holds values that are not ids")
    if ids.duplicated().any():
        raise AllenFormatError(table_path, "experiment_id has duplicates")
    table["experiment_id"] = ids.astype(np.int64)
    return table


def _minus_one_to_nan(block: np.ndarray) -> np.ndarray:
    return np.where(block < 0, np.float32(np.nan), block).astype(np.float32, copy=False)


def _single(table: pd.DataFrame, column: str) -> str | None:
    if column not in table.columns:
        return None
    values = table[column].dropna().astype(str).unique()
    if len(values) == 1:
        return str(values[0])
    return "both" if len(values) > 1 else None


def open_plane_store(path: str | os.PathLike) -> PlaneStore:
    """Open a plane store read-only (see :class:`PlaneStore`)."""
    return PlaneStore.open(path, mode="r")
