"""The CCF coordinate space: grid sizes per resolution, volume names, voxel <-> µm conversion.

The bottom of the house (numpy only, imported by the functions that compute: the constants
are read by every command line parser and the download path, which need not pay numpy's
import): ``io``, ``atlas``, ``api`` and everything above read the grid shapes, resolutions and
volume names from here, so each is defined once and ``io`` and ``atlas`` need not import each
other.

Conventions (one place for the whole package):

- Arrays are ``[AP, DV, ML]`` (CCFv3 PIR: +AP posterior, +DV inferior, +ML right), the order
  obtained by reading Allen ``.raw``/NRRD data in Fortran order (x fastest).
- Coordinates are micrometres. Voxel ``i`` has its centre at ``i * resolution`` µm, which is
  both Allen's rule (AllenSDK, the API's ``injection_x`` etc.) and napari's with
  ``translate = 0`` and ``scale = resolution``. World -> voxel rounds to the nearest centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

AXES: tuple[str, str, str] = ("AP", "DV", "ML")
UNITS: tuple[str, str, str] = ("um", "um", "um")

#: Grid shape ``(AP, DV, ML)`` for each isotropic resolution in µm. 200 µm is the ISH grid.
GRID_SHAPES: dict[int, tuple[int, int, int]] = {
    10: (1320, 800, 1140),
    25: (528, 320, 456),
    50: (264, 160, 228),
    100: (132, 80, 114),
    200: (67, 41, 58),
}

#: The legacy CCFv2 connectivity grid (experiments processed before May 2015).
CCFV2_100_SHAPE: tuple[int, int, int] = (133, 81, 115)

#: Resolutions (µm) of the CCFv3 NRRD volumes Allen publishes: connectivity images
#: (``/grid_data/download_file``) and the CCF annotation.
NRRD_RESOLUTIONS: tuple[int, ...] = (10, 25, 50, 100)

#: Planes of section of the ISH atlas (sagittal sets cover one hemisphere).
SECTION_PLANES: tuple[str, ...] = ("coronal", "sagittal")
#: Volumes of an ISH grid zip (``include=energy,density,intensity``).
ISH_VOLUMES: tuple[str, ...] = ("energy", "density", "intensity")
#: Volumes of any grid zip (connectivity zips add ``injection``).
GRID_VOLUMES: tuple[str, ...] = (*ISH_VOLUMES, "injection")
#: Connectivity images served as NRRD (``/grid_data/download_file?image=``).
NRRD_IMAGES: tuple[str, ...] = (
    "projection_density", "projection_energy", "injection_fraction", "injection_density",
    "injection_energy", "data_mask",
)

#: The CCFv3 midline (ML) position in µm: half of the 11,400 µm ML extent.
MIDLINE_UM: float = 5700.0


def resolution_for_shape(shape: Sequence[int]) -> int | None:
    """The resolution (µm) whose grid has this ``(AP, DV, ML)`` shape, or None."""
    shape = tuple(int(s) for s in shape)
    for res, grid in GRID_SHAPES.items():
        if grid == shape:
            return res
    if shape == CCFV2_100_SHAPE:
        return 100
    return None


#: (shape [AP, DV, ML], resolution µm) of every grid a file may hold, finest first.
KNOWN_GRIDS: list[tuple[tuple[int, int, int], int]] = [
    (shape, res) for res, shape in sorted(GRID_SHAPES.items(), reverse=True)
] + [(CCFV2_100_SHAPE, 100)]


def grid_for_voxels(n_voxels: int) -> tuple[tuple[int, int, int], int] | None:
    """``(shape, resolution)`` of the known grid with ``n_voxels`` voxels, or None."""
    for shape, res in KNOWN_GRIDS:
        if shape[0] * shape[1] * shape[2] == n_voxels:
            return shape, res
    return None


def describe_size_match(n_bytes: int) -> str | None:
    """'the size matches the 100 µm grid 132x80x114 of 4-byte values' or None."""
    for itemsize in (4, 2, 8):
        if n_bytes % itemsize == 0:
            match = grid_for_voxels(n_bytes // itemsize)
            if match:
                shape, res = match
                dims = "x".join(map(str, shape))
                return f"the size matches the {res} µm grid {dims} of {itemsize}-byte values"
    return None


def voxel_to_um(index: np.ndarray | Sequence[float], resolution: float) -> np.ndarray:
    """Voxel indices ``(..., 3)`` ``[AP, DV, ML]`` -> CCF µm (voxel centres)."""
    import numpy as np

    return np.asarray(index, dtype=float) * float(resolution)


def um_to_voxel(
    um: np.ndarray | Sequence[float],
    resolution: float,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """CCF µm ``(..., 3)`` ``[AP, DV, ML]`` -> nearest voxel indices (int).

    With ``shape``, indices are clipped into the grid.
    """
    import numpy as np

    idx = np.rint(np.asarray(um, dtype=float) / float(resolution)).astype(np.int64)
    if shape is not None:
        idx = np.clip(idx, 0, np.asarray(shape) - 1)
    return idx


def sample_at_voxels(data, index: np.ndarray | Sequence[int], fill: int = 0) -> np.ndarray | int:
    """Values of a ``[AP, DV, ML]`` grid at voxel ``index`` (``(3,)`` or ``(N, 3)``), ``fill``
    outside the grid, as int64 (labels: structure ids). Fancy indexing touches only the pages
    holding these voxels of a memmap."""
    import numpy as np

    idx = np.atleast_2d(np.asarray(index, dtype=np.int64))
    shape = np.asarray(data.shape)
    inside = np.all((idx >= 0) & (idx < shape), axis=1)
    out = np.full(len(idx), fill, dtype=np.int64)
    if inside.any():
        good = idx[inside]
        out[inside] = np.asarray(data[good[:, 0], good[:, 1], good[:, 2]]).astype(np.int64)
    return int(out[0]) if np.ndim(index) == 1 else out


def sample_at_um(data, resolution: float, point_um: np.ndarray | Sequence[float],
                 fill: int = 0) -> np.ndarray | int:
    """Values of a ``[AP, DV, ML]`` grid of ``resolution`` µm at CCF µm point(s) (nearest voxel
    centre; a point more than half a voxel outside the grid gets ``fill``)."""
    return sample_at_voxels(data, um_to_voxel(point_um, resolution), fill)


def rescale_index(
    index: np.ndarray | Sequence[int], from_resolution: float, to_resolution: float
) -> np.ndarray:
    """Map voxel indices between grids through µm (e.g. 100 µm -> 25 µm multiplies by 4)."""
    return um_to_voxel(voxel_to_um(index, from_resolution), to_resolution)


def mirror_ml(ml_um: np.ndarray | float, midline_um: float = MIDLINE_UM):
    """Reflect ML coordinates (µm) about the midline."""
    import numpy as np

    return 2.0 * midline_um - np.asarray(ml_um, dtype=float)


def grid_midline_index(n_ml: int) -> float:
    """The ML index of the midline plane of a grid with ``n_ml`` voxels across (may be x.5).

    The grids are left/right symmetric about their centre: index ``i`` mirrors ``n_ml-1-i``.
    """
    return (n_ml - 1) / 2.0


def layer_space_kwargs(resolution: float | Sequence[float]) -> dict:
    """napari layer keyword arguments placing a ``[AP, DV, ML]`` grid in CCF µm."""
    if isinstance(resolution, (int, float)) or getattr(resolution, "ndim", None) == 0:
        scale = (float(resolution),) * 3
    else:
        scale = tuple(float(r) for r in resolution)
    return {"scale": scale, "units": UNITS, "axis_labels": AXES}
