"""The three docks together: they fit a 1600x1000 window, open tabbed, wrap long messages,
show progress in napari's activity dock, and build tables and lines in worker threads."""

from __future__ import annotations

import threading

import numpy as np
from qtpy.QtWidgets import QApplication, QDockWidget

from napari_allen.widgets._common import reset_shared_client

DOCKS = ("Gene expression", "Connectivity", "Spatial search")


def _qt_window(viewer):
    return viewer.window._qt_window  # napari offers no public handle on the QMainWindow


def _open_docks(make_napari_viewer, qtbot):
    """A shown 1600x1000 viewer with the three docks added from the plugin manifest."""
    reset_shared_client()
    viewer = make_napari_viewer(show=True)
    win = _qt_window(viewer)
    win.resize(1600, 1000)
    qtbot.wait(50)
    docks = {name: viewer.window.add_plugin_dock_widget("napari-allen", name)
             for name in DOCKS}
    qtbot.wait(200)
    QApplication.processEvents()
    return viewer, win, docks


def test_docks_open_tabbed_and_fit_1600x1000(make_napari_viewer, qtbot):
    viewer, win, docks = _open_docks(make_napari_viewer, qtbot)
    assert win.width() <= 1600 and win.height() <= 1000
    assert win.minimumSizeHint().height() <= 1000
    dock_widgets = [dock for dock, _ in docks.values()]
    assert all(isinstance(d, QDockWidget) for d in dock_widgets)
    tabbed = set(win.tabifiedDockWidgets(dock_widgets[0]))
    assert set(dock_widgets[1:]) <= tabbed  # one dock area, three tabs
    # The canvas keeps most of the window.
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 700 and canvas.height() >= 600


def test_a_2000_character_error_wraps_and_is_notified(make_napari_viewer, qtbot, monkeypatch):
    viewer, win, docks = _open_docks(make_napari_viewer, qtbot)
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    dock, widget = docks["Spatial search"]
    width, size = dock.width(), (win.width(), win.height())
    message = "http://127.0.0.1:9/" + "x" * 2000

    def fail(*, progress, cancel, emit):
        raise OSError(message)

    widget.runner.run(fail, description="Failing")
    qtbot.waitUntil(lambda: not widget.runner.is_running, timeout=5000)
    QApplication.processEvents()
    assert message in widget.runner.status_text
    assert shown and message in shown[0]
    assert dock.width() <= width + 2 and (win.width(), win.height()) == size


def test_progress_reaches_napari_activity_and_cancel_there_stops_the_task(make_napari_viewer,
                                                                         qtbot):
    from napari.utils import progress as napari_progress

    from napari_allen.progress import Progress

    _, _, docks = _open_docks(make_napari_viewer, qtbot)
    runner = docks["Connectivity"][1].search_panel.runner
    release = threading.Event()
    cancelled = threading.Event()

    def task(*, progress, cancel, emit):
        progress(Progress(done=2, total=5, message="step two"))
        release.wait(5)
        if cancel.cancelled:
            cancelled.set()
        cancel.check()

    runner.run(task, description="Long job")
    qtbot.waitUntil(lambda: runner.activity is not None and runner.activity.n == 2,
                    timeout=5000)
    bar = runner.activity
    assert bar in napari_progress._all_instances and bar.total == 5
    assert bar.desc.startswith("step two")
    bar.cancel()  # the activity dock's cancel button
    release.set()
    assert cancelled.wait(5)
    assert not runner.is_running and runner.activity is None
    assert bar not in napari_progress._all_instances


def test_napari_activity_bar_only_for_tasks_that_outlast_the_delay(make_napari_viewer, qtbot,
                                                                   monkeypatch):
    """Creating napari's activity bar repaints the window synchronously: a task done within
    ACTIVITY_AFTER_S never creates one; a longer one gets it, at the progress it reached."""
    from napari.utils import progress as napari_progress

    from napari_allen.progress import Progress
    from napari_allen.widgets import _tasks

    _, _, docks = _open_docks(make_napari_viewer, qtbot)
    runner = docks["Connectivity"][1].search_panel.runner
    created: list = []
    real_open = _tasks.TaskRunner._open_activity
    monkeypatch.setattr(_tasks.TaskRunner, "_open_activity",
                        lambda self, d: created.append(d) or real_open(self, d))

    def quick(*, progress, cancel, emit):
        progress(Progress(done=1, total=1, message="done at once"))
        return 1

    results: list = []
    runner.run(quick, on_result=results.append, description="Quick job")
    qtbot.waitUntil(lambda: results == [1] and not runner.is_running, timeout=5000)
    qtbot.wait(int(_tasks.ACTIVITY_AFTER_S * 1000) + 200)  # the delay passes after the end
    assert created == [] and runner.activity is None
    assert not any(bar.desc.startswith("Quick job") for bar in napari_progress._all_instances)

    release = threading.Event()

    def slow(*, progress, cancel, emit):
        progress(Progress(done=3, total=4, message="three of four"))
        release.wait(10)

    runner.run(slow, description="Slow job")
    assert runner.activity is None  # not in the click's own turn
    qtbot.waitUntil(lambda: runner.activity is not None, timeout=5000)
    assert created == ["Slow job"]
    qtbot.waitUntil(lambda: runner.activity.n == 3 and runner.activity.total == 4, timeout=5000)
    release.set()
    qtbot.waitUntil(lambda: not runner.is_running and runner.activity is None, timeout=5000)


