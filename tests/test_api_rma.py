"""RMA query building: values can never change the structure of a query."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from napari_allen.api import rma
from napari_allen.api.base import resolve_files_url
from napari_allen.api.client import AllenClient

HOSTILE = [
    "Nrp1'][failed$eqtrue",
    "Nrp1],products[id$eq3",
    "Nrp1,rma::options[num_rows$eq1]",
    "a$eq'b",
    "x)(y",
    'quote"d',
    "back\\slash",
    "new\nline",
    "",
    "   ",
]


def test_model_query_stages_match_allensdk_form():
    q = rma.RmaQuery("SectionDataSet", include=["genes"], order="id")
    q.where(None, failed=False).where("products", id=1).where("genes", acronym__il="nrp*")
    assert q.stages(start_row=0, num_rows=2000) == (
        "model::SectionDataSet,rma::criteria,[failed$eqfalse],products[id$eq1],"
        "genes[acronym$il'nrp*'],rma::include,genes,"
        "rma::options[num_rows$eq2000][start_row$eq0][order$eq'id']"
    )


def test_in_lists_nested_associations_and_all_rows():
    q = rma.RmaQuery("ProjectionStructureUnionize")
    q.where(None, section_data_set_id__in=[1, 2], is_injection=False)
    q.where("specimen.donor", age_id=56)
    assert q.stages(num_rows="all", count=False) == (
        "model::ProjectionStructureUnionize,rma::criteria,"
        "[section_data_set_id$in1,2][is_injection$eqfalse],specimen(donor[age_id$eq56]),"
        "rma::options[num_rows$eq'all'][count$eqfalse]"
    )


def test_service_stage_sorted_params_and_paging_inside_brackets():
    s = rma.ServiceQuery("mouse_connectivity_target_spatial",
                         {"seed_point": [6900, 5050.5, 6450], "section_data_set": 156394513,
                          "primary_structure_only": True, "transgenic_lines": None})
    assert s.stage(start_row=25, num_rows=50) == (
        "service::mouse_connectivity_target_spatial[primary_structure_only$eqtrue]"
        "[section_data_set$eq156394513][seed_point$eq6900,5050.5,6450]"
        "[start_row$eq25][num_rows$eq50]"
    )


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_literals_are_refused(value):
    with pytest.raises(rma.RmaValueError):
        rma.literal(value)
    with pytest.raises(rma.RmaValueError):
        rma.token(value)


@pytest.mark.parametrize("value", ["1 OR 1", "12,13", "3]", "1.5", "", "0x10", True])
def test_integer_ids_refuse_anything_else(value):
    with pytest.raises(rma.RmaValueError):
        rma.integer(value)


def test_identifiers_are_checked():
    for bad in ("genes[acronym$eq1]", "a,b", "model::X", "", "1abc", "a b"):
        with pytest.raises(rma.RmaValueError):
            rma.identifier(bad)
    assert rma.identifier("data_sets.id") == "data_sets.id"
    with pytest.raises(rma.RmaValueError):
        rma.Filter("acronym", "eq' or", "x").render()


def test_numbers_never_use_exponents():
    assert rma.number(6900.0) == "6900"
    assert rma.number(1e7) == "10000000"
    assert rma.number(0.125) == "0.125"
    for bad in (float("nan"), float("inf"), "12a", None):
        with pytest.raises(rma.RmaValueError):
            rma.number(bad)


def test_spaces_and_plus_are_encoded_so_the_server_reads_them_back():
    q = rma.RmaQuery("Gene").where(None, name__il="nuclear receptor*", acronym="A+B")
    url = "http://x/api/v2/data/query.json?" + rma.encode_query({"q": q.stages()})
    raw = urlsplit(url).query
    assert " " not in raw and "+" not in raw and "'" not in raw and "[" not in raw
    decoded = parse_qs(raw)["q"][0]
    assert decoded == q.stages()
    assert "[name$il'nuclear receptor*'][acronym$eq'A+B']" in decoded


def test_search_refuses_injection_before_any_request(monkeypatch):
    client = AllenClient(base_url="http://127.0.0.1:9", retries=0)
    for gene in ("Nrp1'],products[id$eq3", "a,b", "x$eq'1"):
        with pytest.raises(ValueError, match="cannot be used safely"):
            client.search_ish([gene])
    with pytest.raises(ValueError):
        client.search_ish(["Nrp1"], plane="axial'")
    with pytest.raises(ValueError):
        client.injection_structure_search(["VISp'][x"])
    with pytest.raises(ValueError):
        client.injection_structure_search([385], transgenic_lines=["Cre,1"])
    with pytest.raises(ValueError):
        client.grid_zip_url("74272479 OR 1", ["energy"])
    with pytest.raises(ValueError):
        client.grid_zip_url(74272479, ["energy,../x"])
    with pytest.raises(TypeError):
        client.injection_coordinate_search([1, 2, 3], not_a_filter=1)


def test_files_url_follows_a_local_api_url(monkeypatch):
    monkeypatch.delenv("NAPARI_ALLEN_FILES_URL", raising=False)
    # Allen's own API URL maps to Allen's file server (constants: tests never name real hosts).
    from napari_allen.api.base import DEFAULT_FILES_URL
    from napari_allen.config import DEFAULT_API_URL

    assert resolve_files_url(DEFAULT_API_URL) == DEFAULT_FILES_URL != DEFAULT_API_URL
    assert resolve_files_url("http://127.0.0.1:8765") == "http://127.0.0.1:8765"
    monkeypatch.setenv("NAPARI_ALLEN_FILES_URL", "http://files.example/")
    assert resolve_files_url("http://127.0.0.1:8765") == "http://files.example"
    assert resolve_files_url("http://127.0.0.1:8765", "http://o") == "http://o"
