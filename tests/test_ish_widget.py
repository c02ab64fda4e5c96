"""The "Gene expression" dock widget against the local Allen server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_allen.io.plane_store import ISH_SHAPE, PlaneStore, open_plane_store
from napari_allen.widgets._common import reset_shared_client, shared_client

TIMEOUT = 60_000  # ms


@pytest.fixture
def dock(make_napari_viewer, allen_api):
    from napari_allen.widgets.gene_expression import GeneExpressionWidget

    reset_shared_client()
    viewer = make_napari_viewer()
    w = GeneExpressionWidget(viewer)
    yield w
    for runner in w.runners:
        runner.cancel()
    reset_shared_client()


@pytest.fixture
def widget(dock):
    return dock.search_tab


@pytest.fixture
def sim(dock):
    return dock.similarity_tab


@pytest.fixture
def plane(dock):
    return dock.plane_tab


def _wait(qtbot, runner):
    qtbot.waitUntil(lambda: not runner.is_running, timeout=TIMEOUT)


def _search(qtbot, widget, text: str, plane: str = "both"):
    widget.gene_edit.setText(text)
    widget.plane_combo.setCurrentText(plane)
    widget.search()
    _wait(qtbot, widget.runner)


def test_search_load_annotation_and_structure_table(dock, widget, qtbot, tmp_path):
    _search(qtbot, widget, "nrp1")  # case-insensitive
    shown = widget.result_table.frame()
    assert list(shown.columns) == ["experiment_id", "gene", "gene_name", "plane",
                                   "section_thickness"]
    assert set(shown["gene"]) == {"Nrp1"} and 74272479 in set(shown["experiment_id"])
    row = int(np.flatnonzero(shown["experiment_id"].to_numpy() == 74272479)[0])
    widget.result_table.select_rows([row])
    widget.volume_boxes["density"].setChecked(True)
    widget.load_selected()
    _wait(qtbot, widget.runner)
    viewer = widget.viewer
    names = [layer.name for layer in viewer.layers]
    # The real Nrp1 zip has energy only: the local server generates (and flags) the density.
    assert "Nrp1 energy (exp 74272479)" in names
    assert "Nrp1 density [synthetic] (exp 74272479)" in names
    energy = viewer.layers["Nrp1 energy (exp 74272479)"]
    assert energy.metadata["experiment_id"] == 74272479 and energy.metadata["gene"] == "Nrp1"
    assert tuple(energy.scale) == (200.0, 200.0, 200.0)
    assert np.isnan(np.asarray(energy.data)).sum() == 54_982  # -1 shown as NaN

    assert widget.add_annotation() is None  # built in a worker, added in turns
    _wait(qtbot, widget.annotation_runner)
    labels = widget.viewer.layers["grid annotation (200 µm)"]
    assert type(labels).__name__ == "Labels" and widget.add_annotation() is labels

    tab = dock.structures_tab
    tab.layer_combo.setCurrentText("Nrp1 energy (exp 74272479)")
    tab.compute_structure_table()
    _wait(qtbot, tab.runner)
    table = tab.table
    hpf = table.set_index("acronym").loc["HPF"]
    assert hpf["n_valid"] > 0
    assert "highest mean" in tab.status.text()
    # Opens sorted by mean, highest first, with the name and the value in the first columns.
    shown = tab.structure_table.view_frame()
    assert list(shown.columns[:2]) == ["acronym", "mean"]
    means = shown["mean"].dropna().to_numpy()
    assert len(means) > 10 and (np.diff(means) <= 0).all()
    out = tab.structure_table.export_csv(str(tmp_path / "nrp1.csv"))
    assert pd.read_csv(out).shape[0] == len(table)


def test_cached_grids_load_without_network(widget, qtbot, allen_api):
    _search(qtbot, widget, "Nrp1", plane="coronal")
    widget.result_table.select_rows([0])
    widget.load_selected()
    _wait(qtbot, widget.runner)
    for layer in list(widget.viewer.layers):
        widget.viewer.layers.remove(layer)
    allen_api.requests.clear()
    allen_api.faults.add("http500", path_contains="/grid_data/", times=None)
    widget.load_selected()
    _wait(qtbot, widget.runner)
    assert len(widget.viewer.layers) == 1
    assert not [r for r in allen_api.requests if "/grid_data/" in r["path"]]


def test_loaded_grid_is_focused_without_scanning_it_on_the_main_thread(widget, qtbot,
                                                                        monkeypatch):
    """The expression peak the sliders move to is found in the worker that built the layer
    (a whole-volume scan), and the sliders move there once the layer is shown."""
    import threading

    import napari_allen.layers.focus as focus

    scanned_on: list = []
    real_peak = focus.peak_um

    def spy(*args, **kwargs):
        scanned_on.append(threading.current_thread() is threading.main_thread())
        return real_peak(*args, **kwargs)

    monkeypatch.setattr(focus, "peak_um", spy)
    _search(qtbot, widget, "Nrp1", plane="coronal")
    widget.result_table.select_rows([0])
    widget.load_selected()
    _wait(qtbot, widget.runner)
    assert scanned_on == [False]  # once, in the worker
    layer = widget.viewer.layers[-1]
    peak = np.asarray(layer.metadata[focus.FOCUS_KEY])
    np.testing.assert_allclose(np.asarray(widget.viewer.dims.point)[-3:], peak, atol=200)


def test_newer_search_wins(widget, qtbot, allen_api):
    allen_api.latency_ms = 300
    widget.gene_edit.setText("Pdyn")
    widget.search()
    widget.gene_edit.setText("Prox1")
    widget.search()
    _wait(qtbot, widget.runner)
    qtbot.wait(800)  # let the stale worker finish: its result must be dropped
    assert set(widget.result_table.frame()["gene"]) == {"Prox1"}


def test_similarity_lines_heatmap_and_save(sim, qtbot, tmp_path):
    widget = sim
    widget.sim_mode.setCurrentText("genes")
    widget.sim_genes.setText("Nrp1 Pdyn Prox1")
    widget.sim_source.setCurrentText("grids")
    widget.top_n.setValue(40)
    assert widget.save_similarity(str(tmp_path / "none")) is None  # nothing yet
    widget.run_similarity()
    _wait(qtbot, widget.runner)
    result = widget.similarity.similarity
    assert result is not None and 0 < len(result.connections) <= 39
    lines = widget.viewer.layers["structure correlation"]
    assert lines._type_string == "shapes"
    assert {"source", "target", "r"} <= set(lines.features.columns)
    assert len(lines.data) == len(lines.features) > 0
    assert lines.data[0].shape == (2, 3)
    assert widget.heatmap.pixmap() is not None and not widget.heatmap.pixmap().isNull()
    assert " × " in widget.heatmap.describe_at(5, 5)
    paths = widget.save_similarity(str(tmp_path / "sim.json"))
    assert paths["connections"].exists() and paths["correlations"].exists()


def _local_store(path, n=4) -> PlaneStore:
    table = pd.DataFrame({"experiment_id": np.arange(10, 10 + n), "gene": [f"G{i}" for i in
                          range(n)], "gene_name": "g", "plane": "coronal"})
    store = PlaneStore.create(path, table)
    pattern = np.random.default_rng(0).random(ISH_SHAPE).astype(np.float32)
    for i in range(n):
        # G1 follows G0's pattern, G2 its inverse, G3 is unrelated noise.
        grid = {0: pattern, 1: 2 * pattern + 1, 2: 5 - pattern}.get(
            i, np.random.default_rng(i).random(ISH_SHAPE).astype(np.float32)) + float(i)
        grid = grid.astype(np.float32)
        grid[2, 1, 3] = 100.0 * (n - i)  # outside the brain; the highest gene there is G0
        store.write(10 + i, grid)
    return store


def test_open_store_current_gene_and_ranking(plane, qtbot, tmp_path):
    widget = plane
    _local_store(tmp_path / "s.zarr")
    widget.open_store(str(tmp_path / "s.zarr"))
    _wait(qtbot, widget.runner)
    layer = widget.store_layer
    assert layer.data.shape == (4, *ISH_SHAPE) and layer in widget.viewer.layers
    viewer = widget.viewer
    # napari opens a new axis mid-way; the label follows whatever the slider shows.
    assert f"G{viewer.dims.current_step[0]} " in widget.current_gene.text()
    viewer.dims.set_current_step(0, 2)
    assert "G2" in widget.current_gene.text() and "exp 12" in widget.current_gene.text()

    viewer.cursor.position = (2, 2 * 200.0, 1 * 200.0, 3 * 200.0)
    widget.rank_mode.setCurrentText("voxel at cursor")
    widget.rank_genes()
    _wait(qtbot, widget.runner)
    ranked = widget.rank_table.frame()
    assert ranked["gene"].tolist()[:2] == ["G0", "G1"]
    assert ranked["value"].iloc[0] == 400.0

    widget.rank_structure.setText("HPF")
    widget.rank_genes()
    _wait(qtbot, widget.runner)
    ranked = widget.rank_table.frame()
    assert ranked["gene"].iloc[0] == "G2" and "HPF" in widget.status.text()

    viewer.dims.set_current_step(0, 0)
    widget.correlate_current_gene()
    _wait(qtbot, widget.runner)
    ranked = widget.rank_table.frame()
    assert ranked["gene"].tolist() == ["G1", "G3", "G2"]  # seed G0 itself left out
    assert ranked["r"].iloc[0] == pytest.approx(1.0) and ranked["r"].iloc[-1] < -0.99

    viewer.layers.remove(layer)
    assert widget.store_layer is None and "no store open" in widget.current_gene.text()


def test_plane_download_cancel_keeps_partial_store(plane, qtbot, tmp_path, allen_api):
    widget = plane
    allen_api.latency_ms = 20
    widget.store_plane.setCurrentText("coronal")
    widget.store_path.setText(str(tmp_path / "coronal.zarr"))
    widget.store_jobs.setValue(4)
    widget.download_plane()
    qtbot.waitUntil(lambda: (tmp_path / "coronal.zarr" / "completed.txt").exists()
                    and len(open_plane_store(tmp_path / "coronal.zarr").completed()) >= 2,
                    timeout=TIMEOUT)
    widget.runner.cancel()
    assert not widget.runner.is_running
    store = open_plane_store(tmp_path / "coronal.zarr")
    assert len(store) > 1000 and 2 <= len(store.completed()) < len(store)


def test_similarity_from_a_plane_store(sim, qtbot, tmp_path):
    widget = sim
    _local_store(tmp_path / "s.zarr")
    widget.sim_mode.setCurrentText("whole plane")
    widget.sim_plane.setCurrentText("both")  # no plane: every experiment of the store
    widget.sim_store.setText(str(tmp_path / "s.zarr"))
    widget.top_n.setValue(20)
    widget.run_similarity()
    _wait(qtbot, widget.runner)
    assert widget.similarity.experiment_ids == [10, 11, 12, 13]
    assert widget.similarity.source == "grids"
    assert "4 experiments" in widget.status.text()


def test_annotation_is_reused_not_duplicated(make_napari_viewer):
    from napari_allen.widgets.gene_expression import GeneExpressionWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-allen", "nrp1")
    before = [layer.name for layer in viewer.layers]
    dock = GeneExpressionWidget(viewer)
    labels = dock.search_tab.add_annotation()
    assert labels.name in before  # the sample's annotation, under its own name
    assert [layer.name for layer in viewer.layers] == before


def test_cache_label_and_download_counts(dock, widget, qtbot, allen_api):
    """Issue #9 (8, 1): results from the metadata cache say so, and loads report
    downloaded / verified / re-fetched / failed counts, through the real local server."""
    _search(qtbot, widget, "Nrp1", plane="coronal")
    assert "from the cache" not in widget.status.text()
    _search(qtbot, widget, "Nrp1", plane="coronal")  # the same query again: cached
    assert widget.status.text().endswith("(results from the cache)"), widget.status.text()
    assert "results from the cache" in widget.runner.status_text
    shown = widget.result_table.frame()
    widget.result_table.select_rows([0])
    eid = int(shown["experiment_id"].iloc[0])

    def load() -> str:
        widget.load_selected()
        _wait(qtbot, widget.runner)
        return widget.status.text()

    assert "1 downloaded, 0 verified, 0 re-fetched, 0 failed" in load()
    assert "0 downloaded, 1 verified, 0 re-fetched, 0 failed" in load()
    client = shared_client()
    path = client.store.grid_zip(client.api_host, eid, ("energy",))
    path.write_bytes(path.read_bytes()[:100])  # truncated behind our back
    assert "0 downloaded, 0 verified, 1 re-fetched, 0 failed" in load()
    path.unlink()
    allen_api.faults.add("html200", path_contains=f"/grid_data/download/{eid}")
    load()  # the server answers a maintenance page instead of the zip: the load fails
    assert widget.runner.status_text.startswith("Error:")
    assert "0 downloaded, 0 verified, 0 re-fetched, 1 failed" in widget.runner.status_text


def test_load_shows_each_grid_before_fetching_the_next(widget, qtbot, monkeypatch):
    """The next experiment's grids are fetched once napari has shown the previous layer."""
    from napari_allen.api.client import AllenClient

    seen: list[list[tuple[str, bool]]] = []
    real = AllenClient.grid_volumes

    def spy(self, *args, **kwargs):
        seen.append([(layer.name, layer.visible) for layer in widget.viewer.layers])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AllenClient, "grid_volumes", spy)
    _search(qtbot, widget, "Nrp1")
    assert len(widget.result_table.frame()) >= 2
    widget.result_table.select_rows([0, 1])
    widget.load_selected()
    _wait(qtbot, widget.runner)
    assert len(seen) == 2 and seen[0] == []
    assert len(seen[1]) == 1 and seen[1][0][1]  # the first grid, shown
    assert len(widget.viewer.layers) == 2


