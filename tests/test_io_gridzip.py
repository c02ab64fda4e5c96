"""grid_data/download zips and unzipped folders: real metadata, laziness and every unsafe zip."""

from __future__ import annotations

import struct
import zipfile
from importlib import resources

import numpy as np
import pytest

from napari_allen.errors import AllenFormatError
from napari_allen.io import read_volumes
from napari_allen.io.dataset import parse_data_set_xml
from napari_allen.io.gridzip import check_member_name, read_grid_folder, read_grid_zip

DATA = resources.files("napari_allen") / "data"
NRP1_ZIP = DATA / "ish" / "Nrp1_P56_coronal_74272479_200um.zip"
GRID_ZIP = DATA / "annotation" / "P56_Mouse_gridAnnotation.zip"


def _header(shape=(67, 41, 58), res=200, etype="MET_FLOAT", data_file="energy.raw") -> str:
    return (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"ElementSpacing = {res} {res} {res}\nDimSize = {shape[0]} {shape[1]} {shape[2]}\n"
            f"ElementType = {etype}\nElementDataFile = {data_file}\n")


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, payload in members.items():
            zf.writestr(zipfile.ZipInfo(name), payload, compress_type=compression)
    return path


def _nrp1_members() -> dict[str, bytes]:
    with zipfile.ZipFile(NRP1_ZIP) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_real_nrp1_zip_metadata():
    (vol,) = read_grid_zip(NRP1_ZIP)
    assert vol.kind == "energy" and vol.shape == (67, 41, 58)
    meta = vol.metadata
    assert meta["experiment_id"] == 74272479  # from data_set.xml
    assert meta["gene"] == "Nrp1" and meta["plane"] == "coronal"  # bundled table / name
    assert meta["reference_space_id"] == 9 and meta["section_thickness"] == 25.0
    assert meta["age"] == "P56" and meta["strain"] == "C57BL/6J"
    assert vol.name == "Nrp1 energy (exp 74272479)"


def test_real_grid_annotation_zip():
    (vol,) = read_grid_zip(GRID_ZIP)
    assert vol.kind == "annotation" and vol.dtype == np.uint32
    ids = np.unique(vol.data)
    assert len(ids) == 650 and ids[0] == 0  # docs/allen-api-notes.md §8
    assert ids.max() == 182_305_713


def test_metadata_from_xml_beats_name(tmp_path):
    members = _nrp1_members()
    renamed = _zip(tmp_path / "download.zip", members)
    (vol,) = read_grid_zip(renamed)
    # No hint in the name: id from data_set.xml, gene/plane from the bundled gene table.
    assert vol.metadata["experiment_id"] == 74272479 and vol.metadata["gene"] == "Nrp1"


def test_data_set_xml_with_genes_and_plane():
    xml = (b"<Response><section-data-sets><section-data-set><id>69289763</id>"
           b"<plane-of-section-id>2</plane-of-section-id><genes><gene><acronym>Prox1</acronym>"
           b"</gene></genes></section-data-set></section-data-sets></Response>")
    meta = parse_data_set_xml(xml, "x.xml")
    assert meta == {"experiment_id": 69289763, "plane": "sagittal", "gene": "Prox1"}


def test_data_set_xml_not_xml():
    with pytest.raises(AllenFormatError, match="not valid XML"):
        parse_data_set_xml(b"<section-data-set><id>1</id>", "d.xml")


def test_unzipped_folder(tmp_path):
    folder = tmp_path / "74272479"
    with zipfile.ZipFile(NRP1_ZIP) as zf:
        zf.extractall(folder)
    (vol,) = read_volumes(folder)
    assert vol.metadata["experiment_id"] == 74272479 and vol.metadata["gene"] == "Nrp1"
    np.testing.assert_array_equal(vol.data, read_grid_zip(NRP1_ZIP)[0].data)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AllenFormatError, match="no .mhd grid"):
        read_grid_folder(empty)


