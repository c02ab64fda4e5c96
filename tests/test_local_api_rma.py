"""RMA parsing of the local server (no HTTP): stages, filters, associations, options."""

from __future__ import annotations

import pytest

from allen_local_api.rma import (
    Filter,
    RmaSyntaxError,
    parse_association,
    parse_filter,
    parse_shortcut,
    parse_stages,
    split_top,
)


def test_split_on_commas_outside_brackets_and_quotes():
    text = "model::X,rma::criteria,[a$in1,2],b[c$eq'x,y'],rma::options[order$eqa,b]"
    assert split_top(text) == ["model::X", "rma::criteria", "[a$in1,2]", "b[c$eq'x,y']",
                               "rma::options[order$eqa,b]"]


def test_split_rejects_unbalanced_brackets():
    with pytest.raises(RmaSyntaxError, match="unbalanced"):
        split_top("model::X,[a$eq1")


@pytest.mark.parametrize(("text", "expected"), [
    ("graph_id$eq1", Filter("graph_id", "$eq", "1")),
    ("failed$eq'false'", Filter("failed", "$eq", "false")),
    ("acronym$il'nrp*'", Filter("acronym", "$il", "nrp*")),
    ("id$in1,2,'3'", Filter("id", "$in", ["1", "2", "3"])),
    ("data_sets.id$gt5", Filter("data_sets.id", "$gt", "5")),
    ("structure_id_path", Filter("structure_id_path")),
])
def test_filters(text, expected):
    assert parse_filter(text) == expected


def test_unknown_operator_is_an_error():
    with pytest.raises(RmaSyntaxError, match=r"unknown operator \$xx"):
        parse_filter("id$xx1")


def test_nested_association():
    assoc = parse_association("specimen(donor(age[days$eq56]))")
    assert assoc.name == "specimen"
    assert assoc.children[0].name == "donor"
    assert assoc.children[0].children[0].filters == [Filter("days", "$eq", "56")]


def test_allensdk_style_q_query():
    query = parse_stages(
        "model::SectionDataSet,rma::criteria,products[id$in1],rma::include,genes,"
        "rma::options[num_rows$eq2000][start_row$eq0][order$eq'id'][count$eqfalse]")
    assert query.model == "SectionDataSet"
    assert query.associations[0].name == "products"
    assert [i.name for i in query.includes] == ["genes"]
    assert query.options == {"num_rows": "2000", "start_row": "0", "order": "id",
                             "count": "false"}


def test_service_stage_with_paging_inside_brackets():
    query = parse_stages("service::mouse_connectivity_target_spatial[seed_point$eq4950,3300,6800]"
                         "[start_row$eq25][num_rows$eq50]")
    assert query.service == "mouse_connectivity_target_spatial"
    assert query.params == {"seed_point": "4950,3300,6800", "start_row": "25", "num_rows": "50"}


def test_model_shortcut_parameters():
    query = parse_shortcut("Gene", {"criteria": "[acronym$il'abat']", "include": "organism",
                                    "num_rows": "all", "startRow": "5"})
    assert query.model == "Gene"
    assert query.filters == [Filter("acronym", "$il", "abat")]
    assert query.includes[0].name == "organism"
    assert query.options["num_rows"] == "all"
    assert query.options["start_row"] == "5"


@pytest.mark.parametrize("text", ["", "rma::criteria,[id$eq1]", "model::A,model::B",
                                  "model::A,rma::bogus", "model::A,[id$eq1]x",
                                  "pipe::list_data[set$eqx]",
                                  "service::s[a$eq1],rma::options[num_rows$eq5]"])
def test_bad_queries(text):
    with pytest.raises(RmaSyntaxError):
        parse_stages(text)
