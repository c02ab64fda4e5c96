"""RMA queries through the local server over real HTTP (plain ``requests``): envelopes, paging,
JSON/XML/CSV, associations, includes, tabular, errors."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
import zipfile

import pytest
import requests

STRUCTURES = ("/api/v2/data/query.json?q=model::Structure,rma::criteria,[graph_id$in1],"
              "rma::options[num_rows$eq'all'][order$eqstructures.graph_order][count$eqfalse]")


def get(server, target: str, **kw) -> requests.Response:
    return requests.get(server.url + target, timeout=60, **kw)


def test_structure_query_envelope_and_order(allen_api):
    body = get(allen_api, STRUCTURES).json()
    assert list(body) == ["success", "id", "start_row", "num_rows", "total_rows", "msg"]
    assert body["success"] is True and body["start_row"] == 0
    assert body["num_rows"] == body["total_rows"] == len(body["msg"]) == 1327
    root, grey = body["msg"][0], body["msg"][1]
    assert (root["id"], root["acronym"], root["structure_id_path"]) == (997, "root", "/997/")
    assert grey["acronym"] == "grey" and grey["color_hex_triplet"] == "BFDAE3"
    assert list(root) == sorted(root)  # attributes alphabetical
    visp = next(s for s in body["msg"] if s["acronym"] == "VISp")
    assert visp["structure_id_path"] == "/997/8/567/688/695/315/669/385/"
    assert visp["color_hex_triplet"] == "08858C"


def test_default_page_is_50_and_paging_covers_everything(allen_api):
    base = "/api/v2/data/Structure/query.json?criteria=[graph_id$eq1]&order=id"
    first = get(allen_api, base).json()
    assert first["num_rows"] == 50 and first["total_rows"] == 1327
    seen = []
    start = 0
    while True:
        page = get(allen_api, f"{base}&start_row={start}&num_rows=400").json()
        if not page["msg"]:
            break
        assert page["start_row"] == start
        seen.extend(r["id"] for r in page["msg"])
        start += len(page["msg"])
    assert len(seen) == len(set(seen)) == 1327
    assert seen == sorted(seen)


def test_num_rows_is_capped_at_25000(allen_api):
    body = get(allen_api, "/api/v2/data/SectionDataSet/query.json?num_rows=30000").json()
    assert body["num_rows"] == 25000
    assert body["total_rows"] > 25000
    everything = get(allen_api, "/api/v2/data/SectionDataSet/query.json?num_rows=all&only=id")
    assert everything.json()["num_rows"] == body["total_rows"]


def test_gene_search_criteria_form_with_associations(allen_api):
    target = ("/api/v2/data/query.json?criteria=model::SectionDataSet,rma::criteria,"
              "[failed$eq'false'],products[abbreviation$eq'Mouse'],"
              "plane_of_section[name$eq'coronal'],genes[acronym$eq'Nrp1'],rma::include,genes,"
              "plane_of_section")
    body = get(allen_api, target).json()
    assert [r["id"] for r in body["msg"]] == [74272479]
    record = body["msg"][0]
    assert record["genes"][0]["acronym"] == "Nrp1"
    assert record["genes"][0]["entrez_id"] == 18186
    assert record["plane_of_section"] == {"id": 1, "name": "coronal"}
    assert record["section_thickness"] == 25.0
    assert record["specimen_id"] == 72962948  # from the coronal experiment table


def test_wildcard_case_insensitive_gene_filter(allen_api):
    target = ("/api/v2/data/SectionDataSet/query.json?criteria=products[id$eq1],"
              "genes[acronym$il'NRP*']&include=genes&num_rows=all")
    genes = {r["genes"][0]["acronym"] for r in get(allen_api, target).json()["msg"]}
    assert {"Nrp1", "Nrp2"} <= genes
    assert all(g.lower().startswith("nrp") for g in genes)


def test_percent_encoded_query_like_allensdk(allen_api):
    # AllenSDK quotes [ ] ' and spaces, keeps $ , : literal.
    target = ("/api/v2/data/query.json?q=model::Gene,rma::criteria,%5Bacronym$eq%27Nrp1%27%5D,"
              "rma::options%5Bonly$eqacronym,id%5D")
    body = get(allen_api, target).json()
    assert body["msg"] == [{"acronym": "Nrp1", "id": body["msg"][0]["id"]}]


def test_tabular_csv_plane_listing(allen_api):
    target = ("/api/v2/data/SectionDataSet/query.csv?criteria=[failed$eqfalse],"
              "plane_of_section[name$eqcoronal],products[abbreviation$eqMouse],"
              "treatments[name$eqISH],genes&tabular=data_sets.id+as+experiment_id,"
              "data_sets.section_thickness,data_sets.specimen_id,plane_of_sections.name+as+plane,"
              "genes.acronym+as+gene,genes.name+as+gene_name,genes.chromosome_id,"
              "genes.entrez_id,genes.genomic_reference_update_id,genes.homologene_id,"
              "genes.organism_id&start_row=0&num_rows=all")
    response = get(allen_api, target)
    assert response.headers["Content-Type"].startswith("text/csv")
    assert 'filename="query.csv"' in response.headers["Content-Disposition"]
    assert not response.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["experiment_id", "section_thickness", "specimen_id", "plane", "gene",
                             "gene_name", "chromosome_id", "entrez_id",
                             "genomic_reference_update_id", "homologene_id", "organism_id"]
    assert {r["plane"] for r in rows} == {"coronal"}
    assert 4000 < len(rows) < 5000  # ~4,345 coronal ISH sets; NISSL sets excluded
    nrp1 = next(r for r in rows if r["experiment_id"] == "74272479")
    assert nrp1["gene"] == "Nrp1" and nrp1["chromosome_id"] == ""  # null -> empty


def test_csv_quotes_commas(allen_api):
    target = "/api/v2/data/Structure/query.csv?criteria=[id$eq385]&tabular=structures.name,id"
    text = get(allen_api, "/api/v2/data/Structure/query.csv?criteria=[acronym$eq'SSp-bfd']"
                          "&tabular=name,acronym").text
    assert text == 'name,acronym\n"Primary somatosensory area, barrel field",SSp-bfd\n'
    assert get(allen_api, target).text == "name,id\nPrimary visual area,385\n"


def test_xml_envelope_hyphens_and_nils(allen_api):
    response = get(allen_api, "/api/v2/data/SectionDataSet/query.xml?criteria=[id$eq74272479]"
                              "&include=products")
    root = ET.fromstring(response.content)
    assert root.tag == "Response"
    assert root.attrib == {"success": "true", "id": "0", "start_row": "0", "num_rows": "1",
                           "total_rows": "1"}
    record = root.find("section-data-sets/section-data-set")
    assert record.find("section-thickness").text == "25.0"
    assert record.find("blue-channel").attrib == {"nil": "true"}
    product = record.find("products/product")
    assert product.find("id").attrib["type"] == "integer" and product.find("id").text == "1"


def test_single_resource_and_unknown_id(allen_api):
    body = get(allen_api, "/api/v2/data/Structure/385.json").json()
    assert body["msg"][0]["acronym"] == "VISp"
    missing = get(allen_api, "/api/v2/data/Structure/123456789.json")
    assert missing.json()["success"] is False
    assert isinstance(missing.json()["msg"], str)


def test_api_connectivity_records_are_real(allen_api):
    body = get(allen_api, "/api/v2/data/query.json?q=model::ApiConnectivity,"
                          "rma::options[num_rows$eq'all']").json()
    assert body["total_rows"] == 2992
    vpm = next(r for r in body["msg"] if r["data_set_id"] == 158375425)
    assert (vpm["injection_x"], vpm["injection_y"], vpm["injection_z"]) == (7070, 4360, 7650)
    assert vpm["structure_abbrev"] == "VPM" and vpm["transgenic_line"] is None


def test_sdk_get_experiments_form_lists_connectivity_sets(allen_api):
    target = ("/api/v2/data/query.json?q=model::SectionDataSet,rma::criteria,[failed$eqfalse],"
              "products[id$in5,31],rma::options[num_rows$eq'all']")
    body = get(allen_api, target).json()
    assert body["total_rows"] == 2331 + 77  # products 5 and 31 in experiments.json
    assert 158375425 in {r["id"] for r in body["msg"]}


@pytest.mark.parametrize(("target", "needle"), [
    ("/api/v2/data/query.json?q=model::NoSuchModel", "unknown model"),
    ("/api/v2/data/query.json?q=model::Structure,rma::criteria,[nope$eq1]", "no attribute"),
    ("/api/v2/data/query.json?q=model::Structure,rma::criteria,[id$eq1", "unbalanced"),
    ("/api/v2/data/query.json?q=model::Structure,rma::options[num_rows$eqmany]", "num_rows"),
    ("/api/v2/data/query.json?criteria=service::no_such_service[a$eq1]", "unknown service"),
])
def test_errors_are_success_false_with_a_string_message(allen_api, target, needle):
    body = get(allen_api, target).json()
    assert body["success"] is False
    assert isinstance(body["msg"], str) and needle in body["msg"]


def test_xml_error_envelope(allen_api):
    root = ET.fromstring(get(allen_api, "/api/v2/data/query.xml?q=model::Nope").content)
    assert root.attrib["success"] == "false" and "unknown model" in root.find("msg").text


def test_structure_graph_download_is_the_real_file(allen_api):
    import gzip
    from importlib import resources

    path = resources.files("napari_allen") / "data" / "ontology" / "structure_graph_1.json.gz"
    with path.open("rb") as fh:
        real = gzip.decompress(fh.read())
    response = get(allen_api, "/api/v2/structure_graph_download/1.json")
    assert response.content == real
    assert response.json()["msg"][0]["children"][0]["acronym"] == "grey"


def test_tree_search(allen_api):
    body = get(allen_api, "/api/v2/tree_search/Structure/385.json?ancestors=true"
                          "&descendants=true").json()
    ids = [r["id"] for r in body["msg"]]
    assert ids[:8] == [997, 8, 567, 688, 695, 315, 669, 385]
    assert len(ids) > 8  # VISp layers follow
    assert all("/385/" in r["structure_id_path"] for r in body["msg"][8:])


def test_request_log_records_every_request(allen_api):
    get(allen_api, "/api/v2/data/Structure/385.json")
    get(allen_api, "/no/such/route")
    log = allen_api.requests[-2:]
    assert [(r["method"], r["path"], r["status"]) for r in log] == [
        ("GET", "/api/v2/data/Structure/385.json", 200), ("GET", "/no/such/route", 404)]
    assert all(isinstance(r["time"], float) for r in log)


def test_reference_space_well_known_file_link(allen_api):
    body = get(allen_api, "/api/v2/data/ReferenceSpace/query.json?criteria=[id$eq10]"
                          "&include=well_known_files[path$li'*gridAnnotation.zip']").json()
    (space,) = body["msg"]
    (wkf,) = space["well_known_files"]
    download = get(allen_api, wkf["download_link"])
    assert download.status_code == 200 and download.content[:2] == b"PK"
    assert zipfile.ZipFile(io.BytesIO(download.content)).namelist() == [
        "gridAnnotation.mhd", "gridAnnotation.raw"]


def test_service_xml_uses_objects(allen_api):
    response = get(allen_api, "/api/v2/data/query.xml?criteria=service::mouse_connectivity_"
                              "injection_coordinate[seed_point$eq7070,4360,7650][num_rows$eq2]")
    root = ET.fromstring(response.content)
    objects = root.findall("objects/object")
    assert len(objects) == 2 and root.attrib["num_rows"] == "2"
    assert objects[0].find("structure-abbrev") is not None
    csv_refused = get(allen_api, "/api/v2/data/query.csv?criteria=service::mouse_connectivity_"
                                 "injection_coordinate[seed_point$eq7070,4360,7650]").json()
    assert csv_refused["success"] is False


def test_concurrent_first_requests_get_identical_bytes(allen_api):
    from concurrent.futures import ThreadPoolExecutor

    target = "/grid_data/download/71717084?include=intensity"  # a cold synthetic grid
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: get(allen_api, target).content, range(8)))
    assert len(set(bodies)) == 1 and bodies[0][:2] == b"PK"


def test_independent_servers_and_lifecycle():
    from allen_local_api.server import LocalAllenServer

    with LocalAllenServer(latency_ms=1) as a, LocalAllenServer() as b:
        assert a.url != b.url
        a.faults.add("http500")
        assert get(a, "/api/v2/data/Structure/385.json").status_code == 500
        assert get(b, "/api/v2/data/Structure/385.json").status_code == 200  # own fault plan
        assert len(a.requests) == len(b.requests) == 1
    with pytest.raises(RuntimeError, match="not running"):
        _ = a.url


def test_filters_decided_per_distinct_value_match_per_record_evaluation(allen_api):
    """The engine tests a plain filter once per distinct (type, value) and an association
    filter once per value of its foreign key (``AssocSpec.via``): the rows are those of
    testing every record, and a missing attribute is still an error."""
    from allen_local_api.query import Engine, Filter, _filtered, matches
    from allen_local_api.rma import parse_stages

    engine: Engine = allen_api.app.engine
    model = engine.model("StructureUnionize")
    text = ("model::StructureUnionize,rma::criteria,[section_data_set_id$in{}],"
            "structure[acronym$il'*p*'][graph_id$eq1]")
    ids = [d["id"] for d in get(allen_api, "/api/v2/data/query.json?q=model::SectionDataSet,"
                                "rma::criteria,[failed$eqfalse],rma::options[num_rows$eq3]"
                                "[only$eqid]").json()["msg"]]
    query = parse_stages(text.format(",".join(map(str, ids))))
    fast, _ = engine._select(model, query)
    spec = model.associations["structure"]
    assert spec.via == "structure_id"
    rows = model.records(query)
    slow = [r for r in rows if all(matches(r, f, model) for f in query.filters)
            and all(engine._assoc_matches(model, r, a) for a in query.associations)]
    assert fast == slow and 0 < len(fast) < len(rows)
    # (type, value): 1 and 1.0 are equal and hash alike, but the filter text is read as the
    # value's type (int("1.5") -> 1 matches 1, float 1.5 does not match 1.0)
    records = [{"v": 1}, {"v": 1.0}, {"v": 1}, {"v": None}, {"v": [1]}]
    flt = Filter("v", "$eq", "1.5")
    assert _filtered(records, flt, model) == [records[0], records[2]]
    assert _filtered(records, flt, model) == [r for r in records if matches(r, flt, model)]
    with pytest.raises(ValueError, match="no attribute"):
        _filtered([{"v": 1}, {}], Filter("v", "$eq", "1"), model)
