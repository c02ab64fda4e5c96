"""CCF space: grid shapes and the voxel <-> µm convention (voxel i centred at i*res)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen.space import (
    GRID_SHAPES,
    MIDLINE_UM,
    describe_size_match,
    grid_midline_index,
    layer_space_kwargs,
    mirror_ml,
    rescale_index,
    resolution_for_shape,
    sample_at_um,
    um_to_voxel,
    voxel_to_um,
)


@pytest.mark.parametrize("res", [10, 25, 50, 100])
def test_ccf_grids_span_the_ccf_extent(res):
    shape = GRID_SHAPES[res]
    np.testing.assert_array_equal(np.asarray(shape) * res, (13200, 8000, 11400))
    assert resolution_for_shape(shape) == res


def test_special_shapes():
    assert resolution_for_shape((67, 41, 58)) == 200
    assert resolution_for_shape((133, 81, 115)) == 100  # CCFv2 connectivity grid
    assert resolution_for_shape((58, 41, 67)) is None  # C-order (ML, DV, AP) is not ours


def test_voxel_um_round_trip():
    idx = np.array([[0, 0, 0], [10, 20, 30], [527, 319, 455]])
    um = voxel_to_um(idx, 25)
    np.testing.assert_array_equal(um[1], (250, 500, 750))
    np.testing.assert_array_equal(um_to_voxel(um, 25), idx)
    # Nearest centre: 12.4 µm rounds to voxel 0, 12.6 µm to voxel 1.
    assert um_to_voxel([12.4, 12.6, 37.4], 25).tolist() == [0, 1, 1]
    assert um_to_voxel([-100, 9e9, 50], 25, shape=(528, 320, 456)).tolist() == [0, 319, 2]


def test_rescale_between_grids():
    assert rescale_index([10, 20, 30], 100, 25).tolist() == [40, 80, 120]
    assert rescale_index([41, 80, 120], 25, 100).tolist() == [10, 20, 30]


def test_midline():
    assert grid_midline_index(456) == 227.5
    assert float(mirror_ml(5000)) == 2 * MIDLINE_UM - 5000
    # The injection of 158375425 (ML 7,650 µm) mirrors into the left hemisphere.
    assert float(mirror_ml(7650)) < MIDLINE_UM


def test_layer_space_kwargs():
    assert layer_space_kwargs(25) == {"scale": (25.0, 25.0, 25.0), "units": ("um",) * 3,
                                      "axis_labels": ("AP", "DV", "ML")}
    assert layer_space_kwargs((10, 20, 30))["scale"] == (10.0, 20.0, 30.0)


def test_describe_size_match():
    assert describe_size_match(4_815_360) == ("the size matches the 100 µm grid 132x80x114 of "
                                              "4-byte values")
    assert describe_size_match(1_000_001) is None


def test_sample_at_um_nearest_voxel_and_fill_outside():
    grid = np.arange(1, 2 * 3 * 4 + 1, dtype=np.uint32).reshape(2, 3, 4)
    assert sample_at_um(grid, 100.0, [100.0, 240.0, 260.0]) == int(grid[1, 2, 3])
    points = [[0.0, 0.0, 349.0], [-60.0, 0.0, 0.0], [0.0, 0.0, 351.0], [-40.0, 0.0, 0.0]]
    # Nearest centre; more than half a voxel outside the grid -> fill.
    np.testing.assert_array_equal(sample_at_um(grid, 100.0, points, fill=-1),
                                  [grid[0, 0, 3], -1, -1, grid[0, 0, 0]])
    assert sample_at_um(grid, 100.0, [0.0, 0.0, 400.0]) == 0
