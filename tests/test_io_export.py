"""Exports: CSV rows with acronyms, NIfTI RAS affines (CCF and MICe), MetaImage, atomic writes."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from napari_allen.atlas.annotation import grid_annotation
from napari_allen.atlas.ontology import Ontology
from napari_allen.io.export import ras_affine, to_csv, to_metaimage, to_nifti
from napari_allen.io.gridzip import read_grid_zip
from napari_allen.io.metaimage import read_metaimage
from napari_allen.io.volume import GridVolume


@pytest.fixture(scope="module")
def nrp1():
    from importlib import resources

    ref = resources.files("napari_allen") / "data" / "ish" / "Nrp1_P56_coronal_74272479_200um.zip"
    return read_grid_zip(ref)[0]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_one_row_per_voxel_with_data(tmp_path, nrp1):
    out = to_csv(nrp1, tmp_path / "nrp1.csv", annotation=grid_annotation(),
                 ontology=Ontology.default())
    rows = _rows(out)
    assert len(rows) == 159_326 - 54_982  # every voxel but the -1s
    assert list(rows[0]) == ["AP_um", "DV_um", "ML_um", "value", "structure_id", "acronym"]
    data = np.asarray(nrp1.data)
    for row in rows[:: 5000]:
        i, j, k = (int(float(row[c])) // 200 for c in ("AP_um", "DV_um", "ML_um"))
        assert float(row["value"]) == pytest.approx(float(data[i, j, k]), rel=1e-6)
        assert int(row["structure_id"]) == int(grid_annotation().data[i, j, k])
    labelled = [r for r in rows if r["structure_id"] != "0"]
    assert labelled and all(r["acronym"] not in ("", "?") for r in labelled)
    assert {"CA1sp", "DG-mo"} <= {r["acronym"] for r in labelled}


def test_csv_without_annotation_and_coordinates(tmp_path):
    grid = np.full((3, 2, 2), -1.0, dtype=np.float32)
    grid[2, 1, 0] = 0.0  # zero is a measurement, kept
    grid[1, 0, 1] = 3.5
    out = to_csv(GridVolume(grid, 100.0, kind="energy"), tmp_path / "g.csv")
    assert _rows(out) == [
        {"AP_um": "100", "DV_um": "0", "ML_um": "100", "value": "3.5"},
        {"AP_um": "200", "DV_um": "100", "ML_um": "0", "value": "0"},
    ]


def test_csv_annotation_at_another_resolution(tmp_path):
    """A 400 µm grid looks its structures up in the 200 µm annotation through µm."""
    ann = grid_annotation()
    coarse = GridVolume(np.ones((34, 21, 29), dtype=np.float32), 400.0, kind="energy")
    rows = _rows(to_csv(coarse, tmp_path / "c.csv", annotation=ann, ontology=Ontology.default()))
    row = next(r for r in rows if r["AP_um"] == "6800" and r["DV_um"] == "4000"
               and r["ML_um"] == "4000")
    assert int(row["structure_id"]) == int(ann.data[34, 20, 20])


def test_csv_annotation_needs_its_ontology(tmp_path, nrp1):
    with pytest.raises(ValueError, match="ontology"):
        to_csv(nrp1, tmp_path / "x.csv", annotation=grid_annotation())
    assert not (tmp_path / "x.csv").exists()


def test_ras_affine_ccf():
    aff = ras_affine(25.0)
    # Voxel (AP=1, DV=0, ML=0) is 25 µm posterior: A decreases.
    np.testing.assert_allclose(aff @ [1, 0, 0, 1], [0, -0.025, 0, 1])
    np.testing.assert_allclose(aff @ [0, 1, 0, 1], [0, 0, -0.025, 1])  # inferior: S decreases
    np.testing.assert_allclose(aff @ [0, 0, 1, 1], [0.025, 0, 0, 1])  # right: R increases
    assert nib.aff2axcodes(aff) == ("P", "I", "R")
    assert np.linalg.det(aff[:3, :3]) > 0  # a proper rotation, no mirror image


def test_ras_affine_mice_matches_minc_pipeline():
    """MICe world (seed 001): X = ML - 5.7, Y = 5.3 - AP, Z = 5.3 - DV (mm), at any res."""
    for res in (200, 25):
        aff = ras_affine(res, "mice")
        ap, dv, ml = 10, 20, 30
        x, y, z, _ = aff @ [ap, dv, ml, 1]
        r = res / 1000
        assert (x, y, z) == pytest.approx((ml * r - 5.7, 5.3 - ap * r, 5.3 - dv * r))
    with pytest.raises(ValueError, match="unknown NIfTI space"):
        ras_affine(25, "mni")


@pytest.mark.parametrize("name", ["nrp1.nii", "nrp1.nii.gz"])
def test_nifti_round_trip(tmp_path, nrp1, name):
    out = to_nifti(nrp1, tmp_path / name)
    img = nib.load(out)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(nrp1.data))
    np.testing.assert_allclose(img.affine, ras_affine(200))
    assert img.header.get_xyzt_units()[0] == "mm"
    assert int(img.header["sform_code"]) == 2
    # The olfactory bulb (AP index ~5) lies anterior (larger A) of the cerebellum (~60).
    assert (img.affine @ [5, 20, 29, 1])[1] > (img.affine @ [60, 20, 29, 1])[1]


def test_nifti_no_data_as_nan(tmp_path, nrp1):
    img = nib.load(to_nifti(nrp1, tmp_path / "n.nii", space="mice", no_data="nan"))
    arr = np.asarray(img.dataobj)
    assert int(np.isnan(arr).sum()) == 54_982 and not (arr == -1).any()


def test_metaimage_round_trip_lazy_source(tmp_path):
    """A memory-mapped 50 µm grid is written plane by plane and reads back identically."""
    shape = (264, 160, 228)
    raw = tmp_path / "src.raw"
    mm = np.memmap(raw, dtype="<f4", mode="w+", shape=shape, order="F")
    mm[5, 6, 7] = 2.5
    mm[-1, -1, -1] = -1
    mm.flush()
    vol = GridVolume(np.memmap(raw, dtype="<f4", mode="r", shape=shape, order="F"), 50.0,
                     kind="projection_density")
    mhd, out_raw = to_metaimage(vol, tmp_path / "out" / "pd")
    assert mhd.suffix == ".mhd" and out_raw.read_bytes() == raw.read_bytes()
    back = read_metaimage(mhd)
    assert back.kind == "unknown" and back.resolution == 50.0  # "pd" names no kind
    assert back.data[5, 6, 7] == 2.5 and back.data[-1, -1, -1] == -1


def test_failed_write_leaves_nothing(tmp_path):
    """An error after data were written (here: raised by the progress callback) or a cancel
    leaves neither the target nor a temporary file."""
    from napari_allen.progress import Cancelled, CancelToken

    def failing_progress(p):
        raise RuntimeError("disk full")

    vol = GridVolume(np.ones((67, 41, 58), dtype=np.float32), 200.0, kind="energy")
    with pytest.raises(RuntimeError, match="disk full"):
        to_metaimage(vol, tmp_path / "x.mhd", progress=failing_progress)
    with pytest.raises(RuntimeError, match="disk full"):
        to_csv(vol, tmp_path / "x.csv", progress=failing_progress)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        to_csv(vol, tmp_path / "y.csv", cancel=token)
    assert list(tmp_path.iterdir()) == []
