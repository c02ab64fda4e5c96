"""The layers of one Allen grid file (NRRD, MetaImage, ``.raw``, grid zip or folder): the one
path the reader, the CCF reference sample and the Structures dock share.

Large grids (10/25 µm) open as multiscale layers over the chunked pyramid cache, built once
in a background converter process
(:func:`~napari_allen.layers.multiscale.multiscale_layer_for_file`): opening decodes nothing
on the calling thread (napari's main thread for a reader or a sample). Small grids, and large
ones when the cache cannot start (read-only cache folder, full disk), are read directly.
Arrays ``[AP, DV, ML]``, µm. No Qt here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import AllenFormatError

LayerDataTuple = tuple
log = logging.getLogger(__name__)


def grid_file_layers(path: str | Path, **overrides) -> list[LayerDataTuple]:
    """One layer per grid in ``path`` (``overrides`` update every layer's keyword arguments).

    Raises :class:`~napari_allen.errors.AllenFormatError` (naming the file) for damaged or
    unsupported files; a multiscale cache that cannot start is logged and skipped."""
    from ..io import check_exists, read_volumes
    from .volumes import volume_layer

    path = Path(path)
    check_exists(path)  # symlink loops, dangling links: a clear error before anything else
    try:
        big = multiscale_file_layer(path)
    except AllenFormatError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        # The multiscale cache is an optimisation: if it cannot start, read directly (which
        # gives the data or the clear error).
        log.warning("%s: multiscale cache unavailable (%s); reading directly", path, exc)
        big = None
    layers = [big] if big is not None else [volume_layer(vol) for vol in read_volumes(path)]
    for _, kwargs, _ in layers:
        kwargs.update(overrides)
    return layers


def multiscale_file_layer(path: str | Path) -> LayerDataTuple | None:
    """The multiscale layer of a 10/25 µm grid file over its pyramid cache (None for small
    grids and files holding several grids): any plane along any axis then reads fast."""
    from ..io.pyramid import describe_grid
    from .multiscale import multiscale_layer_for_file

    return multiscale_layer_for_file(path, describe_grid)
