"""Connectivity dock, "Threshold" tab: significant projections of an image layer inside a
target region, as a mask layer and a per-structure table (most significant voxels first).
The pipeline is :func:`napari_allen.workflows.threshold.threshold_in_regions` (CLI
``napari-allen threshold-projection``); mask layer and table model are built in the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_allen.parsing import split_list
from napari_allen.widgets._common import (
    DataFrameTable,
    WrappingLabel,
    table_data,
)
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_in_turns

if TYPE_CHECKING:
    import napari

FIRST_COLUMNS = ["acronym", "n_significant", "fraction_significant", "mean_density", "name"]


class ThresholdTab(QWidget):
    """Layer, region, method and value; Threshold; the table and its CSV export."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        from napari_allen.analysis.projections import THRESHOLD_METHODS

        super().__init__(parent)
        self.viewer = viewer
        self.result = None
        form = QFormLayout()
        self.threshold_layer_combo = QComboBox()
        self.threshold_layer_combo.setToolTip("a 3-D projection image layer on a CCF grid")
        form.addRow("Layer", self.threshold_layer_combo)
        self.target_region_edit = QLineEdit()
        self.target_region_edit.setPlaceholderText("target region, e.g. SSp (empty: brain)")
        form.addRow("Region", self.target_region_edit)
        self.method_combo = QComboBox()
        self.method_combo.addItems(list(THRESHOLD_METHODS))
        form.addRow("Method", self.method_combo)
        self.threshold_value = QDoubleSpinBox()
        self.threshold_value.setDecimals(4)
        self.threshold_value.setRange(-1e6, 1e6)
        self.threshold_value.setValue(95.0)
        form.addRow("Value", self.threshold_value)
        self.threshold_button = QPushButton("Threshold → mask + table")
        self.threshold_button.clicked.connect(self.threshold)
        self.structure_table = DataFrameTable()
        export = QPushButton("Export structure table CSV…")
        export.clicked.connect(lambda: self.structure_table.export_csv())
        self.status = WrappingLabel("")
        self.runner = TaskRunner(self)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.threshold_button)
        layout.addWidget(self.status)
        layout.addWidget(self.structure_table, 1)
        layout.addWidget(export)
        layout.addWidget(self.runner.widget)
        viewer.layers.events.inserted.connect(self.refresh_layers)
        viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()

    def refresh_layers(self, event=None) -> None:
        """Offer the 3-D image layers (the newest selected unless one was chosen)."""
        from napari.layers import Image

        current = self.threshold_layer_combo.currentText()
        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Image) and layer.ndim == 3]
        self.threshold_layer_combo.clear()
        self.threshold_layer_combo.addItems(names)
        if current in names:
            self.threshold_layer_combo.setCurrentText(current)
        elif names:
            self.threshold_layer_combo.setCurrentIndex(len(names) - 1)

    def threshold(self) -> None:
        name = self.threshold_layer_combo.currentText()
        if not name or name not in self.viewer.layers:
            self.status.setText("Choose a 3-D projection image layer")
            return
        layer = self.viewer.layers[name]
        data = layer.data  # read in the worker
        resolution = float(layer.scale[-1])
        regions = split_list(self.target_region_edit.text()) or ["root"]
        method = self.method_combo.currentText()
        value = float(self.threshold_value.value())

        def task(*, progress, cancel, emit):
            import numpy as np

            from napari_allen.layers.connectivity import mask_layer
            from napari_allen.layers.prebuilt import build_layer
            from napari_allen.workflows.threshold import threshold_in_regions

            result = threshold_in_regions(np.asarray(data), resolution, regions=regions,
                                          method=method, value=value, progress=progress,
                                          cancel=cancel)
            layer = build_layer(mask_layer(result.mask, resolution,
                                           metadata={"source_layer": name, **result.metadata},
                                           name=f"significant ({method} {value:g}) in "
                                                f"{'+'.join(regions)}: {name}"))
            return result, layer, table_data(result.table, first=FIRST_COLUMNS)

        self.runner.run(task, on_result=self._show, description=f"Thresholding {name}…")

    def _show(self, value) -> None:
        result, layer_tuple, table = value
        self.result = result
        add_in_turns(self.viewer, self.runner, layer_tuple)  # napari's steps in later turns
        self.structure_table.set_frame(table)
        self.status.setText(result.summary())
