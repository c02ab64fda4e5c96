"""The "Connectivity" dock: find experiments (:mod:`.conn_search`), then one tab per job —
Load (:mod:`.conn_load`), Average (:mod:`.conn_average`), Threshold (:mod:`.conn_threshold`).
Each part has its own status row; all work runs in workers through the workflows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QTabWidget, QWidget

from napari_allen.widgets._dock import AllenDock
from napari_allen.widgets.conn_average import AverageTab
from napari_allen.widgets.conn_load import LoadTab
from napari_allen.widgets.conn_search import ExperimentSearchPanel
from napari_allen.widgets.conn_threshold import ThresholdTab

if TYPE_CHECKING:
    import napari


class ConnectivityWidget(AllenDock):
    """Dock widget for the Allen Mouse Connectivity Atlas (see module docstring)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.search_panel = ExperimentSearchPanel(napari_viewer)
        self.load_tab = LoadTab(napari_viewer, self.search_panel.selected_experiments)
        self.average_tab = AverageTab(
            napari_viewer, lambda: self.search_panel.selected_experiments(all_if_none=True),
            self.load_tab.volume_source)
        self.threshold_tab = ThresholdTab(napari_viewer)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.load_tab, "Load")
        self.tabs.addTab(self.average_tab, "Average")
        self.tabs.addTab(self.threshold_tab, "Threshold")
        # A running search is about to replace the results: Load/Average would use stale rows.
        for button in (self.load_tab.load_button, self.load_tab.meshes_button,
                       self.average_tab.average_button):
            self.search_panel.runner.running_changed.connect(
                lambda running, b=button: b.setEnabled(not running))
        self.body_layout.addWidget(self.search_panel, 1)
        self.body_layout.addWidget(self.tabs, 1)

    @property
    def runners(self) -> list:
        """Every part's task runner (one status row each)."""
        return [self.search_panel.runner, self.load_tab.runner, self.average_tab.runner,
                self.threshold_tab.runner]
