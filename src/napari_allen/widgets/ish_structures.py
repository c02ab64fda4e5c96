"""Gene expression dock, "Per structure" tab: mean/max expression per structure (rolled up)
of a loaded 200 µm grid layer, highest mean first, computed in a worker
(:func:`napari_allen.workflows.ish.structure_table`; CLI ``napari-allen expression-table``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_allen.widgets._common import DataFrameTable, WrappingLabel, table_data
from napari_allen.widgets._tasks import TaskRunner

if TYPE_CHECKING:
    import napari

#: Columns shown left so the name and the value are on screen in a narrow dock.
FIRST_COLUMNS = ["acronym", "mean", "max", "n_valid", "name", "structure_id"]
ISH_GRID_SHAPE = (67, 41, 58)


class StructureTableTab(QWidget):
    """Layer choice, "Expression per structure", the table and CSV export."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.table = None  # the last per-structure DataFrame
        self.layer_combo = QComboBox()
        self.table_button = QPushButton("Expression per structure")
        self.table_button.clicked.connect(self.compute_structure_table)
        self.structure_table = DataFrameTable()
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(lambda: self.structure_table.export_csv())
        self.status = WrappingLabel("")
        self.runner = TaskRunner(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Layer"))
        row.addWidget(self.layer_combo, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.table_button)
        layout.addWidget(self.status)
        layout.addWidget(self.structure_table, 1)
        layout.addWidget(self.export_button)
        layout.addWidget(self.runner.widget)
        viewer.layers.events.inserted.connect(self.refresh_layers)
        viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    def refresh_layers(self, event=None) -> None:
        """Offer the 200 µm grid image layers."""
        from napari.layers import Image

        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        self.layer_combo.addItems([layer.name for layer in self.viewer.layers
                                   if isinstance(layer, Image)
                                   and tuple(layer.data.shape) == ISH_GRID_SHAPE])
        if current:
            self.layer_combo.setCurrentText(current)

    def compute_structure_table(self) -> None:
        """Per-structure expression of the chosen layer (worker; the table model too)."""
        name = self.layer_combo.currentText()
        if not name or name not in self.viewer.layers:
            self.status.setText("Load a 200 µm expression grid first")
            return
        data = self.viewer.layers[name].data  # read in the worker (may be lazy)

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.ish import structure_table

            table = structure_table(data)
            return table, table_data(table, first=FIRST_COLUMNS, sort_by="mean")

        self.runner.run(task, on_result=lambda payload: self._show(name, *payload),
                        description=f"Expression per structure of {name}…")

    def _show(self, name: str, table, prepared) -> None:
        self.table = table
        self.structure_table.set_frame(prepared)
        best = table[table["n_valid"] > 0].sort_values("mean", ascending=False).head(1)
        hint = f"; highest mean: {best.iloc[0]['acronym']}" if len(best) else ""
        self.status.setText(f"{name}: {len(table)} structures{hint}")
