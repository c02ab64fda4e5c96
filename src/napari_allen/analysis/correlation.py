"""Structure-structure (and gene-gene) Pearson correlation with missing values.

Two definitions are offered, because "correlation ignoring missing values" is ambiguous:

- ``"pairwise"`` (default): the pairwise-complete Pearson correlation. For rows ``i`` and ``j``
  only the observations valid in *both* rows are used, and means and variances are taken over
  that common subset (``pandas.DataFrame.corr`` semantics).
- ``"numpy_ma"``: what Allen's structure-correlation script computes with
  ``numpy.ma.corrcoef(masked_array(x, isnan(x)))``. numpy centres each row by the mean of *all*
  its own valid values, sums the products over the common observations divided by
  ``n_common - 1``, then divides by ``sqrt(diag)``, i.e. by each row's *whole-row* variance.
  That is not a Pearson coefficient of the common subset (it can exceed 1 in magnitude).

Both are computed with masked matrix products (no Python loops over pairs), and the same code
runs lazily on dask arrays (:func:`dask_gene_correlation`), so a distributed cluster can do the
voxel-level gene x gene correlation of a whole-plane store.

The top-pair selection and the JSON outputs reproduce the script (see :func:`top_pairs`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_allen.progress import CancelToken, ProgressCallback, check, report

METHODS = ("pairwise", "numpy_ma")
DEFAULT_TOP_N = 2000


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


def _numpy_ma_from(x0, xm):
    """``numpy.ma.corrcoef`` of a NaN-masked matrix, from its centred/zero-filled form."""
    fact = xm @ xm.T - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (x0 @ x0.T) / fact
        std = np.sqrt(np.diagonal(cov))
        r = cov / (std[:, None] * std[None, :])
    # numpy masks entries whose divisor n-1 <= 0; masked -> NaN here.
    return np.where(fact <= 0, np.nan, r)


def correlation_matrix(
    matrix: np.ndarray | pd.DataFrame,
    *,
    method: str = "pairwise",
    min_periods: int = 2,
) -> np.ndarray:
    """Row-by-row correlation of ``matrix`` (variables x observations, NaN = missing).

    For the structure-similarity workflow, rows are structures and columns experiments.
    ``method`` is ``"pairwise"`` (pairwise-complete Pearson) or ``"numpy_ma"`` (the script's
    ``numpy.ma.corrcoef``; see the module docstring). Pairs with fewer than ``min_periods``
    common observations, or a constant row over them, are NaN. Returns float64 (n x n).
    """
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; use one of {METHODS}")
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"correlation needs a 2-D variables x observations matrix, got {x.shape}")
    x0, xm = _prepare_numpy(x)
    if method == "numpy_ma":
        return _numpy_ma_from(x0, xm)
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
    candidates = np.sort(values[finite])
    if candidates.size == 0:
        return pd.DataFrame({"source": ids[:0], "target": ids[:0], "corr": np.zeros(0)})
    idx = candidates.size - top_n if candidates.size > top_n else 0
    threshold = candidates[idx]
    keep = finite & (values > threshold)
    return pd.DataFrame(
        {"source": ids[iu[keep]], "target": ids[ju[keep]], "corr": values[keep]}
    ).reset_index(drop=True)


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
    # json.dumps would write NaN, which is not JSON; null is what readers understand.
    return None if value is None or not np.isfinite(value) else float(value)


def structure_records(
    structure_ids: Sequence[int],
    ontology,
    volumes: dict[int, float] | None = None,
) -> list[dict[str, Any]]:
    """Structure records in matrix order for ``<prefix>.structures.json``.

    Each holds ``index`` (row in the correlation matrix), ``id``, ``acronym``, ``name``,
    ``color_hex_triplet``, ``structure_id_path`` (list of ints, root first, as the script
    turns it into), ``parent_structure_id``, ``depth`` and ``volume`` (StructureUnionize
    ``sum_pixels`` when known, else null).
    """
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
            "volume": _json_number(volumes.get(sid)) if sid in volumes else None,
        })
    return records


def write_outputs(
    prefix: str | os.PathLike,
    corr: np.ndarray,
    structure_ids: Sequence[int],
    connections: pd.DataFrame,
    ontology,
    *,
    volumes: dict[int, float] | None = None,
) -> dict[str, Path]:
    """Write the script's three JSON files and two CSVs; returns ``{kind: path}``.

    - ``structures.json``: :func:`structure_records`;
    - ``connections.json``: ``[{"source": id, "target": id, "corr": r}, ...]`` (script keys);
    - ``correlations.json``: the full matrix as a list of rows (NaN -> null);
    - ``connections.csv``: source, target, their acronyms, corr;
    - ``correlations.csv``: the matrix with structure acronyms as row/column labels.
    """
    paths = output_paths(prefix)
    paths["structures"].parent.mkdir(parents=True, exist_ok=True)
    corr = np.asarray(corr, dtype=np.float64)
    ids = [int(s) for s in structure_ids]
    with open(paths["structures"], "w", encoding="utf-8") as fh:
        json.dump(structure_records(ids, ontology, volumes), fh)
    conn_records = [
        {"source": int(s), "target": int(t), "corr": float(c)}
        for s, t, c in connections[["source", "target", "corr"]].itertuples(index=False)
    ]
    with open(paths["connections"], "w", encoding="utf-8") as fh:
        json.dump(conn_records, fh)
    with open(paths["correlations"], "w", encoding="utf-8") as fh:
        json.dump([[_json_number(v) for v in row] for row in corr], fh)

    def acr(sid: int) -> str:
        return ontology.acronym(sid) if sid in ontology else str(sid)

    table = connections[["source", "target", "corr"]].copy()
    table.insert(2, "source_acronym", [acr(int(s)) for s in table["source"]])
    table.insert(3, "target_acronym", [acr(int(t)) for t in table["target"]])
    table.to_csv(paths["connections_csv"], index=False)
    labels = [acr(s) for s in ids]
    pd.DataFrame(corr, index=pd.Index(labels, name="acronym"), columns=labels).to_csv(
        paths["correlations_csv"]
    )
    return paths


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
    flat = flat.rechunk({0: max(1, min(n_exp, 64)), 1: -1})
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

    with _Hooks():
        return np.asarray(array.compute(scheduler="threads"))


# --------------------------------------------------------------------------------------------
# the whole structure-similarity computation on a matrix
# --------------------------------------------------------------------------------------------
class Similarity:
    """Result of :func:`structure_similarity`: ``corr`` (n x n, matrix row order),
    ``structure_ids``, ``connections`` (:func:`top_pairs`), ``n_experiments``, ``method``."""

    def __init__(self, corr: np.ndarray, structure_ids: Sequence[int],
                 connections: pd.DataFrame, n_experiments: int, method: str) -> None:
        self.corr = corr
        self.structure_ids = [int(s) for s in structure_ids]
        self.connections = connections
        self.n_experiments = int(n_experiments)
        self.method = method

    def write(self, prefix: str | os.PathLike, ontology, volumes=None) -> dict[str, Path]:
        """The script's three JSON files plus CSVs (:func:`write_outputs`)."""
        return write_outputs(prefix, self.corr, self.structure_ids, self.connections, ontology,
                             volumes=volumes)


def structure_similarity(
    matrix: pd.DataFrame,
    *,
    top_n: int = DEFAULT_TOP_N,
    method: str = "pairwise",
    min_periods: int = 3,
) -> Similarity:
    """Correlate the rows (structures) of a structures x experiments matrix and keep the top
    pairs (the script's TOP_N semantics). Rows keep their order, all-NaN rows included (their
    correlations are NaN, as in the script's output).

    ``min_periods`` defaults to 3 common experiments: with 2, every such pair has r = ±1
    exactly, and a pile of ties at 1.0 would push the script's strict ``> threshold`` rule to
    drop all the best pairs.
    """
    corr = correlation_matrix(matrix.to_numpy(dtype=np.float64), method=method,
                              min_periods=min_periods)
    ids = [int(s) for s in matrix.index]
    return Similarity(corr, ids, top_pairs(corr, ids, top_n), matrix.shape[1], method)
