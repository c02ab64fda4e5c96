"""Gene expression dock, "Search" tab: find ISH experiments and load their 200 µm grids.

Wires the form to :func:`napari_allen.workflows.ish.search` and
:func:`~napari_allen.workflows.ish.iter_grids` (CLI: ``napari-allen search-ish`` and
``napari-allen download``); one status row for both (a load cancels a running search).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_allen.lazy import lazy_module
from napari_allen.parsing import split_list
from napari_allen.space import GRID_SHAPES, ISH_VOLUMES, SECTION_PLANES
from napari_allen.widgets._common import (
    DataFrameTable,
    WrappingLabel,
    find_annotation_layer,
    grid_annotation_layer,
    shared_client,
    show_grid_annotation,
    table_data,
)
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_and_focus_later
from napari_allen.workflows.ish import SEARCH_COLUMNS

pd = lazy_module("pandas")  # imported at first use: the docks open without it

if TYPE_CHECKING:
    import napari

PLANE_CHOICES = [*SECTION_PLANES, "both"]


def plane_choice(value: str) -> str | None:
    """Combo text -> the workflows' plane (None = both)."""
    return None if value == "both" else value


class IshSearchTab(QWidget):
    """Search form, results table (API order), volumes to load, Load / Add annotation."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._results: pd.DataFrame | None = None  # no search yet (lazy pandas)
        self.gene_edit = QLineEdit()
        self.gene_edit.setPlaceholderText("Nrp1, Pdyn*, Htr*  (wildcards *)")
        self.field_combo = QComboBox()
        self.field_combo.addItems(["acronym", "name"])
        self.plane_combo = QComboBox()
        self.plane_combo.addItems(PLANE_CHOICES)
        self.plane_combo.setCurrentText("both")
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        self.gene_edit.returnPressed.connect(self.search)
        form = QFormLayout()
        form.addRow("Gene", self.gene_edit)
        form.addRow("Match", self.field_combo)
        form.addRow("Plane", self.plane_combo)
        self.runner = TaskRunner(self)
        # Its own runner: adding the annotation never cancels a search or load. Sub-second
        # (napari's activity dock shows it): no row of its own; errors come as notifications.
        self.annotation_runner = TaskRunner(self)
        self.annotation_runner.widget.hide()
        self.status = WrappingLabel("")
        self.result_table = DataFrameTable()
        self.volume_boxes = {name: QCheckBox(name) for name in ISH_VOLUMES}
        self.volume_boxes["energy"].setChecked(True)
        volumes = QHBoxLayout()
        for box in self.volume_boxes.values():
            volumes.addWidget(box)
        self.load_button = QPushButton("Load selected")
        self.load_button.clicked.connect(self.load_selected)
        self.annotation_button = QPushButton("Add grid annotation")
        self.annotation_button.clicked.connect(self.add_annotation)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.annotation_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.search_button)
        layout.addWidget(self.status)
        layout.addWidget(self.result_table, 1)
        layout.addLayout(volumes)
        layout.addLayout(buttons)
        layout.addWidget(self.runner.widget)

    def search(self) -> None:
        """Search ISH experiments (worker); a newer search makes an older one stale."""
        genes = split_list(self.gene_edit.text())
        if not genes:
            self.status.setText("Type a gene acronym or name first")
            return
        plane = plane_choice(self.plane_combo.currentText())
        field = self.field_combo.currentText()

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.ish import search

            frame = search(shared_client(), genes, plane=plane, field=field,
                           progress=progress, cancel=cancel)
            shown = [c for c in SEARCH_COLUMNS if c in frame.columns]
            return frame, table_data(frame[shown])

        self.runner.run(task, on_result=self._show_results,
                        description=f"Searching {', '.join(genes)}…")

    @property
    def results(self) -> pd.DataFrame:
        """The last search's experiments (no rows before the first search)."""
        if self._results is None:
            self._results = pd.DataFrame(columns=SEARCH_COLUMNS)
        return self._results

    @results.setter
    def results(self, frame: pd.DataFrame) -> None:
        self._results = frame

    def _show_results(self, payload: tuple[pd.DataFrame, Any]) -> None:
        self.results, table = payload
        self.result_table.set_frame(table)
        self.status.setText(self.runner.with_note(f"{len(self.results)} experiments"))

    def selected_experiments(self) -> pd.DataFrame:
        """The selected search results (all columns)."""
        chosen = self.result_table.selected_frame()
        if chosen.empty:
            return chosen
        ids = set(chosen["experiment_id"].astype(int))
        return self.results[self.results["experiment_id"].astype(int).isin(ids)]

    def load_selected(self) -> None:
        """Load the selected experiments' grids as image layers, one by one as they arrive."""
        rows = self.selected_experiments().to_dict("records")
        volumes = [name for name, box in self.volume_boxes.items() if box.isChecked()]
        if not rows or not volumes:
            self.status.setText("Select experiments and at least one volume")
            return

        def task(*, progress, cancel, emit):
            from napari_allen.layers.focus import with_focus_point
            from napari_allen.layers.prebuilt import build_layer
            from napari_allen.layers.volumes import image_layer
            from napari_allen.workflows.ish import iter_grids

            for vol in iter_grids(shared_client(), rows, volumes, progress=progress,
                                  cancel=cancel):
                # The next grid is fetched once napari has shown this one (no GIL contest
                # with napari's steps for the layer: conn_load does the same).
                emit(build_layer(with_focus_point(image_layer(vol))), wait=True)
            return len(rows)

        self.runner.run(task, on_partial=self._add_and_focus,
                        on_result=lambda n: self.status.setText(
                            self.runner.with_note(f"loaded {n} experiment(s)")),
                        description=f"Loading {len(rows)} experiments…")

    def _add_and_focus(self, layer) -> None:
        add_and_focus_later(self.viewer, self.runner, layer)  # sliders to the expression peak

    def add_annotation(self) -> Any:
        """The 200 µm gridAnnotation Labels: the viewer's (e.g. the sample's, whatever its
        name), returned now; else built in a worker and added in turns (returns None)."""
        existing = find_annotation_layer(self.viewer, 200.0, GRID_SHAPES[200])
        if existing is not None:
            return existing

        def task(*, progress, cancel, emit):
            return grid_annotation_layer()

        self.annotation_runner.run(
            task, on_result=lambda layer: show_grid_annotation(self.viewer,
                                                               self.annotation_runner, layer),
            description="Adding the grid annotation…")
        return None
