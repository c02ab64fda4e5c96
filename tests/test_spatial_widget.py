"""The Spatial search dock widget against the local server."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_allen.layers.lines import experiment_colors
from napari_allen.widgets._common import reset_shared_client

EXPERIMENT = 156394513


@pytest.fixture
def widget(make_napari_viewer, allen_api, qtbot):
    from napari_allen.widgets.spatial_search import SpatialSearchWidget

    reset_shared_client()  # the shared client must pick up the local server's URL
    viewer = make_napari_viewer()
    w = SpatialSearchWidget(viewer)
    qtbot.addWidget(w)
    yield w
    w.close_search()
    reset_shared_client()


def _wait(qtbot, w, timeout=60_000):
    qtbot.waitUntil(lambda: not w.runner.is_running, timeout=timeout)


def test_defaults(widget):
    params = widget.form.parameters()
    assert params["experiment_id"] == EXPERIMENT
    assert params["density_range"] == pytest.approx((0.04, 0.3))
    assert params["fiber_tracts"] is True
    assert params["injection_image"] == "injection_fraction"
    assert params["injection_threshold"] == pytest.approx(0.5)
    widget.form.seed_cap.setValue(0)
    assert widget.form.parameters()["max_seeds"] is None


def test_injection_mask_options_change_the_injection_points(widget, qtbot):
    """A stricter injection threshold keeps fewer injection-coordinate points."""
    widget.form.experiment.setValue(158375425)  # real injection grids
    widget.form.seed_cap.setValue(5)
    counts = {}
    for threshold in (0.1, 0.9):
        widget.form.injection_image.setCurrentText("injection_density")
        widget.form.injection_threshold.setValue(threshold)
        widget.run()
        _wait(qtbot, widget)
        points = next(layer for layer in widget.viewer.layers
                      if layer.name.endswith("injection sites"))
        counts[threshold] = len(points.data)
        assert widget.last_result["metadata"]["injection_threshold"] == pytest.approx(threshold)
    assert counts[0.1] > counts[0.9] > 0


def test_run_adds_lines_companion_injection_and_fibres(widget, qtbot, tmp_path):
    widget.form.seed_cap.setValue(12)
    widget.form.jobs.setValue(4)
    widget.form.show_fibers.setChecked(True)
    widget.run()
    _wait(qtbot, widget)
    layers = widget.viewer.layers
    names = [layer.name for layer in layers]
    assert f"spatial search {EXPERIMENT} lines" in names, widget.summary.text()
    lines = layers[f"spatial search {EXPERIMENT} lines"]
    assert lines._type_string == "shapes" and set(lines.shape_type) == {"path"}
    assert set(lines.features["experiment"]) == {EXPERIMENT}
    assert layers[f"spatial search {EXPERIMENT} lines (2-D)"]._type_string == "vectors"
    assert len(layers[f"spatial search {EXPERIMENT} injection sites"].data) > 0
    fibres = layers["fibre tracts"]
    assert fibres._type_string == "labels" and fibres.data.shape == (132, 80, 114)
    assert "12 seeds" in widget.summary.text()
    saved = widget.save_json(str(tmp_path / "w.json"))
    doc = json.loads(Path(saved).read_text())
    assert len(doc["lines"]) == len(lines.data)
    assert len(doc["injectionCoordinates"]) > 0
    # A second run replaces the layers instead of piling up duplicates.
    widget.run()
    _wait(qtbot, widget)
    assert [layer.name for layer in widget.viewer.layers].count(
        f"spatial search {EXPERIMENT} lines") == 1


def test_meshes_button_meshes_injection_and_target_structures(widget, qtbot):
    """Enabled once a result is shown (not while a search runs); meshes the structure holding
    the injection and those holding most seeds, as Surface layers tagged with their role."""
    assert not widget.meshes_button.isEnabled()  # no result yet
    widget.form.seed_cap.setValue(6)
    widget.run()
    assert not widget.meshes_button.isEnabled()  # the result is about to change
    _wait(qtbot, widget)
    assert widget.meshes_button.isEnabled()
    before = {layer.name for layer in widget.viewer.layers}
    widget.meshes_button.click()
    _wait(qtbot, widget, timeout=180_000)
    meshes = [layer for layer in widget.viewer.layers
              if layer.name not in before and layer._type_string == "surface"]
    roles = [layer.metadata["role"] for layer in meshes]
    assert roles.count("injection") == 1, roles
    assert 1 <= roles.count("targets") <= 4, roles


def test_click_searches_all_experiments(widget, qtbot):
    widget.click_button.setChecked(True)
    # Simulate napari's drag-callback protocol: press, then release without moving.
    event = SimpleNamespace(type="mouse_press", position=(5010.0, 3490.0, 7530.0), button=1)
    gen = widget._on_mouse(widget.viewer, event)
    next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    _wait(qtbot, widget)
    layer = widget.viewer.layers["spatial search (click) lines"]
    assert layer.features["experiment"].nunique() > 1
    seeds = layer.features[["seed_ap_um", "seed_dv_um", "seed_ml_um"]].to_numpy()
    np.testing.assert_allclose(seeds, [[5000, 3500, 7500]] * len(seeds))  # snapped voxel
    colors = np.asarray(layer.edge_color)
    by_exp = {}
    for exp, color in zip(layer.features["experiment"], colors, strict=True):
        by_exp.setdefault(exp, set()).add(tuple(np.round(color, 4)))
    assert all(len(c) == 1 for c in by_exp.values())
    assert len({next(iter(c)) for c in by_exp.values()}) > 1
    # A second click elsewhere updates the same layers, colours included.
    first_count = len(layer.data)
    assert widget.search_at([4300.0, 2700.0, 7050.0])  # the MOs injection site of 156394513
    _wait(qtbot, widget)
    layer = widget.viewer.layers["spatial search (click) lines"]
    assert [ly.name for ly in widget.viewer.layers].count(layer.name) == 1
    assert len(layer.data) != first_count
    expected = experiment_colors(layer.features["experiment"])
    np.testing.assert_allclose(
        np.asarray(layer.edge_color), [expected[int(e)] for e in layer.features["experiment"]])
    vectors = widget.viewer.layers["spatial search (click) lines (2-D)"]
    assert len(vectors.data) == sum(len(p) - 1 for p in layer.data)
    # A click where no experiment projects (outside the brain, inside the grid) clears them.
    assert widget.search_at([100.0, 100.0, 100.0])
    _wait(qtbot, widget)
    assert "spatial search (click) lines" not in widget.viewer.layers
    assert "0 lines" in widget.summary.text()


def test_drag_and_unchecked_do_not_search(widget, allen_api):
    event = SimpleNamespace(type="mouse_press", position=(5000.0, 3500.0, 7500.0), button=1)
    assert list(widget._on_mouse(widget.viewer, event)) == []  # click mode off: nothing
    widget.click_button.setChecked(True)
    gen = widget._on_mouse(widget.viewer, event)
    next(gen)
    event.type = "mouse_move"
    next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    assert not widget.runner.is_running
    assert not widget.search_at([-5000.0, 0.0, 0.0])
    assert "outside the atlas" in widget.summary.text()


def test_lines_appear_while_the_search_runs(widget, qtbot, monkeypatch):
    from napari_allen.widgets import spatial_search as module

    monkeypatch.setattr(module, "PARTIAL_EVERY_S", 0.0)  # show after every seed
    shown: list[int] = []

    def spying(original):
        def spy(viewer, layer, *rest):
            from napari.layers import Shapes, Vectors

            # Lines layers are never constructed on the main thread: they arrive ready-built
            # (in the worker), or as plain arrays for a layer already shown (updated in place);
            # while the search runs only the Vectors companion is refreshed, the Shapes paths
            # come with the result.
            if not isinstance(layer, (Shapes, Vectors)) and layer_type_of(layer) in (
                    "shapes", "vectors"):
                assert layer[1]["name"] in viewer.layers, "a lines layer built on the main thread"
                shown.append(("Vectors" if layer[2] == "vectors" else "Shapes",
                              int(layer[1]["features"]["record_index"].nunique())))
            elif isinstance(layer, (Shapes, Vectors)):
                shown.append((type(layer).__name__,
                              int(layer.features["record_index"].nunique())))
            return original(viewer, layer, *rest)
        return spy

    from napari_allen.widgets import _common, _view

    # Everything goes through _view.add_in_turns: partial arrays update the layer shown with
    # update_same_named, ready layers are inserted by _insert_unselected.
    monkeypatch.setattr(_common, "update_same_named", spying(_common.update_same_named))
    monkeypatch.setattr(_view, "_insert_unselected", spying(_view._insert_unselected))
    widget.form.seed_cap.setValue(6)
    widget.form.skip_fibers.setChecked(False)
    widget.form.jobs.setValue(1)
    widget.run()
    _wait(qtbot, widget)
    assert ("Shapes", 6) in shown and shown[-1][1] == 6  # the final result
    partial = [n for kind, n in shown if kind == "Vectors"]
    assert len(partial) > 2 and min(partial) < 6  # partial lines came first
    assert partial == sorted(partial)
    assert [kind for kind, _ in shown].count("Shapes") == 1  # paths built once


def layer_type_of(item) -> str:
    from napari.layers import Layer

    return type(item).__name__.lower() if isinstance(item, Layer) else item[2]


def test_lines_layers_are_built_in_the_worker(widget, qtbot, layer_build_threads):
    """The Shapes/Vectors/Points/Labels of a search are constructed off the main thread (a
    Shapes layer triangulates every path when built: seconds for thousands of lines)."""
    threads = layer_build_threads  # (layer type, on the main thread?)
    widget.form.seed_cap.setValue(5)
    widget.form.show_fibers.setChecked(True)
    widget.run()
    _wait(qtbot, widget)
    kinds = {kind for kind, _ in threads}
    assert {"shapes", "vectors", "labels"} <= kinds
    assert not any(on_main for _, on_main in threads)
    assert f"spatial search {EXPERIMENT} lines" in widget.viewer.layers


def test_cancel_stops_the_queries(widget, qtbot, allen_api):
    import time

    allen_api.latency_ms = 100
    widget.form.seed_cap.setValue(300)
    widget.form.jobs.setValue(2)
    widget.form.skip_fibers.setChecked(False)
    widget.run()

    def spatial() -> int:
        return sum("target_spatial" in r["target"] for r in allen_api.requests)

    qtbot.waitUntil(lambda: spatial() >= 2, timeout=60_000)
    widget.runner.cancel()
    assert not widget.runner.is_running
    time.sleep(0.5)  # requests already on the wire may finish; nothing new may start
    settled = spatial()
    time.sleep(0.5)
    assert spatial() == settled < 50
    assert f"spatial search {EXPERIMENT} injection sites" not in widget.viewer.layers


def test_dock_widget_from_the_manifest(make_napari_viewer):
    from napari_allen.widgets.spatial_search import SpatialSearchWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-allen", "Spatial search")
    assert isinstance(widget, SpatialSearchWidget)
    assert widget.mouse_callback in viewer.mouse_drag_callbacks
    widget.close_search()
    assert widget.mouse_callback not in viewer.mouse_drag_callbacks


def test_a_closed_dock_is_freed_and_stops_answering_clicks(make_napari_viewer, qtbot):
    """napari's remove_dock_widget only unparents the dock's widget; the viewer's mouse
    callback list must not keep it alive (a closed dock in click mode would start searches on
    every click)."""
    import gc
    import weakref

    viewer = make_napari_viewer()
    before = list(viewer.mouse_drag_callbacks)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-allen", "Spatial search")
    widget.click_button.setChecked(True)
    callback, ref = widget.mouse_callback, weakref.ref(widget)
    press = SimpleNamespace(type="mouse_press", position=(5000.0, 3500.0, 7500.0), button=1)
    drag = callback(viewer, press)
    next(drag)  # a live dock follows the press (its click-or-drag generator)
    drag.close()
    viewer.window.remove_dock_widget(dock)
    del dock, widget
    qtbot.wait(50)
    gc.collect()
    assert ref() is None
    assert viewer.mouse_drag_callbacks == before
    assert list(callback(viewer, press)) == []  # a stale reference elsewhere: nothing


def test_dock_from_the_manifest_updates_its_layers_in_place(make_napari_viewer, allen_api,
                                                             qtbot, monkeypatch):
    """napari hands a plugin dock a proxied viewer (its layers wrapped in ``PublicOnlyProxy``):
    the growing partial lines and a second run still update the same three layers instead of
    piling up ``name [1]`` duplicates. A few paths are cheap to triangulate again: the second
    run's lines go into the Shapes layer shown (no removal)."""
    from napari_allen.widgets import _common
    from napari_allen.widgets import spatial_search as module

    monkeypatch.setattr(module, "PARTIAL_EVERY_S", 0.0)  # a partial after every seed
    # A budget no build of 6 paths exceeds, even with a full collection run inside it.
    monkeypatch.setattr(_common, "SHAPES_IN_PLACE_MAX_BUILD_S", 10.0)
    reset_shared_client()
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-allen", "Spatial search")
    widget.form.seed_cap.setValue(6)
    widget.form.skip_fibers.setChecked(False)
    widget.form.jobs.setValue(1)
    expected = {f"spatial search {EXPERIMENT} {suffix}"
                for suffix in ("lines", "lines (2-D)", "injection sites")}
    lines: list = []
    try:
        for _ in range(2):
            widget.run()
            _wait(qtbot, widget)
            assert {layer.name for layer in viewer.layers} == expected
            lines.append(viewer.layers[f"spatial search {EXPERIMENT} lines"])
        assert lines[1] is lines[0]
        assert len(lines[1].data) == len(widget.last_result["records"]) > 0
    finally:
        widget.close_search()
        reset_shared_client()
