"""The "Structures" dock: the CCF structure ontology as a searchable tree; ticking a structure
adds its mesh (its voxels and all its descendants') as a translucent Surface in its atlas
colour, optionally with its mask as Labels; the structure under the mouse is named live.

Meshes come from :func:`napari_allen.workflows.structure_meshes.get_structure_mesh`:
computed from the bundled 25 µm annotation (default; offline, cached on disk, aligned with
every layer by construction) or Allen's ``structure_meshes/<id>.obj`` files through the API
client's file server. Work runs in a :class:`~napari_allen.widgets._tasks.TaskRunner`; ticking
several structures quickly builds them all (one task over the pending set), the napari layers
built in the worker too and added over event-loop turns (``widgets/_view.add_in_turns``).

Nothing here holds napari's event loop (issue #13, ``benchmarks/bench_gui_freeze.py``
"structures"): the tree is built detached from the view in one pass over the ontology table
(one swatch icon per atlas colour, cached), the search is a vectorised substring match over
the table that touches only the items whose visibility changes, and the structure under the
cursor is looked up only in an annotation already open: the first look-up of a session (the
25 µm NRRD inflated, ~1 s, in a fresh cache) runs in a worker while the row says so.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from napari_allen.atlas.ontology import ROOT_ID, Ontology, hex_to_rgb
from napari_allen.widgets._common import shared_client
from napari_allen.widgets._dock import AllenDock
from napari_allen.widgets._removal import remove_layers
from napari_allen.widgets._tasks import TaskRunner, run_in_turns
from napari_allen.widgets._view import add_in_turns, show_orientation

if TYPE_CHECKING:
    import napari

SOURCE_LABELS = {
    "computed": "computed (offline)",
    "allen": "Allen .obj (download)",
    "auto": "Allen .obj, else computed",
}
_ID_ROLE = Qt.ItemDataRole.UserRole
#: What the cursor row says while the 25 µm annotation is being opened in a worker.
LOADING_TEXT = "loading the 25 µm annotation…"
#: ms after the dock opens before the worker parsing the ontology starts, the first time in a
#: process: the dock's first paint and layout steps come first (that parse also imports
#: pandas, whose GIL slices and garbage collection would stretch them). Once parsed, the tree
#: is built TREE_DELAY_MS after the dock opens.
ONTOLOGY_AFTER_MS = 500
#: ms after the ontology is parsed before the tree is built.
TREE_DELAY_MS = 30
_SWATCHES: dict[str, QIcon] = {}  # atlas colour hex -> 12 px swatch (~600 colours, 1,327 rows)


def _swatch(color_hex: str) -> QIcon:
    icon = _SWATCHES.get(color_hex)
    if icon is None:
        pix = QPixmap(12, 12)
        pix.fill(QColor(*hex_to_rgb(color_hex)))
        icon = _SWATCHES[color_hex] = QIcon(pix)
    return icon


def mask_layer_name(acronym: str) -> str:
    return f"{acronym} mask"


def structure_mask_layer(structure_id: int, ontology: Ontology | None = None) -> tuple | None:
    """The structure's 25 µm mask (with descendants) as a one-colour Labels layer cropped to
    its bounding box (``translate`` places it in CCF µm), or None if it has no voxels."""
    from napari_allen.atlas.meshes import bundled_annotation_index, structure_mask
    from napari_allen.space import layer_space_kwargs

    onto = ontology or Ontology.default()
    # The annotation's index (its resolution too): memory-mapped; the first time built in a
    # child process (the mesh task has usually built it already).
    index = bundled_annotation_index()
    found = structure_mask(index, structure_id, onto)
    if found is None:
        return None
    mask, origin = found
    r, g, b = (c / 255.0 for c in onto.rgb(structure_id))
    space = layer_space_kwargs(index.resolution)
    kwargs = {
        "name": mask_layer_name(onto.acronym(structure_id)),
        "colormap": {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (r, g, b, 1.0)},
        "opacity": 0.5,
        "translate": tuple(float(o) * index.resolution for o in origin),
        "metadata": {"kind": "structure_mask", "structure_id": int(structure_id),
                     "acronym": onto.acronym(structure_id), "origin_voxel": origin},
        **space,
    }
    return mask.astype(np.uint8), kwargs, "labels"


class StructuresWidget(AllenDock):
    """Dock widget: structure tree, meshes on tick, structure under the cursor."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)  # scroll area, API panel, tabbing, orientation
        self._ontology: Ontology | None = None
        self.runner = TaskRunner(self)
        self._by_id: dict[int, QTreeWidgetItem] | None = None  # None until the tree is built
        self._rows: list[QTreeWidgetItem] = []  # the items in ontology table (graph) order
        self._shown = np.ones(0, dtype=bool)  # rows the filter shows
        self._pending: list[int] = []
        self._dropped: set[int] = set()  # unticked while their mesh was being built or added
        self._adding: dict[int, int] = {}  # structure id -> its layers still being added
        self._removals: list[str] | None = None  # layer names to remove at once (untick_all)
        self._warm_worker = None  # the worker opening the 25 µm annotation, while it runs
        self._ontology_worker = None  # the worker parsing the ontology, while it runs
        self._parsing = False  # the process's first parse of the ontology is under way
        #: A search typed while the ontology was being parsed waits for the tree.
        self.filter_pending = False
        self._annotation_error = ""

        self.search_edit = QLineEdit(self)
        self.search_edit.setPlaceholderText("search acronym or name, e.g. VPM, thalamus")
        self.search_edit.textChanged.connect(self.filter)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["structure", "name"])
        self.tree.setMinimumHeight(220)
        self.tree.itemChanged.connect(self._on_item_changed)
        # The ontology parsed in a worker (once per process; the session's first also imports
        # pandas there, not in the click), then the tree in a turn of its own, after the
        # dock's first paint (anything asking for an item earlier builds it then); with 3-D
        # data already open, the annotation the cursor will need starts opening then.
        self._ontology = Ontology.default_if_parsed()
        if self._ontology is not None:
            self._ontology_ready(self._ontology)
        else:
            self._parsing = True
            QTimer.singleShot(ONTOLOGY_AFTER_MS, self._load_ontology)

        self.source_combo = QComboBox(self)
        for key, text in SOURCE_LABELS.items():
            self.source_combo.addItem(text, key)
        self.source_combo.setToolTip(
            "Computed: marching cubes of the bundled 25 µm annotation (aligned with every "
            "layer, offline, cached). Allen: structure_meshes/<id>.obj from the API's file "
            "server, read as CCF µm [AP, DV, ML].")
        self.mask_check = QCheckBox("also add the mask as Labels", self)
        self.opacity_combo = QComboBox(self)
        self.opacity_combo.addItems(["0.4", "0.2", "0.6", "1.0"])
        self.reference_button = QPushButton("CCF reference + outline", self)
        self.reference_button.setToolTip("the 25 µm CCFv3 annotation and the brain outline")
        self.reference_button.clicked.connect(self.show_reference)
        self.clear_button = QPushButton("Untick all", self)
        self.clear_button.clicked.connect(self.untick_all)
        self.cursor_label = QLabel("", self)
        self.cursor_label.setWordWrap(True)
        self.cursor_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = self.body_layout
        layout.addWidget(self.search_edit)
        layout.addWidget(self.tree, 1)
        form = QFormLayout()
        form.addRow("Meshes", self.source_combo)
        form.addRow("Opacity", self.opacity_combo)
        form.addRow("", self.mask_check)
        layout.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.reference_button, 2)
        row.addWidget(self.clear_button, 1)
        layout.addLayout(row)
        layout.addWidget(QLabel("Under the cursor:", self))
        layout.addWidget(self.cursor_label)
        layout.addWidget(self.runner.widget)

        self.viewer.cursor.events.position.connect(self._on_cursor)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)

    # --- tree ---------------------------------------------------------------------------
    @property
    def ontology(self) -> Ontology:
        """The bundled structure ontology (what the tree lists)."""
        if self._ontology is None:
            self._ontology = Ontology.default()
        return self._ontology

    def _load_ontology(self) -> None:
        from napari.qt.threading import create_worker

        if self._ontology is not None:  # asked for earlier (e.g. a search typed at once)
            self._ontology_ready(self._ontology)
            return

        worker = create_worker(Ontology.default, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._ontology_ready)
        worker.errored.connect(self._ontology_failed)
        self._ontology_worker = worker  # referenced while it runs
        worker.start()

    def _ontology_ready(self, onto: Ontology) -> None:
        self._ontology_worker = None
        self._parsing = False
        if self._ontology is None:
            self._ontology = onto
        # _ensure_tree applies a search typed meanwhile (filter_pending) when it builds.
        run_in_turns([self._ensure_tree, self._warm_if_3d], TREE_DELAY_MS)

    def _ontology_failed(self, exc: BaseException) -> None:
        # Searches parse on demand from now on (and say what is wrong, as before the worker).
        self._ontology_worker = None
        self._parsing = False
        self.filter_pending = False  # a search typed meanwhile: no tree to show it in
        self._error(exc)

    def _apply_pending_filter(self) -> None:
        if self.filter_pending:
            self.filter_pending = False
            self.filter(self.search_edit.text())

    @property
    def _items(self) -> dict[int, QTreeWidgetItem]:
        """Tree item per structure id (the tree is built on first use)."""
        self._ensure_tree()
        assert self._by_id is not None
        return self._by_id

    def _ensure_tree(self) -> None:
        if self._by_id is None:
            self._fill_tree()
            self._apply_pending_filter()

    def _fill_tree(self) -> None:
        """One item per structure, built while detached from the view (no per-item model
        signals or layout), from plain column lists (no per-cell pandas look-ups): ~20 ms
        for 1,327 structures."""
        onto = self.ontology
        table = onto.table
        ids = [int(i) for i in table.index]
        acronyms = table["acronym"].astype(str).tolist()
        names = table["name"].astype(str).tolist()
        colors = table["color_hex"].astype(str).tolist()
        parents = onto.parent_rows.tolist()  # graph order: parents come before children
        unchecked = Qt.CheckState.Unchecked
        checkable = Qt.ItemFlag.ItemIsUserCheckable
        rows: list[QTreeWidgetItem] = []
        top: list[QTreeWidgetItem] = []
        for k, sid in enumerate(ids):
            item = QTreeWidgetItem([acronyms[k], names[k]])
            item.setData(0, _ID_ROLE, sid)
            item.setIcon(0, _swatch(colors[k]))
            item.setToolTip(1, f"{names[k]} (id {sid})")
            item.setFlags(item.flags() | checkable)
            item.setCheckState(0, unchecked)
            if parents[k] < 0:
                top.append(item)
            else:
                rows[parents[k]].addChild(item)
            rows.append(item)
        self._rows = rows
        self._shown = np.ones(len(rows), dtype=bool)
        self._by_id = dict(zip(ids, rows, strict=True))
        self.tree.blockSignals(True)
        self.tree.addTopLevelItems(top)
        self.tree.blockSignals(False)
        root = self._by_id.get(ROOT_ID)
        if root is not None:
            root.setExpanded(True)
            for i in range(root.childCount()):
                root.child(i).setExpanded(True)
        self.tree.resizeColumnToContents(0)

    def filter(self, text: str) -> int:
        """Show structures whose acronym or name contains ``text`` (and their ancestors,
        expanded); returns how many match. Empty text shows everything. While the process's
        first parse of the ontology runs (a worker), the search waits for the tree (0)."""
        if self._by_id is None and self._parsing:
            self.filter_pending = True  # parsing here would import pandas in the keystroke
            return 0
        self._ensure_tree()
        onto = self.ontology
        hits = onto.matching(text)
        shown = onto.with_ancestors(hits)
        rows = self._rows
        # Only the items whose visibility changes: Qt lays the view out once, when it paints.
        for k in np.flatnonzero(shown != self._shown).tolist():
            rows[k].setHidden(not shown[k])
        self._shown = shown
        if (text or "").strip():
            parents = onto.parent_rows[shown]
            for k in np.unique(parents[parents >= 0]).tolist():
                if not rows[k].isExpanded():
                    rows[k].setExpanded(True)
        return int(hits.sum())

    def item(self, structure: int | str) -> QTreeWidgetItem:
        return self._items[self.ontology.id_of(structure)]

    def set_checked(self, structure: int | str, checked: bool = True) -> None:
        """Tick (or untick) a structure by id or acronym, as a click would."""
        state = Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
        self.item(structure).setCheckState(0, state)

    def checked_ids(self) -> list[int]:
        return [sid for sid, item in self._items.items()
                if item.checkState(0) == Qt.CheckState.Checked]

    def untick_all(self) -> None:
        """Untick every ticked structure; their layers go in one napari batch (one garbage
        collection of napari's, not one per layer: ``_removal``)."""
        self._removals = []
        try:
            for sid in self.checked_ids():
                self.set_checked(sid, False)
        finally:
            names, self._removals = self._removals, None
            remove_layers(self.viewer, names)

    def _on_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if column != 0:
            return
        sid = int(item.data(0, _ID_ROLE))
        if item.checkState(0) == Qt.CheckState.Checked:
            self.add_structures([sid])
        else:
            self._remove_structure(sid)

    # --- meshes -------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return str(self.source_combo.currentData())

    def add_structures(self, structure_ids) -> None:
        """Add the meshes (and masks, if asked) of ``structure_ids`` (ids or acronyms)."""
        for key in structure_ids:
            sid = self.ontology.id_of(key)
            self._dropped.discard(sid)
            if sid not in self._pending:
                self._pending.append(sid)
        pending = list(self._pending)
        source, with_mask = self.source, self.mask_check.isChecked()
        opacity = float(self.opacity_combo.currentText())
        client = shared_client() if source != "computed" else None
        onto = self.ontology

        def task(*, progress, cancel, emit):
            from napari_allen.layers.meshes import structure_mesh_layer
            from napari_allen.layers.prebuilt import build_layers
            from napari_allen.workflows.structure_meshes import iter_structure_meshes

            # Computed meshes: one child process for the pending set (never holding
            # napari's GIL), meshing the next while this one's layers are added.
            meshes = iter_structure_meshes(pending, client=client, source=source,
                                           ontology=onto, progress=progress, cancel=cancel)
            for sid, mesh in meshes:
                layers = [structure_mesh_layer(mesh, sid, ontology=onto, opacity=opacity)]
                if with_mask:
                    mask = structure_mask_layer(sid, onto)
                    if mask is not None:
                        layers.append(mask)
                # napari layers built here (a Labels colour dict, a Surface's normals), and
                # the next structure waits until these are in (one insert per turn).
                emit((sid, build_layers(layers)), wait=True)
            return len(pending)

        names = ", ".join(onto.acronym(s) for s in pending)
        self.runner.run(task, on_partial=self._show_mesh, on_result=lambda _n: None,
                        on_error=self._error, description=f"Meshing {names}…")

    def _show_mesh(self, value) -> None:
        sid, layers = value
        if sid in self._pending:
            self._pending.remove(sid)
        if sid in self._dropped:  # unticked while it was being built
            return
        self._adding[sid] = self._adding.get(sid, 0) + len(layers)
        for layer in layers:  # napari's steps for each, one per event-loop turn
            add_in_turns(self.viewer, self.runner, layer, then=lambda added, s=sid:
                         self._mesh_shown(s, added))

    def _mesh_shown(self, sid: int, layer) -> None:
        """A structure's layer is in: warn about a fallback; remove it if the structure was
        unticked while its layers were being added."""
        left = self._adding.get(sid, 1) - 1
        if left > 0:
            self._adding[sid] = left
        else:
            self._adding.pop(sid, None)
        if sid in self._dropped:
            if not left:
                self._dropped.discard(sid)
            remove_layers(self.viewer, [layer])
            return
        fallback = layer.metadata.get("fallback")
        if fallback:
            from napari.utils.notifications import show_warning

            show_warning(f"Structures: {fallback}")

    def _remove_structure(self, sid: int) -> None:
        from napari_allen.layers.meshes import mesh_layer_name

        if sid in self._pending:
            self._pending.remove(sid)
            self._dropped.add(sid)
        if sid in self._adding:  # its layers are being added: removed when they are in
            self._dropped.add(sid)
        acronym = self.ontology.acronym(sid)
        names = [mesh_layer_name(acronym), mask_layer_name(acronym)]
        if self._removals is not None:
            self._removals.extend(names)
        else:
            remove_layers(self.viewer, names)

    def _on_layer_removed(self, event) -> None:
        """A mesh layer deleted in the layer list unticks its structure."""
        layer = getattr(event, "value", None)
        meta = getattr(layer, "metadata", {}) or {}
        sid = meta.get("structure_id")
        if meta.get("kind") == "mesh" and self._by_id is not None and sid in self._by_id:
            item = self._by_id[sid]
            self.tree.blockSignals(True)
            item.setCheckState(0, Qt.CheckState.Unchecked)
            self.tree.blockSignals(False)

    def show_reference(self) -> None:
        """Add the 25 µm CCF annotation and the brain outline (first time: a few seconds)."""
        def task(*, progress, cancel, emit):
            from napari_allen.layers.meshes import ccf_reference_layers
            from napari_allen.layers.prebuilt import build_layers

            return build_layers(ccf_reference_layers())  # napari layers built here, too

        def done(layers) -> None:
            for layer in layers:  # napari's steps for each, one per event-loop turn
                add_in_turns(self.viewer, self.runner, layer)
            self.runner.then(show_orientation, self.viewer)

        self.runner.run(task, on_result=done, on_error=self._error,
                        description="Loading the 25 µm CCF reference…")

    # --- cursor -------------------------------------------------------------------------
    def describe(self, point_um, *, annotation=None) -> str:
        """``"VPM: Ventral posterior medial nucleus of the thalamus"`` at a CCF µm point.

        Opens the 25 µm annotation on the calling thread if this process has not yet (the
        cursor handler never calls it then); ``annotation``: an already open one."""
        from napari_allen.atlas.annotation import structure_at

        found = structure_at(np.asarray(point_um, dtype=float)[-3:], ontology=self.ontology,
                             annotation=annotation)
        if found["id"] == 0:
            return "outside the brain"
        return f"{found['acronym']}: {found['name']}"

    def _on_cursor(self, _event=None) -> None:
        from napari_allen.atlas.annotation import ccf_annotation_25_if_loaded

        if self.viewer.dims.ndim < 3:
            return
        point = np.asarray(self.viewer.cursor.position, dtype=float)[-3:]
        annotation = ccf_annotation_25_if_loaded()  # never decodes nor waits
        if annotation is None:
            self._warm_annotation()
            text = self._annotation_error or LOADING_TEXT
        else:
            try:
                text = self.describe(point, annotation=annotation)
            except (ValueError, IndexError, OSError):
                return
        coords = ", ".join(f"{v:.0f}" for v in point)
        try:
            self.cursor_label.setText(f"{text}  (AP, DV, ML = {coords} µm)")
        except RuntimeError:  # the dock was deleted: stop listening
            self.viewer.cursor.events.position.disconnect(self._on_cursor)

    def _warm_if_3d(self) -> None:
        if self.viewer.dims.ndim >= 3 and len(self.viewer.layers):
            self._warm_annotation()

    def _warm_annotation(self) -> None:
        """Open the 25 µm annotation in a worker (inflated into the cache folder the first
        time, ~1 s; memory-mapped afterwards), then name the structure under the cursor.
        One worker at a time; an error (e.g. a damaged file, a full disk) is shown in the
        cursor row instead of the structure, not retried at every move."""
        if self._warm_worker is not None or self._annotation_error:
            return
        from napari.qt.threading import create_worker

        from napari_allen.atlas.annotation import ccf_annotation_25

        worker = create_worker(ccf_annotation_25, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._annotation_ready)
        worker.errored.connect(self._annotation_failed)
        self._warm_worker = worker
        worker.start()

    def _annotation_ready(self, _vol=None) -> None:
        self._warm_worker = None
        with contextlib.suppress(RuntimeError):  # the dock is gone
            self._on_cursor()

    def _annotation_failed(self, exc: BaseException) -> None:
        self._warm_worker = None
        self._annotation_error = f"no annotation: {exc}"  # shown at every move from now on
        with contextlib.suppress(RuntimeError):  # the dock is gone
            self.cursor_label.setText(self._annotation_error)

    def _error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Structures: {exc}")
