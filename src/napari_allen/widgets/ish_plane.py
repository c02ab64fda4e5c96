"""Gene expression dock, "Whole plane" tab: download a plane into a store, open it as one lazy
4-D layer that names the gene under the slider, and ask it questions.

Wires to :func:`napari_allen.workflows.plane_download.download_plane` (``napari-allen
plane-store``), :func:`napari_allen.workflows.store_queries.genes_at` (``napari-allen
genes-at``) and :func:`~napari_allen.workflows.store_queries.correlated_genes`
(``napari-allen gene-correlation``). One status row for the tab. The store's layer is built
in the worker and added in turns; the tables come from ready arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_allen.parsing import split_list
from napari_allen.space import SECTION_PLANES
from napari_allen.widgets._common import (
    DataFrameTable,
    WrappingLabel,
    cursor_position_um,
    shared_client,
    table_data,
)
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_in_turns

if TYPE_CHECKING:
    import napari

RANK_MODES = {"voxel at cursor": "voxel", "structure at cursor": "structure"}


def _store_layer(path, progress):
    """Worker side: the store's lazy 4-D image layer, built (contrast limits from a few
    volumes, napari's first slice) away from the main thread."""
    from napari_allen.layers.expression import plane_store_layers
    from napari_allen.layers.prebuilt import build_layer
    from napari_allen.progress import report

    report(progress, done=0, total=None, message="opening the store")
    (layer_tuple,) = plane_store_layers(path)
    return build_layer(layer_tuple)


