"""``napari-allen export``: Allen grids to CSV / NIfTI / MetaImage without napari."""

from __future__ import annotations

import os
import stat
from importlib import resources

import nibabel as nib
import numpy as np
import pandas as pd

from napari_allen.cli import main
from napari_allen.commands.export import output_name
from napari_allen.io import read_volumes

NRP1_ZIP = resources.files("napari_allen") / "data" / "ish" / "Nrp1_P56_coronal_74272479_200um.zip"


def test_output_name():
    assert output_name("Nrp1 energy (exp 74272479)") == "Nrp1_energy_exp_74272479"
    assert output_name("annotation (25 µm)") == "annotation_25_m"


def test_export_csv_with_structures(tmp_path, capsys):
    assert main(["export", str(NRP1_ZIP), "--to", "csv", "--out", str(tmp_path)]) == 0
    out = tmp_path / "Nrp1_energy_exp_74272479.csv"
    assert capsys.readouterr().out.strip() == str(out)
    table = pd.read_csv(out)
    (energy,) = read_volumes(str(NRP1_ZIP))
    data = np.asarray(energy.data)
    assert len(table) == int((data != -1).sum())  # one row per voxel with data
    assert list(table.columns) == ["AP_um", "DV_um", "ML_um", "value", "structure_id", "acronym"]
    # The highest-energy voxel's row: µm = index * 200, same value.
    i, j, k = np.unravel_index(np.argmax(data), data.shape)
    row = table.loc[table["value"].idxmax()]
    assert (row["AP_um"], row["DV_um"], row["ML_um"]) == (i * 200, j * 200, k * 200)
    assert np.float32(row["value"]) == data.max()  # float32 survives the text round trip
    # Created with the usual permissions (not mkstemp's 0600), so others can read exports.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_export_nifti_and_metaimage_round_trip(tmp_path):
    assert main(["export", str(NRP1_ZIP), "--to", "nifti", "--no-data", "nan",
                 "--out", str(tmp_path)]) == 0
    image = nib.load(tmp_path / "Nrp1_energy_exp_74272479.nii.gz")
    assert image.shape == (67, 41, 58) or sorted(image.shape) == sorted((67, 41, 58))
    assert np.isnan(image.get_fdata()).any()

    assert main(["export", str(NRP1_ZIP), "--to", "mhd", "--out", str(tmp_path)]) == 0
    (again,) = read_volumes(str(tmp_path / "Nrp1_energy_exp_74272479.mhd"))
    (original,) = read_volumes(str(NRP1_ZIP))
    np.testing.assert_array_equal(np.asarray(again.data), np.asarray(original.data))


def test_export_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "energy.raw"
    bad.write_bytes(b"\0" * 1000)  # not any Allen grid size
    assert main(["export", str(bad), "--to", "csv", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "energy.raw" in err
    assert not list((tmp_path / "o").glob("*.csv"))
