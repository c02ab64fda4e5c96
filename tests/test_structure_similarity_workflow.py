"""The structure-similarity workflow shared by the Similarity tab and `napari-allen correlate`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_allen.io.plane_store import ISH_SHAPE, PlaneStore
from napari_allen.workflows.structure_similarity import (
    run_structure_similarity,
    select_experiments,
)


def _store(path, n=5) -> PlaneStore:
    table = pd.DataFrame({"experiment_id": np.arange(10, 10 + n),
                          "gene": [f"G{i}" for i in range(n)], "gene_name": "g",
                          "plane": "coronal"})
    store = PlaneStore.create(path, table)
    rng = np.random.default_rng(0)
    for i in range(n - 1):  # the last experiment stays unfinished
        store.write(10 + i, rng.random(ISH_SHAPE).astype(np.float32))
    return store


def test_store_alone_correlates_its_finished_experiments(tmp_path):
    _store(tmp_path / "s.zarr")
    # No client needed: the experiments and grids come from the store.
    assert select_experiments(None, store=tmp_path / "s.zarr") == [10, 11, 12, 13]
    outcome = run_structure_similarity(None, store=tmp_path / "s.zarr", source="grids",
                                       top_n=30)
    assert outcome.experiment_ids == [10, 11, 12, 13]
    assert outcome.similarity.n_experiments == 4
    assert 0 < len(outcome.similarity.connections) <= 29
    assert "4 experiments" in outcome.summary()
    paths = outcome.write(tmp_path / "out.json")
    assert paths["connections"].exists()


def test_store_and_api_grids_give_the_same_matrix(client, tmp_path):
    from napari_allen.workflows.plane_download import download_plane

    download_plane(client, tmp_path / "g.zarr", genes=["Nrp1", "Pdyn"], jobs=2)
    from_store = run_structure_similarity(client, genes=["Nrp1", "Pdyn"], source="grids",
                                          store=tmp_path / "g.zarr", top_n=40)
    downloaded = run_structure_similarity(client, genes=["Nrp1", "Pdyn"], source="grids",
                                          top_n=40)
    assert from_store.experiment_ids == downloaded.experiment_ids
    np.testing.assert_allclose(from_store.similarity.corr, downloaded.similarity.corr,
                               equal_nan=True, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"store": "x.zarr", "source": "unionize"}, "source 'grids'"),
    ({"genes": ["Nrp1"], "scheduler": "tcp://h:1"}, "plane store"),
    ({"genes": ["Nrp1"], "method": "magic"}, "method"),
    ({"genes": ["Nrp1"], "top_n": 0}, "top_n"),
    ({}, "choose experiments"),
    ({"plane": "axial"}, "plane"),
])
def test_impossible_options_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_structure_similarity(None, **kwargs)


def test_plane_listing_pages_stream_into_the_unionize_requests(allen_api, tmp_path):
    """A plane's data sets are listed page by page, unionizes are requested as soon as the
    first ids arrive, and the streamed job gives the matrix of the listed ids given at once."""
    import time

    from napari_allen.api.client import AllenClient

    small_pages = AllenClient(allen_api.url, tmp_path / "cache", page_size=4)
    pages = list(small_pages.ish_data_set_pages("coronal", columns=["id"], first=10))
    assert [len(p) for p in pages] == [4, 4, 2]
    flat = [int(r["id"]) for p in pages for r in p]
    assert flat == [int(r["id"]) for r in small_pages.ish_data_set_records(
        "coronal", columns=["id"], first=10)]

    client = AllenClient(allen_api.url, tmp_path / "cache2")
    started_early = []

    def arriving():  # the first ids, then the rest only once a unionize request went out
        yield from flat[:2]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                "StructureUnionize" in r["path"] + r["query"] for r in allen_api.requests):
            time.sleep(0.01)
        started_early.append(time.monotonic() < deadline)
        yield from flat[2:] + flat[:1]  # a repeated id is dropped, as from a list

    records = client.structure_unionize_records(arriving(), columns=["structure_id"], jobs=2)
    assert started_early == [True] and list(records) == flat

    streamed = run_structure_similarity(client, plane="coronal", first=10, method="numpy_ma")
    given = run_structure_similarity(client, experiments=flat, method="numpy_ma")
    assert streamed.experiment_ids == flat
    np.testing.assert_array_equal(streamed.similarity.corr, given.similarity.corr)
    assert streamed.similarity.structure_ids == given.similarity.structure_ids


def test_correlate_writes_the_script_files_without_pandas(client, tmp_path):
    """``napari-allen correlate`` on the script's data sets needs no pandas (its import is a
    tenth of the command): the matrix, the correlation and the three JSON files are numpy and
    json; the same files come out of the workflow, whose DataFrame of pairs is made on demand."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_allen.cli import main\n"
        f"code = main(['correlate', '--plane', 'coronal', '--first', '6', '--method', "
        f"'numpy_ma', '--out', {str(tmp_path / 'cli.json')!r}])\n"
        "print(code, 'pandas' in sys.modules)\n"
    )
    env = dict(os.environ, NAPARI_ALLEN_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.split()[-2:] == ["0", "False"]

    outcome = run_structure_similarity(client, plane="coronal", first=6, method="numpy_ma")
    outcome.write(tmp_path / "api.json", csv=False)
    for kind in ("structures", "connections", "correlations"):
        assert (tmp_path / f"cli.{kind}.json").read_bytes() == \
            (tmp_path / f"api.{kind}.json").read_bytes()
    pairs = json.loads((tmp_path / "cli.connections.json").read_text())
    frame = outcome.similarity.connections
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["source", "target", "corr"]
    assert [tuple(p.values()) for p in pairs] == list(frame.itertuples(index=False, name=None))
    assert outcome.similarity.n_connections == len(frame) > 0


def test_unionize_workers_and_the_structure_graph_each_have_a_pooled_connection(client):
    """``jobs`` unionize requests plus the structure graph alongside: the pool keeps
    ``jobs + 1`` connections, so none is dropped (urllib3 warns 'Connection pool is full' and
    a later request connects again)."""
    run_structure_similarity(client, plane="coronal", first=3, method="numpy_ma", jobs=20)
    assert client.http._pool_size == 21
