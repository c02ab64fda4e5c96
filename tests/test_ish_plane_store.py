"""The whole-plane Zarr store: layout, resume bookkeeping, lazy reading, layers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_allen.analysis.expression import rank_experiments
from napari_allen.errors import AllenFormatError
from napari_allen.io.plane_store import (
    ISH_SHAPE,
    PlaneStore,
    looks_like_plane_store,
    open_plane_store,
)
from napari_allen.layers.expression import describe_experiment, experiment_at, plane_store_layers


def _table(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "experiment_id": np.arange(1000, 1000 + n),
        "gene": [f"G{i}" for i in range(n)],
        "gene_name": [f"gene {i}" for i in range(n)],
        "plane": "coronal",
        "section_thickness": 25,
    })


def _grid(value: float) -> np.ndarray:
    grid = np.full(ISH_SHAPE, value, dtype=np.float32)
    grid[0] = -1.0  # Allen's no-data
    return grid


def test_layout_table_attrs_and_completion(tmp_path):
    path = tmp_path / "coronal.zarr"
    store = PlaneStore.create(path, _table(4))
    assert looks_like_plane_store(path)
    assert not looks_like_plane_store(tmp_path)
    assert store.pending() == [1000, 1001, 1002, 1003]
    store.write(1002, _grid(3.0))
    store.write(1000, _grid(1.0))
    assert store.completed() == {1000, 1002}
    assert store.pending() == [1001, 1003]
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    meta = attrs["napari_allen_plane_store"]
    assert meta["plane"] == "coronal" and meta["resolution_um"] == 200.0
    assert meta["axes"] == ["experiment", "AP", "DV", "ML"]
    assert meta["experiment_ids"] == [1000, 1001, 1002, 1003]
    assert pd.read_csv(path / "experiments.csv")["gene"].tolist() == ["G0", "G1", "G2", "G3"]
    reopened = open_plane_store(path)
    raw = reopened.read(1002)
    assert raw[0, 0, 0] == -1.0 and raw[5, 5, 5] == 3.0  # raw values kept
    assert np.isnan(reopened.read(1001)).all()           # not written yet: NaN fill
    data = reopened.to_dask()
    assert data.shape == (4, *ISH_SHAPE) and data.chunksize == (1, *ISH_SHAPE)
    one = data[2].compute()
    assert np.isnan(one[0]).all() and one[5, 5, 5] == 3.0


def test_resume_and_refuse_other_content(tmp_path):
    path = tmp_path / "s.zarr"
    first = PlaneStore.create(path, _table(3))
    first.write(1001, _grid(2.0))
    again = PlaneStore.create(path, _table(3))      # same experiments: resumes
    assert again.completed() == {1001}
    with pytest.raises(AllenFormatError, match="other experiments"):
        PlaneStore.create(path, _table(5))
    fresh = PlaneStore.create(path, _table(5), overwrite=True)
    assert fresh.completed() == set() and len(fresh) == 5
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("hello")
    with pytest.raises(AllenFormatError, match="not a napari-allen plane store"):
        PlaneStore.create(junk, _table(2))
    with pytest.raises(AllenFormatError, match="not a napari-allen plane store"):
        open_plane_store(junk)


def test_truncated_completion_line_is_ignored(tmp_path):
    store = PlaneStore.create(tmp_path / "s.zarr", _table(3))
    store.write(1000, _grid(1.0))
    with open(tmp_path / "s.zarr" / "completed.txt", "a") as fh:
        fh.write("10")  # a crash mid-line
    assert store.completed() == {1000}


def test_write_rejects_wrong_shape_and_unknown_id(tmp_path):
    store = PlaneStore.create(tmp_path / "s.zarr", _table(2))
    with pytest.raises(AllenFormatError, match="does not match"):
        store.write(1000, np.zeros((5, 5, 5)))
    with pytest.raises(KeyError, match="not in the store"):
        store.write(42, _grid(1.0))


def test_values_at_mean_in_and_ranking(tmp_path):
    store = PlaneStore.create(tmp_path / "s.zarr", _table(4))
    for i, value in enumerate([1.0, 5.0, 3.0]):
        store.write(1000 + i, _grid(value))
    values = store.values_at((10, 20, 30))
    assert values[:3].tolist() == [1.0, 5.0, 3.0] and np.isnan(values[3])
    assert np.isnan(store.values_at((0, 0, 0))[:3]).all()  # -1 -> NaN
    mask = np.zeros(ISH_SHAPE, dtype=bool)
    mask[0, :2] = True   # no data there
    mask[3, :2] = True
    assert store.mean_in(mask)[:3].tolist() == [1.0, 5.0, 3.0]
    ranked = rank_experiments(values, store.table)
    assert ranked["gene"].tolist() == ["G1", "G2", "G0"]
    assert ranked["rank"].tolist() == [1, 2, 3]
    assert rank_experiments(values, store.table, top=1)["experiment_id"].tolist() == [1001]
    with pytest.raises(IndexError):
        store.values_at((67, 0, 0))


def test_plane_store_layer_is_lazy_4d_with_the_table(tmp_path):
    store = PlaneStore.create(tmp_path / "s.zarr", _table(3))
    store.write(1001, _grid(4.0))
    ((data, kwargs, layer_type),) = plane_store_layers(tmp_path / "s.zarr")
    assert layer_type == "image"
    # Lazy, and not dask: the layer is built in a worker (napari's dask cache is global).
    assert data.shape == (3, *ISH_SHAPE) and data.dtype == np.float32
    assert not isinstance(data, np.ndarray) and not hasattr(data, "dask")
    assert np.isnan(data[0]).all()  # not written yet
    assert np.nanmax(data[1]) == 4.0 and np.isnan(data[1, 0]).all()  # Allen's -1 as NaN
    assert kwargs["scale"] == (1.0, 200.0, 200.0, 200.0)
    assert kwargs["axis_labels"] == ("experiment", "AP", "DV", "ML")
    assert kwargs["contrast_limits"] == (0.0, 4.0)
    row = experiment_at(kwargs["metadata"], 1)
    assert row["gene"] == "G1" and row["experiment_id"] == 1001
    assert describe_experiment(row) == "G1 (gene 1) · exp 1001 · coronal"
    assert experiment_at(kwargs["metadata"], 7) is None


def test_napari_slider_reads_one_chunk(tmp_path, monkeypatch):
    from napari.components import ViewerModel
    from napari.layers import Layer

    store = PlaneStore.create(tmp_path / "s.zarr", _table(5))
    for i in range(5):
        store.write(1000 + i, _grid(float(i)))
    (layer_tuple,) = plane_store_layers(tmp_path / "s.zarr")
    reads: list = []
    import zarr

    original = zarr.Array.__getitem__

    def counting(self, selection):
        reads.append(selection)
        return original(self, selection)

    monkeypatch.setattr(zarr.Array, "__getitem__", counting)
    viewer = ViewerModel()
    layer = viewer.add_layer(Layer.create(*layer_tuple))
    reads.clear()
    viewer.dims.set_current_step(0, 3)
    assert reads, "moving the slider must read the store"
    touched = set()
    for sel in reads:
        first = sel[0] if isinstance(sel, tuple) else sel
        touched.add((first.start, first.stop) if isinstance(first, slice) else (first, first + 1))
    assert touched == {(3, 4)}, touched
    assert float(np.nanmax(np.asarray(layer._slice.image.view))) == 3.0
