"""Layer builders of the gene-expression workflows, the similarity pipeline, the reader hook."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from napari_allen.analysis.correlation import structure_similarity
from napari_allen.analysis.expression import structure_centroids
from napari_allen.atlas.annotation import grid_annotation
from napari_allen.atlas.ontology import Ontology
from napari_allen.io.plane_store import ISH_SHAPE, PlaneStore
from napari_allen.layers.expression import (
    connections_layer,
    correlation_heatmap_layer,
    expression_table_for,
    heatmap_rgba,
)


@pytest.fixture(scope="module")
def annotation() -> np.ndarray:
    return np.asarray(grid_annotation().data)


def test_centroids_in_um_and_one_hemisphere(annotation):
    onto = Ontology.default()
    visp = onto.id_of("VISp")
    cents = structure_centroids(annotation, 200.0, [visp], onto).set_index("structure_id")
    idx = np.argwhere(np.isin(annotation, onto.descendants(visp)))
    right = idx[idx[:, 2] > (annotation.shape[2] - 1) / 2]
    assert cents.loc[visp, "n_voxels"] == len(right)
    assert np.allclose(cents.loc[visp, ["ap_um", "dv_um", "ml_um"]].to_numpy(float),
                       right.mean(axis=0) * 200.0)
    assert cents.loc[visp, "ml_um"] > 5700  # Allen's right hemisphere (PIR, high ML)
    both = structure_centroids(annotation, 200.0, [visp], onto, hemisphere="both")
    assert abs(both["ml_um"].iloc[0] - 5700) < 300  # bilateral: near the midline
    with pytest.raises(ValueError, match="hemisphere"):
        structure_centroids(annotation, 200.0, [visp], onto, hemisphere="top")


def test_connections_layer_lines_features_and_styling(annotation):
    onto = Ontology.default()
    conns = pd.DataFrame({"source": onto.ids_of(["VISp", "CA1", "MOp"]),
                          "target": [*onto.ids_of(["VISl", "CA3"]), 999999999],
                          "corr": [0.9, 0.6, 0.95]})
    data, kwargs, layer_type = connections_layer(conns, annotation, 200.0, onto)
    assert layer_type == "shapes" and kwargs["shape_type"] == "line"
    assert len(data) == 2  # the unknown structure has no centroid: dropped
    assert all(line.shape == (2, 3) for line in data)
    features = kwargs["features"]
    assert features["source_acronym"].tolist() == ["VISp", "CA1"]
    assert features["r"].tolist() == [0.9, 0.6]
    assert kwargs["edge_width"][0] > kwargs["edge_width"][1]  # stronger r, wider line
    from napari.layers import Layer

    layer = Layer.create(data, kwargs, layer_type)
    assert layer.ndim == 3 and len(layer.data) == 2
    empty = Layer.create(*connections_layer(conns.iloc[:0], annotation, 200.0, onto))
    assert empty.ndim == 3 and len(empty.data) == 0


def test_heatmap_colours_and_layer():
    rgba = heatmap_rgba(np.array([[1.0, -1.0], [0.0, np.nan]]))
    assert rgba.dtype == np.uint8 and rgba.shape == (2, 2, 4)
    assert tuple(rgba[0, 0, :3]) == (255, 51, 51)    # +1 red
    assert tuple(rgba[0, 1, :3]) == (51, 51, 255)    # -1 blue
    assert tuple(rgba[1, 0, :3]) == (255, 255, 255)  # 0 white
    assert tuple(rgba[1, 1, :3]) == (128, 128, 128)  # missing grey
    data, kwargs, kind = correlation_heatmap_layer(np.eye(2), [385, 409])
    assert kind == "image" and kwargs["contrast_limits"] == (-1.0, 1.0)
    assert kwargs["metadata"]["structures"]["acronym"].tolist() == ["VISp", "VISl"]


def test_structure_similarity_pipeline():
    rng = np.random.default_rng(0)
    matrix = pd.DataFrame(rng.normal(size=(30, 12)), index=range(100, 130))
    matrix.iloc[0, :10] = np.nan  # only 2 experiments: below min_periods=3
    result = structure_similarity(matrix, top_n=20, method="pairwise")
    assert result.corr.shape == (30, 30) and result.structure_ids[0] == 100
    assert np.isnan(result.corr[0, 1]) and len(result.connections) == 19
    assert result.n_experiments == 12 and result.method == "pairwise"
    script = structure_similarity(matrix, top_n=20)  # default: the script's numpy.ma
    assert script.method == "numpy_ma_legacy" and np.isfinite(script.corr[0, 1])


def test_expression_table_for_layer_data(annotation):
    ish = resources.files("napari_allen") / "data" / "ish"
    zip_ref = ish / "Nrp1_P56_coronal_74272479_200um.zip"
    from napari_allen.io.gridzip import read_grid_zip

    (vol,) = [v for v in read_grid_zip(zip_ref) if v.kind == "energy"]
    shown = np.where(np.asarray(vol.data) == -1, np.nan, vol.data)  # as the image layer holds it
    table = expression_table_for(shown)
    assert table.set_index("acronym").loc["root", "n_valid"] == (
        (annotation > 0) & np.isfinite(shown)).sum()
    with pytest.raises(ValueError, match="200 µm ISH grid"):
        expression_table_for(np.zeros((5, 5, 5)))


def test_reader_opens_a_plane_store(tmp_path):
    from napari_allen._reader import get_reader

    table = pd.DataFrame({"experiment_id": [1, 2], "gene": ["A", "B"], "plane": "sagittal"})
    store = PlaneStore.create(tmp_path / "p.zarr", table)
    store.write(2, np.ones(ISH_SHAPE))
    reader = get_reader(str(tmp_path / "p.zarr"))
    assert reader is not None
    ((data, kwargs, kind),) = reader(str(tmp_path / "p.zarr"))
    assert kind == "image" and data.shape == (2, *ISH_SHAPE)
    assert kwargs["name"].startswith("sagittal energy")
