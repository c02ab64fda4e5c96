"""Whole-plane downloads, structure matrices and the ISH CLI through the local Allen server."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from napari_allen.api.client import AllenClient
from napari_allen.io.plane_store import open_plane_store
from napari_allen.progress import Cancelled, CancelToken
from napari_allen.workflows.plane_download import (
    download_plane,
    experiment_table,
    fetch_grids,
    structure_matrix,
)

GENES = ["Nrp1", "Pdyn", "Prox1"]


@pytest.fixture
def client(allen_api, tmp_path):
    # Few retries with short back-off: fault tests must fail fast, not after 15 s of backoff.
    with AllenClient(allen_api.url, tmp_path / "cache", retries=1, backoff=0.01) as c:
        yield c


def _grid_requests(server) -> list[dict]:
    return [r for r in server.requests if "/grid_data/" in r["path"]]


def test_experiment_table_for_genes_and_plane(client):
    genes = experiment_table(client, genes=GENES)
    assert set(genes["gene"]) == set(GENES)
    assert genes["experiment_id"].is_monotonic_increasing
    assert genes["experiment_id"].is_unique
    coronal = experiment_table(client, plane="coronal")
    assert len(coronal) > 1000 and set(coronal["plane"]) == {"coronal"}
    with pytest.raises(ValueError, match="no ISH experiments"):
        experiment_table(client, genes=["NoSuchGene12345"])


def test_download_store_matches_grids_and_resumes_without_network(client, allen_api, tmp_path):
    table = experiment_table(client, genes=GENES)
    snapshots = []
    result = download_plane(client, tmp_path / "genes.zarr", experiments=table, jobs=3,
                            progress=snapshots.append)
    assert result.complete and result.failed.empty
    assert set(result.statuses["status"]) == {"downloaded"}
    assert snapshots[-1].done == len(table) and snapshots[-1].total == len(table)
    store = open_plane_store(tmp_path / "genes.zarr")
    assert store.experiment_ids.tolist() == table["experiment_id"].tolist()
    # Real Nrp1 grid: the store holds exactly the served values (-1 kept).
    (nrp1,) = client.grid_volumes(74272479)
    assert np.array_equal(store.read(74272479), np.asarray(nrp1.data))
    assert (store.read(74272479) == -1).sum() == 54_982
    # The zips were removed from the cache by default... but grid_volumes above re-fetched one.
    assert not list((client.cache_dir / "files").rglob("*.zip"))[1:]
    n_grid = len(_grid_requests(allen_api))
    again = download_plane(client, tmp_path / "genes.zarr", experiments=table)
    assert set(again.statuses["status"]) == {"already"}
    assert len(_grid_requests(allen_api)) == n_grid  # resume: no grid downloads


def test_failures_are_reported_and_a_rerun_completes(client, allen_api, tmp_path):
    table = experiment_table(client, genes=GENES)
    victim = int(table["experiment_id"].iloc[1])
    allen_api.faults.add("http500", path_contains=f"/grid_data/download/{victim}", times=None)
    result = download_plane(client, tmp_path / "s.zarr", experiments=table, jobs=2)
    assert result.failed["experiment_id"].tolist() == [victim]
    assert "500" in result.failed["error"].iloc[0]
    assert not result.complete and result.store.pending() == [victim]
    allen_api.faults.clear()
    second = download_plane(client, tmp_path / "s.zarr", experiments=table, jobs=2)
    assert second.complete
    assert second.statuses.set_index("experiment_id").loc[victim, "status"] == "downloaded"


def test_cancel_leaves_a_consistent_resumable_store(client, tmp_path):
    table = experiment_table(client, plane="coronal").head(40)
    token = CancelToken()

    def stop_after_some(snapshot):
        if snapshot.done >= 3:
            token.cancel()

    with pytest.raises(Cancelled):
        download_plane(client, tmp_path / "c.zarr", experiments=table, jobs=2,
                       progress=stop_after_some, cancel=token)
    store = open_plane_store(tmp_path / "c.zarr")
    done = store.completed()
    assert 3 <= len(done) < len(table)
    for eid in done:  # whatever was recorded is fully written
        assert not np.isnan(store.read(eid)).any()
    finished = download_plane(client, tmp_path / "c.zarr", experiments=table, jobs=4)
    assert finished.complete
    assert (finished.statuses["status"] == "already").sum() == len(done)


def test_structure_matrix_from_unionize_and_grids(client):
    ids = experiment_table(client, genes=["Nrp1", "Pdyn"])["experiment_id"].tolist()
    unionize, volumes = structure_matrix(client, ids, source="unionize")
    assert list(unionize.columns) == ids
    assert unionize.notna().to_numpy().any()
    assert volumes and all(v >= 0 for v in volumes.values())
    grids, volumes_g = structure_matrix(client, ids, source="grids")
    assert list(grids.columns) == ids and grids.shape[0] == unionize.shape[0]
    # Nrp1's real grid: the hippocampal leaves carry data.
    assert grids[74272479].notna().sum() > 100
    got, frame = fetch_grids(client, ids[:1])
    assert list(got) == ids[:1] and frame["status"].iloc[0] in ("downloaded", "verified")
    with pytest.raises(ValueError, match="source"):
        structure_matrix(client, ids, source="magic")


# --- CLI ------------------------------------------------------------------------------
def _run(argv: list[str]) -> int:
    from napari_allen.commands import ish

    parser = argparse.ArgumentParser(prog="napari-allen")
    ish.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_plane_store_correlate_and_expression_table(allen_api, tmp_path, capsys):
    store = tmp_path / "g.zarr"
    assert _run(["plane-store", "--genes", "Nrp1,Pdyn", "Prox1", "--out", str(store),
                 "--jobs", "2"]) == 0
    err = capsys.readouterr().err
    assert "downloaded" in err and "0 failed" in err
    assert len(open_plane_store(store)) >= 3

    prefix = tmp_path / "out.json"
    assert _run(["correlate", "--genes", "Nrp1", "Pdyn", "Prox1", "--top-n", "50",
                 "--out", str(prefix), "--source", "grids", "--store", str(store),
                 "--csv"]) == 0
    structures = json.loads((tmp_path / "out.structures.json").read_text())
    connections = json.loads((tmp_path / "out.connections.json").read_text())
    matrix = json.loads((tmp_path / "out.correlations.json").read_text())
    assert len(matrix) == len(structures) and 0 < len(connections) <= 49
    assert set(connections[0]) == {"source", "target", "corr"}
    assert pd.read_csv(tmp_path / "out.connections.csv").shape[0] == len(connections)

    assert _run(["correlate", "--experiments", "74272479", "79913171", "--method",
                 "numpy_ma", "--out", str(tmp_path / "u")]) == 0
    structures = json.loads((tmp_path / "u.structures.json").read_text())
    assert any(s["volume"] for s in structures)  # StructureUnionize sum_pixels
    capsys.readouterr()

    assert _run(["expression-table", "74272479"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert {"structure_id", "acronym", "mean", "n_valid"} <= set(table.columns)
    hpf = table.set_index("acronym").loc["HPF"]
    assert hpf["n_valid"] > 0 and hpf["mean"] > table.set_index("acronym").loc["root", "mean"]

    assert _run(["gene-correlation", str(store), "--seeds", "Nrp1", "--top", "5"]) == 0
    genes = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert set(genes["seed_gene"]) == {"Nrp1"} and genes["r"].between(-1, 1).all()
    assert 0 < len(genes) <= 5 * 2  # two Nrp1 experiments are seeds


def test_cli_expression_table_from_a_file_offline(capsys, tmp_path):
    from importlib import resources

    zip_path = resources.files("napari_allen") / "data" / "ish" / \
        "Nrp1_P56_coronal_74272479_200um.zip"
    assert _run(["expression-table", str(zip_path), "--no-rollup"]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert "HPF" not in set(table["acronym"])  # not a label itself: only with roll-up
    assert (table["n_voxels"] > 0).all()
    assert _run(["expression-table", str(tmp_path / "missing.zip")]) == 1
    assert "neither a file nor an experiment id" in capsys.readouterr().err
