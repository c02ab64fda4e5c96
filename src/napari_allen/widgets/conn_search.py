"""Connectivity dock, search panel: find experiments by injection structure / line / target, or
by distance to a seed point; the results table the Load and Average tabs work on.

Wires to :func:`napari_allen.workflows.connectivity.search_experiments` and
:func:`~napari_allen.workflows.connectivity.search_near` (CLI ``napari-allen
search-connectivity [--near AP DV ML]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_allen.lazy import lazy_module
from napari_allen.parsing import split_list
from napari_allen.widgets._common import (
    DataFrameTable,
    WrappingLabel,
    cursor_position_um,
    shared_client,
    table_data,
)
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.workflows.connectivity import LINE_ANY, LINE_WILD_TYPE

pd = lazy_module("pandas")  # imported at first use: the docks open without it

if TYPE_CHECKING:
    import napari

#: Columns shown first in the results table (others stay for metadata). Distance first when
#: searching near a point: it is the ranking.
RESULT_COLUMNS = ["id", "structure_abbrev", "transgenic_line", "injection_volume",
                  "injection_x", "injection_y", "injection_z", "gender", "strain"]


def results_table(frame: pd.DataFrame):
    """Table data for the results (worker): wild type spelled out, API/distance order."""
    shown = frame.copy()
    if "transgenic_line" in shown:
        shown["transgenic_line"] = shown["transgenic_line"].fillna("").astype(str).str.strip() \
            .replace({"": LINE_WILD_TYPE})
    first = (["distance"] if "distance" in shown else []) + RESULT_COLUMNS
    return table_data(shown, first=first)


class ExperimentSearchPanel(QWidget):
    """Search form, results table and its status row; ``results`` is the last result frame."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._results_frame: pd.DataFrame | None = None  # no search yet (lazy pandas)
        box = QGroupBox("Find experiments", self)
        form = QFormLayout(box)
        self.structures_edit = QLineEdit(box)
        self.structures_edit.setPlaceholderText("injection structures, e.g. VIS, MOp")
        form.addRow("Injection", self.structures_edit)
        self.line_combo = QComboBox(box)
        self.line_combo.setEditable(True)  # type a Cre line name
        self.line_combo.addItems([LINE_ANY, LINE_WILD_TYPE])
        form.addRow("Line", self.line_combo)
        self.primary_check = QCheckBox("primary injection structure only", box)
        self.primary_check.setChecked(True)  # unchecked: any injection in the structures
        form.addRow("", self.primary_check)
        self.target_edit = QLineEdit(box)
        self.target_edit.setPlaceholderText("optional target domain, e.g. CP")
        form.addRow("Target", self.target_edit)
        self.search_button = QPushButton("Search", box)
        self.search_button.clicked.connect(self.search)
        self.structures_edit.returnPressed.connect(self.search)
        form.addRow(self.search_button)
        self.seed_edit = QLineEdit(box)
        self.seed_edit.setPlaceholderText("AP, DV, ML (µm)")
        self.cursor_button = QPushButton("Cursor", box)
        self.cursor_button.setToolTip("take the seed point from the viewer cursor")
        self.cursor_button.clicked.connect(self.seed_from_cursor)
        self.coord_button = QPushButton("Search near", box)
        self.coord_button.clicked.connect(self.search_coordinate)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_edit, 2)
        seed_row.addWidget(self.cursor_button)
        seed_row.addWidget(self.coord_button)
        form.addRow("Seed", seed_row)
        self.results = DataFrameTable(self)
        self.status = WrappingLabel("", self)
        self.runner = TaskRunner(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(box)
        layout.addWidget(self.runner.widget)
        layout.addWidget(self.status)
        layout.addWidget(self.results, 1)

    # --- searching ----------------------------------------------------------------------
    def search(self) -> None:
        structures = split_list(self.structures_edit.text())
        if not structures:
            self.status.setText("Type at least one injection structure (e.g. VISp)")
            return
        line = self.line_combo.currentText()
        primary = self.primary_check.isChecked()
        target = split_list(self.target_edit.text()) or None

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.connectivity import search_experiments

            progress_message(progress, "searching connectivity experiments")
            frame = search_experiments(shared_client(), structures, line=line,
                                       primary_structure_only=primary, target_domain=target)
            return frame, results_table(frame)

        self.runner.run(task, on_result=self._set_results,
                        description=f"Searching {', '.join(structures)}…")

    def seed_from_cursor(self) -> None:
        point = cursor_position_um(self.viewer)
        self.seed_edit.setText(", ".join(f"{v:.0f}" for v in point))

    def search_coordinate(self) -> None:
        if not self.seed_edit.text().strip():
            self.seed_from_cursor()
        try:
            seed = [float(v) for v in split_list(self.seed_edit.text())]
        except ValueError:
            seed = []
        if len(seed) != 3:
            self.status.setText("The seed point needs three numbers: AP, DV, ML (µm)")
            return
        line = self.line_combo.currentText()
        structures = split_list(self.structures_edit.text()) or None

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.connectivity import search_near

            progress_message(progress, "searching experiments near the seed point")
            frame = search_near(shared_client(), seed, structures=structures, line=line,
                                cancel=cancel)
            return frame, results_table(frame)

        self.runner.run(task, on_result=self._set_results,
                        description="Searching near the seed…")

    @property
    def results_frame(self) -> pd.DataFrame:
        """The last search's result rows (empty before the first search)."""
        if self._results_frame is None:
            self._results_frame = pd.DataFrame()
        return self._results_frame

    @results_frame.setter
    def results_frame(self, frame: pd.DataFrame) -> None:
        self._results_frame = frame

    def _set_results(self, payload) -> None:
        frame, table = payload
        self.results_frame = frame
        self.results.set_frame(table)
        self.status.setText(self.runner.with_note(f"{len(frame)} experiments"))
        # Offer the Cre lines seen so far in the line filter (the text typed stays).
        known = {self.line_combo.itemText(i) for i in range(self.line_combo.count())}
        if "transgenic_line" in frame:
            lines = set(frame["transgenic_line"].dropna().astype(str)) - known - {""}
            for name in sorted(lines):
                self.line_combo.addItem(name)

    # --- what the tabs work on ----------------------------------------------------------
    def selected_experiments(self, all_if_none: bool = False) -> pd.DataFrame:
        """The selected result rows (all rows if none selected and ``all_if_none``), with
        ``transgenic_line`` as the API gives it ('' = wild type)."""
        rows = self.results.selected_frame().index
        if not len(rows) and all_if_none:
            rows = self.results.frame().index
        return self.results_frame.iloc[np.asarray(rows, dtype=int)]


def progress_message(progress, message: str, done: int = 0, total: int | None = None) -> None:
    """Send a Progress snapshot through a TaskRunner's progress callback."""
    from napari_allen.progress import Progress

    progress(Progress(done=done, total=total, message=message))
