"""MetaImage (.mhd + .raw) reading: real headers, orientation, byte order, laziness, bad input."""

from __future__ import annotations

import zipfile
from importlib import resources

import numpy as np
import pytest

from napari_allen.errors import AllenFormatError
from napari_allen.io import read_volumes
from napari_allen.io.export import to_metaimage
from napari_allen.io.metaimage import format_header, parse_header, read_metaimage
from napari_allen.io.volume import GridVolume

NRP1_ZIP = resources.files("napari_allen") / "data" / "ish" / "Nrp1_P56_coronal_74272479_200um.zip"

REAL_ENERGY_MHD = """ObjectType = Image
NDims = 3
BinaryData = True
BinaryDataByteOrderMSB = False
TransformMatrix = 1 0 0 0 1 0 0 0 1
Offset = 0 0 0
CenterOfRotation = 0 0 0
AnatomicalOrientation = RAI
ElementSpacing = 200 200 200
DimSize = 67 41 58
ElementType = MET_FLOAT
ElementDataFile = energy.raw
"""


@pytest.fixture
def nrp1_folder(tmp_path):
    """The real Nrp1 download unzipped into a folder."""
    with zipfile.ZipFile(NRP1_ZIP) as zf:
        zf.extractall(tmp_path / "nrp1")
    return tmp_path / "nrp1"


def _write_pair(folder, header: str, payload: bytes, stem: str = "energy"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.mhd").write_text(header)
    (folder / f"{stem}.raw").write_bytes(payload)
    return folder / f"{stem}.mhd"


def test_parse_real_header():
    header = parse_header(REAL_ENERGY_MHD, "energy.mhd")
    assert header.dim_size == (67, 41, 58)
    assert header.spacing == (200.0, 200.0, 200.0)
    assert header.dtype == np.dtype("<f4")
    assert header.n_bytes == 637_304
    assert header.data_file == "energy.raw"


def test_read_real_energy_pair(nrp1_folder):
    vol = read_metaimage(nrp1_folder / "energy.mhd")
    assert vol.kind == "energy"
    assert vol.shape == (67, 41, 58)
    assert vol.resolution == 200.0
    data = np.asarray(vol.data)
    # Published facts about this grid (docs/allen-api-notes.md §6.4).
    assert int((data == -1).sum()) == 54_982
    assert data.max() == pytest.approx(25.9, abs=0.01)
    assert data[data != -1].min() >= 0


def test_fortran_order_gives_ap_dv_ml(tmp_path):
    """x (AP) is the fastest axis on disk: element (i, j, k) sits at i + 67*(j + 41*k)."""
    flat = np.arange(67 * 41 * 58, dtype="<f4")
    mhd = _write_pair(tmp_path, REAL_ENERGY_MHD, flat.tobytes())
    data = read_metaimage(mhd).data
    assert data[1, 0, 0] == 1
    assert data[0, 1, 0] == 67
    assert data[0, 0, 1] == 67 * 41
    assert data[5, 7, 9] == 5 + 67 * (7 + 41 * 9)


def test_big_endian_payload(tmp_path):
    values = np.linspace(-1, 10, 67 * 41 * 58).astype(">f4")
    header = REAL_ENERGY_MHD.replace("BinaryDataByteOrderMSB = False",
                                     "BinaryDataByteOrderMSB = True")
    mhd = _write_pair(tmp_path, header, values.tobytes())
    data = read_metaimage(mhd).data
    assert data.dtype.isnative
    np.testing.assert_allclose(data.ravel(order="F"), values.astype("f4"))


def test_uint32_annotation_type(tmp_path):
    ids = np.arange(67 * 41 * 58, dtype="<u4") * 1000
    header = REAL_ENERGY_MHD.replace("MET_FLOAT", "MET_UINT").replace("energy.raw",
                                                                      "gridAnnotation.raw")
    mhd = _write_pair(tmp_path, header, ids.tobytes(), stem="gridAnnotation")
    vol = read_volumes(mhd)[0]
    assert vol.kind == "annotation" and vol.is_labels
    assert vol.dtype == np.uint32
    assert vol.data[3, 0, 0] == 3000


def test_raw_path_opens_through_its_header(nrp1_folder):
    """Opening energy.raw with a sibling energy.mhd uses the header, not size guessing."""
    (vol,) = read_volumes(nrp1_folder / "energy.raw")
    assert vol.metadata["format"] == "metaimage"
    assert vol.shape == (67, 41, 58)


def test_writer_round_trip(tmp_path, nrp1_folder):
    vol = read_metaimage(nrp1_folder / "energy.mhd")
    mhd, raw = to_metaimage(vol, tmp_path / "out" / "copy.mhd")
    assert raw.read_bytes() == (nrp1_folder / "energy.raw").read_bytes()
    back = read_metaimage(mhd)
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.resolution == 200.0
    # The written header parses to the same grid description as Allen's.
    assert parse_header(mhd.read_text(), mhd).dim_size == (67, 41, 58)


def test_format_header_rejects_unwritable_type():
    with pytest.raises(ValueError, match="element type"):
        format_header((2, 2, 2), 10, np.dtype("complex64"), "x.raw")


# --- bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("size", "problem"),
    [(637_304 - 4, "truncated"), (637_304 + 400, "larger than its header says"),
     (0, "truncated")],
)
def test_raw_size_mismatch(tmp_path, size, problem):
    mhd = _write_pair(tmp_path, REAL_ENERGY_MHD, b"\0" * size)
    with pytest.raises(AllenFormatError, match=problem) as err:
        read_metaimage(mhd)
    assert str(mhd) in str(err.value)
    assert "637,304" in str(err.value)


