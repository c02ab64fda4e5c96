"""The Connectivity dock widget in a real viewer, against the local Allen API server."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen.widgets._common import reset_shared_client

REAL = 158375425


@pytest.fixture
def widget(make_napari_viewer, allen_api, qtbot):
    from napari_allen.widgets.connectivity import ConnectivityWidget

    reset_shared_client()  # pick up the local server's URL
    viewer = make_napari_viewer()
    w = ConnectivityWidget(viewer)
    qtbot.addWidget(w)
    yield w
    for runner in w.runners:
        runner.cancel()
    reset_shared_client()


def _wait(qtbot, w, timeout=30000):
    qtbot.waitUntil(lambda: not any(r.is_running for r in w.runners), timeout=timeout)


def _search_vpm(qtbot, w):
    s = w.search_panel
    s.structures_edit.setText("VPM")
    s.line_combo.setCurrentText("wild type")
    s.search_button.click()
    _wait(qtbot, w)
    frame = s.results.frame()
    assert REAL in frame["id"].tolist()
    return frame


def test_search_table_and_load_selected(qtbot, widget):
    w = widget
    frame = _search_vpm(qtbot, w)
    assert list(frame.columns[:9]) == ["id", "structure_abbrev", "transgenic_line",
                                       "injection_volume", "injection_x", "injection_y",
                                       "injection_z", "gender", "strain"]
    assert set(frame["transgenic_line"]) == {"wild type"}
    assert w.search_panel.results.isSortingEnabled()
    w.search_panel.results.select_rows([frame.index[frame["id"] == REAL][0]])
    w.load_tab.load_injection_density.setChecked(True)
    w.load_tab.load_voxels.setChecked(True)
    w.load_tab.load_button.click()
    _wait(qtbot, w)
    names = [layer.name for layer in w.viewer.layers]
    assert "projection density (exp 158375425, VPM)" in names
    assert "injection density (exp 158375425, VPM)" in names
    assert "injection sites" in names
    assert "injection voxels > 0.5 (exp 158375425, VPM)" in names
    proj = w.viewer.layers["projection density (exp 158375425, VPM)"]
    assert tuple(proj.scale) == (100, 100, 100)
    sites = w.viewer.layers["injection sites"]
    np.testing.assert_allclose(sites.data, [[7070, 4360, 7650]])
    assert sites.features["experiment"].tolist() == [REAL]


def test_average_then_threshold(qtbot, widget):
    w = widget
    frame = _search_vpm(qtbot, w)
    w.search_panel.results.select_rows(list(range(min(3, len(frame)))))
    a = w.average_tab
    a.normalize_combo.setCurrentText("injection volume")
    a.group_combo.setCurrentText("none")
    a.individual_check.setChecked(True)
    a.average_button.click()
    _wait(qtbot, w)
    avg = [layer for layer in w.viewer.layers if layer.name.startswith("mean projection")]
    assert len(avg) == 1
    n = min(3, len(frame))
    stack = w.viewer.layers[f"processed projections ({n} experiments)"]
    assert stack.data.shape == (n, 132, 80, 114)
    np.testing.assert_allclose(np.nanmean(stack.data, axis=0), avg[0].data, rtol=1e-5,
                               atol=1e-6)
    assert avg[0].metadata["kind"] == "projection_average"
    table = a.average_table.frame()
    assert len(table) == min(3, len(frame)) and table["Used"].all()
    assert {"ExperimentID", "InjectionVolume", "MouseLine", "GroupName"} <= set(table.columns)

    t = w.threshold_tab
    t.threshold_layer_combo.setCurrentText(avg[0].name)
    t.target_region_edit.setText("SSp")
    t.method_combo.setCurrentText("percentile")
    t.threshold_value.setValue(90)
    t.threshold_button.click()
    _wait(qtbot, w)
    masks = [layer for layer in w.viewer.layers if type(layer).__name__ == "Labels"]
    assert len(masks) == 1 and masks[0].data.sum() > 0
    structures = t.structure_table.view_frame()
    assert "SSp" in structures["acronym"].tolist()
    assert (structures["n_significant"] > 0).all()
    assert list(structures.columns[:2]) == ["acronym", "n_significant"]
    assert structures["n_significant"].is_monotonic_decreasing  # most significant first


def test_coordinate_search_from_cursor(qtbot, widget):
    w = widget
    s = w.search_panel
    w.viewer.cursor.position = (7070.0, 4360.0, 7650.0)
    s.cursor_button.click()
    assert s.seed_edit.text() == "7070, 4360, 7650"
    s.coord_button.click()
    _wait(qtbot, w)
    frame = s.results.frame()
    assert len(frame) > 0 and frame.columns[0] == "distance"
    assert frame["distance"].is_monotonic_increasing


def test_new_search_drops_stale_results(qtbot, widget):
    w = widget
    s = w.search_panel
    s.structures_edit.setText("VIS")
    s.search_button.click()
    s.structures_edit.setText("VPM")
    s.line_combo.setCurrentText("wild type")
    s.primary_check.setChecked(True)
    s.search_button.click()
    _wait(qtbot, w)
    qtbot.wait(200)  # a late stale result would land now
    assert set(s.results.frame()["structure_abbrev"]) == {"VPM"}


def test_bad_input_reports_error_without_running(qtbot, widget):
    w = widget
    w.search_panel.structures_edit.setText("")
    w.search_panel.search_button.click()
    assert not w.search_panel.runner.is_running
    assert "injection structure" in w.search_panel.status.text()
    a = w.average_tab
    a.group_combo.setCurrentText("regions")
    a.regions_edit.setText("broken")
    with pytest.raises(ValueError, match="NAME=ACR"):
        a.averaging_options()


def test_load_and_average_wait_for_a_running_search(qtbot, widget, allen_api):
    w = widget
    allen_api.latency_ms = 300
    w.search_panel.structures_edit.setText("VPM")
    w.search_panel.search_button.click()
    assert not w.load_tab.load_button.isEnabled()
    assert not w.load_tab.meshes_button.isEnabled()  # it meshes the selected experiments too
    assert not w.average_tab.average_button.isEnabled()
    _wait(qtbot, w)
    assert w.load_tab.load_button.isEnabled() and w.average_tab.average_button.isEnabled()
    assert w.load_tab.meshes_button.isEnabled()


def test_load_shows_each_layer_before_loading_the_next(qtbot, widget, monkeypatch):
    """The worker downloads, decodes and builds the next experiment only once napari has shown
    the previous layer (its work would otherwise compete with napari's steps for the GIL)."""
    import napari_allen.workflows.connectivity as workflow

    w = widget
    frame = _search_vpm(qtbot, w)
    assert len(frame) >= 2
    seen: list[list[tuple[str, bool]]] = []
    real = workflow.load_volume

    def spy(*args, **kwargs):
        seen.append([(layer.name, layer.visible) for layer in w.viewer.layers])
        return real(*args, **kwargs)

    monkeypatch.setattr(workflow, "load_volume", spy)
    w.search_panel.results.select_rows([0, 1])
    w.load_tab.load_button.click()
    _wait(qtbot, w)
    assert len(seen) == 2
    assert seen[0] == [("injection sites", True)]  # shown before the first download
    assert len(seen[1]) == 2 and all(visible for _, visible in seen[1])
    assert len(w.viewer.layers) == 3


def test_average_threshold_and_meshes_build_their_layers_in_workers(qtbot, widget,
                                                                    layer_build_threads):
    """Average (mean + the individual-experiment stack), Threshold (the mask) and the
    structure meshes construct their napari layers off the main thread."""
    w = widget
    frame = _search_vpm(qtbot, w)
    threads = layer_build_threads  # (layer type, on the main thread?)
    w.search_panel.results.select_rows([frame.index[frame["id"] == REAL][0]])
    w.average_tab.individual_check.setChecked(True)
    w.average_tab.average_button.click()
    _wait(qtbot, w)
    assert [kind for kind, _ in threads] == ["image", "image"]
    mean = next(layer.name for layer in w.viewer.layers if layer.name.startswith("mean"))
    w.threshold_tab.threshold_layer_combo.setCurrentText(mean)
    w.threshold_tab.threshold_button.click()
    _wait(qtbot, w)
    assert [kind for kind, _ in threads][2:] == ["labels"]
    w.load_tab.meshes_button.click()
    _wait(qtbot, w, timeout=180_000)
    meshes = [layer for layer in w.viewer.layers if layer._type_string == "surface"]
    assert meshes and meshes[0].metadata["role"] == "injection"
    assert [kind for kind, _ in threads][3:] == ["surface"] * len(meshes)
    assert not any(on_main for _, on_main in threads)
