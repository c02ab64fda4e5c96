"""Structure-structure (and gene-gene) Pearson correlation with missing values.

"Correlation ignoring missing values" is ambiguous; three definitions are offered, by name:

- ``"numpy_ma_legacy"`` (default for the structure-similarity job): what Allen's
  structure-correlation script computed when it was published, ``numpy.ma.corrcoef`` as numpy
  computed it until numpy 2.1 (numpy PR #26285, 2024, changed it). Each row is centred on the
  mean of *all* its own valid values; the products are summed over the pair's common
  observations; the result is divided by the pairwise-complete standard deviations (each row's
  spread around its mean over the *common* observations). Rows without missing values give
  the ordinary Pearson r.
- ``"numpy_ma"``: ``numpy.ma.corrcoef`` since numpy 2.1: the same centring and sum of products,
  divided by ``n_common - 1``, then by the *whole-row* standard deviations ``sqrt(diag)``. It
  can leave [-1, 1] when rows have missing values.
- ``"pairwise"``: the pairwise-complete Pearson correlation: means, variances and covariance
  all over the pair's common observations (``pandas.DataFrame.corr``, R's
  ``use="pairwise.complete.obs"``); always in [-1, 1].

For the two ``numpy_ma*`` definitions :func:`masked_correlation` also returns numpy's mask and
the values numpy leaves *under* it (the script writes ``corr.data``, so these reach its output:
``-0.0`` or ``0.0`` for pairs without a common experiment, the raw covariance where a standard
deviation is zero). :func:`correlation_matrix` turns masked entries into NaN.

All are computed with matrix products (no Python loops over pairs), and the pairwise code runs
lazily on dask arrays (:func:`dask_gene_correlation`), so a distributed cluster can do the
voxel-level gene x gene correlation of a whole-plane store.

The top-pair selection and the JSON outputs reproduce the script (see :func:`top_pairs`,
:func:`write_outputs`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_allen.analysis.methods import DEFAULT_METHOD, DEFAULT_TOP_N, METHODS
from napari_allen.progress import CancelToken, ProgressCallback, check, report

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported where a DataFrame is made (top_pairs, script_matrix, the CSVs,
# Similarity.connections), not here: ``napari-allen correlate`` writes the script's JSON
# files without it (its import is ~0.2 s of CPU, a tenth of the command).

#: The script's top pairs as three aligned arrays: source ids, target ids, r.
PairArrays = tuple[np.ndarray, np.ndarray, np.ndarray]

#: numpy's ``_DomainSafeDivide`` masks ``a / b`` where ``|a| * tiny >= |b|``.
_TINY = np.finfo(np.float64).tiny


# --------------------------------------------------------------------------------------------
# core: masked matrix products (numpy or dask arrays)
# --------------------------------------------------------------------------------------------
def _prepare_numpy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_prepare` for in-memory arrays, with fewer full passes over the data."""
    valid = ~np.isnan(x)
    centred = np.where(valid, x, 0.0)
    count = valid.sum(axis=1)
    mean = centred.sum(axis=1) / np.maximum(count, 1)
    centred -= mean[:, None]
    centred[~valid] = 0.0
    return centred, valid.astype(np.float64)


def _prepare(x):
    """Missing (NaN) -> 0 after centring each row on its own valid mean; plus the 0/1 mask.

    Centring first does not change either definition (both are shift-invariant per row) but
    removes the large common offset that would otherwise cancel catastrophically in
    ``sum(xy) - sum(x) sum(y) / n``.
    """
    valid = ~np.isnan(x)
    mask = valid.astype(np.float64)
    count = mask.sum(axis=1, keepdims=True)
    total = np.where(valid, x, 0.0).sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / np.maximum(count, 1.0)
    centred = np.where(valid, x - mean, 0.0)
    return centred, mask


def _pairwise_from(a0, am, b0, bm, min_periods: int):
    """Pairwise-complete r from centred/zero-filled rows ``a0``/``b0`` and masks ``am``/``bm``."""
    n = am @ bm.T                    # common observations per pair
    sx = a0 @ bm.T                   # sum of a over the pair's common observations
    sy = am @ b0.T                   # sum of b over the same observations
    sxx = (a0 * a0) @ bm.T
    syy = am @ (b0 * b0).T
    sxy = a0 @ b0.T
    return _pairwise_finish(n, sx, sy, sxx, syy, sxy, min_periods)


def _pairwise_symmetric(x0, xm, min_periods: int) -> np.ndarray:
    """:func:`_pairwise_from` of a matrix with itself: 4 products instead of 6.

    ``sy = sx.T`` and ``syy = sxx.T``; ``x0 @ x0.T`` and ``xm @ xm.T`` are symmetric rank-k
    updates (BLAS syrk, half a general product each).
    """
    if xm.shape[1] < 2**24:
        # Counts are integers below 2**24: exact in float32, at half the cost.
        m32 = xm.astype(np.float32)
        n = (m32 @ m32.T).astype(np.float64)
    else:
        n = xm @ xm.T
    sx = x0 @ xm.T
    sxx = (x0 * x0) @ xm.T
    sxy = x0 @ x0.T
    return _pairwise_finish(n, sx, sx.T, sxx, sxx.T, sxy, min_periods)


