"""The "Spatial search" dock widget: Allen's spatial-search lines, interactive.

- Run: for an experiment and a density range, seed voxels (100 µm projection density, outside
  fibre tracts, capped) are queried concurrently (``mouse_connectivity_target_spatial``,
  ``section_data_set`` = the experiment); the lines appear as a 3-D Shapes path layer plus a
  Vectors companion visible in 2-D slices, with the injection voxels as Points and optionally
  the fibre tracts as an atlas-coloured Labels layer.
- Click to search: while checked, a click (not a drag) on the canvas takes the 100 µm voxel
  under the cursor as the seed and asks across all experiments; lines are coloured by
  experiment.
- Save JSON: the result shown, in the script's shape (``lines``, ``injectionCoordinates``).
  While a search runs, Save is disabled (the layers are changing). A cancelled search keeps the
  lines shown so far, labelled "partial — cancelled" in the layer names, the layer metadata,
  the summary and the saved JSON's metadata alike.

All work runs in a :class:`~napari_allen.widgets._tasks.TaskRunner` worker (layer data built
there too); layers are added on the main thread. The mouse callback only starts a task.
Workflows: :func:`~napari_allen.workflows.spatial_search.run_experiment_search` and
:func:`~napari_allen.workflows.spatial_search.search_at_point` (CLI ``napari-allen
spatial-search [--at AP DV ML]``).
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QPushButton,
    QWidget,
)

from napari_allen.io.lines_json import write_lines_json
from napari_allen.widgets._common import (
    WrappingLabel,
    layer_name,
    shared_client,
)
from napari_allen.widgets._dock import AllenDock
from napari_allen.widgets._removal import remove_layers
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_in_turns
from napari_allen.widgets.spatial_form import SpatialSearchForm
from napari_allen.workflows.spatial_search import run_experiment_search

if TYPE_CHECKING:
    import napari

CLICK_RESOLUTION = 100  # µm: the click seed is the centre of this grid's voxel
CLICK_LAYER_NAME = "spatial search (click)"
PARTIAL_EVERY_S = 1.0  # how often lines found so far are shown during a long search
PARTIAL = "partial — cancelled"
_SUFFIXES = ("lines", "lines (2-D)", "injection sites")


def _show_all(runner: TaskRunner, viewer: napari.Viewer, layer_tuples: list, prefix: str,
              then: Any = None) -> None:
    """Show ``layer_tuples`` (ready layers), each over several event-loop turns
    (:func:`~napari_allen.widgets._view.add_in_turns`: dims, hidden insert, selection, first
    draw; the GUI answers in between), then remove the other
    layers of the same search (``prefix`` + lines / lines (2-D) / injection sites, also a
    cancelled run's partial ones) that this result no longer has, so an empty result never
    leaves the previous lines on screen; then call ``then()``."""
    for layer_tuple in layer_tuples:
        add_in_turns(viewer, runner, layer_tuple)
    kept = {layer_name(t) for t in layer_tuples}

    def remove_stale() -> None:
        names = [f"{prefix} {suffix}{tail}" for suffix in _SUFFIXES
                 for tail in ("", f" ({PARTIAL})")]
        remove_layers(viewer, [name for name in names if name not in kept])
        if then is not None:
            then()

    runner.then(remove_stale)


class SpatialSearchWidget(AllenDock):
    """Dock widget: experiment spatial search and point-and-click search (see module doc)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.last_result: dict | None = None  # {"records", "injection_coordinates", "metadata"}
        self._partial: dict | None = None  # the lines shown while a search runs
        self._pending: dict | None = None  # the newest partial not drawn yet
        self._drawing = False

        self.form = SpatialSearchForm()
        self.run_button = QPushButton("Run spatial search")
        self.run_button.clicked.connect(self.run)
        self.click_button = QPushButton("Click to search")
        self.click_button.setCheckable(True)
        self.click_button.setToolTip("While checked, click in the viewer: the 100 µm voxel under "
                                     "the cursor is the seed, searched across all experiments")
        self.save_button = QPushButton("Save JSON…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(lambda: self.save_json())
        self.meshes_button = QPushButton("Add injection + target structure meshes")
        self.meshes_button.setToolTip("meshes of the structure holding the injection and of "
                                      "the structures holding most seeds of the last result")
        self.meshes_button.setEnabled(False)
        self.meshes_button.clicked.connect(self.add_structure_meshes)
        self.summary = WrappingLabel("")

        self.runner = TaskRunner(self)
        self.runner.running_changed.connect(self._running_changed)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.click_button)
        buttons.addWidget(self.save_button)
        layout = self.body_layout
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addWidget(self.meshes_button)
        layout.addWidget(self.runner.widget)
        layout.addWidget(self.summary)
        layout.addStretch(1)

        # napari keeps its mouse callbacks strongly, and closing a dock only unparents this
        # widget (napari's remove_dock_widget): a bound method there kept a closed dock alive
        # and still answering clicks. The viewer holds a callback that refers to the widget
        # weakly, and drops it when the widget goes.
        self.mouse_callback = _weak_mouse_callback(self)
        self.viewer.mouse_drag_callbacks.append(self.mouse_callback)
        weakref.finalize(self, _remove_callback, self.viewer.mouse_drag_callbacks,
                         self.mouse_callback)

    # --- experiment search ----------------------------------------------------------------
    def run(self) -> None:
        """Start the experiment search (cancels any running task)."""
        params = self.form.parameters()
        show_fibers = self.form.show_fibers.isChecked()

        name = f"spatial search {params['experiment_id']}"

        def task(*, progress, cancel, emit):
            from napari_allen.layers.lines import fiber_tract_layer, lines_layers
            from napari_allen.layers.prebuilt import build_layers

            # Show the lines found so far every PARTIAL_EVERY_S while the queries run (made
            # here, in the worker; the runner hands them to the main thread).
            found: list = []
            last = [time.monotonic()]
            inserted = [False]

            def on_lines(lines: list) -> None:
                found.extend(lines)
                if time.monotonic() - last[0] >= PARTIAL_EVERY_S:
                    last[0] = time.monotonic()
                    shown = list(found)
                    # The 2-D Vectors alone: re-triangulating every Shapes path each time
                    # would hold the GIL for seconds (the final result brings the paths).
                    # The first is a ready layer (its insert is all the main thread does);
                    # later ones are plain arrays put into that layer in place (~20 ms for
                    # thousands of segments): building a whole napari layer every second
                    # here would only compete with the main thread for the GIL.
                    layers = lines_layers(shown, name=name, paths=False)
                    if not inserted[0]:
                        layers, inserted[0] = build_layers(layers), True
                    # wait: the queries pause while napari shows the lines (the GIL is
                    # napari's meanwhile; a first insert took 3x as long against 4 threads).
                    emit({"layers": layers,
                          "records": [line.record for line in shown],
                          "metadata": {"experiment": params["experiment_id"]}}, wait=True)

            search = run_experiment_search(shared_client(), progress=progress, cancel=cancel,
                                           on_lines=on_lines, **params)
            layers = lines_layers(search.lines, search.injection_coordinates, name=name,
                                  metadata=search.metadata)
            if show_fibers:
                from napari_allen.atlas.fiber_tracts import FiberTracts

                layers.insert(0, fiber_tract_layer(FiberTracts.default(), CLICK_RESOLUTION))
            # Built here, in the worker: the main thread only inserts them (no triangulation).
            return {"search": search, "layers": build_layers(layers)}

        self.summary.setText("")
        self._partial = None
        self.runner.run(task, on_result=self._show_experiment, on_partial=self._show_partial,
                        on_cancel=self._keep_partial,
                        description=f"spatial search of {params['experiment_id']}")

    def _running_changed(self, running: bool) -> None:
        # While a search runs the layers change under the user: saving would not match them.
        self.save_button.setEnabled(not running and self.last_result is not None)
        self.meshes_button.setEnabled(not running and self.last_result is not None)

    def _show_partial(self, payload: dict) -> None:
        # Updating a big Shapes layer can process events, delivering the next partial inside
        # this call: only the newest one is drawn, never nested.
        self._pending = payload
        if self._drawing:
            return
        self._drawing = True
        try:
            while self._pending is not None:
                current, self._pending = self._pending, None
                # The first partial: a ready layer, inserted over several turns; later ones:
                # plain arrays put into the layer shown (add_in_turns does that in one step).
                for layer_tuple in current["layers"]:
                    add_in_turns(self.viewer, self.runner, layer_tuple)
                self._partial = current
        finally:
            self._drawing = False

    def _keep_partial(self) -> None:
        """A cancelled search: keep the lines shown so far, labelled as partial everywhere
        (layer names and metadata, summary, Save JSON); nothing shown -> nothing kept."""
        partial, self._partial = self._partial, None
        # (The cancel may have dropped a first partial's insert steps: then nothing is shown.)
        if partial is None or not any(layer_name(t) in self.viewer.layers
                                      for t in partial["layers"]):
            return
        for layer_tuple in partial["layers"]:
            name = layer_name(layer_tuple)
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.metadata = {**layer.metadata, "status": PARTIAL}
                layer.name = f"{name} ({PARTIAL})"
        self.last_result = {"records": partial["records"],
                            "injection_coordinates": np.empty((0, 3)),
                            "metadata": {**partial["metadata"], "status": PARTIAL}}
        self.save_button.setEnabled(True)
        self.meshes_button.setEnabled(True)
        self.summary.setText(f"{PARTIAL}: {len(partial['records'])} lines kept")

    def _show_experiment(self, value: dict) -> None:
        self._partial = None
        search = value["search"]
        _show_all(self.runner, self.viewer, value["layers"],
                  f"spatial search {search.experiment_id}",
                  then=lambda: self._summarise_experiment(search))

    def _summarise_experiment(self, search: Any) -> None:
        result = search.result
        self.last_result = {"records": result.records(),
                            "injection_coordinates": search.injection_coordinates,
                            "metadata": search.metadata}
        self.save_button.setEnabled(True)
        self.meshes_button.setEnabled(True)
        attrs = search.seeds.attrs
        text = (f"{len(search.seeds)} seeds ({attrs.get('in_range', 0)} in range, "
                f"{attrs.get('in_fiber_tracts', 0)} in fibre tracts, {attrs.get('capped', 0)} "
                f"over the cap) → {len(result.lines)} lines in {result.seconds:.1f} s")
        if result.n_failed:
            text += f"; {result.n_failed} seeds failed (run again to retry them)"
        self.summary.setText(self.runner.with_note(text))

    # --- point and click ------------------------------------------------------------------
    def search_at(self, point_um: Any) -> bool:
        """Search across all experiments from the 100 µm voxel containing ``point_um``
        (``[AP, DV, ML]`` µm). Returns False (and says why) if the point is outside the atlas."""
        from napari_allen.analysis.seeds import snap_to_voxel
        from napari_allen.space import GRID_SHAPES

        point = np.asarray(point_um, dtype=float)[-3:]
        if snap_to_voxel(point, CLICK_RESOLUTION, GRID_SHAPES[CLICK_RESOLUTION]) is None:
            self.summary.setText(f"{np.round(point, 0).tolist()} µm is outside the atlas")
            return False

        def task(*, progress, cancel, emit):
            from napari_allen.layers.lines import lines_layers
            from napari_allen.layers.prebuilt import build_layers
            from napari_allen.workflows.spatial_search import search_at_point

            search = search_at_point(shared_client(), point, resolution=CLICK_RESOLUTION,
                                     progress=progress, cancel=cancel)
            layers = lines_layers(search.result.lines, name=CLICK_LAYER_NAME,
                                  color_by="experiment", metadata=search.metadata)
            return {"search": search, "layers": build_layers(layers)}

        self._partial = None
        self.runner.run(task, on_result=self._show_click,
                        description=f"spatial search at {', '.join(f'{v:.0f}' for v in point)}"
                                    " µm")
        return True

    def _show_click(self, value: dict) -> None:
        search = value["search"]
        _show_all(self.runner, self.viewer, value["layers"], CLICK_LAYER_NAME,
                  then=lambda: self._summarise_click(search))

    def _summarise_click(self, search: Any) -> None:
        result, seed = search.result, search.seed_um
        self.last_result = {"records": result.records(),
                            "injection_coordinates": np.empty((0, 3)),
                            "metadata": search.metadata}
        self.save_button.setEnabled(bool(result.lines))
        self.meshes_button.setEnabled(bool(result.lines))
        experiments = sorted({ln.experiment_id for ln in result.lines})
        label = ", ".join(f"{v:.0f}" for v in seed)
        if result.n_failed:
            self.summary.setText(f"seed {label} µm: query failed: {result.failures[0].error}")
        else:
            self.summary.setText(self.runner.with_note(
                f"seed {label} µm: {len(result.lines)} lines from {len(experiments)} experiments"))

    def _on_mouse(self, viewer: Any, event: Any):
        """Mouse callback: a click (press then release without moving) starts a search."""
        if not self.click_button.isChecked() or getattr(event, "button", 1) != 1:
            return
        position = np.asarray(event.position, dtype=float)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved:
            self.search_at(position)

    def close_search(self) -> None:
        """Cancel any running task and stop listening to clicks."""
        self.runner.cancel()
        _remove_callback(self.viewer.mouse_drag_callbacks, self.mouse_callback)

    # --- saving ---------------------------------------------------------------------------
    def add_structure_meshes(self) -> None:
        """Meshes of the structure holding the injection (the injection voxels, else the
        lines' injection ends) and of the structures holding most line seeds."""
        if self.last_result is None:
            return
        records = self.last_result["records"]
        injection = np.asarray(self.last_result["injection_coordinates"], float).reshape(-1, 3)
        seeds = [rec["path"][0]["coord"] for rec in records if rec.get("path")]
        if len(injection) == 0:
            injection = np.array([rec["path"][-1]["coord"] for rec in records
                                  if rec.get("path")], float).reshape(-1, 3)

        def pick(*, cancel):
            from napari_allen.workflows.structure_meshes import structures_at_points

            inj = structures_at_points(injection, top=1)
            targets = [s for s in structures_at_points(seeds, top=5) if s not in inj][:4]
            return {"injection": inj, "targets": targets}

        from napari_allen.widgets._meshes import mesh_task

        self.runner.run(mesh_task(pick),
                        on_partial=lambda t: add_in_turns(self.viewer, self.runner, t),
                        description="meshing injection and target structures")

    def save_json(self, path: str | None = None) -> str | None:
        """Write the last result as the lines JSON; asks for a path when None."""
        if self.last_result is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save spatial-search lines", "",
                                                  "Lines JSON (*.json)")
            if not path:
                return None
        write_lines_json(path, self.last_result["records"],
                         self.last_result["injection_coordinates"],
                         metadata=self.last_result["metadata"])
        self.summary.setText(f"saved {path}")
        return str(path)


def _weak_mouse_callback(widget: SpatialSearchWidget):
    """napari mouse-drag callback running ``widget._on_mouse`` while the widget lives (a
    generator function, as napari drives drags); nothing once it is gone."""
    ref = weakref.ref(widget)

    def on_mouse(viewer: Any, event: Any):
        live = ref()
        if live is None:
            return
        yield from live._on_mouse(viewer, event)

    return on_mouse


def _remove_callback(callbacks: list, callback) -> None:
    if callback in callbacks:
        callbacks.remove(callback)