def test_dimsize_disagrees_with_data(tmp_path):
    """A header claiming the 200 µm grid over a 100 µm payload says which grid it matches."""
    mhd = _write_pair(tmp_path, REAL_ENERGY_MHD, b"\0" * (132 * 80 * 114 * 4))
    with pytest.raises(AllenFormatError, match="DimSize/ElementType disagree") as err:
        read_metaimage(mhd)
    assert "100 µm grid 132x80x114" in str(err.value)


def test_element_type_disagrees_with_data(tmp_path):
    header = REAL_ENERGY_MHD.replace("MET_FLOAT", "MET_DOUBLE")
    mhd = _write_pair(tmp_path, header, b"\0" * 637_304)
    with pytest.raises(AllenFormatError, match="MET_DOUBLE needs 1,274,608 bytes"):
        read_metaimage(mhd)


def test_unknown_element_type(tmp_path):
    mhd = _write_pair(tmp_path, REAL_ENERGY_MHD.replace("MET_FLOAT", "MET_HALF"), b"\0" * 8)
    with pytest.raises(AllenFormatError, match="unknown ElementType 'MET_HALF'"):
        read_metaimage(mhd)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [(("DimSize = 67 41 58", "DimSize = 67 41"), "expected a 3-D grid"),
     (("DimSize = 67 41 58", "DimSize = 67 x 58"), "not integers"),
     (("DimSize = 67 41 58", "DimSize = 67 0 58"), "non-positive"),
     (("ElementSpacing = 200 200 200", "ElementSpacing = 200 100 200"), "anisotropic"),
     (("ElementDataFile = energy.raw\n", ""), "lacks ElementDataFile"),
     (("ObjectType = Image", "ObjectType = Mesh"), "is not Image"),
     (("NDims = 3", "NDims 3"), "not 'Key = Value'")],
)
def test_corrupt_headers(tmp_path, edit, problem):
    mhd = _write_pair(tmp_path, REAL_ENERGY_MHD.replace(*edit), b"\0" * 637_304)
    with pytest.raises(AllenFormatError, match=problem) as err:
        read_metaimage(mhd)
    assert err.value.path == str(mhd)


def test_missing_data_file(tmp_path):
    (tmp_path / "energy.mhd").write_text(REAL_ENERGY_MHD)
    with pytest.raises(AllenFormatError, match="'energy.raw' not found"):
        read_metaimage(tmp_path / "energy.mhd")


def test_binary_file_named_mhd(tmp_path):
    bad = tmp_path / "energy.mhd"
    bad.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AllenFormatError, match="binary content|not 'Key = Value'"):
        read_metaimage(bad)


def test_large_payload_is_memory_mapped(tmp_path):
    """A 25 µm grid (308 MB) opens as a memmap: nothing is read until sliced."""
    header = (REAL_ENERGY_MHD.replace("67 41 58", "528 320 456")
              .replace("200 200 200", "25 25 25"))
    (tmp_path / "energy.mhd").write_text(header)
    with open(tmp_path / "energy.raw", "wb") as fh:
        fh.truncate(528 * 320 * 456 * 4)  # sparse: reads back as zeros
    vol = read_metaimage(tmp_path / "energy.mhd")
    assert isinstance(vol.data, np.memmap)
    assert vol.shape == (528, 320, 456) and vol.resolution == 25.0
    assert float(vol.data[100, 100, 100]) == 0.0


def test_gridvolume_validates():
    with pytest.raises(ValueError, match="kind"):
        GridVolume(np.zeros((2, 2, 2)), 10, kind="bogus")
    with pytest.raises(ValueError, match="3-D"):
        GridVolume(np.zeros((2, 2)), 10)
    with pytest.raises(ValueError, match="positive"):
        GridVolume(np.zeros((2, 2, 2)), 0)


def test_local_data_file_mha(tmp_path):
    """ElementDataFile = LOCAL: the payload follows the header in the same file."""
    values = np.arange(4 * 3 * 2, dtype="<f4")
    header = (REAL_ENERGY_MHD.replace("67 41 58", "4 3 2")
              .replace("ElementDataFile = energy.raw", "ElementDataFile = LOCAL"))
    path = tmp_path / "energy.mha"
    path.write_bytes(header.encode() + values.tobytes())
    vol = read_metaimage(path)
    np.testing.assert_array_equal(vol.data.ravel(order="F"), values)