class PlaneStoreTab(QWidget):
    """Store download/open, current gene, "Which genes are high here?", correlated genes."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.store_layer = None
        self.store_plane = QComboBox()
        self.store_plane.addItems(list(SECTION_PLANES))
        self.store_path = QLineEdit()
        self.store_path.setPlaceholderText("folder for the store, e.g. coronal.zarr")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_store)
        path_row = QHBoxLayout()
        path_row.addWidget(self.store_path, 1)
        path_row.addWidget(browse)
        self.store_genes = QLineEdit()
        self.store_genes.setPlaceholderText("optional genes, e.g. Nrp1 Pdyn Htr* (empty: all)")
        self.store_genes.setToolTip("download only these genes' experiments of the plane "
                                    "(the CLI's plane-store --genes ... --only-plane)")
        self.store_jobs = QSpinBox()
        self.store_jobs.setRange(1, 64)
        self.store_jobs.setValue(8)
        self.download_button = QPushButton("Download plane into store")
        self.download_button.clicked.connect(self.download_plane)
        self.open_button = QPushButton("Open store")
        self.open_button.clicked.connect(lambda: self.open_store())
        self.current_gene = WrappingLabel("current gene: (no store open)")
        self.rank_mode = QComboBox()
        self.rank_mode.addItems(list(RANK_MODES))
        self.rank_structure = QLineEdit()
        self.rank_structure.setPlaceholderText("optional acronym, e.g. CA1 (overrides cursor)")
        self.rank_top = QSpinBox()
        self.rank_top.setRange(1, 100_000)
        self.rank_top.setValue(50)
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText("optional dask scheduler, e.g. tcp://host:8786")
        self.rank_button = QPushButton("Which genes are high here?")
        self.rank_button.clicked.connect(self.rank_genes)
        self.similar_button = QPushButton("Genes correlated with the current gene")
        self.similar_button.clicked.connect(self.correlate_current_gene)
        self.status = WrappingLabel("")
        self.rank_table = DataFrameTable()
        self.runner = TaskRunner(self)

        form = QFormLayout()
        form.addRow("Plane", self.store_plane)
        form.addRow("Store", path_row)
        form.addRow("Genes", self.store_genes)
        form.addRow("Parallel downloads", self.store_jobs)
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.open_button)
        rank_form = QFormLayout()
        rank_form.addRow("Rank by", self.rank_mode)
        rank_form.addRow("Structure", self.rank_structure)
        rank_form.addRow("Show top", self.rank_top)
        rank_form.addRow("Scheduler", self.scheduler_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.current_gene)
        layout.addLayout(rank_form)
        layout.addWidget(self.rank_button)
        layout.addWidget(self.similar_button)
        layout.addWidget(self.status)
        layout.addWidget(self.rank_table, 1)
        layout.addWidget(self.runner.widget)
        viewer.dims.events.current_step.connect(self._update_current_gene)
        viewer.layers.events.removed.connect(self._forget_removed_store)

    # --- store --------------------------------------------------------------------------
    def _browse_store(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Plane store folder")
        if path:
            self.store_path.setText(path)

    def download_plane(self) -> None:
        """Download every ISH experiment of the plane (or of the genes typed, in that plane)
        into the store (resumable), then open it."""
        out = self.store_path.text().strip()
        if not out:
            self.status.setText("Choose a store folder first")
            return
        plane = self.store_plane.currentText()
        genes = split_list(self.store_genes.text()) or None
        jobs = int(self.store_jobs.value())

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.plane_download import download_plane

            result = download_plane(shared_client(), out, plane=plane, genes=genes, jobs=jobs,
                                    progress=progress, cancel=cancel)
            return result, _store_layer(out, progress)

        def done(payload) -> None:
            result, layer = payload
            self.status.setText(result.summary())
            self._show_store(layer)

        self.runner.run(task, on_result=done, description=f"Downloading {plane}…")

    def open_store(self, path: str | None = None) -> None:
        """Open a plane store as one lazy 4-D layer (built in a worker, added in turns) and
        follow its current gene (:attr:`store_layer` once it is shown)."""
        path = path or self.store_path.text().strip()
        if not path:
            path = QFileDialog.getExistingDirectory(self, "Open plane store")
            if not path:
                return
        self.store_path.setText(str(path))

        def task(*, progress, cancel, emit):
            return _store_layer(path, progress)

        self.runner.run(task, on_result=self._show_store, description=f"Opening {path}…")

    def _show_store(self, layer) -> None:
        def shown(added) -> None:
            self.store_layer = added
            self._update_current_gene()

        add_in_turns(self.viewer, self.runner, layer, then=shown)

    def _forget_removed_store(self, event=None) -> None:
        if self.store_layer is not None and self.store_layer not in self.viewer.layers:
            self.store_layer = None
            self.current_gene.setText("current gene: (no store open)")

    def current_store_index(self) -> int | None:
        """The experiment-axis index the viewer shows for the store layer."""
        layer = self.store_layer
        if layer is None or layer not in self.viewer.layers:
            return None
        world = np.asarray(self.viewer.dims.point, dtype=float)
        data = np.asarray(layer.world_to_data(world[-layer.ndim:]), dtype=float)
        return int(np.clip(round(data[0]), 0, layer.data.shape[0] - 1))

    def current_experiment(self) -> dict | None:
        from napari_allen.layers.expression import experiment_at

        index = self.current_store_index()
        return None if index is None else experiment_at(self.store_layer.metadata, index)

    def _update_current_gene(self, event=None) -> None:
        # Runs on every slider move: without a store, nothing to do (and nothing to import on
        # the main thread - the expression layers module pulls in the analysis stack).
        if self.store_layer is not None:
            from napari_allen.layers.expression import describe_experiment

            self.current_gene.setText(
                f"current gene: {describe_experiment(self.current_experiment())}")

    def _store_path(self) -> str | None:
        from napari_allen.layers.expression import STORE_META_KEY

        layer = self.store_layer
        if layer is None or layer not in self.viewer.layers:
            self.status.setText("Open a plane store first")
            return None
        return layer.metadata[STORE_META_KEY]["path"]

    # --- questions ----------------------------------------------------------------------
    def rank_genes(self) -> None:
        """Rank the store's genes at the cursor voxel, its structure, or a named structure."""
        path = self._store_path()
        if path is None:
            return
        point = cursor_position_um(self.viewer)
        structure = self.rank_structure.text().strip() or None
        mode = RANK_MODES[self.rank_mode.currentText()]
        top = int(self.rank_top.value())

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.store_queries import genes_at

            answer = genes_at(path, point_um=point, structure=structure, mode=mode, top=top,
                              progress=progress, cancel=cancel)
            return answer, table_data(answer.ranked, first=["rank", "gene", "value"])

        def show(payload) -> None:
            answer, table = payload
            self.rank_table.set_frame(table)
            self.status.setText(f"top genes at {answer.where}: {len(answer.ranked)} shown")

        self.runner.run(task, on_result=show, description="Ranking genes…")

    def correlate_current_gene(self) -> None:
        """Rank the store's experiments by voxel-level correlation (brain voxels, pairwise-
        complete) with the experiment under the slider; dask, optionally on a cluster."""
        from napari_allen.layers.expression import describe_experiment

        path = self._store_path()
        row = self.current_experiment()
        if path is None or row is None:
            return
        seed = int(row["experiment_id"])
        scheduler = self.scheduler_edit.text().strip() or None
        top = int(self.rank_top.value())

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.store_queries import correlated_genes

            frame = correlated_genes(path, [seed], top=top, scheduler=scheduler,
                                     progress=progress, cancel=cancel)
            frame = frame.drop(columns=["seed_experiment_id", "seed_gene"])
            return frame, table_data(frame, first=["gene", "r"])

        def show(payload) -> None:
            frame, table = payload
            self.rank_table.set_frame(table)
            self.status.setText(f"correlated with {describe_experiment(row)}: "
                                f"{len(frame)} shown")

        self.runner.run(task, on_result=show, description="Correlating genes…")
