"""Structure correlation: definitions, the script's TOP_N selection, JSON/CSV outputs, dask."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from napari_allen.analysis.correlation import (
    correlation_matrix,
    dask_gene_correlation,
    json_matrix,
    output_paths,
    top_pairs,
    write_outputs,
)
from napari_allen.atlas.ontology import Ontology


def reference_pairwise_correlation(matrix: np.ndarray, min_periods: int = 2) -> np.ndarray:
    """The straightforward pairwise-complete Pearson, one pair at a time (slow; for checks)."""
    x = np.asarray(matrix, dtype=np.float64)
    n = x.shape[0]
    out = np.full((n, n), np.nan)
    valid = ~np.isnan(x)
    for i in range(n):
        for j in range(i, n):
            both = valid[i] & valid[j]
            if both.sum() < max(min_periods, 2):
                continue
            a = x[i, both] - x[i, both].mean()
            b = x[j, both] - x[j, both].mean()
            denom = math.sqrt(float(a @ a) * float(b @ b))
            if denom > 0:
                out[i, j] = out[j, i] = float(a @ b) / denom
    return out


def unionize_like(n_structures: int, n_experiments: int, seed: int = 0) -> np.ndarray:
    """StructureUnionize-shaped expression energy: skewed, gene- and structure-dependent, with
    whole-experiment structure gaps and scattered missing values (NaN)."""
    rng = np.random.default_rng(seed)
    gene_level = rng.lognormal(0.0, 1.0, size=n_experiments)
    structure_profile = rng.normal(0.0, 1.0, size=(n_structures, 4))
    gene_loading = rng.normal(0.0, 1.0, size=(4, n_experiments))
    energy = gene_level * np.exp(0.6 * structure_profile @ gene_loading / 2.0)
    energy *= rng.lognormal(0.0, 0.3, size=energy.shape)
    energy[rng.random(energy.shape) < 0.15] = np.nan
    energy[rng.random(n_structures) < 0.05, :] = np.nan  # structures never sampled...
    energy[:3, rng.random(n_experiments) < 0.5] = np.nan  # ...or half missing
    return energy


def script_top_pairs(corr: np.ndarray, ids: list[int], top_n: int) -> list[tuple]:
    """A literal port of the script's EstimateConnections (numpy.ma, Python loops)."""
    mcorr = np.ma.masked_array(corr, np.isnan(corr) | np.tril(np.ones(corr.shape, dtype=bool)))
    corrsort = np.ma.sort(mcorr, axis=None, endwith=False).compressed()
    ncorr = len(corrsort)
    idx = ncorr - top_n if ncorr > top_n else 0
    threshold = corrsort[idx]
    out = []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            c = corr[i][j]
            if c > threshold:
                out.append((ids[i], ids[j], c))
    return out


def test_pairwise_equals_straightforward_reference_and_pandas():
    x = unionize_like(80, 300)
    fast = correlation_matrix(x)
    ref = reference_pairwise_correlation(x)
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    assert np.nanmax(np.abs(fast - ref)) < 1e-9
    pandas_r = pd.DataFrame(x.T).corr(min_periods=2).to_numpy()
    assert np.nanmax(np.abs(fast - pandas_r)) < 1e-9
    assert np.allclose(np.diag(fast)[~np.isnan(np.diag(fast))], 1.0)


def test_pairwise_survives_large_offsets():
    # Without centring, sum(xy) - sum(x)sum(y)/n cancels catastrophically at offset 1e6.
    x = unionize_like(20, 200, seed=3) + 1e6
    assert np.nanmax(np.abs(correlation_matrix(x) - reference_pairwise_correlation(x))) < 1e-9


def test_numpy_ma_mode_matches_numpy_ma_corrcoef_and_differs_from_pairwise():
    x = unionize_like(60, 200, seed=1)
    expected = np.ma.corrcoef(np.ma.masked_array(x, np.isnan(x))).filled(np.nan)
    got = correlation_matrix(x, method="numpy_ma")
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) < 1e-9
    # The script's numbers are not pairwise-complete Pearson when values are missing.
    assert np.nanmax(np.abs(got - correlation_matrix(x))) > 1e-3


