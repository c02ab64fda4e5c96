"""The "Structures" dock: the CCF structure ontology as a searchable tree; ticking a structure
adds its mesh (its voxels and all its descendants') as a translucent Surface in its atlas
colour, optionally with its mask as Labels; the structure under the mouse is named live.

Meshes come from :func:`napari_allen.workflows.structure_meshes.get_structure_mesh`:
computed from the bundled 25 µm annotation (default; offline, cached on disk, aligned with
every layer by construction) or Allen's ``structure_meshes/<id>.obj`` files through the API
client's file server. Work runs in a :class:`~napari_allen.widgets._tasks.TaskRunner`; ticking
several structures quickly builds them all (one task over the pending set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
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
    QTreeWidgetItemIterator,
    QWidget,
)

from napari_allen.atlas.ontology import ROOT_ID, Ontology
from napari_allen.widgets._common import add_layer_tuple, shared_client
from napari_allen.widgets._dock import AllenDock
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_in_turns, show_orientation

if TYPE_CHECKING:
    import napari

SOURCE_LABELS = {
    "computed": "computed (offline)",
    "allen": "Allen .obj (download)",
    "auto": "Allen .obj, else computed",
}
_ID_ROLE = Qt.ItemDataRole.UserRole


def _swatch(rgb: tuple[int, int, int]) -> QIcon:
    pix = QPixmap(12, 12)
    pix.fill(QColor(*rgb))
    return QIcon(pix)


def mask_layer_name(acronym: str) -> str:
    return f"{acronym} mask"


def structure_mask_layer(structure_id: int, ontology: Ontology | None = None) -> tuple | None:
    """The structure's 25 µm mask (with descendants) as a one-colour Labels layer cropped to
    its bounding box (``translate`` places it in CCF µm), or None if it has no voxels."""
    from napari_allen.atlas.annotation import ccf_annotation_25
    from napari_allen.atlas.meshes import annotation_index, structure_mask
    from napari_allen.space import layer_space_kwargs

    onto = ontology or Ontology.default()
    vol = ccf_annotation_25()
    found = structure_mask(annotation_index(vol), structure_id, onto)
    if found is None:
        return None
    mask, origin = found
    r, g, b = (c / 255.0 for c in onto.rgb(structure_id))
    space = layer_space_kwargs(vol.resolution)
    kwargs = {
        "name": mask_layer_name(onto.acronym(structure_id)),
        "colormap": {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (r, g, b, 1.0)},
        "opacity": 0.5,
        "translate": tuple(float(o) * vol.resolution for o in origin),
        "metadata": {"kind": "structure_mask", "structure_id": int(structure_id),
                     "acronym": onto.acronym(structure_id), "origin_voxel": origin},
        **space,
    }
    return mask.astype(np.uint8), kwargs, "labels"


class StructuresWidget(AllenDock):
    """Dock widget: structure tree, meshes on tick, structure under the cursor."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)  # scroll area, API panel, tabbing, orientation
        self.ontology = Ontology.default()
        self.runner = TaskRunner(self)
        self._items: dict[int, QTreeWidgetItem] = {}
        self._pending: list[int] = []
        self._dropped: set[int] = set()  # unticked while their mesh was being built

        self.search_edit = QLineEdit(self)
        self.search_edit.setPlaceholderText("search acronym or name, e.g. VPM, thalamus")
        self.search_edit.textChanged.connect(self.filter)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["structure", "name"])
        self.tree.setMinimumHeight(220)
        self._fill_tree()
        self.tree.itemChanged.connect(self._on_item_changed)

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
    def _fill_tree(self) -> None:
        onto = self.ontology
        self.tree.blockSignals(True)
        for sid in onto.table.index:  # graph order: parents before children
            sid = int(sid)
            parent_id = onto.parent(sid)
            parent = self._items.get(parent_id) if parent_id is not None else None
            item = QTreeWidgetItem([onto.acronym(sid), onto.name(sid)])
            item.setData(0, _ID_ROLE, sid)
            item.setIcon(0, _swatch(onto.rgb(sid)))
            item.setToolTip(1, f"{onto.name(sid)} (id {sid})")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(0, Qt.CheckState.Unchecked)
            if parent is None:
                self.tree.addTopLevelItem(item)
            else:
                parent.addChild(item)
            self._items[sid] = item
        self.tree.blockSignals(False)
        root = self._items.get(ROOT_ID)
        if root is not None:
            root.setExpanded(True)
            for i in range(root.childCount()):
                root.child(i).setExpanded(True)
        self.tree.resizeColumnToContents(0)

    def filter(self, text: str) -> int:
        """Show structures whose acronym or name contains ``text`` (and their ancestors);
        returns how many match. Empty text shows everything."""
        needle = (text or "").strip().lower()
        matches = 0
        iterator = QTreeWidgetItemIterator(self.tree)
        shown: set[int] = set()
        while iterator.value():
            item = iterator.value()
            sid = int(item.data(0, _ID_ROLE))
            hit = not needle or needle in item.text(0).lower() or needle in item.text(1).lower()
            if hit:
                matches += 1
                shown.add(sid)
                shown.update(self.ontology.ancestors(sid))
            iterator += 1
        for sid, item in self._items.items():
            item.setHidden(sid not in shown)
            if needle and sid in shown and sid != ROOT_ID:
                item.parent() and item.parent().setExpanded(True)
        return matches

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
        for sid in self.checked_ids():
            self.set_checked(sid, False)

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
            from napari_allen.workflows.structure_meshes import get_structure_mesh

            for sid in pending:
                mesh = get_structure_mesh(sid, client=client, source=source, ontology=onto,
                                          progress=progress, cancel=cancel)
                layers = [structure_mesh_layer(mesh, sid, ontology=onto, opacity=opacity)]
                if with_mask:
                    mask = structure_mask_layer(sid, onto)
                    if mask is not None:
                        layers.append(mask)
                emit((sid, layers))
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
        for layer_tuple in layers:
            layer = add_layer_tuple(self.viewer, layer_tuple)
            fallback = layer.metadata.get("fallback")
            if fallback:
                from napari.utils.notifications import show_warning

                show_warning(f"Structures: {fallback}")

    def _remove_structure(self, sid: int) -> None:
        from napari_allen.layers.meshes import mesh_layer_name

        if sid in self._pending:
            self._pending.remove(sid)
            self._dropped.add(sid)
        acronym = self.ontology.acronym(sid)
        for name in (mesh_layer_name(acronym), mask_layer_name(acronym)):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)

    def _on_layer_removed(self, event) -> None:
        """A mesh layer deleted in the layer list unticks its structure."""
        layer = getattr(event, "value", None)
        meta = getattr(layer, "metadata", {}) or {}
        sid = meta.get("structure_id")
        if meta.get("kind") == "mesh" and sid in self._items:
            item = self._items[sid]
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
    def describe(self, point_um) -> str:
        """``"VPM: Ventral posterior medial nucleus of the thalamus"`` at a CCF µm point."""
        from napari_allen.atlas.annotation import structure_at

        found = structure_at(np.asarray(point_um, dtype=float)[-3:], ontology=self.ontology)
        if found["id"] == 0:
            return "outside the brain"
        return f"{found['acronym']}: {found['name']}"

    def _on_cursor(self, _event=None) -> None:
        if self.viewer.dims.ndim < 3:
            return
        point = np.asarray(self.viewer.cursor.position, dtype=float)[-3:]
        try:
            text = self.describe(point)
        except (ValueError, IndexError, OSError):
            return
        coords = ", ".join(f"{v:.0f}" for v in point)
        try:
            self.cursor_label.setText(f"{text}  (AP, DV, ML = {coords} µm)")
        except RuntimeError:  # the dock was deleted: stop listening
            self.viewer.cursor.events.position.disconnect(self._on_cursor)

    def _error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Structures: {exc}")
