"""layers/volumes.py: Image/Labels LayerDataTuples from GridVolumes (NaN, contrast, labels)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen.atlas.ontology import Ontology
from napari_allen.io.volume import GridVolume, kind_from_name
from napari_allen.layers.volumes import (
    compact_labels,
    image_layer,
    labels_layer,
    structure_ids_of,
    valid_contrast_limits,
    volume_layer,
)


def test_image_layer_nan_and_contrast():
    grid = np.full((4, 3, 2), -1.0, dtype=np.float32)
    grid[0, 0, 0], grid[1, 1, 1] = 2.0, 6.0
    vol = GridVolume(grid, 100, kind="energy", metadata={"experiment_id": 5, "gene": "Pdyn"})
    data, kwargs, layer_type = image_layer(vol, opacity=0.5)
    assert layer_type == "image" and kwargs["opacity"] == 0.5
    assert int(np.isnan(data).sum()) == 22 and grid[0, 0, 0] == 2.0  # input untouched
    assert kwargs["contrast_limits"][0] == 2.0 and 5.9 < kwargs["contrast_limits"][1] <= 6.0
    assert kwargs["name"] == "Pdyn energy (exp 5)"
    assert kwargs["colormap"] == "magma" and kwargs["blending"] == "additive"
    assert kwargs["rendering"] in ("mip", "attenuated_mip")
    assert kwargs["metadata"]["gene"] == "Pdyn" and kwargs["metadata"]["kind"] == "energy"


def test_contrast_limits_edge_cases():
    assert valid_contrast_limits(np.full((2, 2, 2), -1.0)) == (0.0, 1.0)
    assert valid_contrast_limits(np.full((2, 2, 2), 3.0)) == (3.0, 4.0)
    outlier = np.random.default_rng(0).uniform(0, 1, (10, 10, 100)).astype(np.float32)
    outlier[0, 0, :5] = 1000.0  # 0.05 % of voxels saturate
    assert valid_contrast_limits(outlier)[1] <= 1.0


def test_labels_compact_values_map_back():
    onto = Ontology.default()
    ids = np.array([[[0, 385], [733, 987654321]]], dtype=np.uint32)
    data, kwargs, layer_type = labels_layer(ids, resolution=25, name="ann")
    assert layer_type == "labels" and data.dtype == np.uint16 and kwargs["name"] == "ann"
    np.testing.assert_array_equal(structure_ids_of(data, kwargs["metadata"]),
                                  [[[0, 385], [733, 987654321]]])
    feats = kwargs["features"].set_index("index")
    assert feats.loc[int(data[0, 0, 1]), "acronym"] == "VISp"
    assert feats.loc[int(data[0, 1, 0]), "name"] == onto.name(733)
    assert feats.loc[int(data[0, 1, 1]), "acronym"] == "?"  # not in the ontology
    colors = kwargs["colormap"].color_dict
    np.testing.assert_allclose(colors[int(data[0, 0, 1])][:3], np.array(onto.rgb(385)) / 255)
    assert colors[0][3] == 0 and max(k for k in colors if k is not None) < 2 ** 16


def test_compact_labels_unknown_ids():
    out = compact_labels(np.array([0, 5, 7, 9]), np.array([5, 9]))
    assert out.tolist() == [0, 1, 3, 2]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32, np.int64,
                                   np.uint64, np.float64])
def test_compact_labels_same_for_every_block_dtype(dtype):
    """The relabelling searches in the block's own dtype when the ids fit it (no int64 copy
    per slice), else in int64: the same values either way, unknown ids included."""
    ids = np.array([5, 9, 200, 70_000, 614_454_277])
    block = np.array([0, 5, 7, 9, 200, 201, 255, 70_000, 614_454_277, 614_454_278])
    block = block[block <= (np.iinfo(dtype).max if np.dtype(dtype).kind != "f" else 2**40)]
    expected = [0 if v == 0 else (int(np.searchsorted(ids, v)) + 1 if v in ids else 6)
                for v in block.tolist()]
    out = compact_labels(block.astype(dtype), ids)
    assert out.dtype == np.uint16 and out.tolist() == expected


def test_labels_need_resolution_for_arrays():
    with pytest.raises(ValueError, match="resolution"):
        labels_layer(np.zeros((2, 2, 2), dtype=np.uint32))


def test_volume_layer_dispatch():
    ann = GridVolume(np.zeros((2, 2, 2), dtype=np.uint32), 200, kind="annotation")
    img = GridVolume(np.zeros((2, 2, 2), dtype=np.float32), 200, kind="projection_density")
    assert volume_layer(ann)[2] == "labels"
    assert volume_layer(img)[2] == "image" and volume_layer(img)[1]["colormap"] == "inferno"


@pytest.mark.parametrize(("name", "kind"), [
    ("energy.mhd", "energy"), ("gridAnnotation.raw", "annotation"),
    ("annotationFiber.mhd", "fiber_annotation"), ("annotation_25.nrrd", "annotation"),
    ("projection_density_100.nrrd", "projection_density"), ("data_mask_10.nrrd", "data_mask"),
    ("Nrp1_energy.raw", "energy"), ("scan.nrrd", "unknown"),
])
def test_kind_from_name(name, kind):
    assert kind_from_name(name) == kind


def test_volume_names():
    zeros = np.zeros((2, 2, 2), dtype=np.float32)
    assert GridVolume(zeros, 200, metadata={"experiment_id": 5, "gene": "Nrp1"}).name == \
        "Nrp1 grid (exp 5)"
    assert GridVolume(zeros, 200, source="/x/scan.raw").name == "scan (200 µm)"
    assert GridVolume(zeros, 25, kind="annotation").name == "annotation (25 µm)"
    assert GridVolume(zeros, 100, kind="injection_density",
                      metadata={"experiment_id": 9}).name == "injection density (exp 9)"
