"""The Structures dock, orientation helpers and slider focus in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_allen.widgets._common import reset_shared_client


@pytest.fixture(scope="module")
def mesh_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("widget-mesh-cache")


@pytest.fixture
def widget(make_napari_viewer, qtbot, mesh_cache, monkeypatch):
    from napari_allen.widgets.structures import StructuresWidget

    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(mesh_cache))
    reset_shared_client()
    viewer = make_napari_viewer()
    w = StructuresWidget(viewer)
    qtbot.addWidget(w)
    yield w
    w.runner.cancel()
    reset_shared_client()


def _wait(qtbot, w, timeout=60000):
    qtbot.waitUntil(lambda: not w.runner.is_running, timeout=timeout)


def test_tree_lists_the_ontology_and_filters(widget):
    w = widget
    assert len(w._items) == 1327
    item = w.item("VPM")
    assert item.text(0) == "VPM" and "posteromedial" in item.text(1)
    assert w.filter("ventral post") >= 3
    assert not w.item("VPM").isHidden() and not w.item("TH").isHidden()  # ancestors stay
    assert w.item("CP").isHidden()
    assert w.filter("") == 1327 and not w.item("CP").isHidden()


def test_tree_is_built_after_the_dock_opens_and_is_complete(make_napari_viewer, qtbot):
    """The tree comes in a later event-loop turn (the dock paints first), mirrors the
    ontology (parents, names, atlas swatches) and its search equals a per-item scan."""
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.widgets.structures import StructuresWidget

    w = StructuresWidget(make_napari_viewer())
    qtbot.addWidget(w)
    assert w._by_id is None  # not in the constructor's turn
    qtbot.waitUntil(lambda: w._by_id is not None, timeout=5000)
    onto = Ontology.default()
    assert len(w._items) == len(onto) == 1327
    for sid in onto.table.index[::7]:
        item = w.item(int(sid))
        parent = onto.parent(int(sid))
        assert (item.parent().data(0, Qt.ItemDataRole.UserRole) if item.parent() else None) \
            == parent
        assert item.text(1) == onto.name(int(sid))
        swatch = item.icon(0).pixmap(12, 12).toImage().pixelColor(5, 5)
        # (within a 16-bit display's rounding: the test X server may have depth 16)
        np.testing.assert_allclose((swatch.red(), swatch.green(), swatch.blue()),
                                   onto.rgb(int(sid)), atol=8)
    for text in ("thal", "t", "ventral post", "zzz", ""):
        needle = text.lower()
        hits = {int(s) for s in onto.table.index
                if needle in onto.acronym(int(s)).lower() or needle in onto.name(int(s)).lower()}
        shown = set(hits)
        for s in hits:
            shown.update(onto.ancestors(s))
        assert w.filter(text) == len(hits)
        assert {s for s, item in w._items.items() if not item.isHidden()} == shown
        if text:  # every shown structure can be seen: its ancestors are expanded
            assert all(w.item(a).isExpanded() for s in hits for a in onto.ancestors(s))


def test_a_search_typed_during_the_first_parse_waits_for_the_tree(make_napari_viewer, qtbot):
    """The session's first dock parses the ontology (importing pandas) in a worker: keys typed
    meanwhile build no tree in their turn; the tree, once built, shows that search."""
    from qtpy.QtTest import QTest

    from napari_allen.atlas import ontology
    from napari_allen.widgets import structures
    from napari_allen.widgets.structures import StructuresWidget

    ontology._bundled.cache_clear()
    w = StructuresWidget(make_napari_viewer())
    qtbot.addWidget(w)
    QTest.keyClicks(w.search_edit, "thal")
    assert w._by_id is None and w.filter_pending
    qtbot.waitUntil(lambda: w._by_id is not None and not w.filter_pending,
                    timeout=5000 + structures.ONTOLOGY_AFTER_MS)
    assert w.item("CP").isHidden() and not w.item("TH").isHidden()
    # Built on demand before the worker is back (e.g. a script asks for an item): same search.
    ontology._bundled.cache_clear()
    w2 = StructuresWidget(make_napari_viewer())
    qtbot.addWidget(w2)
    QTest.keyClicks(w2.search_edit, "thal")
    assert w2.item("CP").isHidden() and not w2.item("TH").isHidden()


def test_a_failed_first_parse_stops_holding_searches(make_napari_viewer, qtbot, monkeypatch):
    """If the worker's parse fails, searches stop waiting for it (they parse on demand and
    say what is wrong)."""
    from napari_allen.atlas import ontology
    from napari_allen.widgets import structures
    from napari_allen.widgets.structures import StructuresWidget

    def broken():
        raise ValueError("damaged ontology")

    ontology._bundled.cache_clear()
    monkeypatch.setattr(ontology.Ontology, "default", staticmethod(broken))
    errors: list = []
    w = StructuresWidget(make_napari_viewer())
    qtbot.addWidget(w)
    monkeypatch.setattr(w, "_error", errors.append)
    assert w._parsing
    assert w.filter("thal") == 0 and w.filter_pending  # typed during the parse: held
    qtbot.waitUntil(lambda: not w._parsing, timeout=5000 + structures.ONTOLOGY_AFTER_MS)
    assert [str(e) for e in errors] == ["damaged ontology"] and w._by_id is None
    assert not w.filter_pending  # nothing waits for a tree that will not come


def test_typing_filters_the_tree(widget, qtbot):
    from qtpy.QtTest import QTest

    w = widget
    QTest.keyClicks(w.search_edit, "thal")
    assert w.item("CP").isHidden() and not w.item("TH").isHidden()
    w.search_edit.clear()
    assert not w.item("CP").isHidden()


def test_ticking_adds_a_surface_in_the_atlas_colour(qtbot, widget):
    from napari_allen.atlas.annotation import ccf_annotation_25, structure_id_at
    from napari_allen.atlas.ontology import Ontology

    w = widget
    w.mask_check.setChecked(True)
    w.set_checked("VPM")
    w.set_checked("CP")
    _wait(qtbot, w)
    qtbot.waitUntil(lambda: "CP mesh" in w.viewer.layers, timeout=30000)
    layer = w.viewer.layers["VPM mesh"]
    assert type(layer).__name__ == "Surface"
    rgb = np.array(Ontology.default().rgb(733)) / 255
    np.testing.assert_allclose(layer.colormap.colors[-1][:3], rgb, atol=1e-6)
    assert 0 < layer.opacity < 1
    verts = np.asarray(layer.data[0])
    ids = structure_id_at(ccf_annotation_25(), verts)
    assert (ids != 0).mean() > 0.95  # vertices inside the brain
    mask = w.viewer.layers["VPM mask"]
    assert type(mask).__name__ == "Labels" and mask.data.max() == 1
    # The mask's voxels are VPM's: its translate puts the crop back in CCF µm.
    idx = np.argwhere(mask.data)[::50]
    um = idx * 25 + np.asarray(mask.translate)
    assert set(np.unique(structure_id_at(ccf_annotation_25(), um))) == {733}
    w.set_checked("VPM", False)
    assert "VPM mesh" not in w.viewer.layers and "VPM mask" not in w.viewer.layers
    w.viewer.layers.remove("CP mesh")  # deleting the layer unticks the structure
    assert 672 not in w.checked_ids()


def test_cursor_names_the_structure(widget):
    w = widget
    assert w.describe([6500, 4000, 7650]).startswith("VP")  # 158375425's injection site
    assert w.describe([100, 100, 100]) == "outside the brain"


def test_the_cursor_never_decodes_the_annotation_on_the_main_thread(
        make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """In a fresh cache the first look-up under the cursor opens the 25 µm annotation in a
    worker (the row says so meanwhile), then names the structure; napari's main thread never
    decodes it."""
    import threading

    from napari_allen.atlas import annotation
    from napari_allen.io import nrrd
    from napari_allen.widgets.structures import LOADING_TEXT, StructuresWidget

    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path))
    annotation._ccf_annotation_25.cache_clear()  # as in a new session
    release = threading.Event()
    calls: list[str] = []
    real = nrrd.read_nrrd

    def read_nrrd(*args, **kwargs):
        calls.append(threading.current_thread().name)
        if threading.current_thread() is threading.main_thread():
            raise AssertionError("the 25 µm annotation decoded on the main thread")
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(nrrd, "read_nrrd", read_nrrd)
    viewer = make_napari_viewer()
    w = StructuresWidget(viewer)
    qtbot.addWidget(w)
    try:
        viewer.add_image(np.zeros((4, 4, 4), np.float32), scale=(100.0, 100.0, 100.0))
        viewer.cursor.position = (7111.0, 3977.0, 7620.0)  # VPM
        assert w.cursor_label.text().startswith(LOADING_TEXT)
        assert calls and threading.main_thread().name not in calls
        release.set()
        qtbot.waitUntil(lambda: w.cursor_label.text().startswith("VPM: "), timeout=60000)
        viewer.cursor.position = (5100.0, 4000.0, 3300.0)  # now a plain look-up
        assert w.cursor_label.text().startswith("CP: ")
        assert len(calls) == 1 and threading.main_thread().name not in calls
    finally:
        release.set()
        qtbot.waitUntil(lambda: w._warm_worker is None, timeout=60000)
        annotation._ccf_annotation_25.cache_clear()  # its memmap lives in tmp_path


def test_orientation_is_on_when_the_dock_opens(widget, qtbot):
    from napari_allen.layers.meshes import ccf_reference_layers
    from napari_allen.widgets._common import add_layer_tuple
    from napari_allen.widgets._view import canonical_camera, show_orientation

    viewer = widget.viewer
    from napari_allen.widgets._view import _overlays

    axes, scale_bar = _overlays(viewer)
    for layer_tuple in ccf_reference_layers():
        add_layer_tuple(viewer, layer_tuple)
    # Switched on in the turns after the first layer came (each overlay's first draw on its
    # own; the dock opened on an empty viewer).
    qtbot.waitUntil(lambda: axes.visible and axes.labels and scale_bar.visible, timeout=5000)
    show_orientation(viewer)
    assert tuple(viewer.dims.axis_labels)[-3:] == ("AP", "DV", "ML")
    assert tuple(viewer.dims.order) == (0, 1, 2)  # 2-D: coronal, slider over AP
    assert viewer.dims.displayed == (1, 2)
    canonical_camera(viewer, "dorsal")
    assert viewer.dims.ndisplay == 3
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.view_direction, (0, 1, 0), atol=1e-6)
    canonical_camera(viewer, "lateral")
    np.testing.assert_allclose(camera.view_direction, (0, 0, 1), atol=1e-6)


def test_focus_moves_the_sliders(make_napari_viewer):
    from napari_allen._sample_data import connectivity_158375425
    from napari_allen.widgets._common import add_layer_tuple
    from napari_allen.widgets._view import focus_on_layer_tuple

    viewer = make_napari_viewer()
    projection, injection = connectivity_158375425()
    add_layer_tuple(viewer, projection)
    add_layer_tuple(viewer, injection)
    before = viewer.dims.point[0]
    assert focus_on_layer_tuple(viewer, injection)
    ap, dv, ml = viewer.dims.point
    assert ap != before
    # The injection density peaks in the right VPM (experiment 158375425: 6,5xx / 4,xxx / 7,xxx).
    assert 6000 <= ap <= 7300 and 3500 <= dv <= 5000 and 6800 <= ml <= 8400
    # A ready napari layer (what add_layer_tuple also accepts) gives the same point.
    viewer.dims.set_point(0, 0.0)
    assert focus_on_layer_tuple(viewer, viewer.layers[injection[1]["name"]])
    assert tuple(viewer.dims.point) == (ap, dv, ml)


def test_loading_an_experiment_moves_the_sliders_and_meshes_its_structures(
        make_napari_viewer, qtbot, allen_api, mesh_cache, monkeypatch):
    from napari_allen.widgets.connectivity import ConnectivityWidget

    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(mesh_cache))
    reset_shared_client()
    viewer = make_napari_viewer()
    w = ConnectivityWidget(viewer)
    qtbot.addWidget(w)

    def wait(timeout=60000):
        qtbot.waitUntil(lambda: not any(r.is_running for r in w.runners), timeout=timeout)

    try:
        search = w.search_panel
        search.structures_edit.setText("VPM")
        search.line_combo.setCurrentText("wild type")
        search.search_button.click()
        wait()
        frame = search.results.frame()
        search.results.select_rows([int(np.flatnonzero(frame["id"] == 158375425)[0])])
        start = tuple(viewer.dims.point)
        w.load_tab.load_button.click()
        wait()
        ap, dv, ml = viewer.dims.point
        assert (ap, dv, ml) != start
        row = frame[frame["id"] == 158375425].iloc[0]
        target = np.array([row["injection_x"], row["injection_y"], row["injection_z"]], float)
        # Sliders at the injection site (to the nearest 100 µm slice).
        assert np.all(np.abs(np.array([ap, dv, ml]) - target) <= 150)

        w.load_tab.meshes_button.click()
        wait()
        meshes = [layer for layer in viewer.layers if layer.metadata.get("kind") == "mesh"]
        roles = {layer.metadata["acronym"]: layer.metadata["role"] for layer in meshes}
        assert roles.get("VPM") == "injection"
        assert "targets" in roles.values()
    finally:
        for runner in w.runners:
            runner.cancel()
        reset_shared_client()
