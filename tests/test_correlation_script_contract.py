"""The structure-correlation job's contract with Allen's script: its three correlation
definitions on a fixed matrix (values computed here with explicit loops), numpy's masked data,
the structure records, and ``correlate`` writing the script's files byte for byte."""

from __future__ import annotations

import json
import math
import urllib.request

import numpy as np
import pytest

from napari_allen.analysis.correlation import (
    correlation_matrix,
    masked_correlation,
    script_structures,
    structure_similarity,
)
from napari_allen.cli import main

NAN = float("nan")
# 5 structures x 6 experiments; row 3 shares one experiment with row 2, row 4 none with row 3.
FIXED = np.array([
    [1.0, 2.0, 4.0, 3.0, 5.0, 7.0],
    [2.0, NAN, 5.0, 1.0, NAN, 6.0],
    [9.0, 7.0, NAN, 4.0, 3.0, 1.0],
    [NAN, NAN, 2.0, 8.0, NAN, NAN],
    [3.0, 1.0, NAN, NAN, 6.0, 2.0],
])


def _valid(i):
    return [k for k in range(FIXED.shape[1]) if not math.isnan(FIXED[i, k])]


def _mean(values):
    return sum(values) / len(values)


def loop_legacy(i, j):
    """numpy.ma.corrcoef before numpy 2.1: products of deviations from whole-row means over
    the common experiments / n, over sqrt of the two pairwise-complete variances (ddof 0)."""
    common = [k for k in _valid(i) if k in _valid(j)]
    mi, mj = _mean([FIXED[i, k] for k in _valid(i)]), _mean([FIXED[j, k] for k in _valid(j)])
    c = sum((FIXED[i, k] - mi) * (FIXED[j, k] - mj) for k in common) / len(common)
    ci, cj = _mean([FIXED[i, k] for k in common]), _mean([FIXED[j, k] for k in common])
    vi = sum((FIXED[i, k] - ci) ** 2 for k in common) / len(common)
    vj = sum((FIXED[j, k] - cj) ** 2 for k in common) / len(common)
    return c / math.sqrt(vi * vj)


def loop_modern(i, j):
    """numpy.ma.corrcoef since numpy 2.1: covariance over the common experiments around the
    whole-row means with n - 1, over the whole-row standard deviations (ddof 1)."""
    def cov(a, b):
        common = [k for k in _valid(a) if k in _valid(b)]
        ma_ = _mean([FIXED[a, k] for k in _valid(a)])
        mb_ = _mean([FIXED[b, k] for k in _valid(b)])
        return sum((FIXED[a, k] - ma_) * (FIXED[b, k] - mb_) for k in common) / (len(common) - 1)
    return cov(i, j) / math.sqrt(cov(i, i) * cov(j, j))


def loop_pairwise(i, j):
    """Pearson r over the common experiments only."""
    common = [k for k in _valid(i) if k in _valid(j)]
    a = [FIXED[i, k] for k in common]
    b = [FIXED[j, k] for k in common]
    ma_, mb_ = _mean(a), _mean(b)
    num = sum((x - ma_) * (y - mb_) for x, y in zip(a, b, strict=True))
    return num / math.sqrt(sum((x - ma_) ** 2 for x in a) * sum((y - mb_) ** 2 for y in b))


@pytest.mark.parametrize("method, loop, min_common", [
    ("numpy_ma_legacy", loop_legacy, 2),
    ("numpy_ma", loop_modern, 2),
    ("pairwise", loop_pairwise, 3),
])
def test_the_three_definitions_on_a_fixed_matrix(method, loop, min_common):
    got = correlation_matrix(FIXED, method=method, min_periods=3)
    n = FIXED.shape[0]
    for i in range(n):
        for j in range(n):
            common = len([k for k in _valid(i) if k in _valid(j)])
            if common < min_common:
                assert math.isnan(got[i, j]), (method, i, j)
            else:
                assert got[i, j] == pytest.approx(loop(i, j), abs=1e-12), (method, i, j)
    assert np.array_equal(got, got.T, equal_nan=True)


