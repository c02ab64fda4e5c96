"""The "Gene expression" dock widget: search ISH experiments, load grids, per-structure tables,
structure similarity (Allen's correlation script) and the whole-plane atlas.

A thin view. Searches, downloads and computations run through
:class:`~napari_allen.widgets._tasks.TaskRunner` (progress, cancel, stale results dropped),
one runner per section so a new search never cancels a plane download. The work itself lives
in :mod:`napari_allen.workflows.plane_download`, :mod:`napari_allen.analysis.expression`,
:mod:`napari_allen.analysis.correlation`, :mod:`napari_allen.io.plane_store` and
:mod:`napari_allen.layers.expression`; layers are added on the main thread only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_allen.parsing import split_list
from napari_allen.widgets._common import (
    DataFrameTable,
    add_layer_tuple,
    cursor_position_um,
    data_source_label,
    shared_client,
)
from napari_allen.widgets._tasks import TaskRunner

if TYPE_CHECKING:
    import napari

    from napari_allen.workflows.structure_similarity import SimilarityOutcome

SEARCH_COLUMNS = ["experiment_id", "gene", "gene_name", "plane", "section_thickness"]
PLANE_CHOICES = ["coronal", "sagittal", "both"]
SIMILARITY_MODES = ["genes", "whole plane", "selected search results"]
ANNOTATION_LAYER = "gridAnnotation (200 µm)"
def _plane(value: str) -> str | None:
    return None if value == "both" else value


class CorrelationHeatmap(QLabel):
    """The structure x structure correlation matrix as a picture (blue -1, white 0, red +1,
    grey = no value); hovering names the two structures and r."""

    SIZE = 320

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFixedSize(self.SIZE, self.SIZE)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setText("no correlation computed yet")
        self._corr: np.ndarray | None = None
        self._acronyms: list[str] = []

    def set_matrix(self, corr: np.ndarray, acronyms: list[str]) -> None:
        from napari_allen.layers.expression import heatmap_rgba

        self._corr = np.asarray(corr)
        self._acronyms = list(acronyms)
        rgba = np.ascontiguousarray(heatmap_rgba(self._corr))
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


class GeneExpressionWidget(QWidget):
    """Dock widget: ISH search/load, per-structure table, structure similarity, whole plane."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.results = pd.DataFrame(columns=SEARCH_COLUMNS)
        self.similarity: SimilarityOutcome | None = None
        self.store_layer = None
        tabs = QTabWidget(self)
        tabs.addTab(self._build_search(), "Search")
        tabs.addTab(self._build_structures(), "Per structure")
        tabs.addTab(self._build_similarity(), "Similarity")
        tabs.addTab(self._build_plane(), "Whole plane")
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        layout.addWidget(data_source_label(self))
        self.tabs = tabs
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._update_current_gene)
        self._refresh_layer_choices()

    # ------------------------------------------------------------------ search & load tab
    def _build_search(self) -> QWidget:
        page = QWidget()
        form = QFormLayout()
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
        form.addRow("Gene", self.gene_edit)
        form.addRow("Match", self.field_combo)
        form.addRow("Plane", self.plane_combo)
        self.search_runner = TaskRunner(self)
        self.search_status = QLabel("")
        self.search_status.setWordWrap(True)
        self.result_table = DataFrameTable()
        self.volume_boxes = {name: QCheckBox(name) for name in ("energy", "density", "intensity")}
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
        self.load_runner = TaskRunner(self)
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addWidget(self.search_button)
        layout.addWidget(self.search_runner.widget)
        layout.addWidget(self.search_status)
        layout.addWidget(self.result_table)
        layout.addLayout(volumes)
        layout.addLayout(buttons)
        layout.addWidget(self.load_runner.widget)
        return page

    def search(self) -> None:
        """Search ISH experiments (worker); a newer search makes an older one stale."""
        genes = split_list(self.gene_edit.text())
        if not genes:
            self.search_status.setText("Type a gene acronym or name first")
            return
        plane = _plane(self.plane_combo.currentText())
        field = self.field_combo.currentText()

        def task(*, progress, cancel, emit):
            return shared_client().search_ish(genes, plane, field=field, progress=progress,
                                              cancel=cancel)

        self.search_runner.run(task, on_result=self._show_results,
                               description=f"Searching {', '.join(genes)}…")

    def _show_results(self, frame: pd.DataFrame) -> None:
        self.results = frame.reset_index(drop=True)
        cols = [c for c in SEARCH_COLUMNS if c in frame.columns]
        self.result_table.set_frame(self.results[cols])
        self.search_status.setText(f"{len(frame)} experiments")

    def selected_experiments(self) -> pd.DataFrame:
        """The selected search results (all columns)."""
        chosen = self.result_table.selected_frame()
        if chosen.empty:
            return chosen
        ids = chosen["experiment_id"].astype(int).tolist()
        frame = self.results[self.results["experiment_id"].astype(int).isin(ids)]
        return frame.drop_duplicates("experiment_id")

    def load_selected(self) -> None:
        """Load the selected experiments' grids as image layers, one by one as they arrive."""
        chosen = self.selected_experiments()
        volumes = [name for name, box in self.volume_boxes.items() if box.isChecked()]
        if chosen.empty or not volumes:
            self.search_status.setText("Select experiments and at least one volume")
            return
        rows = chosen.to_dict("records")

        def task(*, progress, cancel, emit):
            from napari_allen.layers.volumes import image_layer
            from napari_allen.progress import report

            client = shared_client()
            for n, row in enumerate(rows):
                cancel.check()
                eid = int(row["experiment_id"])
                for vol in client.grid_volumes(eid, volumes, cancel=cancel):
                    vol.metadata.update({k: _plain(row.get(k)) for k in SEARCH_COLUMNS
                                         if k in row and _plain(row.get(k)) is not None})
                    emit(image_layer(vol))
                report(progress, done=n + 1, total=len(rows), message=f"loaded {eid}")
            return len(rows)

        self.load_runner.run(task, on_partial=self._add_tuple,
                             on_result=lambda n: self.search_status.setText(
                                 f"loaded {n} experiment(s)"),
                             description=f"Loading {len(rows)} experiments…")

    def _add_tuple(self, layer_tuple: tuple) -> Any:
        return add_layer_tuple(self.viewer, layer_tuple)

    def add_annotation(self) -> Any:
        """Add the 200 µm gridAnnotation as atlas-coloured Labels (hover names structures)."""
        from napari_allen.atlas.annotation import grid_annotation
        from napari_allen.layers.volumes import labels_layer

        if ANNOTATION_LAYER in self.viewer.layers:
            return self.viewer.layers[ANNOTATION_LAYER]
        return self._add_tuple(labels_layer(grid_annotation(), name=ANNOTATION_LAYER))

    # ------------------------------------------------------------------ per-structure tab
    def _build_structures(self) -> QWidget:
        page = QWidget()
        self.layer_combo = QComboBox()
        self.table_button = QPushButton("Expression per structure")
        self.table_button.clicked.connect(self.compute_structure_table)
        self.structure_table = DataFrameTable()
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(lambda: self.structure_table.export_csv())
        self.structure_status = QLabel("")
        layout = QVBoxLayout(page)
        row = QHBoxLayout()
        row.addWidget(QLabel("Layer"))
        row.addWidget(self.layer_combo, 1)
        layout.addLayout(row)
        layout.addWidget(self.table_button)
        layout.addWidget(self.structure_status)
        layout.addWidget(self.structure_table)
        layout.addWidget(self.export_button)
        return page

    def _grid_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and tuple(layer.data.shape) == (67, 41, 58)]

    def _refresh_layer_choices(self, event=None) -> None:
        if self.store_layer is not None and self.store_layer not in self.viewer.layers:
            self.store_layer = None
            self.current_gene.setText("current gene: (no store open)")
        current = self.layer_combo.currentText()
        self.layer_combo.clear()
        self.layer_combo.addItems([layer.name for layer in self._grid_layers()])
        if current:
            self.layer_combo.setCurrentText(current)

    def compute_structure_table(self) -> pd.DataFrame | None:
        """Mean expression per structure (rolled up) of the chosen 200 µm layer (~0.1 s)."""
        from napari_allen.layers.expression import expression_table_for

        name = self.layer_combo.currentText()
        if not name or name not in self.viewer.layers:
            self.structure_status.setText("Load a 200 µm expression grid first")
            return None
        layer = self.viewer.layers[name]
        table = expression_table_for(np.asarray(layer.data))
        self.structure_table.set_frame(table)
        best = table[table["n_valid"] > 0].sort_values("mean", ascending=False).head(1)
        hint = f"; highest mean: {best.iloc[0]['acronym']}" if len(best) else ""
        self.structure_status.setText(f"{name}: {len(table)} structures{hint}")
        return table

    # ------------------------------------------------------------------ similarity tab
    def _build_similarity(self) -> QWidget:
        from napari_allen.analysis.correlation import DEFAULT_TOP_N, METHODS

        page = QWidget()
        form = QFormLayout()
        self.sim_mode = QComboBox()
        self.sim_mode.addItems(SIMILARITY_MODES)
        self.sim_genes = QLineEdit()
        self.sim_genes.setPlaceholderText("genes, e.g. Nrp1 Pdyn Htr*")
        self.sim_plane = QComboBox()
        self.sim_plane.addItems(PLANE_CHOICES)
        self.sim_source = QComboBox()
        self.sim_source.addItems(["unionize", "grids"])
        self.sim_method = QComboBox()
        self.sim_method.addItems(list(METHODS))  # the first is the default
        self.top_n = QSpinBox()
        self.top_n.setRange(1, 10_000_000)
        self.top_n.setValue(DEFAULT_TOP_N)
        form.addRow("Experiments", self.sim_mode)
        form.addRow("Genes", self.sim_genes)
        form.addRow("Plane", self.sim_plane)
        form.addRow("Expression from", self.sim_source)
        form.addRow("Correlation", self.sim_method)
        form.addRow("TOP_N", self.top_n)
        self.sim_store = QLineEdit()
        self.sim_store.setPlaceholderText("optional plane store (grids read from it)")
        self.sim_scheduler = QLineEdit()
        self.sim_scheduler.setPlaceholderText("optional dask scheduler, e.g. tcp://host:8786")
        form.addRow("Store", self.sim_store)
        form.addRow("Scheduler", self.sim_scheduler)
        self.sim_button = QPushButton("Correlate structures")
        self.sim_button.clicked.connect(self.run_similarity)
        self.sim_runner = TaskRunner(self)
        self.heatmap = CorrelationHeatmap()
        self.sim_status = QLabel("")
        self.sim_status.setWordWrap(True)
        self.save_button = QPushButton("Save JSON + CSV…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(lambda: self.save_similarity())
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addWidget(self.sim_button)
        layout.addWidget(self.sim_runner.widget)
        layout.addWidget(self.sim_status)
        layout.addWidget(self.heatmap, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addWidget(self.save_button)
        return page

    def run_similarity(self) -> None:
        """Run :func:`~napari_allen.workflows.structure_similarity.run_structure_similarity`
        in a worker (lines layer built there too); then lines + heatmap."""
        mode = self.sim_mode.currentText()
        plane = _plane(self.sim_plane.currentText())
        genes = split_list(self.sim_genes.text())
        selected = (self.selected_experiments()["experiment_id"].astype(int).tolist()
                    if mode == "selected search results" else [])
        store = self.sim_store.text().strip() or None
        if mode == "genes" and not genes:
            self.sim_status.setText("Type genes first")
            return
        if mode == "whole plane" and plane is None and store is None:
            self.sim_status.setText("Choose coronal or sagittal (or a plane store) for a "
                                    "whole plane")
            return
        if mode == "selected search results" and not selected:
            self.sim_status.setText("Select search results first")
            return
        options = {
            "experiments": selected or None,
            "genes": genes if mode == "genes" else None,
            "plane": plane,
            "source": "grids" if store else self.sim_source.currentText(),
            "method": self.sim_method.currentText(),
            "top_n": int(self.top_n.value()),
            "store": store,
            "scheduler": self.sim_scheduler.text().strip() or None,
        }

        def task(*, progress, cancel, emit):
            from napari_allen.atlas.annotation import grid_annotation
            from napari_allen.atlas.ontology import Ontology
            from napari_allen.layers.expression import connections_layer
            from napari_allen.workflows.structure_similarity import (
                run_structure_similarity,
                structure_acronyms,
            )

            outcome = run_structure_similarity(shared_client(), progress=progress,
                                               cancel=cancel, **options)
            onto = Ontology.default()
            annotation = grid_annotation()
            layer = connections_layer(outcome.similarity.connections,
                                      np.asarray(annotation.data), annotation.resolution, onto)
            return outcome, structure_acronyms(outcome.similarity.structure_ids, onto), layer

        self.save_button.setEnabled(False)  # the shown result is about to be replaced
        self.sim_runner.run(task, on_result=self._show_similarity,
                            description="Correlating structures…")

    def _show_similarity(self, payload) -> None:
        outcome, acronyms, layer_tuple = payload
        self.similarity = outcome
        self.heatmap.set_matrix(outcome.similarity.values, acronyms)
        self.add_annotation()
        self._add_tuple(layer_tuple)
        self.sim_status.setText(outcome.summary())
        self.save_button.setEnabled(True)

    def save_similarity(self, prefix: str | None = None) -> dict | None:
        """Write PREFIX.structures/.connections/.correlations.json and the CSVs."""
        from napari_allen.atlas.ontology import Ontology

        if self.similarity is None:
            return None
        if prefix is None:
            prefix, _ = QFileDialog.getSaveFileName(self, "Save correlation (prefix)",
                                                    "out.json", "JSON (*.json)")
            if not prefix:
                return None
        paths = self.similarity.write(prefix, Ontology.default())
        self.sim_status.setText(f"saved {paths['structures'].parent} / "
                                f"{Path(prefix).stem}.*")
        return paths

    # ------------------------------------------------------------------ whole-plane tab
    def _build_plane(self) -> QWidget:
        page = QWidget()
        form = QFormLayout()
        self.store_plane = QComboBox()
        self.store_plane.addItems(["coronal", "sagittal"])
        self.store_path = QLineEdit()
        self.store_path.setPlaceholderText("folder for the store, e.g. coronal.zarr")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_store)
        path_row = QHBoxLayout()
        path_row.addWidget(self.store_path, 1)
        path_row.addWidget(browse)
        self.store_jobs = QSpinBox()
        self.store_jobs.setRange(1, 64)
        self.store_jobs.setValue(8)
        form.addRow("Plane", self.store_plane)
        form.addRow("Store", path_row)
        form.addRow("Parallel downloads", self.store_jobs)
        self.download_button = QPushButton("Download plane into store")
        self.download_button.clicked.connect(self.download_plane)
        self.open_button = QPushButton("Open store")
        self.open_button.clicked.connect(lambda: self.open_store())
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.open_button)
        self.plane_runner = TaskRunner(self)
        self.plane_status = QLabel("")
        self.plane_status.setWordWrap(True)
        self.current_gene = QLabel("current gene: (no store open)")
        self.current_gene.setWordWrap(True)
        rank_form = QFormLayout()
        self.rank_mode = QComboBox()
        self.rank_mode.addItems(["voxel at cursor", "structure at cursor"])
        self.rank_structure = QLineEdit()
        self.rank_structure.setPlaceholderText("optional acronym, e.g. CA1 (overrides cursor)")
        self.rank_top = QSpinBox()
        self.rank_top.setRange(1, 100_000)
        self.rank_top.setValue(50)
        rank_form.addRow("Rank by", self.rank_mode)
        rank_form.addRow("Structure", self.rank_structure)
        rank_form.addRow("Show top", self.rank_top)
        self.rank_button = QPushButton("Which genes are high here?")
        self.rank_button.clicked.connect(self.rank_genes)
        self.similar_button = QPushButton("Genes correlated with the current gene")
        self.similar_button.clicked.connect(self.correlate_current_gene)
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText("optional dask scheduler, e.g. tcp://host:8786")
        self.rank_runner = TaskRunner(self)
        self.rank_status = QLabel("")
        self.rank_status.setWordWrap(True)
        self.rank_table = DataFrameTable()
        layout = QVBoxLayout(page)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.plane_runner.widget)
        layout.addWidget(self.plane_status)
        layout.addWidget(self.current_gene)
        layout.addLayout(rank_form)
        layout.addWidget(self.rank_button)
        layout.addWidget(self.similar_button)
        layout.addWidget(self.scheduler_edit)
        layout.addWidget(self.rank_runner.widget)
        layout.addWidget(self.rank_status)
        layout.addWidget(self.rank_table)
        return page

    def _browse_store(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Plane store folder")
        if path:
            self.store_path.setText(path)

    def download_plane(self) -> None:
        """Download every ISH experiment of the plane into the store (resumable), then open."""
        out = self.store_path.text().strip()
        if not out:
            self.plane_status.setText("Choose a store folder first")
            return
        plane = self.store_plane.currentText()
        jobs = int(self.store_jobs.value())

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.plane_download import download_plane

            return download_plane(shared_client(), out, plane=plane, jobs=jobs,
                                  progress=progress, cancel=cancel)

        def done(result) -> None:
            self.plane_status.setText(result.summary())
            self.open_store(out)

        self.plane_runner.run(task, on_result=done, description=f"Downloading {plane}…")

    def open_store(self, path: str | None = None) -> Any:
        """Open a plane store as one lazy 4-D layer and follow its current gene."""
        from napari_allen.layers.expression import plane_store_layers

        path = path or self.store_path.text().strip()
        if not path:
            path = QFileDialog.getExistingDirectory(self, "Open plane store")
            if not path:
                return None
        self.store_path.setText(str(path))
        (layer_tuple,) = plane_store_layers(path)
        self.store_layer = self._add_tuple(layer_tuple)
        self._update_current_gene()
        return self.store_layer

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
        from napari_allen.layers.expression import describe_experiment

        if self.store_layer is None:
            return
        row = self.current_experiment()
        self.current_gene.setText(f"current gene: {describe_experiment(row)}")

    def rank_genes(self) -> None:
        """Rank the store's genes at the cursor voxel or its structure (worker)."""
        from napari_allen.atlas.annotation import grid_annotation
        from napari_allen.atlas.ontology import Ontology
        from napari_allen.layers.expression import STORE_META_KEY
        from napari_allen.space import um_to_voxel

        layer = self.store_layer
        if layer is None or layer not in self.viewer.layers:
            self.rank_status.setText("Open a plane store first")
            return
        meta = layer.metadata[STORE_META_KEY]
        path, res = meta["path"], float(meta["resolution"])
        annotation = np.asarray(grid_annotation().data)
        voxel = tuple(int(v) for v in um_to_voxel(cursor_position_um(self.viewer), res,
                                                  annotation.shape))
        onto = Ontology.default()
        structure = None
        if self.rank_structure.text().strip():
            try:
                structure = onto.id_of(self.rank_structure.text().strip())
            except KeyError as exc:
                self.rank_status.setText(str(exc))
                return
        elif self.rank_mode.currentText() == "structure at cursor":
            label = int(annotation[voxel])
            if label == 0:
                self.rank_status.setText(f"voxel {voxel} is outside the brain")
                return
            structure = label
        top = int(self.rank_top.value())

        def task(*, progress, cancel, emit):
            from napari_allen.analysis.expression import rank_experiments
            from napari_allen.io.plane_store import open_plane_store

            store = open_plane_store(path)
            if structure is None:
                values = store.values_at(voxel, progress=progress, cancel=cancel)
                where = f"voxel {voxel} ({', '.join(f'{v * res:.0f}' for v in voxel)} µm)"
            else:
                mask = np.isin(annotation, onto.descendants(structure))
                values = store.mean_in(mask, progress=progress, cancel=cancel)
                where = f"{onto.acronym(structure)} ({onto.name(structure)})"
            return where, rank_experiments(values, store.table, top=top)

        def show(payload) -> None:
            where, ranked = payload
            self.rank_table.set_frame(ranked)
            self.rank_status.setText(f"top genes at {where}: {len(ranked)} shown")

        self.rank_runner.run(task, on_result=show, description="Ranking genes…")

    def correlate_current_gene(self) -> None:
        """Rank the store's experiments by voxel-level correlation (brain voxels, pairwise-
        complete) with the experiment under the slider; dask, optionally on a cluster."""
        from napari_allen.atlas.annotation import grid_annotation
        from napari_allen.layers.expression import STORE_META_KEY, describe_experiment

        index = self.current_store_index()
        if index is None:
            self.rank_status.setText("Open a plane store first")
            return
        path = self.store_layer.metadata[STORE_META_KEY]["path"]
        scheduler = self.scheduler_edit.text().strip() or None
        brain = np.asarray(grid_annotation().data) > 0
        top = int(self.rank_top.value())
        seed_text = describe_experiment(self.current_experiment())

        def task(*, progress, cancel, emit):
            from napari_allen.analysis.correlation import dask_gene_correlation
            from napari_allen.analysis.expression import rank_experiments
            from napari_allen.io.plane_store import open_plane_store

            store = open_plane_store(path)
            r = dask_gene_correlation(store.to_dask(missing_as_nan=False), seeds=[index],
                                      voxel_mask=brain, scheduler=scheduler,
                                      progress=progress, cancel=cancel)[0]
            r[index] = np.nan  # the seed itself
            ranked = rank_experiments(r, store.table, top=top)
            return ranked.rename(columns={"value": "r"})

        def show(ranked: pd.DataFrame) -> None:
            self.rank_table.set_frame(ranked)
            self.rank_status.setText(f"correlated with {seed_text}: {len(ranked)} shown")

        self.rank_runner.run(task, on_result=show, description="Correlating genes…")


def _plain(value):
    """numpy/pandas scalars -> Python values for layer metadata (NaN/NA -> None)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value
