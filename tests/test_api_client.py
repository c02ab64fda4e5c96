"""AllenClient queries against the local Allen API server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from napari_allen.api import rma
from napari_allen.api.client import AllenClient
from napari_allen.api.frames import CONNECTIVITY_COLUMNS, ISH_COLUMNS, PLANE_CSV_COLUMNS
from napari_allen.errors import AllenApiError

NRP1 = 74272479
VPM_EXP = 158375425

# `client`: an AllenClient of the local server with short backoff (tests/conftest.py).


def queries(server) -> list[str]:
    return [parse_qs(r["query"]).get("q", parse_qs(r["query"]).get("criteria", [""]))[0]
            for r in server.requests]


def test_client_follows_the_environment(allen_api, tmp_path):
    c = AllenClient()
    assert c.base_url == allen_api.url
    assert c.files_url == allen_api.url  # the local server serves the CCF files too
    assert str(c.cache_dir).endswith("napari-allen-cache")


def test_search_ish_by_gene_case_insensitive_and_plane(client, allen_api):
    frame = client.search_ish(["nrp1"])
    assert list(frame.columns) == ISH_COLUMNS
    assert NRP1 in set(frame["experiment_id"])
    assert set(frame["gene"]) == {"Nrp1"}
    coronal = client.search_ish("NRP1", plane="coronal")
    assert set(coronal["plane"]) == {"coronal"}
    assert NRP1 in set(coronal["experiment_id"])
    assert set(coronal["experiment_id"]) <= set(frame["experiment_id"])
    sent = queries(allen_api)[-1]
    assert "products[id$eq1]" in sent and "[failed$eqfalse]" in sent


def test_search_ish_wildcards_and_several_genes(client):
    many = client.search_ish(["Nrp*", "Pdyn"])
    genes = set(many["gene"])
    assert {"Nrp1", "Pdyn"} <= genes
    assert all(g.lower().startswith("nrp") or g == "Pdyn" for g in genes)
    assert not many.duplicated(["experiment_id", "gene"]).any()
    assert client.search_ish(["NoSuchGene12345"]).empty


def test_hostile_gene_names_never_reach_the_server(client, allen_api):
    for gene in ("Nrp1'],products[id$eq3", "Nrp1,rma::include,genes", "x$il'*"):
        with pytest.raises(ValueError):
            client.search_ish([gene])
    assert allen_api.requests == []


def test_paging_small_pages_equal_one_big_page(allen_api, client):
    paged = AllenClient(page_size=7, backoff=0.01)
    small = paged.search_ish(["Nrp*", "Pdyn", "Prox1"])
    big = client.search_ish(["Nrp*", "Pdyn", "Prox1"])
    pd.testing.assert_frame_equal(small, big)
    starts = [q for q in queries(allen_api) if "num_rows$eq7" in q]
    assert len(starts) >= 2  # Nrp* has more than 7 data sets


def test_short_pages_stop_on_the_empty_page(allen_api, client):
    expected = client.search_ish(["Nrp*"])
    allen_api.requests.clear()
    allen_api.faults.add("short_pages", path_contains="query.json")
    paged = AllenClient(page_size=5, backoff=0.01, cache_dir=client.cache_dir / "other")
    frame = paged.search_ish(["Nrp*"])
    pd.testing.assert_frame_equal(frame, expected)
    last = allen_api.requests[-1]
    assert last["status"] == 200
    # total_rows promised 200 more, the client asked once past the end and stopped.
    assert f"start_row$eq{len(expected)}" in parse_qs(last["query"])["q"][0]


def test_empty_service_result_is_an_empty_frame(client, allen_api):
    import requests

    frame = client.injection_structure_search([1009])  # fibre tracts: no injections
    assert frame.empty
    assert list(frame.columns)[:len(CONNECTIVITY_COLUMNS)] == CONNECTIVITY_COLUMNS
    # The server really answered with the service's empty form, msg: {}.
    body = requests.get(allen_api.url + allen_api.requests[-1]["target"], timeout=10).json()
    assert body["success"] is True and body["msg"] == {}


def test_plane_listing_csv(client, allen_api):
    frame = client.ish_plane_listing("coronal")
    assert list(frame.columns)[:len(PLANE_CSV_COLUMNS)] == PLANE_CSV_COLUMNS
    assert set(frame["plane"]) == {"coronal"}
    row = frame[frame["experiment_id"] == NRP1].iloc[0]
    assert row["gene"] == "Nrp1"
    req = allen_api.requests[-1]
    assert req["path"] == "/api/v2/data/SectionDataSet/query.csv"
    params = parse_qs(req["query"])
    assert params["num_rows"] == ["all"] and "genes.acronym as gene" in params["tabular"][0]
    with pytest.raises(ValueError):
        client.ish_plane_listing("axial")


def test_structure_graph_and_unionize(client):
    onto = client.structure_graph()
    assert len(onto) == 1327 and onto.acronym(385) == "VISp"
    frame = client.structure_unionize([NRP1])
    assert set(frame["section_data_set_id"]) == {NRP1}
    assert {"expression_energy", "expression_density", "sum_pixels", "structure_id"} <= \
        set(frame.columns)
    assert frame["structure_id"].is_unique and len(frame) > 100


def test_connectivity_experiments(client):
    frame = client.connectivity_experiments()
    assert list(frame.columns)[:len(CONNECTIVITY_COLUMNS)] == CONNECTIVITY_COLUMNS
    assert len(frame) == 2992 and frame["id"].is_unique
    row = frame.set_index("id").loc[VPM_EXP]
    assert row["structure_abbrev"] == "VPM" and row["transgenic_line"] == ""
    assert (row["injection_x"], row["injection_y"], row["injection_z"]) == (7070, 4360, 7650)
    assert 733 in row["injection_structures"]
    cre = frame.set_index("id").loc[122642490]
    assert cre["transgenic_line"] == "Syt6-Cre_KI148"


def test_injection_structure_search_filters(client, allen_api):
    frame = client.injection_structure_search(["VPM"])
    assert VPM_EXP in set(frame["id"])
    assert {"injection_x", "num_voxels"} <= set(frame.columns)
    wild = client.injection_structure_search([733], transgenic_lines=[0],
                                             primary_structure_only=True)
    assert len(wild) and set(wild["transgenic_line"]) == {""}
    assert set(wild["structure_id"]) <= set(frame["structure_id"])
    sent = [q for q in queries(allen_api) if "transgenic_lines" in q]
    assert sent and sent[0].startswith(
        "service::mouse_connectivity_injection_structure[injection_structures$eq733]"
        "[primary_structure_only$eqtrue][transgenic_lines$eq0]")


def test_injection_coordinate_search_ranks_by_distance(client):
    frame = client.injection_coordinate_search([7070, 4360, 7650], injection_structures=[733])
    assert frame.iloc[0]["id"] == VPM_EXP
    assert frame["distance"].is_monotonic_increasing


def test_target_spatial_search_paths_end_at_the_injection(client):
    rows = client.target_spatial_search([7400, 3300, 3300])
    assert rows and all("path" in r for r in rows)
    first = rows[0]
    assert first["path"][-1]["coord"] == pytest.approx(first["injection-coordinates"])
    densities = [r["density"] for r in rows]
    assert densities == sorted(densities, reverse=True)


def test_projection_structure_unionize_filters(client):
    frame = client.projection_structure_unionize([VPM_EXP], is_injection=False,
                                                 hemisphere_ids=[2])
    assert len(frame) and set(frame["hemisphere_id"]) == {2}
    assert not frame["is_injection"].any()
    assert set(frame["section_data_set_id"]) == {VPM_EXP}


def test_repeated_query_comes_from_the_cache(client, allen_api):
    first = client.connectivity_experiments()
    n = len(allen_api.requests)
    second = AllenClient().connectivity_experiments()  # a new client, same cache folder
    pd.testing.assert_frame_equal(first, second)
    assert len(allen_api.requests) == n


def test_offline_browses_what_was_seen(client, allen_api):
    seen = client.search_ish(["Nrp1"])
    n = len(allen_api.requests)
    offline = AllenClient(offline=True)
    pd.testing.assert_frame_equal(offline.search_ish(["Nrp1"]), seen)
    with pytest.raises(AllenApiError, match="offline"):
        offline.search_ish(["Pdyn"])
    assert len(allen_api.requests) == n


@pytest.mark.parametrize("mode", ["http500", "http429", "success_false", "html200",
                                  "empty_body", "truncated"])
def test_every_fault_mode_is_retried(client, allen_api, mode):
    allen_api.faults.add(mode, path_contains="query.json", times=2)
    rows = client.query_rows(rma.RmaQuery("Structure").where(None, acronym="VISp"))
    assert [r["id"] for r in rows] == [385]
    faults = [r["fault"] for r in allen_api.requests]
    assert faults == [mode, mode, None]


def test_truncated_with_matching_length_is_retried(client, allen_api):
    allen_api.faults.add("truncated", path_contains="query.json", times=1,
                         matching_length=True)
    assert len(client.connectivity_experiments()) == 2992
    assert [r["fault"] for r in allen_api.requests][:2] == ["truncated", None]


def test_syntax_error_raises_at_once_with_url_and_message(client, allen_api):
    url = client.rma_url("model::NoSuchModel,rma::criteria,[id$eq1]")
    with pytest.raises(AllenApiError) as info:
        client.http.get_json(url)
    assert info.value.url == url
    assert "NoSuchModel" in info.value.server_message
    assert len(allen_api.requests) == 1


def test_gives_up_with_a_clear_error(allen_api):
    allen_api.faults.add("http500", path_contains="query.json")
    c = AllenClient(retries=2, backoff=0.01)
    with pytest.raises(AllenApiError, match=r"HTTP 500.*gave up after 3 attempts") as info:
        c.query_rows(rma.RmaQuery("Structure").where(None, acronym="VISp"))
    assert allen_api.url in str(info.value)
    assert len(allen_api.requests) == 3


def test_slow_headers_time_out_and_retry(allen_api):
    allen_api.faults.add("slow_headers", path_contains="structure_graph", times=1, delay=2.5)
    c = AllenClient(timeout=(2, 1.0), backoff=0.01)
    assert len(c.structure_graph()) == 1327
    deadline = time.monotonic() + 5
    while len(allen_api.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the abandoned slow request is logged when its sleep ends
    assert sorted(str(r["fault"]) for r in allen_api.requests) == ["None", "slow_headers"]


def test_thread_safe_shared_client(client, allen_api):
    acronyms = ["VISp", "MOs", "VPM", "CA1", "SSp-bfd", "CP", "ACA", "TH"]

    def structure(c, acronym):
        return c.query_rows(rma.RmaQuery("Structure").where(None, acronym=acronym))

    expected = {a: structure(client, a) for a in acronyms}
    fresh = AllenClient(cache_dir=client.cache_dir / "fresh")
    results: dict = {}
    errors: list = []

    def work(acronym):
        try:
            for _ in range(3):  # the first fills the SQLite cache, the others read it
                results[acronym] = structure(fresh, acronym)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in acronyms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == expected
    assert len(allen_api.requests) == 2 * len(acronyms)  # one per client, then cached


def test_grid_urls_are_the_real_forms(client):
    assert urlsplit(client.grid_zip_url(NRP1, ["energy", "density"])).path == \
        f"/grid_data/download/{NRP1}"
    assert client.grid_nrrd_url(VPM_EXP, "injection_density", 25).endswith(
        f"/grid_data/download_file/{VPM_EXP}?image=injection_density&resolution=25")
    assert client.annotation_url(25).endswith(
        "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_25.nrrd")


def test_whole_plane_search_matches_the_csv_listing(client, allen_api):
    frame = client.search_ish(None, plane="coronal")  # JSON pages of 2000
    listing = client.ish_plane_listing("coronal")
    assert set(frame["experiment_id"]) == set(listing["experiment_id"])
    assert len([q for q in queries(allen_api) if q.startswith("model::SectionDataSet")]) >= 3
    assert all("treatments[name$eq'ISH']" in q for q in queries(allen_api)
               if q.startswith("model::SectionDataSet"))


def test_search_by_gene_name_filters_on_the_name(client, allen_api):
    client.search_ish(["neuropilin*"], field="name")
    assert "genes[name$il'neuropilin*']" in queries(allen_api)[-1]
    with pytest.raises(ValueError):
        client.search_ish(["Nrp1"], field="entrez_id")
