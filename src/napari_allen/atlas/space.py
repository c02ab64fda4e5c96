"""The CCF coordinate space: grid sizes per resolution and voxel <-> µm conversion.

Conventions (one place for the whole package):

- Arrays are ``[AP, DV, ML]`` (CCFv3 PIR: +AP posterior, +DV inferior, +ML right), the order
  obtained by reading Allen ``.raw``/NRRD data in Fortran order (x fastest).
- Coordinates are micrometres. Voxel ``i`` has its centre at ``i * resolution`` µm, which is
  both Allen's rule (AllenSDK, the API's ``injection_x`` etc.) and napari's with
  ``translate = 0`` and ``scale = resolution``. World -> voxel rounds to the nearest centre.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def voxel_to_um(index: np.ndarray | Sequence[float], resolution: float) -> np.ndarray:
    """Voxel indices ``(..., 3)`` ``[AP, DV, ML]`` -> CCF µm (voxel centres)."""
    return np.asarray(index, dtype=float) * float(resolution)


def um_to_voxel(
    um: np.ndarray | Sequence[float],
    resolution: float,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """CCF µm ``(..., 3)`` ``[AP, DV, ML]`` -> nearest voxel indices (int).

    With ``shape``, indices are clipped into the grid.
    """
    idx = np.rint(np.asarray(um, dtype=float) / float(resolution)).astype(np.int64)
    if shape is not None:
        idx = np.clip(idx, 0, np.asarray(shape) - 1)
    return idx


def rescale_index(
    index: np.ndarray | Sequence[int], from_resolution: float, to_resolution: float
) -> np.ndarray:
    """Map voxel indices between grids through µm (e.g. 100 µm -> 25 µm multiplies by 4)."""
    return um_to_voxel(voxel_to_um(index, from_resolution), to_resolution)


def mirror_ml(ml_um: np.ndarray | float, midline_um: float = MIDLINE_UM):
    """Reflect ML coordinates (µm) about the midline."""
    return 2.0 * midline_um - np.asarray(ml_um, dtype=float)


def grid_midline_index(n_ml: int) -> float:
    """The ML index of the midline plane of a grid with ``n_ml`` voxels across (may be x.5).

    The grids are left/right symmetric about their centre: index ``i`` mirrors ``n_ml-1-i``.
    """
    return (n_ml - 1) / 2.0


def layer_space_kwargs(resolution: float | Sequence[float]) -> dict:
    """napari layer keyword arguments placing a ``[AP, DV, ML]`` grid in CCF µm."""
    if np.isscalar(resolution):
        scale = (float(resolution),) * 3
    else:
        scale = tuple(float(r) for r in resolution)
    return {"scale": scale, "units": UNITS, "axis_labels": AXES}
