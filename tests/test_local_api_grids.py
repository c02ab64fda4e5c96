"""Grid downloads from the local server over HTTP: real bytes, zip layout, exact .mhd/NRRD
headers, synthetic grids (deterministic, flagged, plausible), resolution variants, Range."""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile

import numpy as np
import pytest
import requests

from allen_local_api.catalog import data_path
from napari_allen.io.provenance import MHD_SYNTHETIC_LINE, NRRD_SYNTHETIC_LINE

ENERGY_MHD = (
    b"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
    b"TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nCenterOfRotation = 0 0 0\n"
    b"AnatomicalOrientation = RAI\nElementSpacing = 200 200 200\nDimSize = 67 41 58\n"
    b"ElementType = MET_FLOAT\nElementDataFile = energy.raw\n")
NRRD_HEADER_100 = (
    b"NRRD0004\n# Complete NRRD file format specification at:\n"
    b"# http://teem.sourceforge.net/nrrd/format.html\ntype: float\ndimension: 3\n"
    b"space: left-posterior-superior\nsizes: 132 80 114\n"
    b"space directions: (100,0,0) (0,100,0) (0,0,100)\nkinds: domain domain domain\n"
    b"endian: little\nencoding: gzip\nspace origin: (0,0,0)\n\n")
SYNTHETIC = "X-Napari-Allen-Synthetic"
PROX1_SAGITTAL = 69289763
VPM_REAL = 158375425
MOS_CRE = 122642490  # injection 4300, 2690, 7050 µm


def get(server, target: str, **kw) -> requests.Response:
    return requests.get(server.url + target, timeout=60, **kw)


def data_file(*parts: str) -> bytes:
    return data_path(*parts).read_bytes()  # the server's own data, else the product's


def read_raw(zf: zipfile.ZipFile, name: str, shape=(67, 41, 58), dtype="<f4") -> np.ndarray:
    return np.frombuffer(zf.read(f"{name}.raw"), dtype=dtype).reshape(shape, order="F")


def read_nrrd(body: bytes) -> tuple[bytes, np.ndarray]:
    end = body.index(b"\n\n") + 2
    sizes = [line for line in body[:end].decode().splitlines() if line.startswith("sizes:")]
    shape = tuple(int(v) for v in sizes[0].split()[1:])
    return body[:end], np.frombuffer(gzip.decompress(body[end:]), "<f4").reshape(shape, order="F")


def grid_annotation() -> np.ndarray:
    with zipfile.ZipFile(io.BytesIO(data_file("annotation", "P56_Mouse_gridAnnotation.zip"))) as z:
        return read_raw(z, "gridAnnotation", dtype="<u4")


def test_real_nrp1_zip_is_served_byte_for_byte(allen_api):
    response = get(allen_api, "/grid_data/download/74272479")
    assert response.status_code == 200
    assert response.content == data_file("ish", "Nrp1_P56_coronal_74272479_200um.zip")
    assert SYNTHETIC not in response.headers
    assert allen_api.checksum("/grid_data/download/74272479") == \
        hashlib.sha256(response.content).hexdigest()


def test_include_zip_layout_and_mhd_bytes(allen_api):
    response = get(allen_api, "/grid_data/download/74272479?include=energy,density")
    zf = zipfile.ZipFile(io.BytesIO(response.content))
    assert zf.namelist() == ["energy.raw", "energy.mhd", "density.raw", "density.mhd"]
    assert zf.read("energy.mhd") == ENERGY_MHD
    # Nrp1's density is synthesised (only its energy is real): the header carries the mark
    # just before ElementDataFile, otherwise the same bytes.
    assert zf.read("density.mhd") == ENERGY_MHD.replace(
        b"ElementDataFile = energy.raw",
        MHD_SYNTHETIC_LINE.encode() + b"\nElementDataFile = density.raw")
    assert MHD_SYNTHETIC_LINE.encode() not in zf.read("energy.mhd")
    real = zipfile.ZipFile(io.BytesIO(data_file("ish", "Nrp1_P56_coronal_74272479_200um.zip")))
    assert zf.read("energy.raw") == real.read("energy.raw")  # the real energy
    assert response.headers[SYNTHETIC] == "1"  # density is synthetic


