"""A new result for a layer already shown is shown by that layer, in place: the same data and
every setting napari records as the new layer would have, without a removal (napari ends
one with a full garbage collection) or an insert. A Shapes result goes in place when napari
built it cheaply (its data setter triangulates the paths again); otherwise it replaces the
layer in two turns: the removal in one, the insert (at the same position) in later ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.layers import Image, Labels, Points, Shapes, Surface, Vectors
from napari.utils.colormaps import DirectLabelColormap

from napari_allen.widgets._in_place import _equal, update_in_place
from napari_allen.widgets._view import add_in_turns


def _pairs():
    """(shown, new) pairs of one type whose data and settings all differ."""
    rng = np.random.default_rng(0)
    yield (Image(rng.random((6, 5, 4), np.float32), name="x", scale=(200.0,) * 3,
                 colormap="gray", axis_labels=("AP", "DV", "ML")),
           Image(rng.random((12, 10, 8), np.float32) * 5, name="x", scale=(100.0,) * 3,
                 translate=(50.0, 0.0, 0.0), colormap="magma", contrast_limits=(0.5, 4.0),
                 blending="additive", opacity=0.7, gamma=0.8, units="µm",
                 axis_labels=("AP", "DV", "ML"), metadata={"experiment": 2}))
    yield (Image(rng.random((3, 6, 5, 4), np.float32), name="x"),
           Image(rng.random((5, 6, 5, 4), np.float32), name="x", colormap="inferno",
                 scale=(1.0, 25.0, 25.0, 25.0)))
    colours = {None: (0, 0, 0, 0), 1: (1, 0, 0, 1), 2: (0, 1, 0, 1)}
    yield (Labels(np.zeros((6, 5, 4), np.uint16), name="x"),
           Labels(rng.integers(0, 3, (6, 5, 4)).astype(np.uint16), name="x",
                  colormap=DirectLabelColormap(color_dict=colours), opacity=0.4,
                  features=pd.DataFrame({"index": [0, 1, 2], "acronym": ["", "A", "B"]}),
                  scale=(25.0,) * 3))
    yield (Labels([np.zeros((8, 8, 8), np.uint8), np.zeros((4, 4, 4), np.uint8)], name="x"),
           Labels([np.ones((8, 8, 8), np.uint8), np.ones((4, 4, 4), np.uint8)], name="x",
                  scale=(25.0,) * 3, opacity=0.3))
    vertices = rng.random((4, 3)) * 10
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    yield (Surface((vertices, faces), name="x"),
           Surface((vertices * 2, faces, np.arange(4.0)), name="x", colormap="viridis",
                   opacity=0.5, shading="smooth", blending="translucent_no_depth",
                   metadata={"structure": "VPM"}))
    yield (Vectors(rng.random((3, 2, 3)), name="x"),
           Vectors(rng.random((7, 2, 3)), name="x", edge_width=3.0,
                   features=pd.DataFrame({"density": np.linspace(0.0, 1.0, 7)}),
                   edge_color="density", edge_colormap="turbo"))
    yield (Points(rng.random((3, 3)), name="x"),
           Points(rng.random((9, 3)) * 5, name="x", size=4, face_color="red",
                  features=pd.DataFrame({"n": np.arange(9)})))


def _plugin_pairs():
    """The plugin's own layers (atlas colours, hover features, µm units, axis labels): the
    connectivity sample's shown, then the Nrp1 sample's of the same type and name."""
    from napari_allen._sample_data import connectivity_158375425, nrp1_expression
    from napari_allen.layers.prebuilt import build_layer

    shown = [build_layer(t) for t in connectivity_158375425()]
    shown.append(Labels(np.zeros((3, 4, 5), np.int32)))
    for new in (build_layer(t) for t in nrp1_expression()):
        for old in shown:
            if type(old) is type(new):
                old.name = new.name
                yield old, new
                break


_PAIRS = [*_pairs(), *_plugin_pairs()]


@pytest.mark.parametrize("shown,new", _PAIRS, ids=[
    f"{type(new).__name__}-{new.ndim}d{'-multiscale' if getattr(new, 'multiscale', 0) else ''}"
    f"-{i}" for i, (_, new) in enumerate(_PAIRS)])
def test_updated_in_place_it_is_what_the_new_layer_would_be(make_napari_viewer, shown, new,
                                                              collections):
    viewer = make_napari_viewer()
    viewer.add_layer(shown)
    collections.clear()
    assert update_in_place(viewer.layers[shown.name], new)
    assert list(viewer.layers) == [shown] and not collections  # same layer, nothing removed
    data, state, kind = shown.as_layer_data_tuple()
    want_data, want_state, want_kind = new.as_layer_data_tuple()
    assert kind == want_kind
    if isinstance(want_data, (list, tuple)):
        assert len(data) == len(want_data)
        assert all(_equal(a, b) for a, b in zip(data, want_data, strict=True))
    else:
        assert _equal(data, want_data)
    different = [key for key in want_state
                 if key != "properties" and not _equal(state[key], want_state[key])]
    assert different == []
    if isinstance(new, Image):  # the limits slider's extent too
        np.testing.assert_allclose(shown.contrast_limits_range, new.contrast_limits_range)
    np.testing.assert_allclose(viewer.layers.extent.world, new.extent.world)


def test_what_napari_fixes_at_construction_is_never_half_updated(make_napari_viewer):
    viewer = make_napari_viewer()
    shown = viewer.add_image(np.zeros((6, 5, 4), np.float32), name="x")
    before = shown.data
    assert not update_in_place(shown, Image(np.ones((5, 4), np.float32), name="x"))  # dims
    assert not update_in_place(shown, Labels(np.ones((6, 5, 4), np.uint8), name="x"))  # type
    assert not update_in_place(  # multiscale
        shown, Image([np.ones((6, 5, 4), np.float32), np.ones((3, 3, 2), np.float32)], name="x"))
    assert not update_in_place(shown, Image(np.ones((6, 5, 4, 3), np.uint8), name="x", rgb=True))
    assert shown.data is before


def test_a_new_result_for_a_shown_layer_updates_it_in_one_step(make_napari_viewer, qtbot,
                                                                runner, collections):
    """Through a dock's proxied viewer, as napari hands it to plugin docks."""
    from napari.utils._proxies import PublicOnlyProxy

    real = make_napari_viewer()
    viewer = PublicOnlyProxy(real)
    first = Image(np.zeros((6, 5, 4), np.float32), name="vol")
    other = Image(np.zeros((6, 5, 4), np.float32), name="other")
    for layer in (first, other):
        add_in_turns(viewer, runner, layer)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    collections.clear()
    new = Image(np.ones((6, 5, 4), np.float32), name="vol", colormap="magma")
    seen: list = []
    add_in_turns(viewer, runner, new, then=seen.append)
    assert seen and real.layers["vol"] is first  # in the caller's step: nothing queued
    assert list(real.layers) == [first, other] and not collections
    assert first.colormap.name == "magma" and np.array_equal(first.data, new.data)


