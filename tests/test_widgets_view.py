"""Viewer helpers of the docks (widgets/_view.py): a layer added in turns ends up as napari's
own add_layer leaves it, and the orientation overlays switch on one step per turn."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
from napari.layers import Image
from napari.utils._proxies import PublicOnlyProxy
from qtpy.QtCore import QEvent, QObject

from napari_allen.widgets._tasks import run_in_turns
from napari_allen.widgets._view import (
    GLYPHS_PER_TURN,
    OVERLAY_GLYPHS,
    _camera,
    _glyph_steps,
    _overlay_font,
    _overlays,
    add_and_focus_later,
    add_in_turns,
    show_orientation_stepwise,
)


def _volume(name: str, shape=(20, 12, 16), scale=(100.0, 100.0, 100.0)) -> Image:
    return Image(np.zeros(shape, np.float32), name=name, scale=scale,
                 axis_labels=("AP", "DV", "ML"))


def test_layer_added_in_turns_ends_visible_selected_and_sliced(make_napari_viewer, qtbot,
                                                               runner):
    viewer = make_napari_viewer()
    seen: list = []
    layer = _volume("vol")
    labelled: list = []  # layers in the viewer when the dims got their labels
    viewer.dims.events.axis_labels.connect(lambda e: labelled.append(len(viewer.layers)))

    def then(added):
        seen.append((added.visible, viewer.layers.selection.active, viewer.dims.ndim))

    ranged: list = []  # (layers in the viewer, AP slider steps) as the dims range changed
    viewer.dims.events.range.connect(
        lambda e: ranged.append((len(viewer.layers), viewer.dims.nsteps[0])))
    returned = add_in_turns(viewer, runner, layer, then=then)
    assert returned is layer
    assert viewer.dims.ndim == 2 and ranged == []  # nothing in the caller's turn
    assert runner.is_running  # the queued steps keep the runner busy
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert seen == [(True, layer, 3)]
    assert list(viewer.layers) == [layer]
    assert layer.visible and viewer.layers.selection.active is layer
    assert viewer.dims.range[0].stop == pytest.approx(1900.0)  # napari's own extent
    # The empty viewer got its 3 dims before the insert: the new AP slider built with one
    # step (hidden), then its range (shown) in a later turn; the labels came before the
    # insert too (their glyphs drawn in a turn of their own).
    assert ranged == [(0, 1), (0, 20)]
    assert set(labelled) == {0} and viewer.dims.axis_labels == ("AP", "DV", "ML")


def test_insert_step_does_not_select_and_hides_until_its_own_turns(make_napari_viewer,
                                                                   qtbot, runner):
    """Also through napari's PublicOnlyProxy (what docks get): the layer list's private
    switch is reached without napari's private-access warning, and it still exists in this
    napari (otherwise the insert would select the layer at once)."""
    real = make_napari_viewer()
    viewer = PublicOnlyProxy(real)
    real.add_layer(_volume("first"))
    states: list = []
    layer = _volume("second")
    original_then = runner.then

    def spy(fn, *args, **kwargs):  # record the state each queued step finds
        def step(*a):
            states.append((layer in real.layers, layer.visible,
                           real.layers.selection.active is layer))
            return fn(*a)
        return original_then(step, *args, **kwargs)

    runner.then = spy
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        add_in_turns(viewer, runner, layer)
        assert layer not in real.layers  # never inserted in the caller's turn
        qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    # insert step, then select step (inserted hidden, the previous layer still selected),
    # then show step
    assert states == [(False, True, False), (True, False, False), (True, False, True)]
    assert real.layers.selection.active is layer
    assert layer.visible and real.layers.selection.active is layer


def test_a_layer_without_extent_is_added_as_napari_does(make_napari_viewer, qtbot, runner):
    from napari.layers import Points

    viewer = make_napari_viewer()
    empty = Points(np.empty((0, 3)), name="no sites")
    add_in_turns(viewer, runner, empty)
    assert viewer.dims.ndim == 2  # no dims prepared from a NaN extent
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert list(viewer.layers) == [empty] and empty.visible and viewer.dims.ndim == 3


def test_cancel_between_steps_still_finishes_the_layer(make_napari_viewer, qtbot, runner):
    viewer = make_napari_viewer()
    layer = _volume("vol")
    add_in_turns(viewer, runner, (layer.data, {"name": "vol", "scale": (100.0,) * 3}))
    runner.cancel()  # e.g. the user cancels while the layer is half added
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert [lay.name for lay in viewer.layers] == ["vol"]
    assert viewer.layers["vol"].visible
    assert viewer.layers.selection.active is viewer.layers["vol"]


def test_same_name_updates_in_place_and_focus_goes_to_the_last(make_napari_viewer, qtbot,
                                                              runner):
    viewer = make_napari_viewer()
    add_and_focus_later(viewer, runner, _volume("vol"))
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    data = np.ones((20, 12, 16), np.float32)
    updated = add_and_focus_later(viewer, runner, (data, {"name": "vol"}, "image"))
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert len(viewer.layers) == 1 and updated is viewer.layers["vol"]
    assert np.array_equal(viewer.layers["vol"].data, data)


def test_a_layer_the_user_deletes_is_not_kept_alive_by_the_dock(make_napari_viewer, qtbot,
                                                                 runner):
    """The runner remembers which layer it added last (to focus on that one only), weakly:
    deleted from the viewer, the layer (its data, napari's objects) can be freed at once."""
    import gc
    import weakref

    viewer = make_napari_viewer()
    add_and_focus_later(viewer, runner, _volume("first"))
    last = weakref.ref(add_and_focus_later(viewer, runner, _volume("last")))
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert last() is viewer.layers["last"]
    viewer.layers.clear()
    qtbot.wait(50)  # napari's deferred deletions of the layers' controls
    gc.collect()
    assert last() is None


def _ccf_volume(name: str) -> Image:
    return Image(np.zeros((20, 12, 16), np.float32), name=name, scale=(100.0,) * 3,
                 units=("um",) * 3, axis_labels=("AP", "DV", "ML"))


def _stack() -> Image:
    """A 4-D stack (experiment axis first, as layers/connectivity.individual_stack_layer)
    reaching further along AP, on a finer AP grid, than the 3-D volumes."""
    return Image(np.zeros((3, 48, 12, 16), np.float32), name="stack",
                 scale=(1.0, 50.0, 100.0, 100.0), units=("pixel", "um", "um", "um"),
                 axis_labels=("experiment", "AP", "DV", "ML"))


def _view_state(viewer) -> tuple:
    dims, camera = viewer.dims, _camera(viewer)
    return (dims.ndim, dims.ndisplay, dims.order, tuple(map(tuple, dims.range)), dims.point,
            dims.axis_labels, tuple(map(str, dims.units)), dims.margin_left,
            dims.margin_right, dims.rollable, dims.last_used, camera.center,
            round(camera.zoom, 9))


def _dims_spy(viewer, layer) -> list:
    """(event, layer in the viewer) for each dims event that rebuilds or relabels sliders."""
    seen: list = []
    for name in ("ndim", "order", "range", "axis_labels"):
        getattr(viewer.dims.events, name).connect(
            lambda e, n=name: seen.append((n, layer in viewer.layers)))
    return seen


def test_a_layer_with_a_new_axis_finds_its_dims_ready_as_napari_would_set_them(
        make_napari_viewer, qtbot, runner):
    """A 4-D stack added in turns to a viewer holding 3-D volumes: the dims grow, get their
    range and labels in turns before the insert, so napari's insert changes none of them
    (no slider rebuilt in its turn), and the viewer ends exactly as napari's own add_layer
    leaves it (dims, labels, range, units, and the camera napari fits to the new dims)."""
    plain, ours = make_napari_viewer(), make_napari_viewer()
    for viewer in (plain, ours):
        viewer.add_layer(_ccf_volume("a"))
        viewer.add_layer(_ccf_volume("b"))
        viewer.dims.set_point(0, 700.0)
        for overlay in _overlays(viewer):  # their handlers of the dims order use the layers
            overlay.visible = True
        _camera(viewer).zoom, _camera(viewer).center = 3.0, (0.0, 200.0, 300.0)
    plain_stack, stack = _stack(), _stack()
    plain_seen, seen = _dims_spy(plain, plain_stack), _dims_spy(ours, stack)
    plain.add_layer(plain_stack)
    # napari alone: the insert itself raises ndim (every dims slider rebuilt in its turn)
    assert ("ndim", True) in plain_seen and ("range", True) in plain_seen
    add_in_turns(ours, runner, stack)
    assert seen == []  # nothing in the caller's turn
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert [name for name, _ in seen].count("ndim") == 1
    assert {name for name, inserted in seen if not inserted} >= {"ndim", "range",
                                                                  "axis_labels"}
    # the insert changed no dims; the order event of the new axis, held back meanwhile
    # (napari's handlers index the layers with the grown dims), came with the layer in
    assert [event for event in seen if event[1]] == [("order", True)]
    assert stack.visible and ours.layers.selection.active is stack
    assert _view_state(ours) == _view_state(plain)
    assert ours.dims.axis_labels == ("experiment", "AP", "DV", "ML")
    assert _camera(ours).zoom != 3.0  # napari's fit to the new dims happened too


def test_volumes_and_a_stack_added_together_to_an_empty_viewer_grow_the_dims_once(
        make_napari_viewer, qtbot, runner):
    """A 3-D mean and a 4-D stack added by one handler to an empty viewer: the dims are
    prepared for the mean now and for the stack when its turn comes, never set to the
    stack's 4 dims first and back to 3 by the mean's insert."""
    viewer = make_napari_viewer()
    ndims: list = []
    viewer.dims.events.ndim.connect(lambda e: ndims.append(e.value))
    mean, stack = _ccf_volume("mean"), _stack()
    add_in_turns(viewer, runner, mean)
    add_in_turns(viewer, runner, stack)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert ndims == [3, 4]
    assert list(viewer.layers) == [mean, stack] and mean.visible and stack.visible
    assert viewer.dims.axis_labels == ("experiment", "AP", "DV", "ML")


class _TurnCounter:
    """Event-loop turns counted by a 0 ms timer (a step's turn and the next one differ)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.turn = 0
        self.timer = QTimer()
        self.timer.setInterval(0)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def tick(self) -> None:
        self.turn += 1


def _shown_with_volumes(make_napari_viewer, qtbot, count: int):
    """A shown viewer (Qt lays out and paints it) of a fixed size holding ``count`` 3-D
    volumes, with (canvas size, turn) recorded on each canvas resize."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    for k in range(count):
        viewer.add_layer(_ccf_volume(f"v{k}"))
    qtbot.wait(200)  # laid out and painted
    turns = _TurnCounter()
    sizes: list = []
    viewer.canvas.events.size.connect(lambda e: sizes.append((tuple(e.value), turns.turn)))
    return viewer, sizes, turns


class _CanvasPaints(QObject):
    """Paint events napari's canvas widget (a QOpenGLWidget: each paints every layer) got,
    as the turn each came in."""

    def __init__(self, viewer, turns: _TurnCounter) -> None:
        super().__init__()
        self.turns, self.seen = turns, []
        viewer.window._qt_viewer.canvas.native.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Paint:
            self.seen.append(self.turns.turn)
        return False


@pytest.mark.parametrize("volumes", [1, 6])
def test_growing_the_dims_never_resizes_the_canvas_and_the_new_slider_resizes_it_once(
        make_napari_viewer, qtbot, runner, volumes, monkeypatch):
    """Adding a 4-D stack to a shown viewer of N 3-D volumes: napari rebuilds every dims
    slider, and showing one lays out the window at once, the sliders' height counted with
    every new slider: the canvas (a QOpenGLWidget) shrinks, repaints all N layers inside
    the handler, and grows back (another full repaint); the new slider appearing does the
    same. Held layout (``_slider_layout_held``): the dims grow without any canvas resize
    or paint, and the new slider resizes it once, to the size napari alone ends with,
    painted once. Fails if napari's private ``QtViewer.dims`` or ``QtViewer.canvas`` moved
    (nothing held, or the canvas painted twice)."""
    from napari_allen.widgets import _view

    ours, sizes, turns = _shown_with_volumes(make_napari_viewer, qtbot, volumes)
    assert _view._slider_layout(PublicOnlyProxy(ours)) is not None
    plain, plain_sizes, _ = _shown_with_volumes(make_napari_viewer, qtbot, volumes)
    start = np.array(ours.canvas.size)

    paints, plain_paints = _CanvasPaints(ours, turns), _CanvasPaints(plain, turns)
    stack = _stack()
    grown: list = []
    ours.dims.events.ndim.connect(lambda e: grown.append(turns.turn))
    add_in_turns(ours, runner, stack)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    # napari alone, step by step (the same steps with nothing held)
    monkeypatch.setattr(_view, "_slider_layout", lambda viewer: None)
    plain_stack = _stack()
    add_in_turns(plain, runner, plain_stack)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    qtbot.wait(50)

    assert len(plain_sizes) > 1  # without the hold the canvas goes back and forth
    assert len(sizes) == 1 and sizes[0][1] > grown[0]  # once, not in the turn of the dims
    # to the size napari alone ends with: shorter by the new slider
    assert sizes[0][0] == tuple(ours.canvas.size) == tuple(plain.canvas.size)
    change = np.array(sizes[0][0]) - start
    assert change[0] < 0 and change[1] == 0
    # napari alone paints the canvas three times in the turn the dims grow and in the turn
    # the new slider shows; here never in the dims' turn, never twice in one turn
    assert max(Counter(plain_paints.seen).values()) >= 3
    assert grown[0] not in paints.seen and max(Counter(paints.seen).values()) == 1
    assert _view_state(ours) == _view_state(plain)


def test_paints_held_by_the_grow_and_insert_steps_come_before_the_next_step(
        make_napari_viewer, qtbot, runner):
    """A 3-D mean and a 4-D stack added together to a shown viewer of volumes: the dims
    growing and the hidden inserts (nothing drawn changes) paint the canvas in the pass
    after their own, never inside it and never held into a later step (the canvas is
    painting when the new slider resizes it). Fails if napari's private
    ``QtViewer.canvas`` moved (nothing held: the paints come inside the steps)."""
    viewer, _, turns = _shown_with_volumes(make_napari_viewer, qtbot, 3)
    native = viewer.window._qt_viewer.canvas.native
    paints = _CanvasPaints(viewer, turns)
    steps: list = []  # (step, turn, canvas painting) as the dims range changes
    seen: dict = {}  # step -> turn it ran in
    viewer.dims.events.ndim.connect(lambda e: seen.setdefault("grow", turns.turn))
    viewer.dims.events.range.connect(
        lambda e: steps.append(("range", turns.turn, native.updatesEnabled())))
    viewer.layers.events.inserted.connect(
        lambda e: seen.setdefault(e.value.name, turns.turn))
    mean, stack = _ccf_volume("mean"), _stack()
    add_in_turns(viewer, runner, mean)
    add_in_turns(viewer, runner, stack)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    qtbot.wait(50)
    assert native.updatesEnabled()
    range_step = [painting for _, turn, painting in steps if turn != seen["grow"]]
    assert range_step == [True]  # the range step (the new slider resizes the canvas)
    for name in ("grow", "mean", "stack"):
        turn = seen[name]
        assert turn not in paints.seen  # not inside the step's pass
        later = [paint for paint in paints.seen if paint > turn]
        assert later and later[0] <= turn + 2  # in the pass after it, before the next step


def test_the_held_order_event_comes_in_a_turn_after_the_insert(make_napari_viewer, qtbot,
                                                              runner):
    """The dims order event of the new axis (held while the dims grew) fits the camera to
    the new dims, a repaint of every layer: it comes in a turn of its own after the
    insert's (napari's insert repaints the layer list) and before the layer is selected."""
    viewer = make_napari_viewer()
    for name in ("a", "b"):
        viewer.add_layer(_ccf_volume(name))
    stack = _stack()
    turns = _TurnCounter()
    first: dict = {}  # event -> (turn, stack in the viewer) the first time it came
    viewer.layers.events.inserted.connect(
        lambda e: first.setdefault("inserted", (turns.turn, True)))
    viewer.dims.events.order.connect(
        lambda e: first.setdefault("order", (turns.turn, stack in viewer.layers)))
    viewer.layers.selection.events.active.connect(
        lambda e: e.value is stack and first.setdefault("selected", (turns.turn, True)))
    add_in_turns(viewer, runner, stack)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    turns.timer.stop()
    assert first["order"][1]  # with the layer in
    assert first["inserted"][0] < first["order"][0] < first["selected"][0]


def test_run_in_turns_runs_each_step_in_a_later_turn_of_its_own(qtbot):
    from qtpy.QtCore import QTimer

    order: list = []
    turns = [0]
    beat = QTimer()
    beat.setInterval(0)
    beat.timeout.connect(lambda: turns.__setitem__(0, turns[0] + 1))
    beat.start()
    steps = [lambda i=i: order.append((i, turns[0])) for i in range(3)]
    run_in_turns(steps, 5)
    assert order == []  # nothing inside the caller's turn
    qtbot.waitUntil(lambda: len(order) == 3, timeout=2000)
    beat.stop()
    assert [i for i, _ in order] == [0, 1, 2]
    assert order[0][1] < order[1][1] < order[2][1]


def test_orientation_overlays_wait_for_a_layer_then_switch_on_stepwise(make_napari_viewer,
                                                                      qtbot):
    viewer = make_napari_viewer()
    axes, scale_bar = _overlays(viewer)
    axes.visible = scale_bar.visible = False
    show_orientation_stepwise(viewer, step_ms=5)
    qtbot.wait(100)
    assert not axes.visible and not scale_bar.visible  # nothing to orient yet
    seen: list = []
    axes.events.visible.connect(lambda e: seen.append(("axes", axes.labels)))
    viewer.add_layer(_volume("vol"))
    qtbot.waitUntil(lambda: scale_bar.visible, timeout=3000)
    # The axes came first, without their text (drawn in a turn of its own), then the labels.
    assert seen == [("axes", False)]
    assert axes.visible and axes.labels and axes.colored
    assert viewer.dims.axis_labels == ("AP", "DV", "ML")


def test_overlay_glyphs_are_rendered_in_turns_before_the_overlays_draw(make_napari_viewer,
                                                                        qtbot):
    """The glyphs of the axis labels and scale bar text are rendered into napari's overlay
    font when a dock opens, a few per turn and before any layer comes; through napari's
    PublicOnlyProxy too. Fails if napari's private font path moved (then the overlays'
    first draws render them again, inside their repaints)."""
    real = make_napari_viewer()
    font = _overlay_font(PublicOnlyProxy(real))
    assert font is not None
    wanted = set(OVERLAY_GLYPHS)
    steps = _glyph_steps(real)
    assert len(steps) == -(-len(wanted) // GLYPHS_PER_TURN)
    rendered: list = []
    original = font._load_char
    font._load_char = lambda char: (rendered.append(char), original(char))[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        show_orientation_stepwise(PublicOnlyProxy(real), step_ms=5)
    assert rendered == []  # none in the caller's turn
    qtbot.waitUntil(lambda: wanted <= set(font._glyphs), timeout=5000)
    assert not len(real.layers)  # no layer needed
    assert set(rendered) <= wanted  # each rendered once, only what the overlays draw
    assert len(rendered) == len(set(rendered))


def _stepwise_on_a_viewer_with_a_layer(make_napari_viewer):
    """A viewer with one layer and both overlays off, its orientation steps started."""
    viewer = make_napari_viewer()
    viewer.add_layer(_volume("vol"))
    axes, scale_bar = _overlays(viewer)
    axes.visible = scale_bar.visible = False
    show_orientation_stepwise(viewer, step_ms=5)
    return viewer, axes, scale_bar


def test_orientation_steps_start_at_once_on_a_viewer_with_layers(make_napari_viewer, qtbot):
    viewer, axes, scale_bar = _stepwise_on_a_viewer_with_a_layer(make_napari_viewer)
    qtbot.waitUntil(lambda: scale_bar.visible and axes.visible and axes.labels, timeout=3000)


def test_orientation_steps_leave_overlays_someone_else_changed(make_napari_viewer, qtbot):
    viewer, axes, scale_bar = _stepwise_on_a_viewer_with_a_layer(make_napari_viewer)
    scale_bar.visible = True  # e.g. the user, before the chain reached the scale bar
    scale_bar.visible = False  # ... and off again: stays off
    qtbot.waitUntil(lambda: axes.visible and axes.labels, timeout=3000)
    qtbot.wait(100)
    assert not scale_bar.visible
    axes.visible = False  # after the chain: nothing switches it back on
    viewer.add_layer(_volume("other"))
    qtbot.wait(100)
    assert not axes.visible


@pytest.mark.parametrize("primed", [True, False])
def test_a_dock_sizes_napari_activity_spinner_so_the_first_progress_bar_relayouts_nothing(
        make_napari_viewer, qtbot, primed, monkeypatch):
    """napari's status bar grows by a pixel when its activity spinner first plays (the first
    progress bar of a window): the whole window, canvas included, is laid out and repainted
    inside napari's bar creation. A plugin dock gives the spinner its size as it opens (its
    own layout pass): then the first bar changes no widget's size, and the spinner stays
    hidden and still until napari starts it. ``primed=False`` (the priming switched off)
    shows the growth this prevents, so the test fails if napari's private spinner moves
    (nothing would be primed) or stops growing (nothing left to prevent)."""
    from napari.utils import progress
    from qtpy.QtGui import QMovie

    from napari_allen.widgets import _dock

    if not primed:
        monkeypatch.setattr(_dock, "prime_activity_indicator", lambda viewer: None)
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(900, 700)
    viewer.add_layer(_ccf_volume("v"))
    viewer.window.add_dock_widget(_dock.AllenDock(viewer), name="dock")
    qtbot.wait(200)  # laid out and painted
    spinner = window._activity_dialog._toggleButton._inProgressIndicator
    assert spinner.isHidden()
    assert spinner.movie().state() == QMovie.MovieState.NotRunning
    canvas = viewer.window._qt_viewer.canvas.native
    before = (window.statusBar().height(), canvas.size())
    bar = progress(total=2, desc="first bar")
    try:
        qtbot.wait(50)
        after = (window.statusBar().height(), canvas.size())
    finally:
        bar.close()
    if primed:
        assert after == before
    else:
        assert after[0] == before[0] + 1 and after[1].height() == before[1].height() - 1
