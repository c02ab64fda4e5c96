"""Connected services and unionizes of the local server over HTTP."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import requests

VPM_REAL = 158375425
VPM_SITE = [7070, 4360, 7650]


def get(server, target: str) -> dict:
    return requests.get(server.url + target, timeout=60).json()


def service(server, name: str, params: str) -> dict:
    return get(server, f"/api/v2/data/query.json?criteria=service::{name}{params}")


def nrrd_array(body: bytes, dtype: str) -> np.ndarray:
    end = body.index(b"\n\n") + 2
    sizes = next(line for line in body[:end].decode().splitlines() if line.startswith("sizes:"))
    shape = tuple(int(v) for v in sizes.split()[1:])
    return np.frombuffer(gzip.decompress(body[end:]), dtype).reshape(shape, order="F")


@pytest.fixture(scope="module")
def vpm_density(allen_server) -> np.ndarray:
    body = requests.get(f"{allen_server.url}/grid_data/download_file/{VPM_REAL}"
                        "?image=projection_density&resolution=100", timeout=60).content
    return nrrd_array(body, "<f4")


def test_injection_structure_search(allen_api):
    body = service(allen_api, "mouse_connectivity_injection_structure",
                   "[injection_structures$eqVPM][primary_structure_only$eqtrue]")
    assert body["success"] is True and body["num_rows"] == body["total_rows"] > 3
    rows = body["msg"]
    assert all(r["structure-abbrev"] == "VPM" for r in rows)
    assert VPM_REAL in [r["id"] for r in rows]
    sums = [r["sum"] for r in rows]
    assert sums == sorted(sums, reverse=True)
    real = next(r for r in rows if r["id"] == VPM_REAL)
    assert real["injection-coordinates"] == VPM_SITE
    assert real["transgenic-line"] == ""  # wild type
    assert {"id", "abbreviation"} <= set(real["injection-structures"][0])
    assert {"structure-id", "structure-name", "injection-volume", "product-id", "num-voxels",
            "sum", "gender", "strain", "name", "structure-color"} <= set(real)


def test_injection_structure_filters_and_paging(allen_api):
    params = "[injection_structures$eq315]"  # Isocortex, descendants included
    everything = service(allen_api, "mouse_connectivity_injection_structure", params)
    assert everything["total_rows"] > 500
    wild = service(allen_api, "mouse_connectivity_injection_structure",
                   params + "[transgenic_lines$eq0]")
    assert 0 < wild["total_rows"] < everything["total_rows"]
    assert {r["transgenic-line"] for r in wild["msg"]} == {""}
    page = service(allen_api, "mouse_connectivity_injection_structure",
                   params + "[start_row$eq25][num_rows$eq50]")
    assert page["start_row"] == 25 and page["num_rows"] == 50
    assert [r["id"] for r in page["msg"]] == [r["id"] for r in everything["msg"][25:75]]
    domain = service(allen_api, "mouse_connectivity_injection_structure",
                     params + "[target_domain$eqCP][target_hemisphere$eqright]")
    assert domain["total_rows"] == everything["total_rows"]
    assert sum(r["sum"] for r in domain["msg"]) < sum(r["sum"] for r in everything["msg"])


def test_empty_service_result_is_an_empty_object(allen_api):
    body = service(allen_api, "mouse_connectivity_injection_structure",
                   "[injection_structures$eqVPM][transgenic_lines$eq999999]")
    assert body == {"success": True, "id": 0, "start_row": 0, "num_rows": 0, "total_rows": 0,
                    "msg": {}}


def test_bad_service_parameters(allen_api):
    body = service(allen_api, "mouse_connectivity_injection_structure",
                   "[injection_structures$eqNOT_A_STRUCTURE]")
    assert body["success"] is False and "NOT_A_STRUCTURE" in body["msg"]
    body = service(allen_api, "mouse_connectivity_target_spatial", "[seed_point$eq1,2]")
    assert body["success"] is False and "seed_point" in body["msg"]


def test_target_spatial_path_shape(allen_api, vpm_density):
    candidates = np.argwhere((vpm_density > 0.04) & (vpm_density < 0.3))
    voxel = candidates[len(candidates) // 2]
    seed = voxel * 100
    body = service(allen_api, "mouse_connectivity_target_spatial",
                   "[seed_point$eq{},{},{}][section_data_set$eq{}]".format(*seed, VPM_REAL))
    (row,) = body["msg"]
    assert row["id"] == VPM_REAL
    assert row["density"] == pytest.approx(float(vpm_density[tuple(voxel)]), abs=1e-6)
    path = row["path"]
    assert path[0]["coord"] == [float(v) for v in seed]
    assert path[-1] == {"coord": VPM_SITE, "density": 0, "intensity": 0}
    assert all(set(p) == {"coord", "density", "intensity"} and len(p["coord"]) == 3
               for p in path)
    steps = np.linalg.norm(np.diff([p["coord"] for p in path], axis=0), axis=1)
    assert steps.max() <= 400  # a continuous line, not a jump


def test_target_spatial_across_experiments_sorted_by_density(allen_api):
    body = service(allen_api, "mouse_connectivity_target_spatial", "[seed_point$eq6900,5050,6450]")
    densities = [r["density"] for r in body["msg"]]
    assert len(densities) > 5 and densities == sorted(densities, reverse=True)
    assert min(densities) >= 0.01
    outside = service(allen_api, "mouse_connectivity_target_spatial", "[seed_point$eq0,0,0]")
    assert outside["msg"] == {} and outside["num_rows"] == 0


def test_injection_coordinate_ranked_by_distance(allen_api):
    body = service(allen_api, "mouse_connectivity_injection_coordinate",
                   "[seed_point$eq7070,4360,7650][num_rows$eq20]")
    assert body["num_rows"] == 20 and body["total_rows"] == 2992
    distances = [r["distance"] for r in body["msg"]]
    assert distances == sorted(distances) and distances[0] == 0.0
    assert VPM_SITE in [r["injection-coordinates"] for r in body["msg"] if r["distance"] == 0]


def test_projection_structure_unionize(allen_api, vpm_density):
    target = ("/api/v2/data/query.json?q=model::ProjectionStructureUnionize,rma::criteria,"
              f"[section_data_set_id$in{VPM_REAL}],rma::include,structure,"
              "rma::options[num_rows$eq'all'][count$eqfalse]")
    rows = get(allen_api, target)["msg"]
    index = {(r["structure_id"], r["hemisphere_id"], r["is_injection"]): r for r in rows}
    injection = index[(997, 3, True)]
    assert injection["normalized_projection_volume"] == pytest.approx(1.0)
    assert index[(997, 3, False)]["structure"]["acronym"] == "root"
    def pixels(key):  # structures/hemispheres without any weighted voxel have no row
        return index[key]["sum_pixels"] if key in index else 0.0

    for inj in (True, False):
        assert pixels((997, 1, inj)) + pixels((997, 2, inj)) == pytest.approx(
            pixels((997, 3, inj)))
    assert (997, 1, True) not in index  # the injection is wholly right of the midline
    # Injection + non-injection projection pixels = the density summed over the brain.
    annotation = nrrd_array(requests.get(
        allen_api.url + "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
        "annotation_100.nrrd", timeout=60).content, "<u4")
    expected = vpm_density[annotation > 0].astype(np.float64).sum() * 1000
    total = index[(997, 3, True)]["sum_projection_pixels"] + \
        index[(997, 3, False)]["sum_projection_pixels"]
    assert total == pytest.approx(expected, rel=1e-6)
    # The injection is in the right hemisphere (z = 7,650 µm): VPM right holds the injection.
    assert index[(733, 2, True)]["projection_volume"] > index.get(
        (733, 1, True), {"projection_volume": 0})["projection_volume"]
    for r in rows:
        assert r["projection_density"] == pytest.approx(
            r["sum_projection_pixels"] / r["sum_pixels"])


def test_projection_unionize_filters_like_allensdk(allen_api):
    target = ("/api/v2/data/query.json?q=model::ProjectionStructureUnionize,rma::criteria,"
              f"[section_data_set_id$in{VPM_REAL}][is_injection$eqfalse][hemisphere_id$in1,2]"
              "[structure_id$in385,733],rma::options[num_rows$eq'all'][count$eqfalse]")
    rows = get(allen_api, target)["msg"]
    assert {(r["structure_id"], r["hemisphere_id"]) for r in rows} <= {
        (385, 1), (385, 2), (733, 1), (733, 2)}
    assert all(r["is_injection"] is False for r in rows) and len(rows) >= 3


def test_unionize_needs_an_experiment(allen_api):
    body = get(allen_api, "/api/v2/data/ProjectionStructureUnionize/query.json")
    assert body["success"] is False and "section_data_set_id" in body["msg"]


def test_synthetic_services_agree_with_the_synthetic_grids(allen_api):
    experiment = 156394513  # MOs, Cre line: synthetic grids
    body = requests.get(f"{allen_api.url}/grid_data/download_file/{experiment}"
                        "?image=projection_density&resolution=100", timeout=60).content
    density = nrrd_array(body, "<f4")
    # target search: 'sum' (mm³) and 'num-voxels' over the whole brain match the grid
    rows = service(allen_api, "mouse_connectivity_injection_structure",
                   "[injection_structures$eqMOs][num_rows$eq3000]")["msg"]
    row = next(r for r in rows if r["id"] == experiment)
    assert row["sum"] == pytest.approx(density.sum() * 1e-3, rel=0.25)
    assert row["num-voxels"] == pytest.approx((density > 0.01).sum(), rel=0.3)
    # spatial search: the density at a seed voxel is the grid's value there
    voxel = np.argwhere((density > 0.04) & (density < 0.3))[0]
    (hit,) = service(allen_api, "mouse_connectivity_target_spatial",
                     "[seed_point$eq{},{},{}][section_data_set$eq{}]".format(
                         *(voxel * 100), experiment))["msg"]
    assert hit["density"] == pytest.approx(float(density[tuple(voxel)]), abs=1e-5)


def test_fresh_server_answers_concurrent_first_requests_without_deadlock():
    """A new server warms its tables in a thread while the first requests arrive; a
    connectivity service and an ISH query racing that warm-up must both be answered."""
    import concurrent.futures

    import requests

    from allen_local_api.server import LocalAllenServer

    queries = [
        "service::mouse_connectivity_injection_structure[injection_structures$eq385]",
        "model::SectionDataSet,rma::criteria,genes[acronym$eq'Nrp1']",
        "model::ApiConnectivity,rma::options[num_rows$eq5]",
    ]
    for _ in range(3):
        with LocalAllenServer() as server, concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(requests.get, f"{server.url}/api/v2/data/query.json",
                                   params={"q": q}, timeout=60) for q in queries]
            for future in futures:
                assert future.result().json()["success"] is True


def test_fiber_tract_well_known_file_is_the_lines_demos(allen_api):
    """Well-known file 197646984 (the lines demo's 25 µm fibre-tract annotation): the real 25 µm
    annotation where it is a fibre tract (1009 and descendants), 0 elsewhere; it agrees with
    the client's fibre-tract mask, so the lines script's seeds are the spatial search's."""
    import io as _io
    import urllib.request
    import zipfile

    from napari_allen.atlas.fiber_tracts import FiberTracts
    from napari_allen.atlas.ontology import Ontology

    url = f"{allen_api.url}/api/v2/well_known_file_download/197646984"
    with urllib.request.urlopen(url, timeout=300) as response:
        body = response.read()
    with zipfile.ZipFile(_io.BytesIO(body)) as zf:
        header = zf.read("annotationFiber.mhd").decode()
        raw = zf.read("annotationFiber.raw")
    meta = dict(line.split(" = ") for line in header.splitlines())
    assert meta["DimSize"] == "528 320 456" and meta["ElementSpacing"] == "25 25 25"
    volume = np.frombuffer(raw, "<u4").reshape((528, 320, 456), order="F")
    labels = set(np.unique(volume).tolist()) - {0}
    tracts = set(Ontology.default().descendants(1009))
    assert labels and labels <= tracts
    mask = FiberTracts.default()
    rng = np.random.default_rng(0)
    points = rng.integers(0, (528, 320, 456), size=(2000, 3))
    points = np.vstack([points, np.argwhere(volume[::8, ::8, ::8] > 0)[:500] * 8])
    expected = volume[points[:, 0], points[:, 1], points[:, 2]] > 0
    assert np.array_equal(np.asarray(mask.contains_um(points * 25.0), bool), expected)
    assert expected.any() and not expected.all()