def test_a_shapes_result_replaces_the_layer_in_turns_at_its_place(make_napari_viewer, qtbot,
                                                                  runner, collections,
                                                                  monkeypatch):
    """napari's Shapes data setter triangulates every path on the main thread; a new layer
    whose build cost is unknown (not made by ``build_layer``) came triangulated from the
    worker: it replaces the old one, whose removal (and napari's garbage collection) has a
    turn of its own, before the insert's."""
    from napari_allen.widgets import _view

    viewer = make_napari_viewer()
    paths = [np.array([[0, 0, 0], [1, 1, 1], [2, 1, 0.0]])] * 2
    below, old, above = (Image(np.zeros((4, 4, 4), np.float32), name="below"),
                         Shapes(paths, shape_type="path", name="lines"),
                         Image(np.zeros((4, 4, 4), np.float32), name="above"))
    for layer in (below, old, above):
        viewer.add_layer(layer)
    collections.clear()
    turns: list[str] = []
    from qtpy.QtCore import QTimer

    ticks = [0]
    timer = QTimer()
    timer.setInterval(0)
    timer.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
    timer.start()
    inserting = _view._insert_unselected

    def spy_insert(v, layer, *rest):
        turns.append(("insert", ticks[0], old in viewer.layers, len(collections)))
        return inserting(v, layer, *rest)

    monkeypatch.setattr(_view, "_insert_unselected", spy_insert)
    new = Shapes(paths * 3, shape_type="path", name="lines")
    add_in_turns(viewer, runner, new)
    assert old in viewer.layers  # nothing in the caller's turn
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    timer.stop()
    assert [layer.name for layer in viewer.layers] == ["below", "lines", "above"]
    assert viewer.layers["lines"] is new and old not in viewer.layers
    ((step, tick, old_still_there, collected),) = turns
    assert not old_still_there and collected == 1  # removed (one collection) before...
    assert tick > 0  # ...in an earlier turn than the insert


