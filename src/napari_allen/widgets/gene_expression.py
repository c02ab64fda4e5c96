"""The "Gene expression" dock: one tab per job, each a thin view over a workflow.

- Search (:mod:`.ish_search`): find ISH experiments, load their grids, add the annotation;
- Per structure (:mod:`.ish_structures`): expression per structure of a loaded grid;
- Similarity (:mod:`.ish_similarity`): Allen's structure-similarity script;
- Whole plane (:mod:`.ish_plane`): plane stores, genes at the cursor, correlated genes.

Each tab has its own status row (progress, cancel) so a search never cancels a plane download.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QTabWidget, QWidget

from napari_allen.widgets._dock import AllenDock
from napari_allen.widgets.ish_plane import PlaneStoreTab
from napari_allen.widgets.ish_search import IshSearchTab
from napari_allen.widgets.ish_similarity import SimilarityTab
from napari_allen.widgets.ish_structures import StructureTableTab

if TYPE_CHECKING:
    import napari


class GeneExpressionWidget(AllenDock):
    """Dock widget: ISH search/load, per-structure table, structure similarity, whole plane."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.search_tab = IshSearchTab(napari_viewer)
        self.structures_tab = StructureTableTab(napari_viewer)
        self.similarity_tab = SimilarityTab(napari_viewer, self._selected_ids)
        self.plane_tab = PlaneStoreTab(napari_viewer)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.search_tab, "Search")
        self.tabs.addTab(self.structures_tab, "Per structure")
        self.tabs.addTab(self.similarity_tab, "Similarity")
        self.tabs.addTab(self.plane_tab, "Whole plane")
        # While a tab recomputes, exporting its table would save the previous result.
        self.structures_tab.runner.running_changed.connect(
            lambda running: self.structures_tab.export_button.setEnabled(not running))
        self.body_layout.addWidget(self.tabs)

    @property
    def runners(self) -> list:
        """Every tab's task runner (one status row each)."""
        return [self.search_tab.runner, self.search_tab.annotation_runner,
                self.structures_tab.runner,
                self.similarity_tab.runner, self.plane_tab.runner]

    def _selected_ids(self) -> list[int]:
        chosen = self.search_tab.selected_experiments()
        return chosen["experiment_id"].astype(int).tolist() if len(chosen) else []