def test_similarity_builds_lines_and_annotation_in_the_worker(sim, qtbot, layer_build_threads):
    """The correlation lines (Shapes) and the grid annotation (Labels: colours and features
    of every structure) are constructed off the main thread, then added in turns."""
    threads = layer_build_threads  # (layer type, on the main thread?)
    sim.sim_genes.setText("Nrp1 Pdyn")
    sim.sim_source.setCurrentText("grids")
    sim.top_n.setValue(20)
    sim.run_similarity()
    _wait(qtbot, sim.runner)
    assert sorted(kind for kind, _ in threads) == ["labels", "shapes"]
    assert not any(on_main for _, on_main in threads)
    names = [layer.name for layer in sim.viewer.layers]
    assert names == ["grid annotation (200 µm)", "structure correlation"]
    sim.run_similarity()  # the annotation in the viewer is reused, not added twice
    _wait(qtbot, sim.runner)
    assert [layer.name for layer in sim.viewer.layers] == names


def test_plane_store_opens_in_the_worker(plane, qtbot, tmp_path, layer_build_threads):
    """Opening a store (reading volumes for the contrast, napari's first slice) happens in the
    worker; a folder that is no store is reported in the tab, not raised in the GUI."""
    _local_store(tmp_path / "s.zarr")
    threads = layer_build_threads  # (layer type, on the main thread?)
    plane.open_store(str(tmp_path / "s.zarr"))
    assert plane.store_layer is None  # not in this turn
    _wait(qtbot, plane.runner)
    assert threads == [("image", False)]
    assert plane.store_layer in plane.viewer.layers
    assert "G" in plane.current_gene.text()
    plane.open_store(str(tmp_path))  # not a store
    _wait(qtbot, plane.runner)
    assert "Error" in plane.runner.status_text and str(tmp_path) in plane.runner.status_text