def test_constant_rows_and_too_few_common_values_are_nan():
    x = np.array([
        [1.0, 2.0, 3.0, 4.0],
        [5.0, 5.0, 5.0, 5.0],          # constant: no correlation defined
        [2.0, np.nan, np.nan, 1.0],
        [np.nan, 7.0, 1.0, np.nan],    # shares nothing with row 2
    ])
    r = correlation_matrix(x)
    assert np.isnan(r[0, 1]) and np.isnan(r[1, 1])
    assert np.isnan(r[2, 3]) and np.isnan(r[3, 2])
    assert r[0, 2] == pytest.approx(-1.0)
    assert r[0, 3] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="unknown correlation method"):
        correlation_matrix(x, method="spearman")


def test_top_pairs_follow_the_script_exactly_with_ties_and_nans():
    corr = np.array([
        [1.0, 0.9, 0.5, np.nan, 0.5],
        [0.9, 1.0, 0.7, 0.2, 0.5],
        [0.5, 0.7, 1.0, 0.8, 0.1],
        [np.nan, 0.2, 0.8, 1.0, 0.3],
        [0.5, 0.5, 0.1, 0.3, 1.0],
    ])
    ids = [10, 20, 30, 40, 50]
    # Candidates (i<j, not NaN): 0.9 .5 .5 | .7 .2 .5 | .8 .1 | .3 -> 9 values.
    got = top_pairs(corr, ids, top_n=4)
    # sorted: .1 .2 .3 .5 .5 .5 .7 .8 .9 ; idx 9-4=5 -> threshold .5 ; keep > .5 (3 pairs,
    # not 4: the threshold's ties are dropped); row-major order, not sorted by r.
    assert list(got.itertuples(index=False, name=None)) == [
        (10, 20, 0.9), (20, 30, 0.7), (30, 40, 0.8)
    ]
    for top_n in (1, 2, 3, 4, 8, 9, 10, 100):
        expected = script_top_pairs(corr, ids, top_n)
        assert list(top_pairs(corr, ids, top_n).itertuples(index=False, name=None)) == expected
    # top_n >= candidates: everything but the minimum.
    assert len(top_pairs(corr, ids, top_n=100)) == 8


def test_top_pairs_on_realistic_matrix_matches_script_port():
    x = unionize_like(120, 150, seed=2)
    corr = correlation_matrix(x)
    ids = list(range(1000, 1120))
    got = top_pairs(corr, ids, top_n=500)
    expected = script_top_pairs(corr, ids, 500)
    assert len(got) == len(expected) == 499  # continuous values: exactly TOP_N - 1
    assert list(got.itertuples(index=False, name=None)) == expected
    assert (got["source"] < got["target"]).all()


def test_top_pairs_rejects_mismatched_ids_and_handles_empty():
    with pytest.raises(ValueError, match="does not match"):
        top_pairs(np.eye(3), [1, 2], top_n=5)
    empty = top_pairs(np.full((3, 3), np.nan), [1, 2, 3], top_n=5)
    assert empty.empty and list(empty.columns) == ["source", "target", "corr"]


def test_write_outputs_script_files_and_csv(tmp_path):
    onto = Ontology.default()
    ids = [385, 394, 409]  # VISp, VISam, VISl
    corr = np.array([[1.0, 0.8, np.nan], [0.8, 1.0, 0.3], [np.nan, 0.3, 1.0]])
    conns = top_pairs(corr, ids, top_n=2000)
    paths = write_outputs(tmp_path / "out.json", corr, ids, conns, onto, volumes={385: 1234.0})
    assert paths == output_paths(tmp_path / "out")
    assert paths["structures"].name == "out.structures.json"
    structures = json.loads(paths["structures"].read_text())
    assert [s["id"] for s in structures] == ids
    assert structures[0]["acronym"] == "VISp"
    assert structures[0]["structure_id_path"][:2] == [997, 8]
    assert structures[0]["structure_id_path"][-1] == 385
    assert structures[0]["volume"] == 1234.0 and structures[1]["volume"] is None
    assert structures[0]["num_children"] == 6  # VISp layers
    connections = json.loads(paths["connections"].read_text())
    assert connections == [{"source": 385, "target": 394, "corr": 0.8}]
    text = paths["correlations"].read_text()
    assert text == "[[1.0, 0.8, NaN], [0.8, 1.0, 0.3], [NaN, 0.3, 1.0]]"  # json.dumps's NaN
    matrix = json.loads(text)
    assert np.isnan(matrix[0][2]) and matrix[1][2] == 0.3
    table = pd.read_csv(paths["connections_csv"])
    assert list(table.columns) == ["source", "target", "source_acronym", "target_acronym", "corr"]
    assert table.iloc[0]["target_acronym"] == "VISam"
    square = pd.read_csv(paths["correlations_csv"], index_col=0)
    assert list(square.columns) == ["VISp", "VISam", "VISl"]