def test_synthetic_ish_zip_is_deterministic_flagged_and_plausible(allen_api):
    target = f"/grid_data/download/{PROX1_SAGITTAL}"
    first, second = get(allen_api, target), get(allen_api, target)
    assert first.content == second.content
    assert first.headers[SYNTHETIC] == "1"
    zf = zipfile.ZipFile(io.BytesIO(first.content))
    assert zf.namelist() == ["data_set.xml", "energy.raw", "energy.mhd"]
    assert b"<synthetic>true</synthetic>" in zf.read("data_set.xml")
    assert b"<plane_of_section/>" in zf.read("data_set.xml")
    energy = read_raw(zf, "energy")
    annotation = grid_annotation()
    assert np.all(energy[annotation == 0] == -1)  # -1 outside the brain
    assert np.all(energy[:, :, 29:] == -1)  # sagittal: one (low-ML, left) hemisphere only
    valid = energy[energy != -1]
    assert valid.size > 10_000 and valid.min() >= 0 and 5 < valid.max() < 60


def test_synthetic_signal_is_in_its_chosen_structures(allen_api):
    from allen_local_api.server import shared_app
    from allen_local_api.synthetic import ish_signal_structures

    experiment = 71717084  # Pdyn, coronal
    store = shared_app().store
    chosen = ish_signal_structures(experiment, store.ish_candidates)
    body = get(allen_api, f"/api/v2/data/StructureUnionize/query.json?criteria="
                          f"[section_data_set_id$eq{experiment}]&num_rows=all").json()
    energy = {r["structure_id"]: r["expression_energy"] for r in body["msg"]}
    assert energy[chosen[0]] > 5 * energy[997]  # the strongest structure stands out


def test_structure_unionize_of_real_nrp1_matches_the_grid(allen_api):
    body = get(allen_api, "/api/v2/data/StructureUnionize/query.json?criteria="
                          "[section_data_set_id$eq74272479],structure[graph_id$eq1]"
                          "&num_rows=all").json()
    rows = {r["structure_id"]: r for r in body["msg"]}
    real = zipfile.ZipFile(io.BytesIO(data_file("ish", "Nrp1_P56_coronal_74272479_200um.zip")))
    energy = read_raw(real, "energy")
    annotation = grid_annotation()
    inside = (annotation > 0) & (energy >= 0)
    assert rows[997]["sum_pixels"] == inside.sum()
    assert rows[997]["expression_energy"] == pytest.approx(energy[inside].mean(), rel=1e-6)
    # Known from the real data: Nrp1's energy is highest in the hippocampal formation (1089)
    majors = {sid: rows[sid]["expression_energy"] for sid in (315, 1089, 477, 549, 512, 313)}
    assert max(majors, key=majors.get) == 1089


def test_real_connectivity_nrrd_bytes_and_header(allen_api):
    target = f"/grid_data/download_file/{VPM_REAL}?image=projection_density&resolution=100"
    response = get(allen_api, target)
    assert response.content == data_file("connectivity", str(VPM_REAL),
                                         "projection_density_100.nrrd")
    assert len(response.content) == 385_959
    assert SYNTHETIC not in response.headers


def test_synthetic_connectivity_nrrd(allen_api):
    target = f"/grid_data/download_file/{MOS_CRE}?image=injection_density&resolution=100"
    response = get(allen_api, target)
    assert response.headers[SYNTHETIC] == "1"
    header, volume = read_nrrd(response.content)
    # The real header plus the in-band synthetic mark as the last key/value line.
    assert header == NRRD_HEADER_100[:-1] + NRRD_SYNTHETIC_LINE.encode() + b"\n\n"
    assert volume.shape == (132, 80, 114) and volume.min() >= 0 and volume.max() <= 1
    peak = np.array(np.unravel_index(np.argmax(volume), volume.shape)) * 100.0
    assert np.linalg.norm(peak - [4300, 2690, 7050]) <= 200  # blob at the real injection site
    again = get(allen_api, target)
    assert again.content == response.content
    projection = read_nrrd(get(allen_api, target.replace("injection_density",
                                                         "projection_density")).content)[1]
    assert (projection > 0.05).sum() > (volume > 0.05).sum()  # projects beyond the injection