def test_the_definitions_differ_where_values_are_missing_and_agree_where_not():
    legacy = correlation_matrix(FIXED, method="numpy_ma_legacy")
    modern = correlation_matrix(FIXED, method="numpy_ma")
    pairwise = correlation_matrix(FIXED, method="pairwise", min_periods=2)
    # rows 1 and 2 miss different experiments (with one complete row legacy = pairwise)
    assert abs(legacy[1, 2] - modern[1, 2]) > 1e-3 and abs(legacy[1, 2] - pairwise[1, 2]) > 1e-3
    assert legacy[0, 1] == pytest.approx(pairwise[0, 1], abs=1e-12)
    full = FIXED[:1].copy()
    full = np.vstack([full, 2 * full + 1 + np.arange(6) ** 2])  # no missing value
    values = [correlation_matrix(full, method=m)[0, 1] for m in
              ("numpy_ma_legacy", "numpy_ma", "pairwise")]
    assert max(values) - min(values) < 1e-12
    assert values[0] == pytest.approx(np.corrcoef(full)[0, 1], abs=1e-12)


def test_masked_data_are_numpys_as_the_script_writes_them():
    # Installed numpy computes the modern definition: its data, mask included, bit for bit.
    expected = np.ma.corrcoef(np.ma.masked_array(FIXED, np.isnan(FIXED)))
    data, mask = masked_correlation(FIXED, "numpy_ma")
    assert np.array_equal(mask, np.ma.getmaskarray(expected))
    assert json.dumps(data.tolist()) == json.dumps(expected.data.tolist())
    # No common experiment: numpy's 0 / (0 - 1) = -0.0 (modern) vs the legacy 0.0 numerator.
    assert mask[3, 4] and math.copysign(1.0, data[3, 4]) == -1.0
    legacy, legacy_mask = masked_correlation(FIXED, "numpy_ma_legacy")
    assert legacy_mask[3, 4] and legacy[3, 4] == 0.0 and math.copysign(1.0, legacy[3, 4]) == 1.0
    # One common experiment: zero spread, masked; the legacy data keep the product / 1.
    assert legacy_mask[2, 3]
    m2, m3 = _mean([FIXED[2, k] for k in _valid(2)]), _mean([FIXED[3, k] for k in _valid(3)])
    assert legacy[2, 3] == pytest.approx((FIXED[2, 3] - m2) * (FIXED[3, 3] - m3))


def test_script_structures_records_children_and_last_volume():
    rows = [  # API order, not sorted; keys as the API sends them
        {"acronym": "root", "id": 997, "structure_id_path": "/997/"},
        {"acronym": "B", "id": 20, "structure_id_path": "/997/10/20/"},
        {"acronym": "A", "id": 10, "structure_id_path": "/997/10/"},
        {"acronym": "C", "id": 5, "structure_id_path": "/997/5/"},
    ]
    unionizes = [
        [{"structure_id": 20, "sum_pixels": 3.0}, {"structure_id": 10, "sum_pixels": 7}],
        [{"structure_id": 20, "sum_pixels": 4.5}, {"structure_id": 99, "sum_pixels": 1.0}],
    ]
    leaves, records = script_structures(rows, unionizes)
    assert leaves == [5, 20]
    assert [r["id"] for r in records] == [997, 20, 10, 5]
    assert list(records[1]) == ["acronym", "id", "structure_id_path", "num_children", "volume"]
    assert records[1]["structure_id_path"] == [997, 10, 20]
    assert [r["num_children"] for r in records] == [2, 0, 1, 0]
    assert records[1]["volume"] == 4.5            # the last data set wins
    assert records[2]["volume"] == 7 and isinstance(records[2]["volume"], int)  # as sent
    assert "volume" not in records[3] and "volume" not in records[0]
    assert rows[0]["structure_id_path"] == "/997/"  # input untouched
    with pytest.raises(ValueError, match="parent 10"):
        script_structures(rows[:2])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _paged(url: str) -> list:
    rows, start = [], 0
    while True:
        env = _get(f"{url}&start_row={start}&num_rows=2000")
        rows += env["msg"]
        start += len(env["msg"])
        if start >= int(env["total_rows"]) or not env["msg"]:
            return rows


