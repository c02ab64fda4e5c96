"""The bundled adult mouse ontology (structure graph 1): lookups, tree walks, colours."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen.atlas.ontology import FIBER_TRACTS_ID, ROOT_ID, Ontology, hex_to_rgb


@pytest.fixture(scope="module")
def onto():
    return Ontology.default()


def test_size_and_root(onto):
    assert len(onto) == 1327
    assert onto.acronym(ROOT_ID) == "root" and onto.parent(ROOT_ID) is None
    assert onto.children(ROOT_ID)[0] == 8  # "grey", first child in graph order


def test_lookup_by_id_and_acronym(onto):
    assert onto.id_of("VISp") == 385 == onto.id_of("visp") == onto.id_of("385")
    assert onto.name(733) == "Ventral posteromedial nucleus of the thalamus"
    with pytest.raises(KeyError, match="unknown structure acronym"):
        onto.id_of("NotAStructure")
    with pytest.raises(KeyError, match="unknown structure id"):
        onto.id_of(123456789)
    assert 385 in onto and "x" not in onto


def test_ancestors_path_and_descendants(onto):
    assert onto.structure_id_path(385) == "/997/8/567/688/695/315/669/385/"
    hpf = onto.id_of("HPF")
    assert hpf in onto.ancestors(onto.id_of("CA1sp"))
    assert onto.id_of("CA1sp") in onto.descendants(hpf)
    assert onto.descendants(385)[0] == 385 and 385 not in onto.descendants(385, False)
    assert FIBER_TRACTS_ID in onto.ancestors(onto.id_of("cc"), include_self=True) or \
        FIBER_TRACTS_ID in onto.ancestors(onto.id_of("ccb"))


def test_colours(onto):
    assert onto.rgb(385) == (8, 133, 140)  # VISp 08858C
    assert hex_to_rgb("19399") == (1, 147, 153)  # lost leading zero restored
    colors = onto.color_dict([385, 733])
    assert colors[None][3] == 0 and colors[0][3] == 0
    np.testing.assert_allclose(colors[385], (8 / 255, 133 / 255, 140 / 255, 1.0))


def test_features_and_membership(onto):
    feats = onto.features_for([385, 0, 42424242])
    assert feats["index"].tolist() == [0, 385, 42424242]
    assert feats["acronym"].tolist() == ["", "VISp", "?"]
    assert onto.membership(onto.id_of("Isocortex"), [385, 733]).tolist() == [True, False]


@pytest.mark.parametrize("text", ["thal", "T", "VPM", "ventral post", "", "  Thalamus ",
                                  "zzz", "(", "a.b"])
def test_whole_table_search_equals_a_scan_of_every_structure(onto, text):
    """``matching`` + ``with_ancestors`` (vectorised, what the Structures dock's search uses)
    give exactly what a per-structure scan gives."""
    needle = text.strip().lower()
    ids = [int(i) for i in onto.table.index]
    hits = [not needle or needle in onto.acronym(s).lower() or needle in onto.name(s).lower()
            for s in ids]
    shown = {s for s, hit in zip(ids, hits, strict=True) if hit}
    for s in list(shown):
        shown.update(onto.ancestors(s))
    np.testing.assert_array_equal(onto.matching(text), hits)
    np.testing.assert_array_equal(onto.with_ancestors(onto.matching(text)),
                                  [s in shown for s in ids])


def test_parent_rows_and_unknown_parent(onto):
    rows = onto.parent_rows
    ids = onto.table.index
    assert rows[ids.get_loc(ROOT_ID)] == -1
    vpm = ids.get_loc(onto.id_of("VPM"))
    assert ids[rows[vpm]] == onto.parent(onto.id_of("VPM"))
    with pytest.raises(KeyError):
        onto.parent(123456789)


def test_default_if_parsed_parses_nothing_itself():
    """The Structures dock builds its tree at once when the bundled ontology was parsed
    already, and parses it in a worker otherwise: ``default_if_parsed`` never parses."""
    from napari_allen.atlas import ontology

    ontology._bundled.cache_clear()
    try:
        assert ontology.Ontology.default_if_parsed() is None
        assert ontology._bundled.cache_info().currsize == 0
        parsed = ontology.Ontology.default()
        assert ontology.Ontology.default_if_parsed() is parsed
    finally:
        ontology.Ontology.default()
