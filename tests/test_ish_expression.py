"""Per-structure expression from the real Nrp1 grid + gridAnnotation, and expression matrices."""

from __future__ import annotations

import zipfile
from importlib import resources

import numpy as np
import pytest

from napari_allen.analysis.expression import (
    StructureMembership,
    grid_matrix,
    structure_expression,
)
from napari_allen.atlas.ontology import Ontology

DATA = resources.files("napari_allen") / "data"


def _read_member(zip_ref, member: str, dtype: str) -> np.ndarray:
    # Read independently of napari_allen.io so these tests check the analysis only.
    with zip_ref.open("rb") as fh, zipfile.ZipFile(fh) as zf:
        raw = zf.read(member)
    return np.frombuffer(raw, dtype=dtype).reshape((67, 41, 58), order="F")


@pytest.fixture(scope="module")
def nrp1() -> np.ndarray:
    return _read_member(DATA / "ish" / "Nrp1_P56_coronal_74272479_200um.zip", "energy.raw", "<f4")


@pytest.fixture(scope="module")
def annotation() -> np.ndarray:
    return _read_member(
        DATA / "annotation" / "P56_Mouse_gridAnnotation.zip", "gridAnnotation.raw", "<u4"
    )


def test_real_nrp1_rolled_up_means_match_a_direct_computation(nrp1, annotation):
    onto = Ontology.default()
    table = structure_expression(nrp1, annotation, onto).set_index("structure_id")
    for acronym in ("HPF", "Isocortex", "CA1", "root", "TH"):
        sid = onto.id_of(acronym)
        members = np.isin(annotation, onto.descendants(sid))
        valid = members & (nrp1 != -1)
        row = table.loc[sid]
        assert row["n_voxels"] == members.sum()
        assert row["n_valid"] == valid.sum()
        assert row["mean"] == pytest.approx(nrp1[valid].astype(float).mean(), rel=1e-9)
        assert row["max"] == pytest.approx(float(nrp1[valid].max()))
        assert row["std"] == pytest.approx(nrp1[valid].astype(float).std(), rel=1e-6)
    # Known biology (allen-data README): Nrp1 is highest in the hippocampal formation among
    # the major divisions.
    majors = table.loc[onto.ids_of(["Isocortex", "OLF", "HPF", "CTXsp", "STR", "PAL", "TH",
                                    "HY", "MB", "P", "MY", "CB"])]
    assert majors["mean"].idxmax() == onto.id_of("HPF")
    assert list(table.columns[:4]) == ["acronym", "name", "depth", "graph_order"]


def test_no_rollup_counts_only_own_label(nrp1, annotation):
    onto = Ontology.default()
    rolled = structure_expression(nrp1, annotation, onto).set_index("structure_id")
    own = structure_expression(nrp1, annotation, onto, rollup=False).set_index("structure_id")
    present = set(np.unique(annotation).tolist()) - {0}
    # A labelled structure whose descendants are labelled too (e.g. a parent region).
    parent = next(s for s in present if set(onto.descendants(s, include_self=False)) & present)
    assert own.loc[parent, "n_voxels"] == (annotation == parent).sum()
    assert rolled.loc[parent, "n_voxels"] > own.loc[parent, "n_voxels"]
    assert set(own.index) == present  # only labels themselves without roll-up
    # Every voxel with a label is counted exactly once without roll-up.
    assert own["n_voxels"].sum() == (annotation > 0).sum()


def test_missing_values_and_unknown_labels():
    onto = Ontology.default()
    visp = onto.id_of("VISp")
    ann = np.zeros((2, 2, 2), dtype=np.uint32)
    ann[0] = visp
    ann[1, 0, 0] = 123456789  # not in the ontology: kept under its own id
    values = np.array([[[1.0, -1.0], [3.0, np.nan]], [[7.0, 8.0], [9.0, 9.0]]], np.float32)
    table = structure_expression(values, ann, onto).set_index("structure_id")
    assert table.loc[visp, "n_voxels"] == 4 and table.loc[visp, "n_valid"] == 2
    assert table.loc[visp, "mean"] == pytest.approx(2.0)
    assert table.loc[onto.id_of("Isocortex"), "mean"] == pytest.approx(2.0)
    assert table.loc[123456789, "acronym"] == "?"
    assert table.loc[123456789, "mean"] == pytest.approx(7.0)
    empty = structure_expression(np.full((2, 2, 2), -1.0), ann, onto).set_index("structure_id")
    assert np.isnan(empty.loc[visp, "mean"]) and empty.loc[visp, "n_valid"] == 0
    with pytest.raises(ValueError, match="does not match the annotation"):
        structure_expression(np.zeros((3, 2, 2)), ann, onto)


