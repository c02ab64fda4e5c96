"""Gene expression dock, "Similarity" tab: Allen's structure-similarity script.

Wires the form to :func:`napari_allen.workflows.structure_similarity.run_structure_similarity`
(CLI: ``napari-allen correlate``, same options incl. plane store and dask scheduler); the lines
layer and the grid annotation's Labels are built in the worker (added in turns); the heatmap
shows the structure x structure matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_allen.parsing import split_list
from napari_allen.widgets._common import (
    WrappingLabel,
    grid_annotation_layer,
    shared_client,
    show_grid_annotation,
)
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_in_turns
from napari_allen.widgets.ish_search import PLANE_CHOICES, plane_choice

if TYPE_CHECKING:
    import napari

    from napari_allen.workflows.structure_similarity import SimilarityOutcome

SIMILARITY_MODES = ["genes", "whole plane", "selected search results"]


class CorrelationHeatmap(QLabel):
    """The structure x structure correlation matrix as a picture (blue -1, white 0, red +1,
    grey = no value); hovering names the two structures and r."""

    SIZE = 280

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFixedSize(self.SIZE, self.SIZE)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setText("no correlation computed yet")
        self._corr: np.ndarray | None = None
        self._acronyms: list[str] = []

    def set_matrix(self, corr: np.ndarray, acronyms: list[str], rgba: np.ndarray) -> None:
        """Show ``rgba`` (:func:`~napari_allen.layers.expression.heatmap_rgba` of ``corr``,
        made in the worker)."""
        self._corr = np.asarray(corr)
        self._acronyms = list(acronyms)
        rgba = np.ascontiguousarray(rgba)
        h, w = rgba.shape[:2]
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self.setPixmap(QPixmap.fromImage(image).scaled(
            self.SIZE, self.SIZE, Qt.AspectRatioMode.IgnoreAspectRatio,
            Qt.TransformationMode.FastTransformation))

    def describe_at(self, x: float, y: float) -> str:
        """Text for the widget pixel (x, y): ``"VISp × VISl: r = 0.91"``."""
        if self._corr is None or not len(self._acronyms):
            return ""
        n = len(self._acronyms)
        row = min(n - 1, max(0, int(y / self.SIZE * n)))
        col = min(n - 1, max(0, int(x / self.SIZE * n)))
        value = self._corr[row, col]
        r = "no value" if np.isnan(value) else f"r = {value:.3f}"
        return f"{self._acronyms[row]} × {self._acronyms[col]}: {r}"

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt override
        pos = event.position() if hasattr(event, "position") else event.pos()
        self.setToolTip(self.describe_at(pos.x(), pos.y()))
        super().mouseMoveEvent(event)


class SimilarityTab(QWidget):
    """Experiments (genes / whole plane / selected results), matrix source, correlation
    method, TOP_N, optional plane store and dask scheduler; lines + heatmap; save."""

    def __init__(self, viewer: napari.Viewer, selected_ids: Callable[[], list[int]],
                 parent: QWidget | None = None) -> None:
        from napari_allen.analysis.correlation import DEFAULT_TOP_N, METHODS
        from napari_allen.workflows import MATRIX_SOURCES as SOURCES  # no HTTP stack import

        super().__init__(parent)
        self.viewer = viewer
        self._selected_ids = selected_ids
        self.similarity: SimilarityOutcome | None = None
        self.sim_mode = QComboBox()
        self.sim_mode.addItems(SIMILARITY_MODES)
        self.sim_genes = QLineEdit()
        self.sim_genes.setPlaceholderText("genes, e.g. Nrp1 Pdyn Htr*")
        self.sim_plane = QComboBox()
        self.sim_plane.addItems(PLANE_CHOICES)
        self.sim_source = QComboBox()
        self.sim_source.addItems(list(SOURCES))
        self.sim_method = QComboBox()
        self.sim_method.addItems(list(METHODS))
        self.top_n = QSpinBox()
        self.top_n.setRange(1, 10_000_000)
        self.top_n.setValue(DEFAULT_TOP_N)
        self.first_n = QSpinBox()
        self.first_n.setRange(0, 1_000_000)
        self.first_n.setSpecialValueText("all")  # 0 = every data set of the plane
        self.first_n.setToolTip("whole plane: only the first N data sets of the listing (the "
                                "script's <nprobes>)")
        self.sim_store = QLineEdit()
        self.sim_store.setPlaceholderText("optional plane store (grids read from it)")
        self.sim_scheduler = QLineEdit()
        self.sim_scheduler.setPlaceholderText("optional dask scheduler, e.g. tcp://host:8786")
        form = QFormLayout()
        form.addRow("Experiments", self.sim_mode)
        form.addRow("Genes", self.sim_genes)
        form.addRow("Plane", self.sim_plane)
        form.addRow("Expression from", self.sim_source)
        form.addRow("Correlation", self.sim_method)
        form.addRow("TOP_N", self.top_n)
        form.addRow("First N data sets", self.first_n)
        form.addRow("Store", self.sim_store)
        form.addRow("Scheduler", self.sim_scheduler)
        self.sim_button = QPushButton("Correlate structures")
        self.sim_button.clicked.connect(self.run_similarity)
        self.runner = TaskRunner(self)
        self.heatmap = CorrelationHeatmap()
        self.status = WrappingLabel("")
        self.save_button = QPushButton("Save JSON + CSV…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(lambda: self.save_similarity())
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.sim_button)
        layout.addWidget(self.status)
        layout.addWidget(self.heatmap, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.save_button)
        layout.addWidget(self.runner.widget)

    def options(self) -> dict | None:
        """The form as ``run_structure_similarity`` keywords (None + a message if incomplete)."""
        mode = self.sim_mode.currentText()
        plane = plane_choice(self.sim_plane.currentText())
        genes = split_list(self.sim_genes.text())
        store = self.sim_store.text().strip() or None
        selected = self._selected_ids() if mode == "selected search results" else []
        problem = {
            "genes": "Type genes first" if not genes else "",
            "whole plane": "Choose coronal or sagittal (or a plane store) for a whole plane"
            if plane is None and store is None else "",
            "selected search results": "Select search results first" if not selected else "",
        }[mode]
        if problem:
            self.status.setText(problem)
            return None
        return {
            "experiments": selected or None,
            "genes": genes if mode == "genes" else None,
            "plane": plane,
            "source": "grids" if store else self.sim_source.currentText(),
            "method": self.sim_method.currentText(),
            "top_n": int(self.top_n.value()),
            "first": (int(self.first_n.value()) or None) if mode == "whole plane" else None,
            "store": store,
            "scheduler": self.sim_scheduler.text().strip() or None,
        }

    def run_similarity(self) -> None:
        """Run the workflow in a worker (lines layer and heatmap image built there too)."""
        options = self.options()
        if options is None:
            return

        def task(*, progress, cancel, emit):
            from napari_allen.atlas.annotation import grid_annotation
            from napari_allen.atlas.ontology import Ontology
            from napari_allen.layers.expression import connections_layer, heatmap_rgba
            from napari_allen.layers.prebuilt import build_layer
            from napari_allen.workflows.structure_similarity import (
                run_structure_similarity,
                structure_acronyms,
            )

            outcome = run_structure_similarity(shared_client(), progress=progress,
                                               cancel=cancel, **options)
            onto = Ontology.default()
            annotation = grid_annotation()
            # Built here: a Shapes layer triangulates every line when constructed.
            layer = build_layer(connections_layer(outcome.similarity.connections,
                                                  np.asarray(annotation.data),
                                                  annotation.resolution, onto))
            acronyms = structure_acronyms(outcome.similarity.structure_ids, onto)
            values = outcome.similarity.values  # numpy's masked entries as NaN (grey)
            return (outcome, acronyms, values, heatmap_rgba(values), layer,
                    grid_annotation_layer())

        self.save_button.setEnabled(False)  # the shown result is about to be replaced
        self.runner.run(task, on_result=self._show, on_cancel=self._restore_save,
                        on_error=lambda exc: self._restore_save(),
                        description="Correlating structures…")

    def _restore_save(self) -> None:
        self.save_button.setEnabled(self.similarity is not None)

    def _show(self, payload) -> None:
        outcome, acronyms, values, rgba, layer, annotation = payload
        self.similarity = outcome
        self.heatmap.set_matrix(values, acronyms, rgba)
        # napari's steps in later turns, the annotation first (unless the viewer has one)
        show_grid_annotation(self.viewer, self.runner, annotation)
        add_in_turns(self.viewer, self.runner, layer)
        self.status.setText(self.runner.with_note(outcome.summary()))
        self.save_button.setEnabled(True)

    def save_similarity(self, prefix: str | None = None) -> dict | None:
        """Write PREFIX.structures/.connections/.correlations.json and the CSVs."""
        if self.similarity is None:
            return None
        if prefix is None:
            prefix, _ = QFileDialog.getSaveFileName(self, "Save correlation (prefix)",
                                                    "out.json", "JSON (*.json)")
            if not prefix:
                return None
        paths = self.similarity.write(prefix)
        self.status.setText(f"saved {', '.join(p.name for p in paths.values())} in "
                            f"{paths['structures'].parent}")
        return paths
