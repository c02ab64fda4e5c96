"""Several layers removed at once cost napari one garbage collection, not one per layer."""

from __future__ import annotations

import numpy as np
import pytest


def _add(viewer, names):
    for name in names:
        viewer.add_image(np.zeros((4, 5, 6), np.float32), name=name)


def test_remove_layers_removes_in_one_batch(make_napari_viewer, collections):
    from napari_allen.widgets._removal import remove_layers

    viewer = make_napari_viewer()
    _add(viewer, ["a", "b", "c", "d"])
    # napari's own removal, one by one, collects once per layer: what the batch is for.
    viewer.layers.remove("a")
    viewer.layers.remove("b")
    assert len(collections) == 2
    collections.clear()
    _add(viewer, ["a", "b"])
    removed = remove_layers(viewer, ["a", viewer.layers["b"], "c", "a", "absent"])
    assert removed == 3 and len(collections) == 1
    assert [layer.name for layer in viewer.layers] == ["d"]
    assert remove_layers(viewer, ["absent"]) == 0 and len(collections) == 1


@pytest.mark.parametrize("from_manifest", [False, True])
def test_structures_untick_all_removes_every_layer_in_one_batch(
        make_napari_viewer, qtbot, collections, tmp_path, monkeypatch, from_manifest):
    """"Untick all" unticks every structure and removes all their meshes and masks with one
    collection; a single untick removes its mesh and mask with one. Also as napari opens
    the dock (its viewer then a ``PublicOnlyProxy``)."""
    from qtpy.QtCore import Qt

    from napari_allen.widgets._common import reset_shared_client
    from napari_allen.widgets.structures import StructuresWidget

    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path))
    reset_shared_client()
    viewer = make_napari_viewer()
    if from_manifest:
        _, w = viewer.window.add_plugin_dock_widget("napari-allen", "Structures")
    else:
        w = StructuresWidget(viewer)
        qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w._by_id is not None, timeout=5000)
    acronyms = ["VPM", "LGd", "CP"]
    # Ticked without meshing (signals held): the layers a tick would have added.
    w.tree.blockSignals(True)
    for acronym in acronyms:
        w.item(acronym).setCheckState(0, Qt.CheckState.Checked)
    w.tree.blockSignals(False)
    _add(viewer, ["grid"] + [f"{a} {kind}" for a in acronyms for kind in ("mesh", "mask")])
    collections.clear()

    w.set_checked("VPM", False)
    assert len(collections) == 1
    assert "VPM mesh" not in viewer.layers and "VPM mask" not in viewer.layers

    collections.clear()
    w.clear_button.click()
    assert len(collections) == 1
    assert [layer.name for layer in viewer.layers] == ["grid"]
    assert w.checked_ids() == [] and w._removals is None
    reset_shared_client()
