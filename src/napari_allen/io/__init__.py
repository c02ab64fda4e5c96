"""Allen file formats: MetaImage grids, bare .raw, grid zips/folders, NRRD, exports (no Qt, no
network).

:func:`read_volumes` opens any supported path and returns :class:`GridVolume` objects in
``[AP, DV, ML]`` order with their spacing in µm. Large grids come back memory-mapped.

Reader collision: napari's builtins and other plugins also claim ``*.raw``, ``*.mhd`` and
``*.zip``; in napari, open Allen files with ``viewer.open(path, plugin="napari-allen")`` (or pick
"Allen Mouse Brain Atlas" in the reader dialog and tick "remember").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AllenFormatError
from ..progress import CancelToken, ProgressCallback

if TYPE_CHECKING:
    from .volume import KINDS, GridVolume, kind_from_name

__all__ = ["GridVolume", "KINDS", "kind_from_name", "read_volumes", "file_metadata",
           "check_exists"]

#: Names served from :mod:`.volume` on first use: importing a light submodule (the manifest,
#: atomic writes: every download) must not import numpy through this package.
_FROM_VOLUME = ("KINDS", "GridVolume", "kind_from_name")


def __getattr__(name: str):
    if name in _FROM_VOLUME:
        from . import volume

        return getattr(volume, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def file_metadata(path: Path) -> dict:
    """Experiment id/gene/plane hints for a single grid file from its name or its folder's
    name (``158375425/projection_density_100.nrrd``), completed from the bundled gene table."""
    from .dataset import hints_from_name, lookup_experiment

    meta = hints_from_name(path.stem)
    if "experiment_id" not in meta and path.parent.name.isdigit():
        meta["experiment_id"] = int(path.parent.name)
    if "experiment_id" in meta:
        for key, value in lookup_experiment(meta["experiment_id"]).items():
            meta.setdefault(key, value)
    return meta


def _sibling_header(raw: Path) -> Path | None:
    """A ``.mhd`` next to ``raw`` whose ElementDataFile names it."""
    from .metaimage import read_header

    for candidate in (raw.with_suffix(".mhd"), raw.with_suffix(".MHD")):
        if candidate.is_file():
            try:
                header = read_header(candidate)
            except AllenFormatError:
                return None
            if Path(header.data_file).name == raw.name:
                return candidate
    return None


def check_exists(path: Path) -> None:
    """AllenFormatError naming ``path`` if it cannot even be looked at."""
    try:
        os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise AllenFormatError(path, "broken symlink (its target does not exist)") from None
        raise AllenFormatError(path, "no such file or folder") from None
    except OSError as exc:  # ELOOP (symlink loop), EACCES on a parent folder, ...
        raise AllenFormatError(path, f"cannot open: {exc.strerror or exc}") from None


def read_volumes(
    path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[GridVolume]:
    """Read every grid in ``path``: ``.mhd`` (+ ``.raw``), bare ``.raw``, grid zip, unzipped
    download folder, or Allen NRRD. Raises AllenFormatError naming the file on bad input.

    ``cache_dir`` is the cache folder whose ``decoded/`` holds large inflated payloads (default:
    the configured one, ``NAPARI_ALLEN_CACHE``).
    """
    path = Path(path)
    check_exists(path)
    opts = {"cache_dir": cache_dir, "progress": progress, "cancel": cancel}
    if path.is_dir():
        from .gridzip import read_grid_folder

        return read_grid_folder(path, **opts)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        from .gridzip import read_grid_zip

        return read_grid_zip(path, **opts)
    if suffix in (".mhd", ".mha"):
        from .metaimage import read_metaimage

        return [read_metaimage(path, metadata=file_metadata(path), **opts)]
    if suffix == ".raw":
        header = _sibling_header(path)
        if header is not None:
            from .metaimage import read_metaimage

            return [read_metaimage(header, metadata=file_metadata(path), **opts)]
        from .raw import read_raw

        return [read_raw(path, metadata=file_metadata(path))]
    if suffix in (".nrrd", ".nhdr"):
        from .nrrd import read_nrrd

        return [read_nrrd(path, metadata=file_metadata(path), **opts)]
    raise AllenFormatError(path, f"unsupported file type {suffix or '(none)'!r}; expected "
                                 ".mhd, .raw, .zip, .nrrd or a download folder")