def test_zip_with_several_volumes(tmp_path):
    energy = np.full((67, 41, 58), 2.0, dtype="<f4")
    density = np.full((67, 41, 58), 0.5, dtype="<f4")
    path = _zip(tmp_path / "both.zip", {
        "energy.mhd": _header().encode(), "energy.raw": energy.tobytes(order="F"),
        "density.mhd": _header(data_file="density.raw").encode(),
        "density.raw": density.tobytes(order="F"),
    })
    vols = read_grid_zip(path)
    assert [v.kind for v in vols] == ["density", "energy"]
    assert float(vols[0].data.mean()) == 0.5 and float(vols[1].data.mean()) == 2.0


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_large_member_is_memory_mapped(tmp_path, compression):
    """50 µm (38.5 MB): stored members map in place, deflated ones decode once to the cache."""
    shape = (264, 160, 228)
    grid = np.zeros(shape, dtype="<f4")
    grid[10, 20, 30] = 7.5
    path = _zip(tmp_path / "big.zip", {
        "projection_density.mhd": _header(shape, 50, data_file="projection_density.raw").encode(),
        "projection_density.raw": grid.tobytes(order="F"),
    }, compression)
    (vol,) = read_grid_zip(path)
    assert isinstance(vol.data, np.memmap)
    assert vol.data[10, 20, 30] == 7.5 and vol.data[11, 20, 30] == 0
    assert vol.resolution == 50


# --- unsafe / bad zips -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../energy.mhd", "sub/../../x.raw", "/etc/energy.mhd",
                                  "C:\\energy.mhd", "a\\..\\..\\b.raw"])
def test_unsafe_member_paths(tmp_path, name):
    members = _nrp1_members()
    members[name] = b"ObjectType = Image\n"
    path = _zip(tmp_path / "evil.zip", members)
    with pytest.raises(AllenFormatError, match="unsafe zip member path") as err:
        read_grid_zip(path)
    assert str(path) in str(err.value)
    # Nothing was written next to (or above) the zip.
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith("energy")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.zip"]


def test_check_member_name_allows_folders():
    assert str(check_member_name("gridAnnotation/gridAnnotation.mhd", "z")) == \
        "gridAnnotation/gridAnnotation.mhd"


def test_member_declaring_huge_expansion(tmp_path):
    """A central directory claiming 4 GB from a tiny zip is rejected before inflating."""
    path = _zip(tmp_path / "bomb.zip", {"energy.mhd": _header().encode(),
                                        "energy.raw": b"\0" * 1000})
    blob = bytearray(path.read_bytes())
    central = blob.rfind(b"PK\x01\x02")  # the last central entry is energy.raw
    blob[central + 24:central + 28] = struct.pack("<I", 0xFFFF0000)
    path.write_bytes(bytes(blob))
    with pytest.raises(AllenFormatError, match="zip bomb"):
        read_grid_zip(path)


def test_xml_member_expanding_far_beyond_limit(tmp_path):
    members = _nrp1_members()
    members["data_set.xml"] = b" " * (65 * 1024 * 1024)  # ~64 kB deflated
    path = _zip(tmp_path / "xmlbomb.zip", members)
    with pytest.raises(AllenFormatError, match="more than 4,194,304 allowed"):
        read_grid_zip(path)


def test_raw_member_larger_than_header(tmp_path):
    path = _zip(tmp_path / "big.zip", {"energy.mhd": _header().encode(),
                                       "energy.raw": b"\0" * (637_304 * 8)})
    with pytest.raises(AllenFormatError, match="larger than its header says"):
        read_grid_zip(path)


def test_raw_member_truncated(tmp_path):
    path = _zip(tmp_path / "short.zip", {"energy.mhd": _header().encode(),
                                         "energy.raw": b"\0" * 1000})
    with pytest.raises(AllenFormatError, match="truncated"):
        read_grid_zip(path)


def test_truncated_zip_file(tmp_path):
    blob = NRP1_ZIP.read_bytes()
    path = tmp_path / "cut.zip"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(AllenFormatError, match="not a valid zip"):
        read_grid_zip(path)


def test_corrupt_member_data(tmp_path):
    path = tmp_path / "corrupt.zip"
    blob = bytearray(NRP1_ZIP.read_bytes())
    with zipfile.ZipFile(NRP1_ZIP) as zf:
        info = zf.getinfo("energy.raw")
    start = info.header_offset + 30 + len("energy.raw") + 1000
    blob[start:start + 2000] = bytes(2000)
    path.write_bytes(bytes(blob))
    with pytest.raises(AllenFormatError, match="truncated or corrupt zip member 'energy.raw'"):
        read_grid_zip(path)


def test_missing_raw_member(tmp_path):
    path = _zip(tmp_path / "noraw.zip", {"energy.mhd": _header().encode()})
    with pytest.raises(AllenFormatError, match="'energy.raw' missing from zip"):
        read_grid_zip(path)


