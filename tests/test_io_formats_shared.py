"""One parser per format: the download verifier, the readers and the local server agree on
element sizes (MET_LONG is 4 bytes everywhere) and on the in-band synthetic marks."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pytest

from napari_allen.api.cache import verify_grid_zip, verify_nrrd
from napari_allen.errors import AllenFormatError
from napari_allen.io import read_volumes
from napari_allen.io.elements import MET_TYPES, NRRD_TYPES, met_name, nrrd_name
from napari_allen.io.provenance import (
    MHD_SYNTHETIC_LINE,
    NRRD_SYNTHETIC_LINE,
    SYNTHETIC_ZIP_COMMENT,
    XML_SYNTHETIC_ELEMENT,
)


def _mhd(shape, etype, extra=""):
    return (f"ObjectType = Image\nNDims = 3\nBinaryDataByteOrderMSB = False\n"
            f"ElementSpacing = 200 200 200\nDimSize = {shape[0]} {shape[1]} {shape[2]}\n"
            f"ElementType = {etype}\n{extra}ElementDataFile = energy.raw\n").encode()


def _zip(path, members, comment=b""):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.comment = comment
    return path


@pytest.mark.parametrize("etype", sorted(MET_TYPES))
def test_verifier_and_reader_agree_on_every_element_type(tmp_path, etype):
    shape = (3, 4, 5)
    itemsize = np.dtype(MET_TYPES[etype]).itemsize
    payload = bytes(range(256)) * (60 * itemsize // 256 + 1)
    path = _zip(tmp_path / "x.zip", {"energy.mhd": _mhd(shape, etype),
                                     "energy.raw": payload[:60 * itemsize]})
    verify_grid_zip(path, ["energy"], "src")  # the download check accepts it...
    (vol,) = read_volumes(path)  # ...and the reader opens it with the same size
    assert vol.dtype.itemsize == itemsize and vol.shape == shape


def test_met_long_is_four_bytes_for_the_verifier_too(tmp_path):
    path = _zip(tmp_path / "x.zip", {"energy.mhd": _mhd((2, 2, 2), "MET_LONG"),
                                     "energy.raw": bytes(64)})
    with pytest.raises(AllenFormatError, match="promises 32"):
        verify_grid_zip(path, ["energy"], "src")


def test_writer_names_round_trip_through_the_tables():
    for code in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"):
        assert MET_TYPES[met_name(np.dtype(code))] == code
        assert NRRD_TYPES[nrrd_name(np.dtype(code))] == code
    with pytest.raises(ValueError):
        met_name(np.dtype("c8"))


def _nrrd_bytes(values, extra=""):
    header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\n"
              f"space directions: (50,0,0) (0,50,0) (0,0,50)\nendian: little\n"
              f"encoding: gzip\n{extra}\n")
    return header.encode() + gzip.compress(values.astype("<f4").tobytes(order="F"))


def test_nrrd_verifier_uses_the_reader_parser(tmp_path):
    path = tmp_path / "a.nrrd"
    path.write_bytes(_nrrd_bytes(np.arange(8.0)))
    verify_nrrd(path, "src")
    path.write_bytes(_nrrd_bytes(np.arange(8.0), "data file: ../../etc/passwd\n"))
    with pytest.raises(AllenFormatError, match="detached"):
        verify_nrrd(path, "src")


def test_every_in_band_mark_is_detected(tmp_path):
    shape = (2, 2, 2)
    raw = np.arange(8, dtype="<f4").tobytes(order="F")
    plain = {"energy.mhd": _mhd(shape, "MET_FLOAT"), "energy.raw": raw}
    (vol,) = read_volumes(_zip(tmp_path / "plain.zip", plain))
    assert not vol.metadata.get("synthetic") and "[synthetic]" not in vol.name
    marked = {
        "comment": (plain, SYNTHETIC_ZIP_COMMENT),
        "mhd": ({"energy.mhd": _mhd(shape, "MET_FLOAT", MHD_SYNTHETIC_LINE + "\n"),
                 "energy.raw": raw}, b""),
        "xml": (dict(plain, **{"data_set.xml": (
            f"<section-data-set><id>5</id>{XML_SYNTHETIC_ELEMENT}</section-data-set>")}), b""),
    }
    for name, (members, comment) in marked.items():
        (vol,) = read_volumes(_zip(tmp_path / f"{name}.zip", members, comment))
        assert vol.metadata["synthetic"] is True and "[synthetic]" in vol.name, name
    nrrd = tmp_path / "projection_density_100.nrrd"
    nrrd.write_bytes(_nrrd_bytes(np.arange(8.0), NRRD_SYNTHETIC_LINE + "\n"))
    (vol,) = read_volumes(nrrd)
    assert vol.metadata["synthetic"] is True and "[synthetic]" in vol.name
    nrrd.write_bytes(_nrrd_bytes(np.arange(8.0), "# napari-allen-synthetic data\n"))
    assert read_volumes(nrrd)[0].metadata["synthetic"] is True
    # An unzipped copy keeps the mark (header key, data_set.xml).
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(tmp_path / "mhd.zip") as zf:
        zf.extractall(folder)
    (vol,) = read_volumes(folder / "energy.mhd")
    assert "[synthetic]" in vol.name
    with zipfile.ZipFile(io.BytesIO((tmp_path / "xml.zip").read_bytes())) as zf:
        zf.extractall(tmp_path / "xml")
    assert "[synthetic]" in read_volumes(tmp_path / "xml")[0].name


def test_napari_reader_warns_about_synthetic_layers(tmp_path, monkeypatch):
    from napari.utils import notifications

    from napari_allen._reader import get_reader

    shown = []
    monkeypatch.setattr(notifications, "show_warning", shown.append)
    shape = (2, 2, 2)
    path = _zip(tmp_path / "74272479_energy_200um.zip",
                {"energy.mhd": _mhd(shape, "MET_FLOAT"),
                 "energy.raw": np.zeros(8, "<f4").tobytes()}, SYNTHETIC_ZIP_COMMENT)
    layers = get_reader(str(path))(str(path))
    assert "[synthetic]" in layers[0][1]["name"]
    assert len(shown) == 1 and "SYNTHETIC" in shown[0]


def test_copies_of_served_synthetic_files_keep_their_mark(client, allen_api, tmp_path):
    """Real HTTP: grids the local server generated, copied out of the cache (no manifest, no
    sidecar next to them), still open as [synthetic] from the mark inside the bytes; a real
    Allen file copied the same way does not."""
    import shutil

    synthetic_id = int(client.search_ish(["Gad1"], plane="coronal")["experiment_id"].iloc[0])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    zip_copy = elsewhere / f"{synthetic_id}_energy_200um.zip"
    shutil.copy(client.grid_zip(synthetic_id, ("energy",)), zip_copy)
    (vol,) = read_volumes(zip_copy)
    assert vol.metadata["synthetic"] is True and "[synthetic]" in vol.name
    with zipfile.ZipFile(zip_copy) as zf:  # unzipped: the .mhd key carries it
        zf.extractall(elsewhere / "unzipped")
    assert "[synthetic]" in read_volumes(elsewhere / "unzipped" / "energy.mhd")[0].name
    real = elsewhere / "74272479_energy_200um.zip"
    shutil.copy(client.grid_zip(74272479, ("energy",)), real)
    assert "[synthetic]" not in read_volumes(real)[0].name
    # NRRD: a connectivity experiment the server synthesises (not the bundled 158375425).
    from napari_allen.io.provenance import NRRD_SYNTHETIC_KEY

    exp = next(int(e) for e in client.connectivity_experiments()["id"] if int(e) != 158375425)
    nrrd_copy = elsewhere / "projection_density_100.nrrd"
    shutil.copy(client.grid_nrrd(exp, "projection_density", 100), nrrd_copy)
    assert NRRD_SYNTHETIC_KEY.encode() in nrrd_copy.read_bytes()[:4096]
    (vol,) = read_volumes(nrrd_copy)
    assert vol.metadata["synthetic"] is True and "[synthetic]" in vol.name
