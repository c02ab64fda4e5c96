"""npe2 writers: layer -> file -> reader round trips, and [] for layers that are not grids."""

from __future__ import annotations

import csv
from importlib import resources

import nibabel as nib
import numpy as np
import pytest

from napari_allen._reader import get_reader
from napari_allen._writer import (
    layer_to_volume,
    write_csv,
    write_metaimage,
    write_nifti,
    write_spatial_search_json,
)
from napari_allen.io.export import ras_affine

NRP1_ZIP = resources.files("napari_allen") / "data" / "ish" / "Nrp1_P56_coronal_74272479_200um.zip"
PD_NRRD = (resources.files("napari_allen") / "data" / "connectivity" / "158375425"
           / "projection_density_100.nrrd")


@pytest.fixture(scope="module")
def nrp1_layer():
    data, kwargs, _ = get_reader(str(NRP1_ZIP))(str(NRP1_ZIP))[0]
    return data, kwargs


def test_metaimage_round_trip_restores_minus_one(tmp_path, nrp1_layer):
    data, meta = nrp1_layer
    written = write_metaimage(str(tmp_path / "nrp1.mhd"), data, meta)
    assert written == [str(tmp_path / "nrp1.mhd"), str(tmp_path / "nrp1.raw")]
    # Allen's no-data value is back in the file, bit-identical to the served energy.raw.
    import zipfile

    with zipfile.ZipFile(NRP1_ZIP) as zf:
        assert (tmp_path / "nrp1.raw").read_bytes() == zf.read("energy.raw")
    back, kwargs, _ = get_reader(written[0])(written[0])[0]
    np.testing.assert_array_equal(np.isnan(back), np.isnan(data))
    assert kwargs["scale"] == (200.0, 200.0, 200.0)


def test_csv_writer_has_acronyms(tmp_path, nrp1_layer):
    data, meta = nrp1_layer
    (out,) = write_csv(str(tmp_path / "nrp1.csv"), data, meta)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == int(np.isfinite(data).sum())
    assert any(r["acronym"] == "CA1sp" for r in rows)  # pyramidal layer of CA1


def test_csv_writer_connectivity_uses_ccf_annotation(tmp_path):
    data, meta, _ = get_reader(str(PD_NRRD))(str(PD_NRRD))[0]
    sub = data.copy()
    sub[sub < 0.5] = np.nan  # keep the file small: the densest voxels only
    (out,) = write_csv(str(tmp_path / "pd.csv"), sub, meta)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert 0 < len(rows) == int(np.isfinite(sub).sum())
    # 158375425 is a VPM injection: its densest voxels are in the thalamus / nearby.
    acronyms = {r["acronym"] for r in rows}
    assert "VPM" in acronyms


def test_nifti_writer(tmp_path, nrp1_layer):
    data, meta = nrp1_layer
    (out,) = write_nifti(str(tmp_path / "nrp1.nii.gz"), data, meta)
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, ras_affine(200))
    arr = np.asarray(img.dataobj)
    assert int((arr == -1).sum()) == 54_982


def test_not_an_allen_grid_writes_nothing(tmp_path):
    photo = np.zeros((512, 512), dtype=np.uint8)
    assert write_csv(str(tmp_path / "a.csv"), photo, {"scale": (1, 1)}) == []
    stack = np.zeros((10, 20, 30), dtype=np.float32)
    assert write_metaimage(str(tmp_path / "b.mhd"), stack, {"scale": (1, 1, 1)}) == []
    aniso = np.zeros((67, 41, 58), dtype=np.float32)
    assert write_nifti(str(tmp_path / "c.nii"), aniso, {"scale": (200, 100, 200)}) == []
    assert list(tmp_path.iterdir()) == []


def test_bare_allen_shaped_array_is_writable(tmp_path):
    """A grid-shaped array added without scale gets the grid's resolution."""
    arr = np.arange(67 * 41 * 58, dtype=np.float32).reshape(67, 41, 58)
    vol = layer_to_volume(arr, {"scale": (1, 1, 1), "metadata": {}})
    assert vol is not None and vol.resolution == 200.0
    out = write_metaimage(str(tmp_path / "x.mhd"), arr, {"scale": (1, 1, 1)})
    assert len(out) == 2


def test_spatial_search_writer_delegates(tmp_path, monkeypatch):
    import sys
    import types

    fake = types.ModuleType("napari_allen.io.lines_json")
    fake.write_lines_json_from_layer = lambda path, data, meta: [str(path)]
    monkeypatch.setitem(sys.modules, "napari_allen.io.lines_json", fake)
    assert write_spatial_search_json(str(tmp_path / "l.json"), [], {}) == [
        str(tmp_path / "l.json")]
