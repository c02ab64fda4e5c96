"""The local server marks what it synthesises inside the bytes it serves (zip comment, .mhd key,
NRRD key/value, <synthetic> in data_set.xml), and a download opens flagged even without the
cache's records (issue #9 item 3). Real HTTP to the local server."""

from __future__ import annotations

import io
import shutil
import zipfile

import requests

from napari_allen import cli
from napari_allen.io.gridzip import read_grid_zip
from napari_allen.io.nrrd import read_nrrd
from napari_allen.io.provenance import (
    MHD_SYNTHETIC_LINE,
    NRRD_SYNTHETIC_LINE,
    SYNTHETIC_ZIP_COMMENT,
    XML_SYNTHETIC_ELEMENT,
)

NRP1 = 74272479  # a real grid bundled with the package
VPM = 158375425  # real connectivity NRRDs at 100 µm


def _synthetic_ish_id(client) -> int:
    return int(client.search_ish(["Gad1"], plane="coronal")["experiment_id"].iloc[0])


def _synthetic_connectivity_id(client) -> int:
    ids = client.connectivity_experiments()["id"].astype(int)
    return int(next(i for i in ids if i != VPM))


def test_synthetic_zip_carries_every_mark(client, allen_api):
    eid = _synthetic_ish_id(client)
    body = requests.get(f"{allen_api.url}/grid_data/download/{eid}", timeout=30).content
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.comment == SYNTHETIC_ZIP_COMMENT
    assert MHD_SYNTHETIC_LINE in zf.read("energy.mhd").decode()
    assert zf.read("energy.mhd").decode().rstrip().splitlines()[-1].startswith("ElementDataFile")
    assert XML_SYNTHETIC_ELEMENT in zf.read("data_set.xml").decode()
    real = zipfile.ZipFile(io.BytesIO(requests.get(
        f"{allen_api.url}/grid_data/download/{NRP1}", timeout=30).content))
    assert real.comment == b"" and MHD_SYNTHETIC_LINE not in real.read("energy.mhd").decode()


def test_synthetic_nrrd_carries_the_key(client, allen_api):
    eid = _synthetic_connectivity_id(client)
    body = requests.get(f"{allen_api.url}/grid_data/download_file/{eid}?image="
                        "projection_density&resolution=100", timeout=60).content
    header = body.split(b"\n\n", 1)[0].decode()
    assert NRRD_SYNTHETIC_LINE in header.splitlines()
    real = requests.get(f"{allen_api.url}/grid_data/download_file/{VPM}?image="
                        "projection_density&resolution=100", timeout=60).content
    assert NRRD_SYNTHETIC_LINE.encode() not in real.split(b"\n\n", 1)[0]


def test_a_downloaded_synthetic_grid_opens_flagged_anywhere(client, allen_api, tmp_path):
    eid = _synthetic_ish_id(client)
    out = tmp_path / "out"
    assert cli.main(["download", "--experiments", str(eid), str(NRP1), "--out",
                     str(out)]) == 0
    # A copy somewhere else: no manifest, no sidecar beside it; the mark travels in the file.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / "grid.zip"
    shutil.copyfile(out / f"{eid}_energy_200um.zip", copy)
    (vol,) = read_grid_zip(copy)
    assert vol.metadata.get("synthetic") is True and "[synthetic]" in vol.name
    shutil.copyfile(out / f"{NRP1}_energy_200um.zip", elsewhere / "real.zip")
    (real,) = read_grid_zip(elsewhere / "real.zip")
    assert "synthetic" not in real.metadata


def test_a_downloaded_synthetic_nrrd_opens_flagged(client, allen_api, tmp_path):
    eid = _synthetic_connectivity_id(client)
    path = client.grid_nrrd(eid, "projection_density", 100)
    copy = tmp_path / "copy.nrrd"
    shutil.copyfile(path, copy)
    assert read_nrrd(copy).metadata.get("synthetic") is True
