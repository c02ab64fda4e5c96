"""The npe2 reader: hits for every Allen format, fast misses for everything else, and the real
napari paths (npe2.read and ViewerModel.open with plugin="napari-allen")."""

from __future__ import annotations

import gzip
import json
import time
import zipfile
from importlib import resources

import numpy as np
import pytest

from napari_allen._reader import FORMATS, find_format, get_reader
from napari_allen.errors import AllenFormatError

DATA = resources.files("napari_allen") / "data"
NRP1_ZIP = DATA / "ish" / "Nrp1_P56_coronal_74272479_200um.zip"
PD_NRRD = DATA / "connectivity" / "158375425" / "projection_density_100.nrrd"


@pytest.fixture
def nrp1_folder(tmp_path):
    with zipfile.ZipFile(NRP1_ZIP) as zf:
        zf.extractall(tmp_path / "74272479")
    return tmp_path / "74272479"


# --- hits ---------------------------------------------------------------------------------

def test_zip_hit_gives_named_scaled_image():
    reader = get_reader(str(NRP1_ZIP))
    assert callable(reader)
    (data, kwargs, layer_type), = reader(str(NRP1_ZIP))
    assert layer_type == "image"
    assert kwargs["name"] == "Nrp1 energy (exp 74272479)"
    assert kwargs["scale"] == (200.0, 200.0, 200.0)
    assert kwargs["axis_labels"] == ("AP", "DV", "ML") and kwargs["units"] == ("um",) * 3
    assert int(np.isnan(data).sum()) == 54_982  # -1 shown as no data
    lo, hi = kwargs["contrast_limits"]
    assert lo == 0.0 and 10 < hi <= 25.91
    meta = kwargs["metadata"]
    assert meta["experiment_id"] == 74272479 and meta["gene"] == "Nrp1"
    assert meta["plane"] == "coronal" and meta["kind"] == "energy"
    assert meta["resolution"] == 200.0 and meta["source"].endswith(".zip")


@pytest.mark.parametrize("member", [None, "energy.mhd", "energy.raw"])
def test_folder_mhd_and_raw_hits(nrp1_folder, member):
    path = nrp1_folder if member is None else nrp1_folder / member
    reader = get_reader(str(path))
    assert reader is not None
    (data, kwargs, layer_type), = reader(str(path))
    assert layer_type == "image" and data.shape == (67, 41, 58)
    assert kwargs["metadata"]["experiment_id"] == 74272479


def test_bare_raw_hit(tmp_path):
    with zipfile.ZipFile(NRP1_ZIP) as zf:
        (tmp_path / "energy.raw").write_bytes(zf.read("energy.raw"))
    assert find_format(tmp_path / "energy.raw").name == "bare raw"


def test_annotation_zip_becomes_labels():
    path = DATA / "annotation" / "P56_Mouse_gridAnnotation.zip"
    (data, kwargs, layer_type), = get_reader(str(path))(str(path))
    assert layer_type == "labels" and data.dtype == np.uint16
    features = kwargs["features"]
    assert list(features.columns[:4]) == ["index", "structure_id", "acronym", "name"]
    # Every compact value on screen has a feature row with a real acronym.
    present = np.unique(data)
    rows = features.set_index("index").loc[present]
    assert (rows.loc[present[1:], "acronym"] != "?").all()
    assert all(int(v) in kwargs["colormap"].color_dict for v in present)


def test_nrrd_hit():
    (data, kwargs, layer_type), = get_reader(str(PD_NRRD))(str(PD_NRRD))
    assert layer_type == "image" and data.shape == (132, 80, 114)
    assert kwargs["colormap"] == "inferno" and kwargs["scale"] == (100.0,) * 3


def test_list_of_paths(nrp1_folder):
    paths = [str(NRP1_ZIP), str(PD_NRRD)]
    layers = get_reader(paths)(paths)
    assert [k["metadata"]["kind"] for _, k, _ in layers] == ["energy", "projection_density"]
    assert get_reader([str(NRP1_ZIP), str(nrp1_folder / "data_set.xml")]) is None
    assert get_reader([]) is None