def test_grid_matrix_equals_per_grid_tables(nrp1, annotation):
    onto = Ontology.default()
    present = set(np.unique(annotation).tolist())
    leaves = [s for s in onto.leaves() if s in present][:50]
    second = np.where(nrp1 >= 0, nrp1 * 2.0 + 1.0, -1.0).astype(np.float32)
    matrix = grid_matrix({74272479: nrp1, 1: second}, annotation, onto,
                         structure_ids=leaves, batch=1)
    assert list(matrix.columns) == [74272479, 1]
    assert list(matrix.index) == leaves
    single = structure_expression(nrp1, annotation, onto, structure_ids=leaves)
    assert np.allclose(matrix[74272479].to_numpy(), single["mean"].to_numpy(), equal_nan=True)
    assert np.allclose(matrix[1], matrix[74272479] * 2 + 1, equal_nan=True)


def test_membership_is_reusable_across_grids(nrp1, annotation):
    m = StructureMembership(annotation, structure_ids=[997, 1089])
    means = m.means(np.stack([nrp1, nrp1]))
    assert means.shape == (2, 2) and np.allclose(means[0], means[1])


def test_script_matrix_from_records():
    from napari_allen.analysis.correlation import script_matrix

    unionizes = {
        6: [{"section_data_set_id": 6, "structure_id": 10, "expression_energy": 3.0},
            {"section_data_set_id": 6, "structure_id": 30, "expression_energy": None}],
        5: [{"section_data_set_id": 5, "structure_id": 10, "expression_energy": 1.0},
            {"section_data_set_id": 5, "structure_id": 20, "expression_energy": 2.0},
            {"section_data_set_id": 5, "structure_id": 99, "expression_energy": 9.0}],
    }
    m = script_matrix(unionizes, [10, 20, 30])
    assert list(m.index) == [10, 20, 30] and list(m.columns) == [6, 5]  # data-set order kept
    assert m.loc[10, 6] == 3.0 and m.loc[20, 5] == 2.0
    assert np.isnan(m.loc[30, 6]) and np.isnan(m.loc[20, 6])  # null and missing -> NaN


def _script_loop(unionizes, rows, value="expression_energy"):
    """The script's own fill, record by record (a later record overwrites)."""
    out = np.full((len(rows), len(unionizes)), np.nan)
    cols = list(unionizes)
    for records in unionizes.values():
        for u in records:
            if u.get("structure_id") in rows and u.get("section_data_set_id") in cols:
                v = u.get(value)
                out[rows.index(u["structure_id"]), cols.index(u["section_data_set_id"])] = \
                    np.nan if v is None else v
    return out


@pytest.mark.parametrize("case", ["plain", "foreign", "twice", "text"])
@pytest.mark.parametrize("rows_first", [True, False])
def test_script_matrix_builder_matches_the_script_in_any_arrival_order(case, rows_first):
    """Columns reduced as each data set arrives (in any order, before or after the rows are
    known) give the script's matrix cell for cell; so do the record-by-record cases: a record
    naming another data set (it lands in that column, later data sets overwriting), one
    structure twice in a data set (the last wins); a value given as text converts alike."""
    from napari_allen.analysis.correlation import ScriptMatrixBuilder, script_matrix_array

    rng = np.random.default_rng(1)
    rows = [10, 20, 30, 40]
    unionizes = {e: [{"section_data_set_id": e, "structure_id": s, "sum_pixels": float(e + s),
                      "expression_energy": float(rng.random())} for s in (10, 20, 30, 99)]
                 for e in (7, 5, 6)}
    unionizes[5][1]["expression_energy"] = None
    if case == "foreign":
        unionizes[7].append({"section_data_set_id": 6, "structure_id": 40, "sum_pixels": 1.0,
                             "expression_energy": -1.0})  # into data set 6's column
        unionizes[6].append({"section_data_set_id": 5, "structure_id": 10, "sum_pixels": 2.0,
                             "expression_energy": -2.0})  # 6 comes after 5: it wins
    elif case == "twice":
        unionizes[6].append({"section_data_set_id": 6, "structure_id": 20, "sum_pixels": 3.0,
                             "expression_energy": -3.0})
    elif case == "text":
        unionizes[7][0]["expression_energy"] = "0.25"
    expected = _script_loop(unionizes, rows)

    builder = ScriptMatrixBuilder()
    if rows_first:
        builder.set_rows(rows)
    for e in (6, 7, 5):  # arrival order is not the script's order
        builder.add(e, unionizes[e])
    builder.set_rows(rows)
    got = builder.matrix(list(unionizes))
    np.testing.assert_array_equal(got, expected)
    # columns reduced on arrival, unless records name other data sets or a structure twice
    reduced = [part.index is not None for part in builder._parts.values()]
    assert all(reduced) == (case in ("plain", "text"))
    np.testing.assert_array_equal(script_matrix_array(unionizes, rows), expected)
    last = {u["structure_id"]: u["sum_pixels"] for recs in unionizes.values() for u in recs}
    assert builder.last_sum_pixels(list(unionizes)) == last
    assert list(builder.last_sum_pixels(list(unionizes))) == list(last)  # same key order
