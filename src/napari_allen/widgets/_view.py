"""Viewer orientation for Allen data: AP/DV/ML axes, the µm scale bar, canonical 3-D
cameras, coronal 2-D slicing, and moving the sliders to the data just loaded.

World axes are CCF µm ``[AP, DV, ML]`` (PIR: +AP posterior, +DV ventral, +ML right). napari
shows the last two dims in 2-D, so dims order ``(..., AP, DV, ML)`` slices coronally with the
slider over AP. 3-D views (measured on napari 0.9's right-handed camera):

- ``dorsal``: looking down from above (along +DV), anterior to the left;
- ``lateral``: looking at the left side (along +ML), anterior to the left, dorsal up;
- ``frontal``: looking from the front (along +AP), dorsal up.

Only the camera angles change: ``camera.orientation`` (napari's handedness setting) is left
as the user has it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_allen.space import AXES

if TYPE_CHECKING:
    import napari

#: view name -> (view direction, up direction) in world ``[AP, DV, ML]``.
VIEWS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "dorsal": ((0, 1, 0), (0, 0, 1)),
    "lateral": ((0, 0, 1), (0, -1, 0)),
    "frontal": ((1, 0, 0), (0, -1, 0)),
}


def _camera(viewer: napari.Viewer):
    # napari 0.9 moved the camera to viewer.scene; older releases keep viewer.camera.
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera


def _overlays(viewer: napari.Viewer):
    """(axes, scale bar) overlays: napari 0.9 moved them to ``scene``/``canvas`` overlays."""
    if hasattr(viewer, "scene") and hasattr(viewer, "canvas"):
        return viewer.scene.overlays.axes, viewer.canvas.overlays.scale_bar
    return viewer.axes, viewer.scale_bar


def show_orientation(viewer: napari.Viewer, *, overlays: bool = True) -> None:
    """Axes with AP/DV/ML labels and a µm scale bar; 2-D slicing coronal (slider over AP).

    Idempotent: docks call it (:func:`show_orientation_stepwise`) when they open. Axis labels
    are only set while the viewer has (at least) the three CCF axes and still shows napari's
    default numeric labels. ``overlays=False``: labels and slicing only.
    """
    if overlays:
        axes, scale_bar = _overlays(viewer)
        _show_axes(axes)
        _show_scale_bar(scale_bar)
    dims = viewer.dims
    if dims.ndim >= 3:
        labels = list(dims.axis_labels)
        tail = labels[-3:]
        if all(str(label).lstrip("-").isdigit() for label in tail):
            dims.axis_labels = labels[:-3] + list(AXES)
        coronal(viewer)


#: Delay (ms) before the first overlay step, after the dock's own layout and first paint
#: (or after the first layer's insert); the steps then follow one per event-loop turn.
OVERLAY_STEP_MS = 60


def show_orientation_stepwise(viewer: napari.Viewer, step_ms: int = OVERLAY_STEP_MS) -> None:
    """:func:`show_orientation` spread over event-loop turns, for docks opening: the axis
    labels and slicing now; then, one step per turn through the plugin's delivery queue
    (``widgets/_tasks.run_in_turns``: never in the same turn as a task's layer steps), the
    axes overlay without its text, its labels, and the scale bar. The first draw of each
    (shader builds, text glyphs rasterised on the CPU) then is a repaint of its own instead
    of one long freeze added to the dock's own cost and the canvas's first redraw at its new
    size. On an empty viewer the steps wait for the first layer (axes and a scale bar
    over nothing tell nothing; with the layer they draw its AP/DV/ML labels and µm at once
    instead of napari's numeric placeholders first). An overlay shown or hidden by anyone
    else meanwhile (the user, :func:`show_orientation`) is left as they set it; steps with
    nothing to change (a second dock) cost nothing."""
    from napari_allen.widgets._tasks import run_in_turns

    show_orientation(viewer, overlays=False)
    axes, scale_bar = _overlays(viewer)
    touched: set[str] = set()  # overlays whose visibility someone else changed meanwhile
    ours = [False]
    did_axes = [False]

    def watcher(name: str) -> Callable:
        def changed(_event=None) -> None:
            if not ours[0]:
                touched.add(name)
        return changed

    watchers = {"axes": watcher("axes"), "scale bar": watcher("scale bar")}
    axes.events.visible.connect(watchers["axes"])
    scale_bar.events.visible.connect(watchers["scale bar"])

    def set_ours(overlay, **values) -> None:
        ours[0] = True
        try:
            for key, value in values.items():
                setattr(overlay, key, value)
        finally:
            ours[0] = False

    def axes_lines() -> None:
        if "axes" not in touched and not axes.visible:
            # labels False: their text (glyphs) is drawn in the next step
            set_ours(axes, labels=False, colored=True, visible=True)
            did_axes[0] = True

    def axes_labels() -> None:
        if did_axes[0] and "axes" not in touched:
            set_ours(axes, labels=True)

    def scale_bar_step() -> None:
        try:
            if "scale bar" not in touched and not scale_bar.visible:
                set_ours(scale_bar, visible=True)  # its unit (µm) comes from the layers
        finally:
            axes.events.visible.disconnect(watchers["axes"])
            scale_bar.events.visible.disconnect(watchers["scale bar"])

    def start(_event=None) -> None:
        viewer.layers.events.inserted.disconnect(start)
        run_in_turns([axes_lines, axes_labels, scale_bar_step], step_ms)

    run_in_turns(_glyph_steps(viewer), step_ms)  # not waiting for a layer: no repaint
    viewer.layers.events.inserted.connect(start)
    if len(viewer.layers):
        start()


#: The characters napari's overlay text draws here: vispy's line-height probe (every Text's
#: first layout), the CCF axis labels, the scale bar's lengths and units (e.g. "500 µm").
OVERLAY_GLYPHS = "ÅÉÑŐjgpqy" + "".join(AXES) + "0123456789 µm"
#: Glyphs rendered per event-loop turn (~5 ms each on this machine).
GLYPHS_PER_TURN = 3


def _glyph_steps(viewer: napari.Viewer, text: str = OVERLAY_GLYPHS) -> list[Callable]:
    """Steps rendering the glyphs of ``text`` (and of the viewer's axis labels) into
    napari's overlay font ahead of the overlays' first draw, ``GLYPHS_PER_TURN`` per step.

    napari draws overlay text with one font atlas per canvas, filled as characters are
    first drawn: each glyph is painted with Qt at 256 pt and turned into a signed distance
    field on the CPU (~5 ms a glyph, ~70 ms for the axes labels' first draw, inside its
    repaint). Rendered here, in turns without a repaint, the overlays' first draws find
    them. The font is napari's private ``QtViewer.canvas.font_info``; without it (another
    napari) there are no steps and the overlays render their glyphs as before
    (``tests/test_widgets_view.py`` says when that happens)."""
    font = _overlay_font(viewer)
    if font is None:
        return []
    labels = [str(label) for label in viewer.dims.axis_labels
              if not str(label).lstrip("-").isdigit()]  # napari default, replaced by AP/DV/ML
    chars = list(dict.fromkeys(text + "".join(labels)))

    def render(batch: list[str]) -> Callable[[], None]:
        def step() -> None:
            for char in batch:
                font[char]  # renders it into the atlas unless already there
        return step

    return [render(chars[i:i + GLYPHS_PER_TURN])
            for i in range(0, len(chars), GLYPHS_PER_TURN)]


def _overlay_font(viewer: napari.Viewer):
    """napari's font of the overlay text (axes labels, scale bar), or None."""
    canvas = _qt_canvas(viewer)
    info = getattr(canvas, "font_info", None)
    info = info() if callable(info) else info
    get_font = getattr(getattr(info, "font_manager", None), "get_font", None)
    face = getattr(info, "face", None)
    if get_font is None or face is None:
        return None
    return get_font(face)  # the key napari's Text visuals use (not bold, not italic)


def prime_activity_indicator(viewer: napari.Viewer) -> None:
    """Give napari's activity spinner (the status bar's "in progress" movie) its final size
    now, while a dock is being added to the window (a layout pass of its own), rather than
    at the first progress bar of the window.

    napari keeps the hidden spinner's space in the status bar, but the space of its movie
    before the first frame is loaded: the first progress bar starts the movie, the status
    bar grows by a pixel, and the whole window is laid out and repainted (the canvas with
    every layer) inside napari's bar creation, whose ``processEvents`` holds the task's
    first bar turn: 150-320 ms instead of 75-90 on this machine. Loading the first frame
    (``QMovie.jumpToFrame(0)``; the movie stays stopped and the spinner hidden) makes that
    growth part of the dock's own layout. The spinner is napari's private
    ``_activity_dialog._toggleButton._inProgressIndicator`` of the window; without it
    (another napari) nothing changes (``tests/test_widgets_view.py`` says when that
    happens)."""
    dialog = getattr(getattr(_window(viewer), "_qt_window", None), "_activity_dialog", None)
    indicator = getattr(getattr(dialog, "_toggleButton", None), "_inProgressIndicator", None)
    movie = indicator.movie() if hasattr(indicator, "movie") else None
    if movie is not None and movie.currentFrameNumber() < 0:
        movie.jumpToFrame(0)


def _window(viewer: napari.Viewer):
    """napari's ``Window`` of the viewer, or None (a viewer without one)."""
    return getattr(_model(viewer), "window", None)


def _qt_viewer(viewer: napari.Viewer):
    """napari's private ``QtViewer`` of the viewer's window, or None (no window, another
    napari)."""
    return getattr(_window(viewer), "_qt_viewer", None)


def _qt_canvas(viewer: napari.Viewer):
    """napari's private ``QtViewer.canvas`` (its ``VispyCanvas``; ``.native`` is the Qt
    widget), or None."""
    return getattr(_qt_viewer(viewer), "canvas", None)


def _show_axes(axes) -> None:
    axes.visible = axes.labels = axes.colored = True


def _show_scale_bar(scale_bar) -> None:
    scale_bar.visible = True  # its unit (µm) comes from the layers' ``units``


def coronal(viewer: napari.Viewer) -> None:
    """2-D shows DV x ML planes; the slider runs over AP (dims order ``(..., AP, DV, ML)``)."""
    n = viewer.dims.ndim
    if n >= 3:
        viewer.dims.order = tuple(range(n))


def canonical_camera(viewer: napari.Viewer, view: str = "dorsal", *, zoom: float = 1.0) -> None:
    """Switch to 3-D and look from ``view`` (see :data:`VIEWS`), anterior to the left, with
    the data's extent seen from that side filling the canvas (``zoom`` multiplies that)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {sorted(VIEWS)}, got {view!r}")
    viewer.dims.ndisplay = 3
    coronal(viewer)
    viewer.reset_view()  # resets the angles too: set the direction afterwards
    direction, up = VIEWS[view]
    camera = _camera(viewer)
    camera.set_view_direction(direction, up)
    fitted = _fit_zoom(viewer, direction, up)
    camera.zoom = (fitted or camera.zoom) * float(zoom)


def _fit_zoom(viewer: napari.Viewer, direction, up, fill: float = 0.9) -> float | None:
    """Zoom (screen px per µm) at which the world extent, seen along ``direction`` with
    ``up`` vertical, fills ``fill`` of the canvas; None if the canvas size is unknown.
    (napari's reset_view fits the bounding cube's diagonal: a brain then fills half the
    canvas.)"""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    if size is None or viewer.dims.ndim < 3:
        return None
    height, width = (float(v) for v in size)  # napari canvas sizes are (rows, columns)
    extent = np.asarray(viewer.layers.extent.world, dtype=float)[:, -3:]
    span = extent[1] - extent[0]
    vertical = int(np.flatnonzero(up)[0])
    horizontal = ({0, 1, 2} - {vertical, int(np.flatnonzero(direction)[0])}).pop()
    if min(height, width) <= 1 or span[vertical] <= 0 or span[horizontal] <= 0:
        return None
    return fill * min(width / span[horizontal], height / span[vertical])


def focus_on(viewer: napari.Viewer, point_um) -> bool:
    """Move the sliders of the last three (CCF) axes to ``point_um`` ``[AP, DV, ML]`` (µm),
    clipped to the data range. Returns False (and changes nothing) for a missing point."""
    if point_um is None or viewer.dims.ndim < 3:
        return False
    point = np.asarray(point_um, dtype=float).reshape(-1)[-3:]
    if point.size != 3 or not np.isfinite(point).all():
        return False
    n = viewer.dims.ndim
    axes = list(range(n - 3, n))
    lows = [viewer.dims.range[a][0] for a in axes]
    highs = [viewer.dims.range[a][1] for a in axes]
    viewer.dims.set_point(axes, tuple(float(np.clip(p, lo, hi))
                                      for p, lo, hi in zip(point, lows, highs, strict=True)))
    return True


#: A weak reference to the layer each task runner added last (add_and_focus_later focuses on
#: that one only). Weak on both sides: a layer the user deleted is not kept alive (its data
#: and napari's ~9k objects per layer) until the dock adds another.
_LATEST_ADDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model(viewer: napari.Viewer):
    """The viewer model itself (docks get napari's ``PublicOnlyProxy``, a ``wrapt`` proxy)."""
    return getattr(viewer, "__wrapped__", viewer)


def add_in_turns(viewer: napari.Viewer, runner, item, then: Callable | None = None) -> Any:
    """Add ``item`` (a LayerDataTuple or a ready layer) to ``viewer`` spread over event-loop
    turns (``runner.then``), so napari's per-layer work never lands in one freeze:

    1. only if the layer has more dims than the viewer (an empty viewer has 2; a 4-D stack
       added to 3-D volumes): the dims it will have once inserted, one turn each, decided
       when it runs - the number of dims (napari rebuilds every slider, the canvas keeps
       its size: :func:`_grow_dims`), their range (the new sliders appear and the canvas
       shrinks, once: :func:`_prepare_range`), their axis labels (the axes overlay draws
       the glyphs of new labels, e.g. AP/DV/ML, on the CPU at its next repaint:
       :func:`_prepare_axis_labels`);
    2. in a later turn (never the caller's: a handler adding several layers gets one insert
       per turn), insert the layer hidden and not selected (napari's insert: layer
       controls, vispy node, dims range; nothing sliced or drawn; with the dims of step 1
       napari's merge finds nothing to change); if step 1 grew the dims of a viewer with
       layers, napari's dims order event (held back since) comes in the next turn: its
       camera fit repaints every layer, not in the turn of the insert's own work;
    3. select it (napari shows its controls page: a synchronous canvas repaint, then the
       first paint of the new controls);
    4. show it (slicing, texture upload and repaint), then ``then(layer)`` if given.

    Steps 2-4 run even if the task is cancelled meanwhile: the user ends with the layer
    visible and selected, as napari's own ``add_layer`` leaves it. A layer whose name is
    already in the viewer shows the new content in place, in one step
    (:func:`~napari_allen.widgets._common.update_same_named`); a ready layer that has to
    replace it instead (a Shapes layer too costly to triangulate again) is inserted at its
    position by the steps above, after a turn of its own that removes the old one (napari
    ends a removal with a full garbage collection). Returns the layer (in the viewer from
    step 2 on)."""
    from napari.layers import Layer

    from napari_allen.layers.prebuilt import build_layer, layer_type_name
    from napari_allen.widgets._common import add_layer_tuple, layer_name, update_same_named

    name = layer_name(item)
    replaced = None
    if name is not None and name in viewer.layers:
        existing = viewer.layers[name]
        layer = update_same_named(viewer, item)
        if layer is None and isinstance(item, Layer) \
                and layer_type_name(existing) == layer_type_name(item):
            replaced = existing  # replaced in the turns below
        else:
            if layer is None:  # another type: napari adds it under a new name
                layer = add_layer_tuple(viewer, item)
            if then is not None:
                then(layer)
            return layer
    layer = item if isinstance(item, Layer) else build_layer(item)
    visible = layer.visible
    model = _model(viewer)
    order_held = [False]  # the dims order event, held back while the dims grew (step 1)

    def later(fn: Callable, *args) -> None:
        runner.then(fn, *args, own_turn=True, even_if_cancelled=True)

    place: list[int | None] = [None]  # where the replaced layer was

    def remove_replaced() -> None:
        from napari_allen.widgets._removal import remove_layers

        if replaced in viewer.layers:
            place[0] = viewer.layers.index(replaced)
            remove_layers(viewer, [replaced])

    def insert() -> None:
        if layer.name in viewer.layers:  # a same-named one came first meanwhile
            layer.visible = visible
            add_layer_tuple(viewer, layer)
            finish()
            return
        layer.visible = False
        order = viewer.dims.order
        _hold_canvas_paint(viewer)  # a hidden layer: nothing to draw yet
        _insert_unselected(viewer, layer, place[0])
        if order_held[0] and viewer.dims.order == order:
            later(emit_order, order)
        later(select)

    def emit_order(order) -> None:
        # What napari's own insert would have emitted (camera fit, overlays, slicing), in
        # a turn of its own: the camera fit repaints every layer, the insert only the
        # layer list.
        if layer in viewer.layers and viewer.dims.order == order:
            model.dims.events.order(value=order)

    def select() -> None:
        if layer in viewer.layers:
            viewer.layers.selection.active = layer
        later(show)

    def show() -> None:
        layer.visible = visible
        finish()

    def finish() -> None:
        if then is not None and layer in viewer.layers:
            then(layer)

    def grow() -> None:
        # the canvas draws the same (new axes are not displayed; napari's axes overlay
        # sets its unchanged data again)
        _hold_canvas_paint(viewer)
        order_held[0] = _grow_dims(viewer, layer)

    # All steps up to the insert are queued now, in order (the queue is FIFO): layers added
    # together are inserted in the order given, and a layer's dims steps run after the
    # inserts of the layers queued before it (they decide then what is left to prepare).
    if replaced is not None:
        later(remove_replaced)
    if viewer.dims.ndim < layer.ndim:
        later(grow)
        later(_prepare_range, viewer, layer)
        later(_prepare_axis_labels, viewer, layer)
    later(insert)
    return layer


#: A canvas paint held by :func:`_hold_canvas_paint` comes this long (ms) after the step:
#: a timer (not a posted event), so the step's own repaint of the other widgets and the
#: event loop's timers and input come first.
PAINT_AFTER_MS = 1


def _hold_canvas_paint(viewer: napari.Viewer) -> None:
    """Hold napari's canvas from painting until the event-loop pass after this step's
    (``PAINT_AFTER_MS``; Qt's ``setUpdatesEnabled``): the window keeps showing the canvas
    as last painted meanwhile, then it paints once with whatever changed. For a step whose
    work changes nothing drawn (the dims growing, a hidden layer's insert) but makes napari
    ask for a paint of every layer anyway: that paint is not added to the step's own work
    in one freeze. The canvas widget is napari's private ``QtViewer.canvas``; without it
    (another napari) nothing is held."""
    from qtpy.QtCore import QTimer

    native = getattr(_qt_canvas(viewer), "native", None)
    if native is None or not native.updatesEnabled():
        return
    native.setUpdatesEnabled(False)

    def release() -> None:
        with contextlib.suppress(RuntimeError):  # the viewer was closed meanwhile
            native.setUpdatesEnabled(True)  # paints once (Qt calls update())

    QTimer.singleShot(PAINT_AFTER_MS, release)


def _grow_dims(viewer: napari.Viewer, layer) -> bool:
    """Raise ``viewer.dims.ndim`` to ``layer.ndim`` before the layer is inserted (napari
    rebuilds the dims sliders: its insert then keeps them). False (nothing changed) if the
    viewer has that many dims already or the layer has no finite extent (e.g. no points:
    napari's insert decides).

    The new leading axes get a range of one step, at the point napari's insert leaves
    their sliders on: their sliders are built hidden and, with the layout held while
    napari rebuilds them (:func:`_slider_layout_held`), this turn changes no layout
    (showing a slider shrinks the canvas, which QOpenGLWidget redraws synchronously, every
    layer); :func:`_prepare_range` shows them in a turn of its own. Returns True if the
    ``dims.events.order`` event of the new axes was held back (the caller emits it once the
    layer is in): on a viewer with layers, napari's handlers of that event index the
    layers' extent and units with ``dims.displayed`` - indices of the grown dims, which
    those layers (fewer dims) do not have (``fit_to_view``, the scale bar's unit:
    IndexError). napari's own insert emits it with the new layer in the list."""
    dims = viewer.dims
    ranges = _insert_ranges(viewer, layer)
    if dims.ndim >= layer.ndim or ranges is None:
        return False
    new = layer.ndim - dims.ndim
    collapsed = [(point, point, step) for start, stop, step in ranges[:new]
                 for point in [float(np.clip(0.0, start, stop))]]  # napari pads 0, clips
    model_dims = _model(viewer).dims
    hold = bool(len(viewer.layers))  # with no layer napari's handlers have nothing to index
    with (model_dims.events.order.blocker() if hold else contextlib.nullcontext()), \
            _slider_layout_held(viewer), _events_after(model_dims):
        dims.ndim = layer.ndim
        dims.range = (*collapsed, *dims.range[new:])
    return hold


@contextlib.contextmanager
def _slider_layout_held(viewer: napari.Viewer):
    """A context in which the layout holding napari's canvas and dims sliders stays as it
    is (Qt's ``QLayout.setEnabled(False)``), laid out again once it ends.

    napari rebuilds every slider when the number of dims changes: it removes them all, adds
    one per dim counted as shown (the sliders' minimum height grows by one slider per dim)
    and then hides those of displayed axes. Showing a slider makes Qt lay out every
    ancestor at once: the canvas shrinks and, as a ``QOpenGLWidget``, repaints all layers
    synchronously inside the handler, then grows back (a second full repaint) once the
    sliders have their final height. With the layout held, only the final height counts:
    when it is the same (the new axes' sliders are hidden, :func:`_grow_dims`) the canvas
    keeps its size and nothing is repainted for it. The widgets are napari's private
    ``QtViewer.dims`` (the window's ``_qt_viewer``); without them (another napari) nothing
    is held (``tests/test_widgets_view.py`` says when that happens)."""
    layout = _slider_layout(viewer)
    if layout is None or not layout.isEnabled():
        yield
        return
    layout.setEnabled(False)
    try:
        yield
    finally:
        layout.setEnabled(True)
        _lay_out_painting_once(viewer, layout)


def _lay_out_painting_once(viewer: napari.Viewer, layout) -> None:
    """Lay out canvas and sliders now; if the canvas changed size, paint it once, with the
    window's next repaint.

    Resized, napari's canvas (a ``QOpenGLWidget``) paints every layer at once, and that
    first draw at the new size moves napari's canvas overlays (``VispyCanvas.on_draw``
    sees a new view size), which asks for a second full paint in the same pass of the
    event loop. Here the resize's paint is skipped (the widget's FBO is redrawn before the
    window shows it: ``update()``), and napari's pre-draw step runs at once, so the next
    repaint is the only one. Without napari's private ``QtViewer.canvas`` (another napari)
    Qt lays out in its next pass as usual."""
    from qtpy.QtCore import QEvent, QObject

    canvas = _qt_canvas(viewer)
    native = getattr(canvas, "native", None)
    if native is None:
        return

    class _PaintLater(QObject):
        resized = False

        def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Resize:
                self.resized = True
            return event.type() == QEvent.Type.Paint

    watcher = _PaintLater()
    native.installEventFilter(watcher)
    try:
        layout.activate()
    finally:
        native.removeEventFilter(watcher)
    if watcher.resized:
        on_draw = getattr(canvas, "on_draw", None)
        if callable(on_draw):
            on_draw(None)
        native.update()


def _slider_layout(viewer: napari.Viewer):
    """The Qt layout holding napari's canvas and dims sliders, or None."""
    qt_dims = getattr(_qt_viewer(viewer), "dims", None)
    parent = qt_dims.parentWidget() if hasattr(qt_dims, "parentWidget") else None
    return parent.layout() if parent is not None else None


def _events_after(model):
    """A context in which an evented napari model emits its change events only at the end
    (the sliders are then rebuilt once, seeing the final ranges), or a no-op context if
    this napari has no ``ComparisonDelayer`` (the events then come as each field is set)."""
    try:
        from napari.utils.events.evented_model import ComparisonDelayer
    except ImportError:  # pragma: no cover - another napari
        return contextlib.nullcontext()
    return ComparisonDelayer(model)


def _insert_ranges(viewer: napari.Viewer, layer) -> tuple | None:
    """The dims range napari's insert of ``layer`` will set: the layer list's extent with
    the layer (``LayerList.get_extent``; the layer's own on an empty viewer), as
    ``(start, stop, step)`` per world axis; None for a layer without a finite extent."""
    if not np.isfinite(np.asarray(layer.extent.world, dtype=float)).all():
        return None
    layers = list(viewer.layers)
    extent = viewer.layers.get_extent([*layers, layer]) if layers else layer.extent
    world = np.asarray(extent.world, dtype=float)
    return tuple(zip(world[0].tolist(), world[1].tolist(),
                     np.asarray(extent.step, dtype=float).tolist(), strict=True))


def _prepare_range(viewer: napari.Viewer, layer) -> None:
    """Set the dims range to what napari's insert of ``layer`` will set
    (:func:`_insert_ranges`), if the dims already have the layer's number (else nothing).
    The layout is held meanwhile (:func:`_slider_layout_held`): the canvas shrinks for the
    new sliders once, to its final size, not first to an interim one."""
    ranges = _insert_ranges(viewer, layer)
    dims = viewer.dims
    if dims.ndim == layer.ndim and ranges is not None and tuple(map(tuple, dims.range)) != ranges:
        with _slider_layout_held(viewer):
            dims.range = ranges


def _prepare_axis_labels(viewer: napari.Viewer, layer) -> None:
    """The dims axis labels napari will set when ``layer`` is inserted in the viewer whose
    dims :func:`_grow_dims` set: napari merges the labels of the layer with the most
    annotated axes (this one: it has more dims than any other) into the dims labels, each
    label that is not the layer's default replacing the dims label, its axis index counted
    from the end."""
    if viewer.dims.ndim != layer.ndim or any(other.ndim >= layer.ndim
                                             for other in viewer.layers):
        return  # something else was added meanwhile: napari merges as usual
    labels = list(viewer.dims.axis_labels)
    for pos, label in enumerate(layer.axis_labels):
        if label != str(pos - layer.ndim):
            labels[pos] = label
    if tuple(labels) != tuple(viewer.dims.axis_labels):
        viewer.dims.axis_labels = labels


def _insert_unselected(viewer: napari.Viewer, layer, index: int | None = None) -> None:
    """``viewer.add_layer(layer)`` (or, given an ``index``, ``viewer.layers.insert``) without
    napari selecting it in the same turn.

    napari's layer list selects every inserted layer unless its ``_activate_on_insert`` is
    off: private, so it is switched off on the list itself (plugins get the viewer through
    napari's ``PublicOnlyProxy``, a ``wrapt`` proxy whose ``__wrapped__`` is the object)
    for this one insert only. Without that attribute (another napari) the layer is inserted
    and selected as napari does; ``tests/test_widgets_view.py`` says when that happens."""
    def add() -> None:
        if index is None or index > len(viewer.layers):
            viewer.add_layer(layer)
        else:
            viewer.layers.insert(index, layer)

    layers = getattr(viewer.layers, "__wrapped__", viewer.layers)
    previous = vars(layers).get("_activate_on_insert")
    if previous is None:
        add()
        return
    layers._activate_on_insert = False
    try:
        add()
    finally:
        layers._activate_on_insert = previous


def add_and_focus_later(viewer: napari.Viewer, runner, layer) -> Any:
    """Add ``layer`` (a LayerDataTuple or a ready layer) in turns (:func:`add_in_turns`) and
    move the sliders to it in a later turn (moving them re-slices every layer), only if no
    newer layer came in meanwhile: a burst of loads focuses once, on the last one. Build the
    layer with :func:`napari_allen.layers.focus.with_focus_point` in the worker so no volume
    is scanned here. Returns the layer."""

    def focus(added) -> None:
        latest = _LATEST_ADDED.get(runner)
        if latest is not None and latest() is added:
            focus_on_layer_tuple(viewer, added)

    def shown(added) -> None:
        runner.then(focus, added, own_turn=True)

    added = add_in_turns(viewer, runner, layer, then=shown)
    _LATEST_ADDED[runner] = weakref.ref(added)
    return added


def focus_on_layer_tuple(viewer: napari.Viewer, layer_tuple) -> bool:
    """Move the sliders to the injection site or peak (``layers/focus.py``) of a
    LayerDataTuple or of a ready napari layer (as ``add_layer_tuple`` accepts both)."""
    from napari.layers import Layer

    from napari_allen.layers.focus import focus_point_um, layer_focus_um

    if isinstance(layer_tuple, Layer):
        return focus_on(viewer, layer_focus_um(layer_tuple))
    return focus_on(viewer, focus_point_um(layer_tuple))