def test_dask_gene_correlation_matches_pairwise_with_minus_one_as_missing():
    rng = np.random.default_rng(4)
    stack = rng.gamma(2.0, 2.0, size=(7, 6, 5, 4)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.2] = -1.0
    flat = stack.reshape(7, -1).astype(np.float64)
    flat[flat < 0] = np.nan
    expected = reference_pairwise_correlation(flat)
    import dask.array as da

    got = dask_gene_correlation(da.from_array(stack, chunks=(1, 6, 5, 4)), min_periods=2)
    assert np.nanmax(np.abs(got - expected)) < 1e-9
    seeds = dask_gene_correlation(stack, seeds=[2, 5], min_periods=2)
    assert seeds.shape == (2, 7)
    assert np.nanmax(np.abs(seeds - expected[[2, 5]])) < 1e-9


def test_local_dask_paths_do_not_import_distributed():
    """The gene correlation and the per-structure matrix over a chunked store run on dask's
    threads without importing ``distributed`` (tornado, click, ...: ~40,000 objects that every
    later full garbage collection of napari's process would walk); same results as
    computed in this process. In a subprocess: this one may have imported it already."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import numpy as np, dask.array as da\n"
        "from napari_allen.analysis.correlation import dask_gene_correlation\n"
        "from napari_allen.analysis.expression import dask_grid_matrix\n"
        "rng = np.random.default_rng(4)\n"
        "stack = rng.gamma(2.0, 2.0, size=(7, 6, 5, 4)).astype(np.float32)\n"
        "stack[rng.random(stack.shape) < 0.2] = -1.0\n"
        "r = dask_gene_correlation(da.from_array(stack, chunks=(1, 3, 5, 4)), seeds=[1, 3],"
        " min_periods=2)\n"
        "m = dask_grid_matrix(da.from_array(stack, chunks=(2, 3, 5, 4)), list(range(7)),"
        " np.full((6, 5, 4), 997, np.uint32), structure_ids=[997])\n"
        "print(repr(r.tolist()), repr(m.to_numpy().tolist()))\n"
        "print('distributed' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "False", out.stdout
    import dask.array as da

    from napari_allen.analysis.expression import dask_grid_matrix

    rng = np.random.default_rng(4)
    stack = rng.gamma(2.0, 2.0, size=(7, 6, 5, 4)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.2] = -1.0
    r = dask_gene_correlation(da.from_array(stack, chunks=(1, 3, 5, 4)), seeds=[1, 3],
                              min_periods=2)
    m = dask_grid_matrix(da.from_array(stack, chunks=(2, 3, 5, 4)), list(range(7)),
                         np.full((6, 5, 4), 997, np.uint32), structure_ids=[997])
    assert lines[-2] == f"{r.tolist()!r} {m.to_numpy().tolist()!r}"


def test_dask_gene_correlation_cancel():
    from napari_allen.progress import Cancelled, CancelToken

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        dask_gene_correlation(np.ones((3, 2, 2, 2)), cancel=token)


def test_dask_gene_correlation_on_a_distributed_cluster():
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed (pip install distributed)"
    )
    rng = np.random.default_rng(5)
    stack = rng.normal(5.0, 1.0, size=(5, 4, 4, 4))
    stack[0, 0] = -1
    flat = stack.reshape(5, -1).copy()
    flat[flat < 0] = np.nan
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        got = dask_gene_correlation(stack, scheduler=cluster.scheduler_address, min_periods=2)
    assert np.nanmax(np.abs(got - reference_pairwise_correlation(flat))) < 1e-9


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (1, 1), (6, 5), (40, 40)])
def test_json_matrix_is_json_dumps_of_the_rows(shape):
    """Byte for byte what the script writes (``json.dumps`` of the rows): repeated rows (the
    masked rows of structures without data), ±0.0, NaN, ±Infinity, subnormals, huge values."""
    rng = np.random.default_rng(sum(shape))
    m = rng.normal(size=shape)
    if m.size:
        specials = [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, 1e300, 1.0, 1 / 3]
        flat = m.ravel()
        flat[rng.integers(0, flat.size, size=flat.size // 2 + 1)] = rng.choice(specials)
        m[len(m) // 2:] = -0.0  # identical rows, written once
        m[0, 0] = np.float64("-nan")  # NaN with the sign bit: json still writes NaN
    assert json_matrix(m) == json.dumps(m.tolist())
    assert json_matrix(m.T) == json.dumps(m.T.tolist())  # not C-contiguous
