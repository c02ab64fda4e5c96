"""LayerDataTuples of napari_allen.layers.connectivity, built into real napari layers."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest
from napari.layers import Layer

from napari_allen.analysis.projections import AveragingOptions, average_projections
from napari_allen.atlas.ontology import Ontology
from napari_allen.io.nrrd import read_nrrd
from napari_allen.layers import connectivity as L

CONN = resources.files("napari_allen") / "data" / "connectivity" / "158375425"
EXP = {"id": 158375425, "structure_id": 733, "structure_abbrev": "VPM",
       "structure_name": "Ventral posteromedial nucleus of the thalamus",
       "transgenic_line": "", "injection_volume": 0.0998, "injection_x": 7070,
       "injection_y": 4360, "injection_z": 7650, "gender": "M", "strain": "C57BL/6J"}


def _vol(image: str):
    with resources.as_file(CONN / f"{image}_100.nrrd") as path:
        vol = read_nrrd(path, kind=image)
    vol.metadata["experiment_id"] = EXP["id"]
    return vol


def test_experiment_volume_layer_name_scale_metadata():
    data, kwargs, kind = L.experiment_volume_layer(_vol("projection_density"), EXP)
    assert kind == "image"
    assert kwargs["name"] == "projection density (exp 158375425, VPM)"
    assert kwargs["scale"] == (100.0, 100.0, 100.0)
    assert kwargs["axis_labels"] == ("AP", "DV", "ML")
    assert kwargs["metadata"]["experiment"]["structure_abbrev"] == "VPM"
    layer = Layer.create(data, kwargs, kind)
    assert layer.data.shape == (132, 80, 114)
    inj = L.experiment_volume_layer(_vol("injection_density"), EXP)
    assert inj[1]["name"] == "injection density (exp 158375425, VPM)"
    assert inj[1]["colormap"] == "green"
    centroid = np.array(inj[1]["metadata"]["injection_centroid_um"])
    assert np.linalg.norm(centroid - [7070, 4360, 7650]) < 500


def test_injection_sites_layer_points_in_um_with_structure_colours():
    onto = Ontology.default()
    exps = pd.DataFrame([EXP, {**EXP, "id": 122642490, "structure_id": onto.id_of("MOs"),
                               "structure_abbrev": "MOs", "transgenic_line": "Syt6-Cre_KI148",
                               "injection_x": 4300, "injection_y": 2690, "injection_z": 7050},
                         {**EXP, "id": 1, "injection_x": np.nan}])
    data, kwargs, kind = L.injection_sites_layer(exps, ontology=onto)
    assert kind == "points"
    np.testing.assert_array_equal(data, [[7070, 4360, 7650], [4300, 2690, 7050]])
    layer = Layer.create(data, kwargs, kind)
    assert layer.scale.tolist() == [1.0, 1.0, 1.0]
    assert layer.features["experiment"].tolist() == [158375425, 122642490]
    assert layer.features["line"].tolist() == ["wild type", "Syt6-Cre_KI148"]
    np.testing.assert_allclose(layer.face_color[0, :3], np.array(onto.rgb(733)) / 255)
    np.testing.assert_allclose(layer.face_color[1, :3], np.array(onto.rgb(onto.id_of("MOs")))
                               / 255)
    assert getattr(layer, "projection_mode", "all") == "all"


def test_injection_voxels_layer_threshold():
    vol = _vol("injection_fraction")
    data, kwargs, kind = L.injection_voxels_layer(vol, threshold=0.5, experiment=EXP)
    assert len(data) == int((np.asarray(vol.data) > 0.5).sum()) > 0
    assert kwargs["name"] == "injection voxels > 0.5 (exp 158375425, VPM)"
    layer = Layer.create(data, kwargs, kind)
    assert set(layer.features["experiment"]) == {158375425}


@pytest.mark.parametrize("subtract", [False, True])
def test_average_layers_per_group_and_stack(subtract):
    exps = pd.DataFrame({"id": [1, 2, 3], "structure_id": [385] * 3,
                         "injection_x": [1000.0, 1200.0, 9000.0], "injection_y": 0.0,
                         "injection_z": 6000.0})
    rng = np.random.default_rng(3)
    vols = [(i, rng.random((4, 3, 6)).astype(np.float32)) for i in exps["id"]]
    opts = AveragingOptions(group_by="ap", bins=2, subtract_hemisphere=subtract)
    result = average_projections(vols, exps, opts, resolution=100)
    layers = L.average_layers(result)
    assert len(layers) == 2
    names = [kw["name"] for _, kw, _ in layers]
    assert names[0].startswith("mean projection density") and "AP 3000 µm (n=2)" in names[0]
    lo, hi = layers[0][1]["contrast_limits"]
    if subtract:
        assert lo == -hi and layers[0][1]["colormap"] == "PiYG"
    for tup in layers:
        Layer.create(*tup)
    (data, kwargs, kind), = L.average_layers(result, stack=True)
    assert data.shape == (2, 4, 3, 6)
    layer = Layer.create(data, kwargs, kind)
    assert layer.axis_labels == ("group", "AP", "DV", "ML")
    assert [g["experiments"] for g in kwargs["metadata"]["groups"]] == [[1, 2], [3]]
    assert L.individual_stack_layer(result) is None  # not kept: constant memory


def test_individual_stack_layer():
    exps = pd.DataFrame({"id": [5, 6], "structure_id": [385] * 2, "injection_x": 1.0,
                         "injection_y": 1.0, "injection_z": 1.0})
    vols = [(5, np.full((2, 2, 2), 1, np.float32)), (6, np.full((2, 2, 2), 3, np.float32))]
    result = average_projections(vols, exps, AveragingOptions(keep_individual=True),
                                 resolution=100)
    data, kwargs, kind = L.individual_stack_layer(result)
    layer = Layer.create(data, kwargs, kind)
    assert layer.data.shape == (2, 2, 2, 2)
    assert kwargs["metadata"]["experiment_ids"] == [5, 6]
    assert float(layer.data[1].mean()) == 3.0


def test_mask_layer_labels():
    mask = np.zeros((4, 3, 2), bool)
    mask[1, 1, 1] = True
    data, kwargs, kind = L.mask_layer(mask, 100, name="sig")
    layer = Layer.create(data, kwargs, kind)
    assert kind == "labels" and layer.data.sum() == 1
    assert layer.scale.tolist() == [100.0, 100.0, 100.0]