def test_the_limits_are_the_new_layers_even_if_setting_the_data_resets_them(monkeypatch):
    """Set last, even when they were equal before: a napari whose data setter resets the
    contrast limits (as 0.9.2's does not) still ends with the new layer's."""
    shown = Image(np.linspace(0, 1, 60, dtype=np.float32).reshape(3, 4, 5), name="x",
                  contrast_limits=(0.0, 1.0))
    new = Image(np.linspace(0, 5, 60, dtype=np.float32).reshape(3, 4, 5), name="x",
                contrast_limits=(0.0, 1.0))
    original = Image.data

    def resetting(self, value):
        original.fset(self, value)
        self.contrast_limits = (0.0, 5.0)

    monkeypatch.setattr(Image, "data", property(original.fget, resetting))
    assert update_in_place(shown, new)
    np.testing.assert_allclose(shown.contrast_limits, (0.0, 1.0))
    np.testing.assert_allclose(shown.contrast_limits_range, new.contrast_limits_range)


def _lines_tuple(n: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    paths = [np.cumsum(rng.normal(0, 50, (12, 3)), axis=0) for _ in range(n)]
    colours = np.column_stack([rng.random((n, 3)), np.ones(n)])
    return (paths, {"name": "lines", "shape_type": "path", "edge_width": 20.0,
                    "edge_color": colours, "face_color": "transparent",
                    "features": pd.DataFrame({"experiment": np.arange(n) + seed}),
                    "metadata": {"seed": seed}}, "shapes")


def test_a_shapes_result_napari_built_cheaply_goes_into_the_layer_shown(make_napari_viewer,
                                                                         runner, collections,
                                                                         monkeypatch):
    """Triangulating a few paths again costs less than a removal (a full collection) and an
    insert: the shown layer takes the new paths, colours, features and metadata, in the
    caller's step, keeping its place and identity."""
    from napari_allen.layers.prebuilt import build_cpu_seconds, build_layer
    from napari_allen.widgets import _common

    # A budget no build of 7 paths exceeds, even with a full collection run inside it.
    monkeypatch.setattr(_common, "SHAPES_IN_PLACE_MAX_BUILD_S", 10.0)
    viewer = make_napari_viewer()
    below, old, above = (Image(np.zeros((4, 4, 4), np.float32), name="below"),
                         build_layer(_lines_tuple(3, 0)),
                         Image(np.zeros((4, 4, 4), np.float32), name="above"))
    for layer in (below, old, above):
        viewer.add_layer(layer)
    new = build_layer(_lines_tuple(7, 1))
    assert build_cpu_seconds(new) is not None
    collections.clear()
    seen: list = []
    assert add_in_turns(viewer, runner, new, then=seen.append) is old
    assert seen == [old] and not runner.is_running  # nothing queued
    assert list(viewer.layers) == [below, old, above] and not collections
    assert len(old.data) == 7
    for shown, wanted in zip(old.data, new.data, strict=True):
        np.testing.assert_allclose(shown, wanted)
    np.testing.assert_allclose(old.edge_color, new.edge_color)
    assert old.features["experiment"].tolist() == list(range(1, 8))
    assert old.metadata == {"seed": 1}


def test_a_shapes_result_too_costly_to_triangulate_again_replaces_the_layer(
        make_napari_viewer, qtbot, runner, collections, monkeypatch):
    """Above the budget (the build's CPU time), the worker's layer replaces the shown one:
    one removal, then the insert at the same place."""
    from napari_allen.layers.prebuilt import build_layer
    from napari_allen.widgets import _common

    monkeypatch.setattr(_common, "SHAPES_IN_PLACE_MAX_BUILD_S", -1.0)
    viewer = make_napari_viewer()
    old = build_layer(_lines_tuple(3, 0))
    for layer in (Image(np.zeros((4, 4, 4), np.float32), name="below"), old):
        viewer.add_layer(layer)
    collections.clear()
    new = build_layer(_lines_tuple(7, 1))
    add_in_turns(viewer, runner, new)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert [layer.name for layer in viewer.layers] == ["below", "lines"]
    assert viewer.layers["lines"] is new and old not in viewer.layers
    assert len(collections) == 1


def test_build_layer_keeps_the_cpu_time_of_each_build():
    """The build's CPU seconds, for layers built there only, forgotten with the layer."""
    import gc
    import weakref

    from napari_allen.layers.prebuilt import build_cpu_seconds, build_layer

    layer = build_layer(_lines_tuple(4, 0))
    seconds = build_cpu_seconds(layer)
    assert seconds is not None and 0.0 < seconds < 5.0
    assert build_cpu_seconds(Shapes(_lines_tuple(4, 0)[0], shape_type="path")) is None
    image = build_layer((np.zeros((3, 4, 5), np.float32), {}, "image"))
    assert build_cpu_seconds(image) is not None
    ref = weakref.ref(image)
    del image
    gc.collect()
    assert ref() is None  # the record does not keep a layer alive