def _pairwise_finish(n, sx, sy, sxx, syy, sxy, min_periods: int):
    with np.errstate(invalid="ignore", divide="ignore"):
        n_safe = np.maximum(n, 1.0)
        cov = sxy - sx * sy / n_safe
        vx = sxx - sx * sx / n_safe
        vy = syy - sy * sy / n_safe
        # A variance that is zero up to rounding (a constant row over the common subset) has no
        # defined correlation: NaN, as the straightforward formula's 0/0 gives.
        tiny_x = vx <= 1e-13 * np.maximum(sxx, 1e-300)
        tiny_y = vy <= 1e-13 * np.maximum(syy, 1e-300)
        r = cov / np.sqrt(vx * vy)
    bad = (n < max(min_periods, 2)) | tiny_x | tiny_y
    r = np.where(bad, np.nan, r)
    return np.clip(r, -1.0, 1.0)


def _centred_like_numpy_ma(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy.ma's ``_covhelper``: (rows centred on their valid mean with missing -> 0, 0/1 mask).

    Same operations in the same order as numpy (row sum of the zero-filled data, divided by the
    count), so the products below see the same numbers numpy does.
    """
    x = np.ascontiguousarray(x)  # the script's array is C-ordered: same summation order
    missing = np.isnan(x)
    filled = np.where(missing, 0.0, x)
    count = (~missing).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1) * 1.0 / count
    centred = np.where(missing, 0.0, filled - mean[:, None])
    return centred, (~missing).astype(np.float32)


def _products(x0: np.ndarray, notmask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of products over common observations, number of common observations), as numpy.ma
    computes them (``dot(filled(x), filled(x.T))``, float32 counts for fewer than 2**24)."""
    if max(notmask.shape) > 2**24:
        notmask = notmask.astype(np.float64)
    n = np.dot(notmask, notmask.T.copy(order="K")).astype(np.float64)
    d = np.dot(x0, x0.T.copy(order="K"))
    return d, n


def _numpy_ma_modern(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(data, mask) of ``numpy.ma.corrcoef`` (numpy >= 2.1) of the NaN-masked rows of ``x``."""
    x0, notmask = _centred_like_numpy_ma(x)
    d, n = _products(x0, notmask)
    fact = n - 1.0
    mask = fact <= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = d / fact
        diag = np.diagonal(cov)
        std_masked = np.diagonal(mask) | ~np.isfinite(np.sqrt(diag)) | (diag < 0)
        std = np.sqrt(diag)
        denom = np.multiply.outer(std, std)
        mask = mask | std_masked[:, None] | std_masked[None, :]
        mask |= np.abs(cov) * _TINY >= np.abs(denom)
        data = np.where(mask, cov, cov / np.where(mask, 1.0, denom))
    return data, mask


def _numpy_ma_legacy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(data, mask) of ``numpy.ma.corrcoef`` as numpy 1.10-2.0 computed it (the script's).

    numerator ``c = D / n`` (``D`` = sum over common observations of the products of the rows
    centred on their whole-row means); denominator ``sqrt(var_i * var_j)`` with both variances
    taken over the common observations around the common-observation means (ddof 0; numpy
    looped over pairs, here matrix products); diagonal ``c_ii / c_ii``. Where numpy masks,
    the data keep ``c``.
    """
    x0, notmask = _centred_like_numpy_ma(x)
    d, n = _products(x0, notmask)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = d / n
        c_masked = (n == 0) | ~np.isfinite(c)
        # numpy keeps the numerator under its mask, as 0 + value (so -0.0 becomes 0.0)
        c = np.where(c_masked, d + 0.0, c)
        if not (notmask == 0).any():
            # No missing value: numpy took sqrt(outer(diag, diag)) of the covariance.
            diag = np.diagonal(c)
            denom = np.sqrt(np.multiply.outer(diag, diag))
            denom_masked = ~np.isfinite(denom)
        else:
            m = notmask.astype(np.float64)
            s1 = np.dot(x0, m.T)            # sum of row i over the pair's common observations
            s2 = np.dot(x0 * x0, m.T)       # sum of squares of row i over them
            n_safe = np.maximum(n, 1.0)
            q = s2 - s1 * s1 / n_safe       # sum of squared deviations from the common mean
            # A spread that is zero up to rounding (constant over the common observations,
            # or a single one) is zero for numpy's two-pass variance too.
            q = np.where(q <= 1e-13 * np.maximum(s2, 1e-300), 0.0, q)
            var = q / n_safe
            denom = np.sqrt(var * var.T)
            denom_masked = n == 0
            np.fill_diagonal(denom, np.diagonal(c))
            np.fill_diagonal(denom_masked, np.diagonal(c_masked))
        mask = c_masked | denom_masked | (np.abs(c) * _TINY >= np.abs(denom))
        r = c / np.where(mask, 1.0, denom)
        mask |= ~np.isfinite(r)
        data = np.where(mask, c + 0.0, r)
    return data, mask


def masked_correlation(matrix: np.ndarray | pd.DataFrame,
                       method: str = DEFAULT_METHOD) -> tuple[np.ndarray, np.ndarray]:
    """``(data, mask)`` of ``numpy.ma.corrcoef(masked_array(x, isnan(x)))`` for ``method``
    ``"numpy_ma_legacy"`` or ``"numpy_ma"``: rows of ``matrix`` are variables (structures),
    columns observations (experiments). ``data`` holds numpy's values, including those under
    the mask (the script writes ``corr.data``); ``mask`` is numpy's mask."""
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"correlation needs a 2-D variables x observations matrix, got {x.shape}")
    if method == "numpy_ma_legacy":
        return _numpy_ma_legacy(x)
    if method == "numpy_ma":
        return _numpy_ma_modern(x)
    raise ValueError(f"masked_correlation is for the numpy.ma definitions, not {method!r}")


def correlation_matrix(
    matrix: np.ndarray | pd.DataFrame,
    *,
    method: str = "pairwise",
    min_periods: int = 2,
) -> np.ndarray:
    """Row-by-row correlation of ``matrix`` (variables x observations, NaN = missing).

    For the structure-similarity workflow, rows are structures and columns experiments.
    ``method`` is one of :data:`METHODS` (see the module docstring). For ``"pairwise"``, pairs
    with fewer than ``min_periods`` common observations, or a constant row over them, are NaN;
    for the ``numpy_ma*`` definitions, whatever numpy masks is NaN. Returns float64 (n x n).
    """
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; use one of {METHODS}")
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"correlation needs a 2-D variables x observations matrix, got {x.shape}")
    if method != "pairwise":
        data, mask = masked_correlation(x, method)
        return np.where(mask, np.nan, data)
    x0, xm = _prepare_numpy(x)
    r = _pairwise_symmetric(x0, xm, min_periods)
    # Symmetrise exactly: the two triangles differ only by rounding of sx vs sy.
    return (r + r.T) / 2.0