def test_zip_without_grids(tmp_path):
    path = _zip(tmp_path / "other.zip", {"readme.txt": b"hello"})
    with pytest.raises(AllenFormatError, match="no .mhd grid"):
        read_grid_zip(path)


def test_bad_header_in_zip_names_member(tmp_path):
    path = _zip(tmp_path / "badtype.zip", {
        "energy.mhd": _header(etype="MET_WEIRD").encode(), "energy.raw": b"\0" * 637_304})
    with pytest.raises(AllenFormatError, match="unknown ElementType") as err:
        read_grid_zip(path)
    assert "badtype.zip!energy.mhd" in str(err.value)


@pytest.mark.parametrize(("name", "hints"), [
    ("Nrp1_P56_coronal_74272479_200um.zip",
     {"gene": "Nrp1", "plane": "coronal", "experiment_id": 74272479}),
    ("69289763.zip", {"experiment_id": 69289763}),
    ("grid_74272479_energy", {"experiment_id": 74272479}),
    ("P56_Mouse_gridAnnotation.zip", {}),
    ("tmpab12345", {}),  # digits glued to letters are not an id
    ("479_energy_200um.zip", {"experiment_id": 479}),  # `napari-allen download` names
    ("energy_200um.zip", {}),
])
def test_hints_from_name(name, hints):
    from napari_allen.io.dataset import hints_from_name

    assert hints_from_name(name) == hints


def test_bad_member_finds_what_testzip_finds():
    """The download verifier's CRC check (zlib-ng) agrees with zipfile's testzip: intact
    members pass; a flipped bit, a cut stream or a wrong size names the member."""
    import io
    import random
    import zipfile

    from napari_allen.io.gridzip import bad_member

    rng = random.Random(0)
    payload = bytes(rng.randrange(8) for _ in range(200_000))  # compressible, not trivially
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("energy.raw", payload, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("energy.mhd", b"NDims = 3\n", compress_type=zipfile.ZIP_STORED)
    data = buf.getvalue()

    def check(blob: bytes):
        fh = io.BytesIO(blob)
        with zipfile.ZipFile(fh) as zf:
            return bad_member(fh, zf.infolist()), zf.testzip()

    assert check(data) == (None, None)
    infos = {i.filename: i for i in zipfile.ZipFile(io.BytesIO(data)).infolist()}
    raw, mhd = infos["energy.raw"], infos["energy.mhd"]
    for name, at in (("energy.raw", raw.header_offset + 30 + 10 + raw.compress_size // 2),
                     ("energy.raw", raw.header_offset + 30 + 10 + raw.compress_size - 3),
                     ("energy.mhd", mhd.header_offset + 30 + 10 + 2)):
        flipped = bytearray(data)
        flipped[at] ^= 0x10
        ours, theirs = check(bytes(flipped))
        assert ours == name and theirs == name
    # A member whose recorded size is wrong (a cut download re-zipped) is named too.
    short = zipfile.ZipInfo("energy.raw")
    short.file_size, short.compress_size = raw.file_size + 1, raw.compress_size
    short.header_offset, short.compress_type = raw.header_offset, raw.compress_type
    short.CRC = raw.CRC
    assert bad_member(io.BytesIO(data), [short]) == "energy.raw"
    encrypted = zipfile.ZipInfo("x")
    encrypted.flag_bits = 0x1
    with pytest.raises(NotImplementedError):
        bad_member(io.BytesIO(data), [encrypted])


def test_lookup_experiment_matches_the_bundled_table_row_by_row():
    """The one-id lookup (rows holding the id only) equals a table built from every row,
    for ids that are prefixes or suffixes of other numbers, unknown ids and a trailing '*'."""
    import csv
    import gzip

    from napari_allen.io.dataset import lookup_experiment

    ref = resources.files("napari_allen") / "data" / "ish" / "ABI_genes.csv.gz"
    table = {}
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            table[int(row["Section_Data_ID"])] = (row["acronym"].rstrip("*"),
                                                  row["cutting_plane"])
    ids = sorted(table)
    for exp in ids[:: max(1, len(ids) // 400)] + [74272479]:
        assert lookup_experiment(exp) == {"gene": table[exp][0], "plane": table[exp][1]}
    assert lookup_experiment(74272479) == {"gene": "Nrp1", "plane": "coronal"}
    for unknown in (1, 7427247, 742724790, 18186):  # 18186: an entrez id, not an experiment
        assert unknown in table or lookup_experiment(unknown) == {}