def script_outputs(base: str, n: int) -> dict[str, str]:
    """The script's algorithm, written out plainly: its queries, its loops, numpy.ma."""
    api = base + "/api/v2/data"
    datasets = _paged(f"{api}/SectionDataSet/query.json?criteria=[failed$eq'false']"
                      "[expression$eq'true'],products[id$eq1],plane_of_section[id$eq1]")[:n]
    structs = _paged(f"{api}/Structure/query.json?criteria=[graph_id$eq1]")
    by_id = {}
    for s in structs:
        s["num_children"] = 0
        s["structure_id_path"] = [int(p) for p in s["structure_id_path"].split("/") if p]
        by_id[s["id"]] = s
    for s in by_id.values():
        if len(s["structure_id_path"]) > 1:
            by_id[s["structure_id_path"][-2]]["num_children"] += 1
    leaves = sorted(sid for sid, s in by_id.items() if s["num_children"] == 0)
    row = {sid: i for i, sid in enumerate(leaves)}
    col = {d["id"]: j for j, d in enumerate(datasets)}
    expression = np.full((len(leaves), len(datasets)), np.nan)
    for d in datasets:
        for u in _paged(f"{api}/StructureUnionize/query.json?criteria=[section_data_set_id$eq"
                        f"{d['id']}],structure[graph_id$eq1]"):
            by_id[u["structure_id"]]["volume"] = u["sum_pixels"]
            if u["structure_id"] in row and u["section_data_set_id"] in col:
                expression[row[u["structure_id"]], col[u["section_data_set_id"]]] = \
                    u["expression_energy"]
    corr = np.ma.corrcoef(np.ma.masked_array(expression, np.isnan(expression))).data
    upper = corr[np.triu_indices(len(leaves), 1)]
    candidates = np.sort(upper[~np.isnan(upper)])
    threshold = candidates[len(candidates) - 2000 if len(candidates) > 2000 else 0]
    conns = [{"source": leaves[i], "target": leaves[j], "corr": corr[i][j]}
             for i in range(len(leaves)) for j in range(i + 1, len(leaves))
             if corr[i][j] > threshold]
    return {"connections": json.dumps(conns), "structures": json.dumps(list(by_id.values())),
            "correlations": json.dumps([list(r) for r in corr])}


def test_correlate_writes_the_scripts_files_byte_for_byte(allen_api, tmp_path):
    """``--method numpy_ma`` is the definition installed numpy computes, so the script's
    algorithm run here must give the same bytes; the default differs in values only."""
    n = 6
    expected = script_outputs(allen_api.url, n)
    assert main(["correlate", "--plane", "coronal", "--first", str(n), "--method", "numpy_ma",
                 "--out", str(tmp_path / "out.json")]) == 0
    for kind, text in expected.items():
        assert (tmp_path / f"out.{kind}.json").read_text() == text, kind
    structures = json.loads(expected["structures"])
    assert len(structures) == 1327 and all("num_children" in s for s in structures)
    conns = json.loads(expected["connections"])
    assert conns and all(c["source"] < c["target"] for c in conns)

    assert main(["correlate", "--plane", "coronal", "--first", str(n),
                 "--out", str(tmp_path / "legacy")]) == 0
    legacy = json.loads((tmp_path / "legacy.correlations.json").read_text())
    assert (tmp_path / "legacy.structures.json").read_text() == expected["structures"]
    assert len(legacy) == len(json.loads(expected["correlations"]))


def test_structure_similarity_default_is_the_legacy_definition():
    import pandas as pd

    matrix = pd.DataFrame(FIXED, index=[1, 2, 3, 4, 5])
    result = structure_similarity(matrix, top_n=3)
    assert result.method == "numpy_ma_legacy"
    assert result.values[0, 1] == pytest.approx(loop_legacy(0, 1), abs=1e-12)
    assert np.isnan(result.values[3, 4]) and result.corr[3, 4] == 0.0
