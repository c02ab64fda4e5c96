"""The command-line equivalents of dock actions that had none: genes at a point, thresholding,
fetching connectivity volumes, searching near a point, point-and-click spatial search."""

from __future__ import annotations

import io
import json
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from napari_allen.cli import main
from napari_allen.io.plane_store import ISH_SHAPE, PlaneStore
from napari_allen.workflows.store_queries import correlated_genes, genes_at

PROJECTION = resources.files("napari_allen") / "data" / "connectivity" / "158375425" / \
    "projection_density_100.nrrd"


def _store(path, n=4) -> PlaneStore:
    table = pd.DataFrame({"experiment_id": np.arange(10, 10 + n),
                          "gene": [f"G{i}" for i in range(n)], "gene_name": "g",
                          "plane": "coronal"})
    store = PlaneStore.create(path, table)
    pattern = np.random.default_rng(0).random(ISH_SHAPE).astype(np.float32)
    for i in range(n):
        grid = {0: pattern, 1: 2 * pattern + 1, 2: 5 - pattern}.get(
            i, np.random.default_rng(i).random(ISH_SHAPE).astype(np.float32)) + float(i)
        grid = grid.astype(np.float32)
        grid[2, 1, 3] = 100.0 * (n - i)
        store.write(10 + i, grid)
    return store


def test_genes_at_workflow_and_command_agree(tmp_path, capsys):
    _store(tmp_path / "s.zarr")
    answer = genes_at(tmp_path / "s.zarr", point_um=(400.0, 200.0, 600.0))
    assert answer.voxel == (2, 1, 3)
    assert answer.ranked["gene"].tolist()[:2] == ["G0", "G1"]
    assert main(["genes-at", str(tmp_path / "s.zarr"), "--at", "400", "200", "600",
                 "--top", "3"]) == 0
    out = capsys.readouterr()
    cli = pd.read_csv(io.StringIO(out.out))
    assert cli["gene"].tolist() == answer.ranked["gene"].tolist()[:3]
    assert "voxel (2, 1, 3)" in out.err

    by_structure = genes_at(tmp_path / "s.zarr", structure="HPF")
    assert by_structure.ranked["gene"].iloc[0] == "G2" and "HPF" in by_structure.where
    assert main(["genes-at", str(tmp_path / "s.zarr"), "--structure", "NOPE"]) == 2
    assert "NOPE" in capsys.readouterr().err
    assert main(["genes-at", str(tmp_path / "s.zarr"), "--at", "-5000", "0", "0"]) == 2
    assert "outside" in capsys.readouterr().err
    with pytest.raises(ValueError, match="outside the brain"):
        genes_at(tmp_path / "s.zarr", point_um=(0.0, 0.0, 0.0), mode="structure")


def test_correlated_genes_by_gene_or_id(tmp_path):
    _store(tmp_path / "s.zarr")
    by_gene = correlated_genes(tmp_path / "s.zarr", ["g0"])
    by_id = correlated_genes(tmp_path / "s.zarr", [10])
    pd.testing.assert_frame_equal(by_gene, by_id)
    assert by_gene["gene"].tolist() == ["G1", "G3", "G2"]
    with pytest.raises(ValueError, match="neither a gene nor an experiment"):
        correlated_genes(tmp_path / "s.zarr", ["Nope"])


def test_threshold_workflow_and_command_offline(tmp_path, capsys):
    from napari_allen.io.nrrd import read_nrrd
    from napari_allen.workflows.threshold import threshold_in_regions

    vol = read_nrrd(PROJECTION)
    result = threshold_in_regions(np.asarray(vol.data), vol.resolution, regions=["root"],
                                  method="percentile", value=99)
    assert result.n_significant > 0
    assert result.table["n_significant"].is_monotonic_decreasing
    assert main(["threshold-projection", str(PROJECTION), "--regions", "root", "--value",
                 "99", "--mask", str(tmp_path / "m.nrrd")]) == 0
    out = capsys.readouterr()
    table = pd.read_csv(io.StringIO(out.out))
    assert table["acronym"].tolist() == result.table["acronym"].tolist()
    assert read_nrrd(tmp_path / "m.nrrd").data.sum() == result.n_significant
    assert main(["threshold-projection", str(PROJECTION), "--method", "magic"]) == 2
    assert "method" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a CCF grid"):
        threshold_in_regions(np.zeros((3, 3, 3)), 100.0)


def test_fetch_and_search_near_and_spatial_at(allen_api, tmp_path, capsys):
    assert main(["fetch-connectivity", "--experiments", "158375425", "--out",
                 str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "158375425_projection_density_100.nrrd").exists()
    capsys.readouterr()
    assert main(["search-connectivity", "--near", "7070", "4360", "7650"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(frame) and frame["distance"].is_monotonic_increasing
    assert main(["spatial-search", "--at", "4300", "2700", "7050", "--out",
                 str(tmp_path / "p.json"), "-q"]) == 0
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["lines"] and saved["injectionCoordinates"] == []
    assert main(["spatial-search", "--at", "-5000", "0", "0", "--out", "-"]) == 2
    assert "outside the atlas" in capsys.readouterr().err