# --------------------------------------------------------------------------------------------
# the script's TOP_N selection
# --------------------------------------------------------------------------------------------
def top_pairs(
    corr: np.ndarray,
    structure_ids: Sequence[int],
    top_n: int = DEFAULT_TOP_N,
) -> pd.DataFrame:
    """The most correlated structure pairs, exactly as Allen's script selects them.

    - Candidates are the upper triangle strictly above the diagonal (``i < j``): no self-pairs,
      each unordered pair once; NaN entries are ignored.
    - Candidates are sorted ascending; with ``n`` candidates the threshold is the value at
      index ``n - top_n`` (index 0 when ``n <= top_n``).
    - Pairs with ``corr > threshold`` (strictly) are kept, so the threshold value itself and its
      ties are dropped: at most ``top_n - 1`` pairs ("approximately TOP_N"), and with
      ``n <= top_n`` every candidate except the minimum (and its ties).
    - Rows come in row-major order (``source`` index ascending, then ``target``), not by r.

    Returns a DataFrame ``source, target, corr`` (ids from ``structure_ids``).
    """
    import pandas as pd

    source, target, r = top_pair_arrays(corr, structure_ids, top_n)
    return pd.DataFrame({"source": source, "target": target, "corr": r})


def top_pair_arrays(
    corr: np.ndarray,
    structure_ids: Sequence[int],
    top_n: int = DEFAULT_TOP_N,
) -> PairArrays:
    """:func:`top_pairs` as arrays ``(source ids, target ids, r)``, in the same order."""
    corr = np.asarray(corr, dtype=np.float64)
    ids = np.asarray(structure_ids)
    if corr.ndim != 2 or corr.shape[0] != corr.shape[1] or corr.shape[0] != len(ids):
        raise ValueError(
            f"correlation matrix {corr.shape} does not match {len(ids)} structure ids"
        )
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    iu, ju = np.triu_indices(len(ids), k=1)   # row-major order, as the script's double loop
    values = corr[iu, ju]
    finite = ~np.isnan(values)
    candidates = values[finite]
    if candidates.size == 0:
        return ids[:0], ids[:0], np.zeros(0)
    idx = candidates.size - top_n if candidates.size > top_n else 0
    # The value at index idx of the sorted candidates (the script sorts them all): one
    # selection, no full sort of the ~540,000 pairs.
    threshold = np.partition(candidates, idx)[idx]
    keep = finite & (values > threshold)
    return ids[iu[keep]], ids[ju[keep]], values[keep]