def test_allen_named_broken_file_is_claimed_and_explained(tmp_path):
    bad = tmp_path / "energy.raw"
    bad.write_bytes(b"\0" * 1000)
    reader = get_reader(str(bad))
    assert reader is not None
    with pytest.raises(AllenFormatError, match="cannot infer the grid"):
        reader(str(bad))


# --- misses -------------------------------------------------------------------------------

def _misses(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    odd_raw = tmp_path / "camera.raw"
    with open(odd_raw, "wb") as fh:
        fh.truncate(1_000_000_007)  # 1 GB, not a grid: must not be read
    other_mhd = tmp_path / "ct.mhd"
    other_mhd.write_text("ObjectType = Image\nNDims = 3\nDimSize = 512 512 100\n"
                         "ElementType = MET_SHORT\nElementDataFile = ct.raw\n")
    plain_zip = tmp_path / "photos.zip"
    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("a.txt", "hi")
    other_json = tmp_path / "config.json"
    other_json.write_text(json.dumps({"hello": 1}))
    img_nrrd = tmp_path / "scan.nrrd"
    img_nrrd.write_bytes(b"NRRD0004\ntype: uchar\ndimension: 2\nsizes: 4 4\nencoding: raw\n\n"
                         + bytes(16))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    gz = tmp_path / "table.csv.gz"
    gz.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    return [png, odd_raw, other_mhd, plain_zip, other_json, img_nrrd, empty_dir, gz,
            tmp_path / "missing.mhd"]


def test_non_allen_files_return_none_fast(tmp_path):
    for path in _misses(tmp_path):
        start = time.perf_counter()
        assert get_reader(str(path)) is None, path
        assert time.perf_counter() - start < 0.5, f"slow miss for {path.name}"


# --- the format table ---------------------------------------------------------------------

def test_format_table_order():
    names = [entry.name for entry in FORMATS]
    assert names == ["spatial-search lines JSON", "whole-plane Zarr store", "grid folder",
                     "grid zip", "MetaImage", "bare raw", "NRRD"]


def test_plane_store_folder_opens_as_one_4d_layer(tmp_path):
    import pandas as pd

    from napari_allen.io.plane_store import PlaneStore

    table = pd.DataFrame({"experiment_id": [1, 2], "gene": ["Nrp1", "Gad1"],
                          "gene_name": ["", ""], "plane": "coronal", "section_thickness": 25})
    store = PlaneStore.create(tmp_path / "coronal.zarr", table)
    store.write(1, np.full((67, 41, 58), 2.0, np.float32))
    assert find_format(tmp_path / "coronal.zarr").name == "whole-plane Zarr store"
    ((data, kwargs, kind),) = get_reader(str(tmp_path / "coronal.zarr"))(
        str(tmp_path / "coronal.zarr"))
    assert kind == "image" and data.shape == (2, 67, 41, 58)
    (empty := tmp_path / "other.zarr").mkdir()
    assert get_reader(str(empty)) is None  # an unrelated folder is not claimed


# --- through napari -----------------------------------------------------------------------

def test_npe2_read_uses_this_plugin():
    npe2 = pytest.importorskip("npe2")
    npe2.PluginManager.instance().discover()  # napari does this at start-up
    layers = npe2.read([str(NRP1_ZIP)], stack=False, plugin_name="napari-allen")
    assert len(layers) == 1 and layers[0][1]["name"] == "Nrp1 energy (exp 74272479)"


def test_viewer_model_open_with_plugin(nrp1_folder):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    layers = viewer.open(str(nrp1_folder / "energy.mhd"), plugin="napari-allen")
    (layer,) = layers
    assert layer.name == "Nrp1 energy (exp 74272479)"
    np.testing.assert_allclose(layer.scale, (200, 200, 200))
    assert tuple(layer.axis_labels) == ("AP", "DV", "ML")
    assert str(layer.units[0]) in ("micrometer", "um")
    # A world point in µm maps to the voxel at point/200 (voxel centres at i*res).
    assert layer.world_to_data((1000, 2000, 3000)) == pytest.approx((5, 10, 15))


