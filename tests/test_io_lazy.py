"""A generated sparse 10 µm grid (4.8 GB on paper, no disk blocks) opens lazily."""

from __future__ import annotations

import dask.array as da
import numpy as np
import psutil
import pytest

from napari_allen.io import read_volumes
from napari_allen.layers.volumes import image_layer, labels_layer

SHAPE_10 = (1320, 800, 1140)
N_BYTES_10 = 1320 * 800 * 1140 * 4
MB = 1024 * 1024


def _header(stem: str, etype: str) -> str:
    return ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            "ElementSpacing = 10 10 10\nDimSize = 1320 800 1140\n"
            f"ElementType = {etype}\nElementDataFile = {stem}.raw\n")


@pytest.fixture
def sparse_10um(tmp_path):
    def make(stem: str = "projection_density", etype: str = "MET_FLOAT", value=None):
        (tmp_path / f"{stem}.mhd").write_text(_header(stem, etype))
        raw = tmp_path / f"{stem}.raw"
        with open(raw, "wb") as fh:
            fh.truncate(N_BYTES_10)
        if value is not None:  # one real voxel at (AP=600, DV=400, ML=570)
            with open(raw, "r+b") as fh:
                fh.seek(4 * (600 + 1320 * (400 + 800 * 570)))
                fh.write(np.asarray([value], dtype="<" + ("f4" if etype == "MET_FLOAT"
                                                          else "u4")).tobytes())
        return tmp_path / f"{stem}.mhd"

    return make


def _rss() -> int:
    return psutil.Process().memory_info().rss


def test_10um_metaimage_opens_without_reading(sparse_10um):
    mhd = sparse_10um(value=0.75)
    before = _rss()
    (vol,) = read_volumes(mhd)
    assert isinstance(vol.data, np.memmap)
    assert vol.shape == SHAPE_10 and vol.resolution == 10.0
    assert _rss() - before < 50 * MB
    assert float(vol.data[600, 400, 570]) == 0.75


def test_10um_image_layer_stays_lazy(sparse_10um):
    (vol,) = read_volumes(sparse_10um(value=0.75))
    before = _rss()
    data, kwargs, layer_type = image_layer(vol)
    assert layer_type == "image" and isinstance(data, da.Array)
    assert data.shape == SHAPE_10 and data.dtype == np.float32
    # Contrast from a few contiguous ML planes, never the whole 4.8 GB.
    assert _rss() - before < 200 * MB
    assert kwargs["scale"] == (10.0, 10.0, 10.0)
    # One sagittal plane (contiguous on disk) computes only what it needs.
    plane = np.asarray(data[:, :, 570])
    assert plane.shape == (1320, 800) and plane[600, 400] == pytest.approx(0.75)
    assert np.isnan(plane).sum() == 0 and (plane == 0).sum() == 1320 * 800 - 1


def test_10um_annotation_labels_stay_lazy(sparse_10um):
    (vol,) = read_volumes(sparse_10um("annotation_10", "MET_UINT", value=733))
    assert vol.kind == "annotation"
    before = _rss()
    data, kwargs, layer_type = labels_layer(vol)
    assert layer_type == "labels" and isinstance(data, da.Array)
    assert _rss() - before < 200 * MB
    value = int(np.asarray(data[600, 400, 570]))
    row = kwargs["features"].iloc[value]
    assert row["acronym"] == "VPM" and row["structure_id"] == 733
    assert int(np.asarray(data[0, 0, 0])) == 0


def test_small_memmapped_grid_becomes_a_plain_array(tmp_path):
    """A 100 µm grid memory-mapped from the decoded cache reaches napari as an in-memory array,
    not dask: napari's global dask cache is not thread-safe, and workers build layers while the
    main thread slices others."""
    from napari_allen.io.volume import GridVolume

    shape = (132, 80, 114)
    path = tmp_path / "density.f4"
    mapped = np.memmap(path, dtype="<f4", mode="w+", shape=shape, order="F")
    mapped[:] = 0.5
    mapped[3, 4, 5] = -1  # no data
    mapped.flush()
    vol = GridVolume(data=np.memmap(path, dtype="<f4", mode="r", shape=shape, order="F"),
                     resolution=100, kind="projection_density")
    data, kwargs, _ = image_layer(vol)
    assert isinstance(data, np.ndarray) and not isinstance(data, da.Array)
    assert data.shape == shape and np.isnan(data[3, 4, 5]) and data[0, 0, 0] == 0.5
    assert kwargs["scale"] == (100.0, 100.0, 100.0)