# --------------------------------------------------------------------------------------------
# outputs: the script's three JSON files, plus CSV
# --------------------------------------------------------------------------------------------
def output_paths(prefix: str | os.PathLike) -> dict[str, Path]:
    """``out`` or ``out.json`` -> ``out.structures.json``, ``out.connections.json``,
    ``out.correlations.json`` (the script's naming) and ``out.connections.csv``,
    ``out.correlations.csv``."""
    prefix = Path(prefix)
    if prefix.suffix.lower() == ".json":
        prefix = prefix.with_suffix("")
    base = str(prefix)
    return {
        "structures": Path(base + ".structures.json"),
        "connections": Path(base + ".connections.json"),
        "correlations": Path(base + ".correlations.json"),
        "connections_csv": Path(base + ".connections.csv"),
        "correlations_csv": Path(base + ".correlations.csv"),
    }


def _json_number(value: float) -> float | None:
    # For the ontology-based records only: NaN is not JSON; null is what readers understand.
    return None if value is None or not np.isfinite(value) else float(value)


def script_structures(
    structure_rows: Sequence[dict[str, Any]],
    unionizes: Iterable[Sequence[dict[str, Any]]] = (),
    *,
    last_sum_pixels: dict[Any, Any] | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """The script's structure table: ``(sorted leaf ids, records)``.

    ``structure_rows`` are the API's Structure records of graph 1 in the API's order;
    ``unionizes`` the StructureUnionize records per data set, data sets in the script's order
    (or, instead, ``last_sum_pixels``: :meth:`ScriptMatrixBuilder.last_sum_pixels`).
    As the script does: ``structure_id_path`` becomes a list of ints; ``num_children`` counts
    each structure's direct children; ``volume`` is the ``sum_pixels`` of the structure's row
    in the *last* data set that has one (each data set overwrites it; structures without any
    row get no ``volume`` key); values are kept exactly as the API sent them. Leaves are the
    structures without children, sorted by id (the script's row order).
    """
    by_id = _structure_records_by_id(structure_rows)
    # The last data set's row wins, as the script overwrites: a dict keeps the last value.
    last = last_sum_pixels if last_sum_pixels is not None else {
        u.get("structure_id"): u.get("sum_pixels") for rows in unionizes for u in rows}
    for sid, volume in last.items():
        record = by_id.get(sid)
        if record is not None:
            record["volume"] = volume
    return _leaves(by_id), list(by_id.values())


def script_leaves(structure_rows: Sequence[dict[str, Any]]) -> list[int]:
    """The script's matrix rows: the structures without children, sorted by id."""
    return _leaves(_structure_records_by_id(structure_rows))


def _leaves(by_id: dict[Any, dict[str, Any]]) -> list[int]:
    return sorted(int(sid) for sid, r in by_id.items() if r["num_children"] == 0)


def _structure_records_by_id(structure_rows: Sequence[dict[str, Any]]
                             ) -> dict[Any, dict[str, Any]]:
    """The script's records by id (copies): ``structure_id_path`` as ints, ``num_children``."""
    by_id: dict[Any, dict[str, Any]] = {}
    for row in structure_rows:
        record = dict(row)
        record["num_children"] = 0
        path = record.get("structure_id_path")
        if isinstance(path, str):
            record["structure_id_path"] = [int(p) for p in path.split("/") if p != ""]
        by_id[record["id"]] = record
    for sid, record in by_id.items():
        path = record.get("structure_id_path") or []
        if len(path) > 1:
            parent = by_id.get(path[-2])
            if parent is None:
                raise ValueError(f"structure {sid}: parent {path[-2]} of its "
                                 "structure_id_path is not among the structures")
            parent["num_children"] += 1
    return by_id


def script_matrix(
    unionizes: dict[int, Sequence[dict[str, Any]]],
    structure_ids: Sequence[int],
    value: str = "expression_energy",
) -> pd.DataFrame:
    """The script's structures x data sets matrix: NaN, then each record's ``value`` at
    (its ``structure_id``, its ``section_data_set_id``) when both are rows/columns (the last
    record wins; null -> NaN). Columns are the data sets in ``unionizes``' order."""
    import pandas as pd

    out = script_matrix_array(unionizes, structure_ids, value)
    rows = list(dict.fromkeys(int(s) for s in structure_ids))
    cols = list(dict.fromkeys(int(e) for e in unionizes))
    return pd.DataFrame(out, index=pd.Index(rows, name="structure_id"),
                        columns=pd.Index(cols, name="experiment_id"))


def script_matrix_array(
    unionizes: dict[int, Sequence[dict[str, Any]]],
    structure_ids: Sequence[int],
    value: str = "expression_energy",
) -> np.ndarray:
    """:func:`script_matrix` as a plain float64 array (rows ``structure_ids``, columns the
    data sets of ``unionizes``)."""
    builder = ScriptMatrixBuilder(value)
    builder.set_rows(structure_ids)
    for data_set, records in unionizes.items():
        builder.add(data_set, records)
    return builder.matrix(list(unionizes))


class ScriptMatrixBuilder:
    """The script's matrix (:func:`script_matrix`) and volumes (:func:`script_structures`),
    reduced one data set at a time as its unionize arrives, so that little is left to do when
    the last one does (``napari-allen correlate`` waits for the network meanwhile).

    ``add(data_set, records)`` keeps each structure's ``sum_pixels`` and, once the rows are
    known (:meth:`set_rows`), the data set's column as (row indices, values). The result is the
    script's, cell for cell: a record fills (its ``structure_id``'s row, its
    ``section_data_set_id``'s column), data sets in the script's order, the last record
    winning (a data set whose records name another data set, or one structure twice, or hold
    a value that is no number, sends the whole matrix down the record-by-record path).
    """

    def __init__(self, value: str = "expression_energy") -> None:
        self.value = value
        self.rows: dict[int, int] | None = None
        self._parts: dict[Any, _Column] = {}

    def set_rows(self, structure_ids: Sequence[int]) -> None:
        """The matrix rows (structure ids, in order)."""
        rows = {int(s): i for i, s in enumerate(structure_ids)}
        if rows != self.rows:
            self.rows = rows
            for data_set, part in self._parts.items():
                part.reduce(data_set, rows, self.value)

    def add(self, data_set: Any, records: Sequence[dict[str, Any]]) -> None:
        """One data set's StructureUnionize records (in any order of arrival)."""
        part = _Column(records)
        if self.rows is not None:
            part.reduce(data_set, self.rows, self.value)
        self._parts[data_set] = part

    def last_sum_pixels(self, order: Iterable[Any]) -> dict[Any, Any]:
        """``{structure_id: sum_pixels}`` of the last data set of ``order`` that has it."""
        last: dict[Any, Any] = {}
        for data_set in order:
            last.update(self._parts[data_set].sum_pixels)
        return last

    def matrix(self, order: Sequence[Any]) -> np.ndarray:
        """The structures x data sets matrix, columns the data sets of ``order``."""
        if self.rows is None:
            raise ValueError("the matrix rows are not set (set_rows)")
        rows = self.rows
        cols = {int(e): j for j, e in enumerate(order)}
        out = np.full((len(rows), len(cols)), np.nan)
        parts = [self._parts[data_set] for data_set in order]
        if all(part.index is not None for part in parts):
            for data_set, part in zip(order, parts, strict=True):
                out[part.index, cols[int(data_set)]] = part.values
            return out
        # Some data set's records name other data sets or a structure twice: every record, in
        # the script's order, one cell each, the last record winning (a dict keyed by the flat
        # cell index keeps the last value), then one vectorised assignment.
        n_cols = len(cols)
        cells: dict[int, Any] = {}
        for part in parts:
            for u in part.records:
                i = rows.get(u.get("structure_id"))
                j = cols.get(u.get("section_data_set_id"))
                if i is not None and j is not None:
                    cells[i * n_cols + j] = u.get(self.value)
        if cells:
            flat = np.fromiter(cells.keys(), dtype=np.int64, count=len(cells))
            values = np.array([np.nan if v is None else v for v in cells.values()],
                              dtype=np.float64)
            out.ravel()[flat] = values
        return out


class _Column:
    """One data set's share of :class:`ScriptMatrixBuilder`: its ``sum_pixels`` per structure,
    its records and, when reduced, its own column's ``index`` (rows) and ``values``."""

    __slots__ = ("sum_pixels", "records", "index", "values")

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        self.sum_pixels = {u.get("structure_id"): u.get("sum_pixels") for u in records}
        self.records = records
        self.index: np.ndarray | None = None  # None: written record by record
        self.values: np.ndarray | None = None

    def reduce(self, data_set: Any, rows: dict[int, int], value: str) -> None:
        """Rows and values of the data set's own column, when every record is of this data set
        and names a distinct structure (else it stays on the record-by-record path)."""
        self.index = self.values = None
        records = self.records
        if not all(u.get("section_data_set_id") == data_set for u in records):
            return
        index = [rows.get(u.get("structure_id")) for u in records]
        kept = [k for k, i in enumerate(index) if i is not None]
        rows_of = [index[k] for k in kept]
        if len(set(rows_of)) != len(rows_of):
            return
        try:
            values = np.array([np.nan if v is None else v
                               for v in (records[k].get(value) for k in kept)], dtype=np.float64)
        except (TypeError, ValueError):
            return
        self.index = np.array(rows_of, dtype=np.intp)
        self.values = values


def structure_records(
    structure_ids: Sequence[int],
    ontology,
    volumes: dict[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Records built from the bundled ontology, for a matrix without the API's Structure
    records (e.g. grids from a plane store): ``index``, ``id``, ``acronym``, ``name``,
    ``color_hex_triplet``, ``structure_id_path`` (ints, root first), ``parent_structure_id``,
    ``depth``, ``num_children`` and ``volume`` (null when unknown)."""
    volumes = volumes or {}
    records = []
    for index, sid in enumerate(int(s) for s in structure_ids):
        known = sid in ontology
        records.append({
            "index": index,
            "id": sid,
            "acronym": ontology.acronym(sid) if known else str(sid),
            "name": ontology.name(sid) if known else f"structure {sid}",
            "color_hex_triplet": str(ontology.table.at[sid, "color_hex"]) if known else "FFFFFF",
            "structure_id_path": ontology.ancestors(sid, include_self=True) if known else [sid],
            "parent_structure_id": ontology.parent(sid) if known else None,
            "depth": int(ontology.table.at[sid, "depth"]) if known else None,
            "num_children": len(ontology.children(sid)) if known else 0,
            "volume": _json_number(volumes.get(sid)) if sid in volumes else None,
        })
    return records


def json_matrix(matrix: np.ndarray) -> str:
    """``json.dumps(matrix.tolist())``, byte for byte, several times faster.

    Formatting floats dominates; a correlation matrix is symmetric and repeats values (NaN,
    ±0.0) and whole rows (every structure without data has the same row of masked values), so
    each distinct row is written once and, within those, each distinct bit pattern is
    formatted once (``float.__repr__``, mapped in C, then ``NaN`` / ``Infinity`` /
    ``-Infinity`` written over the few non-finite ones as :mod:`json` writes them).
    """
    values = np.ascontiguousarray(matrix, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {values.shape}")
    first_of: dict[bytes, int] = {}  # a row's bytes -> the index of its first occurrence
    row_of = [first_of.setdefault(row.tobytes(), i) for i, row in enumerate(values)]
    firsts = list(first_of.values())
    unique = values[firsts] if len(firsts) < len(values) else values
    position = {first: k for k, first in enumerate(firsts)}
    # Distinct 64-bit patterns (NaNs and ±0.0 kept apart); return_index makes numpy sort them
    # stably (timsort: fast on the long runs of one value).
    bits, _, inverse = np.unique(unique.ravel().view(np.int64), return_index=True,
                                 return_inverse=True)
    distinct = bits.view(np.float64)
    cells = np.array(list(map(float.__repr__, distinct.tolist())), dtype=object)
    for k in np.flatnonzero(~np.isfinite(distinct)).tolist():
        v = distinct[k]
        cells[k] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    texts = ["[" + ", ".join(row) + "]" for row in cells[inverse.reshape(unique.shape)].tolist()]
    return "[" + ", ".join([texts[position[k]] for k in row_of]) + "]"


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_outputs(
    prefix: str | os.PathLike,
    corr: np.ndarray,
    structure_ids: Sequence[int],
    connections: pd.DataFrame | PairArrays,
    ontology=None,
    *,
    volumes: dict[int, float] | None = None,
    structures: Sequence[dict[str, Any]] | None = None,
    csv: bool = True,
) -> dict[str, Path]:
    """Write the script's three JSON files and (``csv``) two CSVs; returns ``{kind: path}``.

    The JSON files are what the script's ``json.dumps`` writes, byte for byte:

    - ``structures.json``: ``structures`` (the script's records, :func:`script_structures`)
      or, without them, :func:`structure_records` from the ontology;
    - ``connections.json``: ``[{"source": id, "target": id, "corr": r}, ...]`` (``connections``
      a ``source, target, corr`` DataFrame or :func:`top_pair_arrays`' arrays);
    - ``correlations.json``: the full matrix as a list of rows, as the script writes it
      (``NaN``/``Infinity`` tokens where numpy left them, as Python's json writes them);
    - ``connections.csv``: source, target, their acronyms, corr;
    - ``correlations.csv``: the matrix with structure acronyms as row/column labels.
    """
    paths = output_paths(prefix)
    paths["structures"].parent.mkdir(parents=True, exist_ok=True)
    corr = np.asarray(corr, dtype=np.float64)
    ids = [int(s) for s in structure_ids]
    if structures is None:
        if ontology is None:
            from napari_allen.atlas.ontology import Ontology

            ontology = Ontology.default()
        structures = structure_records(ids, ontology, volumes)
    source, target, r = _pair_columns(connections)
    conn_records = [
        {"source": int(s), "target": int(t), "corr": float(c)}
        for s, t, c in zip(source.tolist(), target.tolist(), r.tolist(), strict=True)
    ]
    _write_text(paths["connections"], json.dumps(conn_records))
    _write_text(paths["structures"], json.dumps(list(structures)))
    _write_text(paths["correlations"], json_matrix(corr))
    if not csv:
        return {k: v for k, v in paths.items() if not k.endswith("_csv")}

    acronyms = {int(r["id"]): str(r.get("acronym", r["id"])) for r in structures
                if isinstance(r, dict) and "id" in r}

    def acr(sid: int) -> str:
        if sid in acronyms:
            return acronyms[sid]
        return ontology.acronym(sid) if ontology is not None and sid in ontology else str(sid)

    import pandas as pd

    table = pd.DataFrame({"source": source, "target": target, "corr": r})
    table.insert(2, "source_acronym", [acr(int(s)) for s in table["source"]])
    table.insert(3, "target_acronym", [acr(int(t)) for t in table["target"]])
    table.to_csv(paths["connections_csv"], index=False)
    labels = [acr(s) for s in ids]
    pd.DataFrame(corr, index=pd.Index(labels, name="acronym"), columns=labels).to_csv(
        paths["correlations_csv"]
    )
    return paths


def _pair_columns(connections) -> PairArrays:
    """(source, target, corr) arrays of a DataFrame or of :func:`top_pair_arrays`' tuple."""
    if isinstance(connections, tuple):
        return tuple(np.asarray(c) for c in connections)  # type: ignore[return-value]
    return tuple(connections[k].to_numpy() for k in ("source", "target", "corr"))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# dask: voxel-level gene x gene correlation over a whole-plane store
# --------------------------------------------------------------------------------------------
def dask_gene_correlation(
    volumes,
    *,
    seeds: Sequence[int] | None = None,
    voxel_mask: np.ndarray | None = None,
    min_periods: int = 10,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """Pairwise-complete Pearson correlation between experiments over voxels, with dask.

    ``volumes`` is an (experiment, AP, DV, ML) array (dask or numpy; NaN or -1 = no data), e.g.
    :func:`napari_allen.io.plane_store.open_plane_store`'s ``data``. ``seeds`` selects the rows
    of the result (indices into the experiment axis; default all, giving n x n);
    ``voxel_mask`` (AP, DV, ML bool) restricts the voxels (e.g. annotated brain only).

    With ``scheduler`` (a ``tcp://host:port`` address) the computation runs on that dask
    distributed cluster through ``dask.distributed.Client(address)``; otherwise on the local
    threaded scheduler. Returns float64 (len(seeds) x n_experiments).
    """
    import dask.array as da

    data = volumes if isinstance(volumes, da.Array) else da.from_array(np.asarray(volumes))
    if data.ndim < 2:
        raise ValueError(f"need an (experiment, voxels...) array, got shape {data.shape}")
    n_exp = data.shape[0]
    flat = data.reshape((n_exp, -1)).astype(np.float64)
    if voxel_mask is not None:
        keep = np.flatnonzero(np.asarray(voxel_mask, dtype=bool).ravel())
        flat = flat[:, keep]
    flat = da.where(flat < 0, np.nan, flat)  # Allen's -1 = no data
    # One experiment per chunk row keeps the store's chunking; whole voxel axis per chunk.
    flat = flat.rechunk({0: max(1, min(n_exp, 64)), 1: -1}, method=rechunk_method())
    x0, xm = _prepare(flat)
    if seeds is None:
        a0, am = x0, xm
    else:
        rows = np.asarray(list(seeds), dtype=np.int64)
        a0, am = x0[rows], xm[rows]
    result = _pairwise_from(a0, am, x0, xm, min_periods)
    return _compute(result, scheduler=scheduler, progress=progress, cancel=cancel)


def _compute(array, *, scheduler: str | None, progress, cancel) -> np.ndarray:
    """Compute a dask array locally (with progress/cancel callbacks) or on a cluster."""
    check(cancel)
    if scheduler:
        from dask.distributed import Client

        with Client(scheduler) as client:
            future = client.compute(array)
            # Poll so a cancel from the GUI/CLI stops waiting and releases the cluster's work.
            while not future.done():
                if cancel is not None and cancel.cancelled:
                    future.cancel()
                    cancel.check()
                report(progress, done=0, total=None, message="computing on the dask cluster")
                time.sleep(0.1)
            return np.asarray(future.result())

    from dask.callbacks import Callback

    class _Hooks(Callback):
        def _start_state(self, dsk, state):
            self._total = sum(len(state[k]) for k in ("ready", "waiting", "running"))
            self._done = 0

        def _posttask(self, key, result, dsk, state, worker_id):
            self._done += 1
            check(cancel)  # raising here aborts the local scheduler
            report(progress, done=self._done, total=max(self._total, self._done),
                   message="correlating genes")

    from dask.threaded import get as threaded_get

    with _Hooks():
        # The threaded scheduler's function, not its name: dask resolves a name by importing
        # ``distributed`` first, to look for a client (see rechunk_method).
        return np.asarray(array.compute(scheduler=threaded_get))


def rechunk_method() -> str:
    """dask's rechunk method as dask itself would choose it here: the configured
    ``array.rechunk.method``, else ``"tasks"`` (dask picks ``"p2p"`` only with a
    ``distributed`` client active when the graph is built, which this package never has then:
    :func:`_compute` opens its cluster client afterwards). Leaving the choice to dask makes it
    import ``distributed`` (tornado, click, ... ~16,000 objects) to look for that client,
    into napari's process when a dock asks."""
    import dask

    return dask.config.get("array.rechunk.method", None) or "tasks"


# --------------------------------------------------------------------------------------------
# the whole structure-similarity computation on a matrix
# --------------------------------------------------------------------------------------------
class Similarity:
    """Result of :func:`structure_similarity`: ``corr`` (n x n, matrix row order; for the
    ``numpy_ma*`` methods numpy's data, values under its mask included, as the script writes
    them), ``masked`` (numpy's mask, or the NaNs of ``pairwise``), ``structure_ids``,
    ``connections`` (:func:`top_pairs`), ``n_experiments``, ``method`` and ``structures``
    (the script's structure records when the matrix came from the API, else None).

    ``connections`` may be given as :func:`top_pair_arrays`' tuple: the DataFrame is then made
    when first asked for (writing the JSON files needs no pandas)."""

    def __init__(self, corr: np.ndarray, structure_ids: Sequence[int],
                 connections: pd.DataFrame | PairArrays, n_experiments: int, method: str,
                 masked: np.ndarray | None = None,
                 structures: list[dict[str, Any]] | None = None) -> None:
        self.corr = corr
        self.structure_ids = [int(s) for s in structure_ids]
        self._connections = connections
        self.n_experiments = int(n_experiments)
        self.method = method
        self.masked = np.isnan(corr) if masked is None else masked
        self.structures = structures

    @property
    def connections(self) -> pd.DataFrame:
        """The top pairs, ``source, target, corr`` (:func:`top_pairs`)."""
        if isinstance(self._connections, tuple):
            import pandas as pd

            source, target, r = self._connections
            self._connections = pd.DataFrame({"source": source, "target": target, "corr": r})
        return self._connections

    @property
    def n_connections(self) -> int:
        """How many top pairs (without making the DataFrame)."""
        return len(self._connections[0] if isinstance(self._connections, tuple)
                   else self._connections)

    @property
    def values(self) -> np.ndarray:
        """The correlation with numpy's masked entries as NaN (for display and analysis)."""
        return np.where(self.masked, np.nan, self.corr)

    def write(self, prefix: str | os.PathLike, ontology=None, volumes=None, *,
              csv: bool = True) -> dict[str, Path]:
        """The script's three JSON files plus (``csv``) CSVs (:func:`write_outputs`)."""
        return write_outputs(prefix, self.corr, self.structure_ids, self._connections,
                             ontology, volumes=volumes, structures=self.structures, csv=csv)


def structure_similarity(
    matrix: pd.DataFrame,
    *,
    top_n: int = DEFAULT_TOP_N,
    method: str = DEFAULT_METHOD,
    min_periods: int = 3,
    structures: list[dict[str, Any]] | None = None,
) -> Similarity:
    """Correlate the rows (structures) of a structures x experiments matrix and keep the top
    pairs (the script's TOP_N semantics). Rows keep their order, all-NaN rows included.

    With a ``numpy_ma*`` method the matrix and pairs are the script's: numpy's data,
    including what it leaves under its mask, which the script's NaN test lets into the
    candidates. ``min_periods`` applies to ``pairwise`` only and defaults to 3 common
    experiments: with 2, every such pair has r = ±1 exactly, and a pile of ties at 1.0 would
    push the script's strict ``> threshold`` rule to drop all the best pairs.
    """
    if structures is None:
        structures = matrix.attrs.get("structures")
    return array_similarity(matrix.to_numpy(dtype=np.float64), matrix.index, top_n=top_n,
                            method=method, min_periods=min_periods, structures=structures)


def array_similarity(
    x: np.ndarray,
    structure_ids: Sequence[int],
    *,
    top_n: int = DEFAULT_TOP_N,
    method: str = DEFAULT_METHOD,
    min_periods: int = 3,
    structures: list[dict[str, Any]] | None = None,
) -> Similarity:
    """:func:`structure_similarity` of a plain structures x experiments array whose rows are
    ``structure_ids`` (no pandas needed)."""
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; use one of {METHODS}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(structure_ids):
        raise ValueError(f"matrix {x.shape} does not match {len(structure_ids)} structure ids")
    if method == "pairwise":
        corr = correlation_matrix(x, method=method, min_periods=min_periods)
        masked = np.isnan(corr)
    else:
        corr, masked = masked_correlation(x, method)
    ids = [int(s) for s in structure_ids]
    return Similarity(corr, ids, top_pair_arrays(corr, ids, top_n), x.shape[1], method,
                      masked=masked, structures=structures)