def test_plane_download_of_genes_opens_the_store(plane, qtbot, tmp_path):
    """A gene list downloads only those genes' experiments of the plane, then opens the store
    (layer built in the worker)."""
    plane.store_plane.setCurrentText("coronal")
    plane.store_genes.setText("Nrp1 Pdyn")
    plane.store_path.setText(str(tmp_path / "two.zarr"))
    plane.download_plane()
    _wait(qtbot, plane.runner)
    store = open_plane_store(tmp_path / "two.zarr")
    assert set(store.table["gene"]) == {"Nrp1", "Pdyn"} and set(store.table["plane"]) == {
        "coronal"}
    assert len(store.completed()) == len(store)
    layer = plane.store_layer
    assert layer is not None and layer.data.shape == (len(store), *ISH_SHAPE)
    assert "downloaded" in plane.status.text()


def test_grid_annotation_is_built_in_the_worker_beside_a_search(widget, qtbot,
                                                                layer_build_threads):
    """The "Add grid annotation" button builds the Labels (colours and features of every
    structure) in a worker of its own: a running search goes on."""
    threads = layer_build_threads  # (layer type, on the main thread?)
    widget.gene_edit.setText("Pdyn")
    widget.search()
    widget.annotation_button.click()
    assert widget.runner.is_running
    _wait(qtbot, widget.annotation_runner)
    _wait(qtbot, widget.runner)
    assert threads == [("labels", False)]
    assert set(widget.result_table.frame()["gene"]) == {"Pdyn"}
    assert "grid annotation (200 µm)" in widget.viewer.layers
