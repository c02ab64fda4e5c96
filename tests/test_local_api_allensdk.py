"""The exact URLs AllenSDK's RmaApi, GridDataApi and MouseConnectivityApi build (read from
AllenInstitute/AllenSDK: rma_api.py, grid_data_api.py, mouse_connectivity_api.py,
connected_services.py), sent the way AllenSDK sends them (``requests.utils.quote(url,
';/?:@&=+$,')``), must work unchanged against the local server.

AllenSDK itself is not a dependency (it pins old numpy/pandas);
``tools/check_allensdk_compat.py`` runs the real AllenSDK against a standalone server.
"""

from __future__ import annotations

import gzip
import io
import zipfile

import requests


def sdk_get(server, url_tail: str) -> requests.Response:
    """GET like AllenSDK's ``retrieve_parsed_json_over_http``."""
    url = requests.utils.quote(server.url + url_tail, ";/?:@&=+$,")
    return requests.get(url, timeout=60)


def sdk_msg(server, stage: str) -> list | dict:
    """RmaApi.build_query_url + json_msg_query: fail like AllenSDK on success false."""
    body = sdk_get(server, "/api/v2/data/query.json?q=" + stage).json()
    assert body["success"], body["msg"]
    return body["msg"]


def test_rma_structures_like_ontologies_api(allen_api):
    # RmaApi.model_query('Structure', criteria='[graph_id$in1]', num_rows='all',
    #                    order=['structures.graph_order'], count=False)
    msg = sdk_msg(allen_api, "model::Structure,rma::criteria,[graph_id$in1],rma::options"
                             "[num_rows$eq'all'][order$eqstructures.graph_order][count$eqfalse]")
    assert len(msg) == 1327 and msg[0]["acronym"] == "root"
    assert [s["graph_order"] for s in msg] == sorted(s["graph_order"] for s in msg)


def test_rma_model_query_with_include_and_quoted_filters(allen_api):
    # RmaApi.model_query('SectionDataSet', criteria="products[id$in1],genes[acronym$eq'Nrp1']",
    #                    include=['genes'], num_rows=50)
    msg = sdk_msg(allen_api, "model::SectionDataSet,rma::criteria,products[id$in1],"
                             "genes[acronym$eq'Nrp1'],rma::include,genes,"
                             "rma::options[num_rows$eq50]")
    assert sorted(r["id"] for r in msg) == [74272479, 79913171]
    assert all(r["genes"][0]["acronym"] == "Nrp1" for r in msg)


def test_rma_order_with_quotes_and_desc_plus_form(allen_api):
    # order=["'acronym'", 'id+desc'] style clauses ('+' is read as a space by the server)
    msg = sdk_msg(allen_api, "model::Structure,rma::criteria,[st_level$eq11],rma::options"
                             "[num_rows$eq'all'][order$eq'acronym+desc']")
    acronyms = [s["acronym"] for s in msg]
    assert len(acronyms) > 10 and acronyms == sorted(acronyms, reverse=True)


def test_mouse_connectivity_get_experiments(allen_api):
    # MouseConnectivityApi.get_experiments(None)
    msg = sdk_msg(allen_api, "model::SectionDataSet,rma::criteria,[failed$eqfalse],"
                             "products[id$in5,31]")
    assert len(msg) == 50  # the API's default page


def test_mouse_connectivity_get_experiments_api(allen_api):
    # MouseConnectivityApi.get_experiments_api(): model::ApiConnectivity, num_rows 'all'
    msg = sdk_msg(allen_api, "model::ApiConnectivity,rma::options[num_rows$eq'all']")
    assert len(msg) == 2992 and {"data_set_id", "injection_x", "transgenic_line"} <= set(msg[0])


def test_mouse_connectivity_get_structure_unionizes(allen_api):
    # get_structure_unionizes([158375425], is_injection=False, hemisphere_ids=[1, 2],
    #                         include=['structure'])
    msg = sdk_msg(allen_api, "model::ProjectionStructureUnionize,rma::criteria,"
                             "[section_data_set_id$in158375425][is_injection$eqfalse]"
                             "[hemisphere_id$in1,2],rma::include,structure,"
                             "rma::options[num_rows$eq'all'][count$eqfalse]")
    assert len(msg) > 100
    assert {r["hemisphere_id"] for r in msg} == {1, 2}
    assert all("acronym" in r["structure"] for r in msg)


def test_connected_services_as_allensdk_sorts_parameters(allen_api):
    # experiment_source_search(injection_structures=['VISp'], primary_structure_only=True)
    source = sdk_msg(allen_api, "service::mouse_connectivity_injection_structure"
                                "[injection_structures$eqVISp][primary_structure_only$eqtrue]")
    assert source and {r["structure-abbrev"] for r in source} == {"VISp"}
    # experiment_spatial_search(seed_point=[6900, 5050, 6450])
    spatial = sdk_msg(allen_api, "service::mouse_connectivity_target_spatial"
                                 "[seed_point$eq6900,5050,6450]")
    assert spatial and all(r["path"][-1]["density"] == 0 for r in spatial)
    # experiment_injection_coordinate_search(seed_point=[6900, 5050, 6450], num_rows=10)
    ranked = sdk_msg(allen_api, "service::mouse_connectivity_injection_coordinate"
                                "[num_rows$eq10][seed_point$eq6900,5050,6450]")
    assert len(ranked) == 10 and ranked[0]["distance"] <= ranked[-1]["distance"]


def test_grid_data_api_urls(allen_api):
    # GridDataApi.download_expression_grid_data(74272479) and include=['energy', 'intensity']
    plain = sdk_get(allen_api, "/grid_data/download/74272479")
    assert zipfile.ZipFile(io.BytesIO(plain.content)).namelist() == [
        "data_set.xml", "energy.raw", "energy.mhd"]
    both = sdk_get(allen_api, "/grid_data/download/74272479?include=energy,intensity")
    assert zipfile.ZipFile(io.BytesIO(both.content)).namelist() == [
        "energy.raw", "energy.mhd", "intensity.raw", "intensity.mhd"]
    # download_projection_grid_data(158375425, ['injection_density'], 100)
    nrrd = sdk_get(allen_api, "/grid_data/download_file/158375425?image=injection_density"
                              "&resolution=100")
    header_end = nrrd.content.index(b"\n\n") + 2
    assert len(gzip.decompress(nrrd.content[header_end:])) == 4_815_360
    # ... and with no image/resolution at all (the server's defaults)
    default = sdk_get(allen_api, "/grid_data/download_file/158375425")
    assert default.content.startswith(b"NRRD0004") and b"sizes: 132 80 114" in default.content


def test_ontologies_api_structures_with_sets(allen_api):
    # OntologiesApi.get_structures_with_sets(1): template 'structures_with_sets'
    msg = sdk_msg(allen_api, "model::Structure,rma::criteria,[graph_id$in1],rma::include,"
                             "structure_sets,rma::options[num_rows$eq'all']"
                             "[order$eqstructures.graph_order][count$eqfalse]")
    assert len(msg) == 1327 and msg[0]["structure_sets"] == []  # sets are not bundled
    assert msg[0]["structure_id_path"] == "/997/"