def test_50um_variant_and_refused_resolutions(allen_api):
    response = get(allen_api, f"/grid_data/download_file/{MOS_CRE}?image=projection_density"
                              "&resolution=50")
    header, volume = read_nrrd(response.content)
    assert b"sizes: 264 160 228\n" in header and b"(50,0,0)" in header
    for res in (10, 25):
        refused = get(allen_api, f"/grid_data/download_file/{MOS_CRE}?image=projection_density"
                                 f"&resolution={res}")
        assert refused.status_code == 404
        assert refused.json()["success"] is False and "resolution" in refused.json()["msg"]


def test_multi_image_and_unknown_ids_fail(allen_api):
    multi = get(allen_api, f"/grid_data/download_file/{VPM_REAL}?image=projection_density,"
                           "data_mask")
    assert multi.status_code == 400 and multi.json()["success"] is False
    assert get(allen_api, "/grid_data/download/1").status_code == 404
    bad_volume = get(allen_api, "/grid_data/download/74272479?include=projection")
    assert bad_volume.status_code == 404 and "unknown volume" in bad_volume.json()["msg"]


def test_connectivity_grid_zip_density(allen_api):
    response = get(allen_api, f"/grid_data/download/{VPM_REAL}?include=density")
    zf = zipfile.ZipFile(io.BytesIO(response.content))
    assert zf.namelist() == ["density.raw", "density.mhd"]
    assert b"DimSize = 132 80 114\n" in zf.read("density.mhd")
    density = read_raw(zf, "density", shape=(132, 80, 114))
    _, real = read_nrrd(data_file("connectivity", str(VPM_REAL), "projection_density_100.nrrd"))
    np.testing.assert_array_equal(density, real)


def test_ccf_annotation_files(allen_api):
    base = "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_{}.nrrd"
    real = get(allen_api, base.format(25))
    assert hashlib.sha256(real.content).hexdigest() == \
        "c620cbcc562183e4dcd40250d440130501781f74b41de35b1c1bdabace290c42"
    body = get(allen_api, base.format(100)).content
    end = body.index(b"\n\n") + 2
    assert b"type: unsigned int\n" in body[:end] and b"sizes: 132 80 114\n" in body[:end]
    ann100 = np.frombuffer(gzip.decompress(body[end:]), "<u4").reshape((132, 80, 114), order="F")
    # The real experiment's injection site (7070, 4360, 7650 µm) lies in one of its injection
    # structures (155/170/218/361/463/718/733/1020: VPM and neighbours).
    assert ann100[71, 44, 77] in (155, 170, 218, 361, 463, 718, 733, 1020)
    body50 = get(allen_api, base.format(50)).content
    end50 = body50.index(b"\n\n") + 2
    ann50 = np.frombuffer(gzip.decompress(body50[end50:]), "<u4").reshape((264, 160, 228),
                                                                           order="F")
    np.testing.assert_array_equal(ann50[::2, ::2, ::2], ann100)  # both subsample the real 25 µm
    assert len(np.unique(ann100)) > 500
    assert get(allen_api, base.format(10)).status_code == 404


def test_well_known_file_download(allen_api):
    response = get(allen_api, "/api/v2/well_known_file_download/900000001")
    assert response.content == data_file("annotation", "P56_Mouse_gridAnnotation.zip")
    assert get(allen_api, "/api/v2/well_known_file_download/5").status_code == 404


def test_range_requests_resume_a_download(allen_api):
    target = "/grid_data/download/74272479"
    full = get(allen_api, target).content
    part = get(allen_api, target, headers={"Range": "bytes=1000-"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-{len(full) - 1}/{len(full)}"
    assert full[:1000] + part.content == full
    assert get(allen_api, target, headers={"Range": f"bytes={len(full)}-"}).status_code == 416


def test_fresh_store_builds_identical_bytes():
    """Determinism across processes: a new store (empty caches) makes the same synthetic bytes."""
    from allen_local_api.catalog import catalog
    from allen_local_api.grids import GridStore

    a = GridStore(catalog()).grid_download(PROX1_SAGITTAL, ["density"]).body
    b = GridStore(catalog()).grid_download(PROX1_SAGITTAL, ["density"]).body
    assert a == b
