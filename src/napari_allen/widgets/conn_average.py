"""Connectivity dock, "Average" tab: average projection density per group
(:func:`napari_allen.workflows.connectivity.average_experiments`; CLI ``napari-allen
average-projections``). Layers and the metadata table are built in the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_allen.lazy import lazy_module
from napari_allen.parsing import parse_region_groups
from napari_allen.widgets._common import (
    DataFrameTable,
    WrappingLabel,
    shared_client,
    table_data,
)
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_in_turns

pd = lazy_module("pandas")  # imported at first use: the docks open without it

if TYPE_CHECKING:
    import napari


class AverageTab(QWidget):
    """Normalisation, hemisphere subtraction, grouping; Average; the per-experiment table."""

    def __init__(self, viewer: napari.Viewer, selected: Callable[[], pd.DataFrame],
                 volume_source: Callable[[], tuple[str, int]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._selected = selected
        self._volume_source = volume_source
        self.average_result = None
        form = QFormLayout()
        self.normalize_combo = QComboBox()
        self.normalize_combo.addItems(["none", "injection volume"])
        form.addRow("Normalise", self.normalize_combo)
        self.subtract_check = QCheckBox("subtract other hemisphere")
        form.addRow("", self.subtract_check)
        self.ipsi_combo = QComboBox()
        self.ipsi_combo.addItems(["right", "left", "own side"])
        form.addRow("Injections on", self.ipsi_combo)
        self.group_combo = QComboBox()
        self.group_combo.addItems(["none", "AP", "ML", "DV", "regions"])
        form.addRow("Group by", self.group_combo)
        self.bins_spin = QSpinBox()
        self.bins_spin.setRange(1, 50)
        self.bins_spin.setValue(5)
        form.addRow("Bins", self.bins_spin)
        self.regions_edit = QLineEdit()
        self.regions_edit.setPlaceholderText("visual=VIS; motor=MOp,MOs")
        form.addRow("Region groups", self.regions_edit)
        self.stack_check = QCheckBox("one layer with a group axis")
        form.addRow("", self.stack_check)
        self.individual_check = QCheckBox("also show each processed experiment")
        self.individual_check.setToolTip("keeps every volume in memory (4.8 MB each at 100 µm)")
        form.addRow("", self.individual_check)
        self.average_button = QPushButton("Average selected (all if none)")
        self.average_button.clicked.connect(self.average)
        self.average_table = DataFrameTable()
        self.export_button = QPushButton("Export metadata CSV…")
        self.export_button.clicked.connect(lambda: self.average_table.export_csv())
        self.status = WrappingLabel("")
        self.runner = TaskRunner(self)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.average_button)
        layout.addWidget(self.status)
        layout.addWidget(self.average_table, 1)
        layout.addWidget(self.export_button)
        layout.addWidget(self.runner.widget)

    def averaging_options(self):
        """The form as :class:`~napari_allen.analysis.projections.AveragingOptions`
        (``ValueError`` for malformed region groups)."""
        from napari_allen.analysis.projections import AveragingOptions

        group = self.group_combo.currentText().lower()
        return AveragingOptions(
            normalization="injection_volume"
            if self.normalize_combo.currentText() == "injection volume" else "none",
            subtract_hemisphere=self.subtract_check.isChecked(),
            ipsilateral={"own side": None}.get(self.ipsi_combo.currentText(),
                                               self.ipsi_combo.currentText()),
            group_by=group,
            bins=self.bins_spin.value(),
            region_groups=parse_region_groups(self.regions_edit.text())
            if group == "regions" else None,
            keep_individual=self.individual_check.isChecked(),
        )

    def average(self) -> None:
        frame = self._selected()
        if frame.empty:
            self.status.setText("Search for experiments first")
            return
        try:
            options = self.averaging_options()
        except (ValueError, KeyError) as exc:
            self.status.setText(str(exc))
            return
        source, resolution = self._volume_source()
        stack = self.stack_check.isChecked()

        def task(*, progress, cancel, emit):
            from napari_allen.layers.connectivity import average_layers, individual_stack_layer
            from napari_allen.layers.prebuilt import build_layers
            from napari_allen.workflows.connectivity import average_experiments

            result = average_experiments(shared_client(), frame, options,
                                         resolution=resolution, source=source,
                                         progress=progress, cancel=cancel)
            layers = average_layers(result, stack=stack)
            individual = individual_stack_layer(result)
            if individual is not None:
                layers.append(individual)
            result.individual = None  # the layer holds the stack now
            return result, build_layers(layers), table_data(result.table)

        self.runner.run(task, on_result=self._show,
                        description=f"Averaging {len(frame)} experiment(s)…")

    def _show(self, value) -> None:
        result, layers, table = value
        self.average_result = result
        for layer_tuple in layers:  # one napari step per event-loop turn
            add_in_turns(self.viewer, self.runner, layer_tuple)
        self.average_table.set_frame(table)
        text = f"{len(result.groups)} group(s) from {len(result.table)} experiment(s)"
        if result.skipped:
            from napari.utils.notifications import show_warning

            skipped = "; ".join(f"{k}: {v}" for k, v in list(result.skipped.items())[:3])
            text += f"; {len(result.skipped)} skipped ({skipped})"
            show_warning(f"Connectivity: {len(result.skipped)} experiment(s) skipped: {skipped}")
        self.status.setText(self.runner.with_note(text))