def test_tables_and_lines_are_built_in_worker_threads(make_napari_viewer, allen_api, qtbot,
                                                      monkeypatch):
    """Per-structure tables, their table models and lines layer data never run on the main
    thread (they froze napari for 0.6-1.3 s)."""
    import napari_allen.layers.expression as expression_layers
    import napari_allen.layers.lines as lines_layers
    import napari_allen.widgets.ish_structures as structures_module
    import napari_allen.workflows.ish as ish
    from napari_allen.io.gridzip import read_grid_zip
    from napari_allen.layers.volumes import image_layer
    from napari_allen.widgets._common import add_layer_tuple
    from napari_allen.widgets.gene_expression import GeneExpressionWidget
    from napari_allen.widgets.spatial_search import SpatialSearchWidget

    threads: dict[str, list] = {}

    def spy(name, fn):
        def wrapper(*args, **kwargs):
            threads.setdefault(name, []).append(threading.current_thread())
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(ish, "structure_table", spy("structure_table", ish.structure_table))
    monkeypatch.setattr(structures_module, "table_data",
                        spy("table_data", structures_module.table_data))
    monkeypatch.setattr(lines_layers, "lines_layers",
                        spy("lines_layers", lines_layers.lines_layers))
    monkeypatch.setattr(expression_layers, "connections_layer",
                        spy("connections_layer", expression_layers.connections_layer))
    reset_shared_client()
    viewer = make_napari_viewer()
    gene = GeneExpressionWidget(viewer)
    spatial = SpatialSearchWidget(viewer)
    from importlib import resources

    path = resources.files("napari_allen") / "data" / "ish" / \
        "Nrp1_P56_coronal_74272479_200um.zip"
    (energy,) = read_grid_zip(path)
    layer = add_layer_tuple(viewer, image_layer(energy))
    tab = gene.structures_tab
    tab.layer_combo.setCurrentText(layer.name)
    tab.compute_structure_table()
    qtbot.waitUntil(lambda: not tab.runner.is_running, timeout=30_000)
    assert tab.table is not None

    sim = gene.similarity_tab
    sim.sim_genes.setText("Nrp1 Pdyn")
    sim.top_n.setValue(20)
    sim.run_similarity()
    qtbot.waitUntil(lambda: not sim.runner.is_running, timeout=60_000)
    assert sim.similarity is not None

    spatial.form.seed_cap.setValue(3)
    spatial.run()
    qtbot.waitUntil(lambda: not spatial.runner.is_running, timeout=60_000)
    assert spatial.last_result is not None
    spatial.close_search()

    main = threading.main_thread()
    for name in ("structure_table", "table_data", "lines_layers", "connections_layer"):
        assert threads.get(name), f"{name} was not called"
        assert all(t is not main for t in threads[name]), f"{name} ran on the main thread"
    reset_shared_client()


def test_cancelled_spatial_search_is_partial_everywhere(make_napari_viewer, allen_api, qtbot,
                                                        monkeypatch, tmp_path):
    import json

    from napari_allen.widgets import spatial_search as module

    monkeypatch.setattr(module, "PARTIAL_EVERY_S", 0.0)
    reset_shared_client()
    allen_api.latency_ms = 60
    viewer = make_napari_viewer()
    w = module.SpatialSearchWidget(viewer)
    w.form.seed_cap.setValue(200)
    w.form.jobs.setValue(1)
    w.form.skip_fibers.setChecked(False)
    w.run()
    assert not w.save_button.isEnabled()  # nothing consistent to save while it runs
    name = f"spatial search {w.form.experiment.value()} lines"
    # While the search runs the lines show as the 2-D Vectors companion (the Shapes paths,
    # triangulated in pure Python, come once with the complete result).
    shown = f"{name} (2-D)"

    def n_lines(layer) -> int:
        return int(layer.features["record_index"].nunique())

    qtbot.waitUntil(lambda: shown in viewer.layers and n_lines(viewer.layers[shown]) >= 2,
                    timeout=60_000)
    w.runner.cancel()
    partial = f"{shown} ({module.PARTIAL})"
    assert partial in viewer.layers and shown not in viewer.layers
    layer = viewer.layers[partial]
    assert layer.metadata["status"] == module.PARTIAL
    assert module.PARTIAL in w.summary.text() and w.save_button.isEnabled()
    with open(w.save_json(str(tmp_path / "p.json"))) as fh:
        saved = json.load(fh)
    assert saved["napari-allen"]["status"] == module.PARTIAL
    assert len(saved["lines"]) == n_lines(layer)  # the file holds what the layer shows
    # A new complete run replaces the partial layers.
    allen_api.latency_ms = 0
    w.form.seed_cap.setValue(3)
    w.run()
    qtbot.waitUntil(lambda: not w.runner.is_running, timeout=60_000)
    assert partial not in viewer.layers and name in viewer.layers
    assert "status" not in w.last_result["metadata"]
    assert np.asarray(viewer.layers[name].data, dtype=object).shape[0] == 3 or \
        len(viewer.layers[name].data) <= 3
    w.close_search()
    reset_shared_client()
