"""npe2 reader: one mechanism, an ordered table of ``(name, sniff, read)`` format entries.

:func:`get_reader` asks each entry's ``sniff(path)`` in order and returns the first match's
reader, or ``None`` so napari's own readers (and other plugins) can take the file. Sniffs are
cheap: a suffix test, ``stat``, a zip's central directory or a header of a few hundred bytes;
no payload is ever read to decide.

Entries: spatial-search lines JSON, whole-plane Zarr stores, an unzipped download folder, a
``grid_data/download`` zip, a MetaImage ``.mhd`` (+ ``.raw``), a bare Allen
``.raw``, and an Allen NRRD grid.

Reader collision: napari's builtins (and napari-aicsimageio / napari-bioio) also claim
``*.raw``, ``*.mhd`` and ``*.zip``. ``viewer.open(path)`` then raises ``MultipleReaderError``
(the GUI asks which reader to use). Choose this one explicitly:
``viewer.open(path, plugin="napari-allen")``, or pick "Allen Mouse Brain Atlas" in the dialog
and tick "remember my choice".
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import AllenFormatError

PathLike = str | os.PathLike
LayerDataTuple = tuple
ReaderFunction = Callable[[PathLike | Sequence[PathLike]], list[LayerDataTuple]]


@dataclass(frozen=True)
class FormatEntry:
    """One readable format: ``sniff(path) -> bool`` (cheap), ``read(path) -> layers``."""

    name: str
    sniff: Callable[[Path], bool]
    read: Callable[[Path], list[LayerDataTuple]]


def _sniff_lines_json(path: Path) -> bool:
    if path.suffix.lower() != ".json":  # every path is asked first: no module import for grids
        return False
    from .io.lines_json import looks_like_lines_json

    return looks_like_lines_json(path)


def _lines_layers(path: Path) -> list[LayerDataTuple]:
    from .layers.lines import read_lines_json_layers

    return read_lines_json_layers(path)


def _sniff_plane_store(path: Path) -> bool:
    if not path.is_dir():  # stores are folders; importing their module costs pandas (~0.3 s)
        return False
    from .io.plane_store import looks_like_plane_store

    return looks_like_plane_store(path)


def _plane_store_layers(path: Path) -> list[LayerDataTuple]:
    from .layers.expression import plane_store_layers

    return plane_store_layers(path)


def _grid_layers(path: Path) -> list[LayerDataTuple]:
    from .layers.grid_files import grid_file_layers

    return grid_file_layers(path)


def _is_allen_shape_or_name(shape: Sequence[int], name: str) -> bool:
    from .space import resolution_for_shape

    return resolution_for_shape(shape) is not None or _allen_name(name)


#: Allen download names: ``..._200um.zip``, ``annotation_25.nrrd`` (via the kind),
#: ``Nrp1_P56_coronal_74272479_200um.zip``.
_ALLEN_NAME = re.compile(r"(?:^|_)(?:10|25|50|100|200)um\.(?:zip|nrrd|nhdr|mhd|mha|raw)$"
                         r"|^[A-Za-z0-9.\-]+_(?:P\d+_)?(?:coronal|sagittal)_\d{3,}",
                         re.IGNORECASE)


def _allen_name(name: str) -> bool:
    """Is ``name`` clearly an Allen file name (a volume kind or an Allen download name)?
    Such files are claimed even when broken, so reading them explains what is wrong instead
    of napari saying that no reader accepted them."""
    from .io.volume import kind_from_name

    return kind_from_name(name) != "unknown" or bool(_ALLEN_NAME.search(name))


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _sniff_folder(path: Path) -> bool:
    from .io.gridzip import is_grid_folder

    return path.is_dir() and is_grid_folder(path)


def _sniff_zip(path: Path) -> bool:
    if path.suffix.lower() != ".zip" or not _exists(path):
        return False
    from .io.gridzip import looks_like_grid_zip

    return _allen_name(path.name) or (path.is_file() and looks_like_grid_zip(path))


def _sniff_mhd(path: Path) -> bool:
    if path.suffix.lower() not in (".mhd", ".mha") or not _exists(path):
        return False
    if not path.is_file():  # a FIFO, folder or dangling link: ours only by name
        return _allen_name(path.name)
    from .io.metaimage import read_header

    try:
        header = read_header(path)
    except AllenFormatError:
        # A malformed header that names an Allen volume is still ours: reading it then
        # reports the problem instead of another reader failing obscurely.
        return _allen_name(path.name)
    return _is_allen_shape_or_name(header.dim_size, path.name)


def _sniff_raw(path: Path) -> bool:
    if path.suffix.lower() != ".raw" or not _exists(path):
        return False
    if not path.is_file():
        return _allen_name(path.name)
    sibling = path.with_suffix(".mhd")
    if sibling.is_file() and _sniff_mhd(sibling):
        return True
    from .io.raw import looks_like_raw_grid

    # Allen-named .raw files are claimed even when their size is wrong, to explain why.
    return looks_like_raw_grid(path) or _allen_name(path.name)


def _sniff_nrrd(path: Path) -> bool:
    if path.suffix.lower() not in (".nrrd", ".nhdr") or not _exists(path):
        return False
    if not path.is_file():
        return _allen_name(path.name)
    from .io.nrrd import read_nrrd_header

    try:
        header = read_nrrd_header(path)
    except AllenFormatError:
        return _allen_name(path.name)
    return _is_allen_shape_or_name(header.sizes, path.name)


#: The format table, asked in order. First match wins.
FORMATS: tuple[FormatEntry, ...] = (
    FormatEntry("spatial-search lines JSON", _sniff_lines_json, _lines_layers),
    FormatEntry("whole-plane Zarr store", _sniff_plane_store, _plane_store_layers),
    FormatEntry("grid folder", _sniff_folder, _grid_layers),
    FormatEntry("grid zip", _sniff_zip, _grid_layers),
    FormatEntry("MetaImage", _sniff_mhd, _grid_layers),
    FormatEntry("bare raw", _sniff_raw, _grid_layers),
    FormatEntry("NRRD", _sniff_nrrd, _grid_layers),
)


def find_format(path: PathLike) -> FormatEntry | None:
    """The first format entry claiming ``path``, or None."""
    path = Path(path)
    for entry in FORMATS:
        try:
            if entry.sniff(path):
                return entry
        except OSError:
            continue
    return None


def _warn_synthetic(layers: list[LayerDataTuple]) -> None:
    """A napari warning for every layer holding synthetic data (the name says it too)."""
    names = [t[1].get("name", "") for t in layers
             if len(t) > 1 and isinstance(t[1], dict)
             and (t[1].get("metadata") or {}).get("synthetic")]
    if not names or "napari" not in sys.modules:
        return
    try:
        from napari.utils.notifications import show_warning

        show_warning(f"{', '.join(names)}: SYNTHETIC data generated by the napari-allen local "
                     "server, not Allen measurements")
    except Exception:  # noqa: BLE001 - a message must never break reading
        pass


def get_reader(path: PathLike | Sequence[PathLike]) -> ReaderFunction | None:
    """npe2 ``get_reader``: a reader function if every path is an Allen file, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    entries = [find_format(p) for p in paths]
    if any(e is None for e in entries):
        return None

    def reader(_path: PathLike | Sequence[PathLike]) -> list[LayerDataTuple]:
        layers: list[LayerDataTuple] = []
        for p, entry in zip(paths, entries, strict=True):
            layers.extend(entry.read(Path(p)))  # type: ignore[union-attr]
        _warn_synthetic(layers)
        return layers

    return reader
