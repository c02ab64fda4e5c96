"""Labels are exact for any number of structure ids: never a silent uint16 wrap, and napari
can build and colour the layer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen.io.volume import GridVolume
from napari_allen.layers.volumes import (
    compact_dtype,
    compact_labels,
    labels_layer,
    structure_ids_of,
)


def test_compact_dtype_grows_instead_of_wrapping():
    assert compact_dtype(1_327) == np.uint16
    assert compact_dtype(65_534) == np.uint16
    assert compact_dtype(65_535) == np.uint32
    ids = np.arange(1, 70_001, dtype=np.int64) * 3
    out = compact_labels(ids.reshape(70, 100, 10), ids)
    assert out.dtype == np.uint32 and int(out.max()) == 70_000
    assert len(np.unique(out)) == 70_000


@pytest.mark.parametrize("n_ids", [70_000])
def test_more_than_65535_distinct_ids_round_trip(n_ids):
    """70,000 distinct ids (most not in the ontology): every voxel maps back to its id."""
    rng = np.random.default_rng(5)
    ids = np.unique(rng.integers(1, 2**31, size=n_ids * 2))[:n_ids]
    assert len(ids) == n_ids
    grid = rng.permutation(np.concatenate([ids, np.zeros(41 * 58 * 34 - n_ids, dtype=ids.dtype)]))
    grid = grid.reshape(41, 58, 34).astype(np.uint32)
    data, kwargs, layer_type = labels_layer(GridVolume(grid, 200, kind="annotation"))
    assert layer_type == "labels"
    back = structure_ids_of(data, kwargs["metadata"])
    np.testing.assert_array_equal(back, grid)  # exact: not one voxel maps to another id
    # napari builds, slices and colours it (no numba needed).
    from napari.layers import Labels

    layer = Labels(data, **{k: v for k, v in kwargs.items() if k != "units"})
    layer.refresh()
    k = int(np.flatnonzero(grid.ravel(order="C"))[0])
    voxel = np.unravel_index(k, grid.shape)
    value = layer.get_value(voxel)
    row = layer.features[layer.features["index"] == value].iloc[0]
    assert int(row["structure_id"]) == int(grid[voxel])


def test_small_annotations_keep_the_compact_atlas_colours():
    grid = np.zeros((6, 5, 4), dtype=np.uint32)
    grid[1, 1, 1] = 997
    grid[2, 2, 2] = 123456789  # not in the ontology
    data, kwargs, _ = labels_layer(GridVolume(grid, 200, kind="annotation"))
    assert data.dtype == np.uint16 and kwargs["metadata"]["label_values"] == "compact"
    np.testing.assert_array_equal(structure_ids_of(data, kwargs["metadata"]), grid)
