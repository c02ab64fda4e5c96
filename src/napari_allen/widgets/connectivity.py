"""The "Connectivity" dock widget: find experiments, load projections and injection sites,
average projections per group, threshold projections inside a target region.

A thin view: every search, download and computation runs through
:class:`~napari_allen.widgets._tasks.TaskRunner` (progress, cancel, stale results dropped) using
:mod:`napari_allen.workflows.connectivity`, :mod:`napari_allen.analysis.projections` and
:mod:`napari_allen.layers.connectivity`. Layers are added on the main thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
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

#: Columns shown in the results table, in order (others stay in the frame for metadata).
RESULT_COLUMNS = ["id", "structure_abbrev", "transgenic_line", "injection_volume",
                  "injection_x", "injection_y", "injection_z", "gender", "strain"]
LINE_CHOICES = ["any", "wild type"]
SOURCE_GRID = "100 µm grid (density.raw)"
SOURCE_NRRD = "NRRD"
def parse_region_groups(text: str) -> dict[str, list[str]]:
    """``"visual=VIS; motor=MOp,MOs"`` -> ``{"visual": ["VIS"], "motor": ["MOp", "MOs"]}``."""
    groups: dict[str, list[str]] = {}
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        name, sep, acronyms = part.partition("=")
        if not sep or not name.strip() or not split_list(acronyms):
            raise ValueError(f"region group {part.strip()!r}: write NAME=ACR[,ACR...]")
        groups[name.strip()] = split_list(acronyms)
    return groups


def _display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in RESULT_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in cols]
    out = frame[cols + rest].copy()
    if "transgenic_line" in out:
        out["transgenic_line"] = out["transgenic_line"].map(
            lambda v: "wild type" if v is None or (isinstance(v, float) and np.isnan(v))
            or str(v).strip() == "" else str(v))
    return out


class ConnectivityWidget(QWidget):
    """Dock widget for the Allen Mouse Connectivity Atlas (see module docstring)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.runner = TaskRunner(self)
        self.average_result = None
        self.structure_table_frame: pd.DataFrame | None = None

        layout = QVBoxLayout(self)
        layout.addWidget(self._build_search())
        self.results = DataFrameTable(self)
        self.results.setMinimumHeight(160)
        layout.addWidget(self.results)
        self.result_count = QLabel("", self)
        layout.addWidget(self.result_count)
        tabs = QTabWidget(self)
        tabs.addTab(self._build_load(), "Load")
        tabs.addTab(self._build_average(), "Average")
        tabs.addTab(self._build_threshold(), "Threshold")
        layout.addWidget(tabs)
        layout.addWidget(self.runner.widget)
        layout.addWidget(data_source_label(self))

    # --- construction ---------------------------------------------------------------------
    def _build_search(self) -> QGroupBox:
        box = QGroupBox("Find experiments", self)
        form = QFormLayout(box)
        self.structures_edit = QLineEdit(box)
        self.structures_edit.setPlaceholderText("injection structures, e.g. VIS, MOp")
        form.addRow("Injection", self.structures_edit)
        self.line_combo = QComboBox(box)
        self.line_combo.setEditable(True)  # type a Cre line name
        self.line_combo.addItems(LINE_CHOICES)
        form.addRow("Line", self.line_combo)
        self.primary_check = QCheckBox("primary injection structure only", box)
        self.primary_check.setChecked(True)  # unchecked: any injection in the structures
        form.addRow("", self.primary_check)
        self.target_edit = QLineEdit(box)
        self.target_edit.setPlaceholderText("optional target domain, e.g. CP")
        form.addRow("Target", self.target_edit)
        self.search_button = QPushButton("Search", box)
        self.search_button.clicked.connect(self.search)
        form.addRow(self.search_button)
        seed_row = QHBoxLayout()
        self.seed_edit = QLineEdit(box)
        self.seed_edit.setPlaceholderText("AP, DV, ML (µm)")
        self.cursor_button = QPushButton("Cursor", box)
        self.cursor_button.setToolTip("take the seed point from the viewer cursor")
        self.cursor_button.clicked.connect(self.seed_from_cursor)
        self.coord_button = QPushButton("Search near", box)
        self.coord_button.clicked.connect(self.search_coordinate)
        seed_row.addWidget(self.seed_edit, 2)
        seed_row.addWidget(self.cursor_button)
        seed_row.addWidget(self.coord_button)
        form.addRow("Seed", seed_row)
        return box

    def _build_load(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        self.source_combo = QComboBox(page)
        self.source_combo.addItems([SOURCE_NRRD, SOURCE_GRID])
        form.addRow("Source", self.source_combo)
        self.resolution_combo = QComboBox(page)
        self.resolution_combo.addItems(["100", "50", "25", "10"])
        self.resolution_combo.setToolTip(
            "NRRD grid spacing; one float32 volume is 4.8 MB at 100 µm, 39 MB at 50 µm, "
            "308 MB at 25 µm and 4.8 GB at 10 µm")
        form.addRow("Resolution (µm)", self.resolution_combo)
        self.load_projection = QCheckBox("projection density", page)
        self.load_projection.setChecked(True)
        self.load_injection_density = QCheckBox("injection density", page)
        self.load_injection_fraction = QCheckBox("injection fraction", page)
        self.load_sites = QCheckBox("injection sites (points)", page)
        self.load_sites.setChecked(True)
        self.load_voxels = QCheckBox("injection voxels above threshold", page)
        for w in (self.load_projection, self.load_injection_density,
                  self.load_injection_fraction, self.load_sites, self.load_voxels):
            form.addRow("", w)
        self.voxel_threshold = QDoubleSpinBox(page)
        self.voxel_threshold.setRange(0.0, 1.0)
        self.voxel_threshold.setSingleStep(0.05)
        self.voxel_threshold.setValue(0.5)
        form.addRow("Injection threshold", self.voxel_threshold)
        self.load_button = QPushButton("Load selected", page)
        self.load_button.clicked.connect(self.load_selected)
        form.addRow(self.load_button)
        return page

    def _build_average(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        self.normalize_combo = QComboBox(page)
        self.normalize_combo.addItems(["none", "injection volume"])
        form.addRow("Normalise", self.normalize_combo)
        self.subtract_check = QCheckBox("subtract other hemisphere", page)
        form.addRow("", self.subtract_check)
        self.ipsi_combo = QComboBox(page)
        self.ipsi_combo.addItems(["right", "left", "own side"])
        form.addRow("Injections on", self.ipsi_combo)
        self.group_combo = QComboBox(page)
        self.group_combo.addItems(["none", "AP", "ML", "DV", "regions"])
        form.addRow("Group by", self.group_combo)
        self.bins_spin = QSpinBox(page)
        self.bins_spin.setRange(1, 50)
        self.bins_spin.setValue(5)
        form.addRow("Bins", self.bins_spin)
        self.regions_edit = QLineEdit(page)
        self.regions_edit.setPlaceholderText("visual=VIS; motor=MOp,MOs")
        form.addRow("Region groups", self.regions_edit)
        self.stack_check = QCheckBox("one layer with a group axis", page)
        form.addRow("", self.stack_check)
        self.individual_check = QCheckBox("also show each processed experiment", page)
        self.individual_check.setToolTip("keeps every volume in memory (4.8 MB each at 100 µm)")
        form.addRow("", self.individual_check)
        self.average_button = QPushButton("Average selected (all if none)", page)
        self.average_button.clicked.connect(self.average)
        form.addRow(self.average_button)
        self.average_table = DataFrameTable(page)
        self.average_table.setMinimumHeight(120)
        form.addRow(self.average_table)
        self.export_button = QPushButton("Export metadata CSV…", page)
        self.export_button.clicked.connect(lambda: self.average_table.export_csv())
        form.addRow(self.export_button)
        return page

    def _build_threshold(self) -> QWidget:
        page = QWidget(self)
        form = QFormLayout(page)
        self.threshold_layer_combo = QComboBox(page)
        self.threshold_layer_combo.setToolTip("a 3-D projection image layer")
        refresh = QPushButton("↻", page)
        refresh.setMaximumWidth(30)
        refresh.clicked.connect(self.refresh_layers)
        row = QHBoxLayout()
        row.addWidget(self.threshold_layer_combo, 1)
        row.addWidget(refresh)
        form.addRow("Layer", row)
        self.target_region_edit = QLineEdit(page)
        self.target_region_edit.setPlaceholderText("target region, e.g. SSp (empty: brain)")
        form.addRow("Region", self.target_region_edit)
        self.method_combo = QComboBox(page)
        self.method_combo.addItems(["percentile", "absolute", "zscore", "relative"])
        form.addRow("Method", self.method_combo)
        self.threshold_value = QDoubleSpinBox(page)
        self.threshold_value.setDecimals(4)
        self.threshold_value.setRange(-1e6, 1e6)
        self.threshold_value.setValue(95.0)
        form.addRow("Value", self.threshold_value)
        self.threshold_button = QPushButton("Threshold → mask + table", page)
        self.threshold_button.clicked.connect(self.threshold)
        form.addRow(self.threshold_button)
        self.structure_table = DataFrameTable(page)
        self.structure_table.setMinimumHeight(120)
        form.addRow(self.structure_table)
        export = QPushButton("Export structure table CSV…", page)
        export.clicked.connect(lambda: self.structure_table.export_csv())
        form.addRow(export)
        self.viewer.layers.events.inserted.connect(lambda _=None: self.refresh_layers())
        self.viewer.layers.events.removed.connect(lambda _=None: self.refresh_layers())
        self.refresh_layers()
        return page

    # --- helpers ------------------------------------------------------------------------
    def _error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Connectivity: {exc}")

    def _add(self, layer_tuple) -> None:
        add_layer_tuple(self.viewer, layer_tuple)

    def _set_results(self, frame: pd.DataFrame) -> None:
        shown = _display_frame(frame)
        self.results.set_frame(shown)
        self.result_count.setText(f"{len(frame)} experiments")
        # Offer the Cre lines seen so far in the line filter (the text typed stays).
        known = {self.line_combo.itemText(i) for i in range(self.line_combo.count())}
        if "transgenic_line" in shown:
            for name in sorted(set(shown["transgenic_line"].astype(str)) - known):
                self.line_combo.addItem(name)

    def selected_experiments(self, all_if_none: bool = False) -> pd.DataFrame:
        frame = self.results.selected_frame()
        if frame.empty and all_if_none:
            frame = self.results.frame()
        return frame

    def _experiments_for_work(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The selection with wild type as '' again (the table shows 'wild type')."""
        out = frame.copy()
        if "transgenic_line" in out:
            out["transgenic_line"] = out["transgenic_line"].replace({"wild type": ""})
        return out

    def refresh_layers(self) -> None:
        current = self.threshold_layer_combo.currentText()
        names = [layer.name for layer in self.viewer.layers
                 if layer._type_string == "image" and layer.ndim == 3]
        self.threshold_layer_combo.clear()
        self.threshold_layer_combo.addItems(names)
        if current in names:
            self.threshold_layer_combo.setCurrentText(current)
        elif names:
            self.threshold_layer_combo.setCurrentIndex(len(names) - 1)

    # --- search -------------------------------------------------------------------------
    def search(self) -> None:
        structures = split_list(self.structures_edit.text())
        if not structures:
            self._error(ValueError("type at least one injection structure (e.g. VISp)"))
            return
        line = self.line_combo.currentText()
        primary = self.primary_check.isChecked()
        target = split_list(self.target_edit.text()) or None

        def task(*, progress, cancel, emit):
            from napari_allen.workflows.connectivity import search_experiments

            progress_msg(progress, "searching connectivity experiments")
            cancel.check()
            return search_experiments(shared_client(), structures, line=line,
                                      primary_structure_only=primary, target_domain=target)

        self.runner.run(task, on_result=self._set_results, on_error=self._error,
                        description="Searching…")

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
            self._error(ValueError("the seed point needs three numbers: AP, DV, ML (µm)"))
            return
        line = self.line_combo.currentText()
        structures = split_list(self.structures_edit.text())

        def task(*, progress, cancel, emit):
            progress_msg(progress, "searching experiments near the seed point")
            filters: dict[str, Any] = {}
            if structures:
                filters["injection_structures"] = structures
            if line.strip().lower() in ("wild type", "wild-type"):
                filters["transgenic_lines"] = [0]
            elif line.strip().lower() != "any":
                filters["transgenic_lines"] = [line.strip()]
            return shared_client().injection_coordinate_search(seed, cancel=cancel, **filters)

        self.runner.run(task, on_result=self._set_results, on_error=self._error,
                        description="Searching near the seed…")

    # --- loading ------------------------------------------------------------------------
    def load_selected(self) -> None:
        frame = self._experiments_for_work(self.selected_experiments())
        if frame.empty:
            self._error(ValueError("select experiments in the results table first"))
            return
        source = "grid" if self.source_combo.currentText() == SOURCE_GRID else "nrrd"
        resolution = 100 if source == "grid" else int(self.resolution_combo.currentText())
        images = []
        if self.load_projection.isChecked():
            images.append("projection_density")
        if self.load_injection_density.isChecked():
            if source == "grid":
                self._error(ValueError("injection density comes as NRRD only"))
                return
            images.append("injection_density")
        want_voxels = self.load_voxels.isChecked()
        if self.load_injection_fraction.isChecked() or want_voxels:
            images.append("injection_fraction")
        show_fraction = self.load_injection_fraction.isChecked()
        threshold = float(self.voxel_threshold.value())
        sites = self.load_sites.isChecked()
        records = frame.to_dict("records")

        def task(*, progress, cancel, emit):
            from napari_allen.layers.connectivity import (
                experiment_volume_layer,
                injection_sites_layer,
                injection_voxels_layer,
            )
            from napari_allen.workflows.connectivity import load_volume

            if sites:
                emit(injection_sites_layer(frame))
            total = len(records) * len(images)
            done = 0
            for exp in records:
                for image in images:
                    cancel.check()
                    vol = load_volume(shared_client(), int(exp["id"]), image, resolution,
                                      source=source, cancel=cancel)
                    if image != "injection_fraction" or show_fraction:
                        emit(experiment_volume_layer(vol, exp))
                    if image == "injection_fraction" and want_voxels:
                        emit(injection_voxels_layer(vol, threshold=threshold, experiment=exp))
                    done += 1
                    progress_msg(progress, f"loaded {image} of {exp['id']}", done, total)
            return done

        self.runner.run(task, on_partial=self._add, on_result=lambda _n: None,
                        on_error=self._error, description="Loading experiments…")

    # --- averaging ----------------------------------------------------------------------
    def averaging_options(self):
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
        frame = self._experiments_for_work(self.selected_experiments(all_if_none=True))
        if frame.empty:
            self._error(ValueError("search for experiments first"))
            return
        try:
            options = self.averaging_options()
        except (ValueError, KeyError) as exc:
            self._error(exc)
            return
        source = "grid" if self.source_combo.currentText() == SOURCE_GRID else "nrrd"
        resolution = 100 if source == "grid" else int(self.resolution_combo.currentText())
        stack = self.stack_check.isChecked()

        def task(*, progress, cancel, emit):
            from napari_allen.layers.connectivity import average_layers, individual_stack_layer
            from napari_allen.workflows.connectivity import average_experiments

            result = average_experiments(shared_client(), frame, options,
                                         resolution=resolution, source=source,
                                         progress=progress, cancel=cancel)
            layers = average_layers(result, stack=stack)
            individual = individual_stack_layer(result)
            if individual is not None:
                layers.append(individual)
            result.individual = None  # the layer holds the stack now
            return result, layers

        self.runner.run(task, on_result=self._on_average, on_error=self._error,
                        description="Averaging projections…")

    def _on_average(self, value) -> None:
        result, layers = value
        self.average_result = result
        for layer_tuple in layers:
            self._add(layer_tuple)
        self.average_table.set_frame(result.table)
        if result.skipped:
            from napari.utils.notifications import show_warning

            show_warning(f"Connectivity: {len(result.skipped)} experiment(s) skipped: "
                         + "; ".join(f"{k}: {v}" for k, v in list(result.skipped.items())[:3]))

    # --- thresholding ----------------------------------------------------------------------
    def threshold(self) -> None:
        name = self.threshold_layer_combo.currentText()
        if not name or name not in self.viewer.layers:
            self._error(ValueError("choose a 3-D projection image layer"))
            return
        layer = self.viewer.layers[name]
        data = np.asarray(layer.data)
        resolution = float(layer.scale[-1])
        regions = split_list(self.target_region_edit.text()) or ["root"]
        method = self.method_combo.currentText()
        value = float(self.threshold_value.value())

        def task(*, progress, cancel, emit):
            from napari_allen.analysis.projections import (
                ccf_annotation_at,
                region_mask,
                structure_projection_table,
                threshold_projection,
            )
            from napari_allen.layers.connectivity import mask_layer

            progress_msg(progress, "loading the annotation")
            annotation = ccf_annotation_at(resolution)
            if annotation.shape != data.shape:
                raise ValueError(f"layer {name!r} has shape {data.shape}, not a CCF grid at "
                                 f"{resolution:g} µm {annotation.shape}")
            cancel.check()
            region = region_mask(annotation, regions)
            mask, thr = threshold_projection(data, region, method=method, value=value)
            cancel.check()
            progress_msg(progress, "per-structure table")
            table = structure_projection_table(data, annotation, resolution, mask=mask)
            meta = {"source_layer": name, "regions": regions, "method": method,
                    "value": value, "threshold": thr}
            tup = mask_layer(mask, resolution, metadata=meta,
                             name=f"significant ({method} {value:g}) in "
                                  f"{'+'.join(regions)}: {name}")
            return tup, table[table["n_significant"] > 0] if len(table) else table

        self.runner.run(task, on_result=self._on_threshold, on_error=self._error,
                        description="Thresholding…")

    def _on_threshold(self, value) -> None:
        layer_tuple, table = value
        self._add(layer_tuple)
        self.structure_table_frame = table
        self.structure_table.set_frame(table)


def progress_msg(progress, message: str, done: int = 0, total: int | None = None) -> None:
    """Send a Progress snapshot through a TaskRunner's progress callback."""
    from napari_allen.progress import Progress

    progress(Progress(done=done, total=total, message=message))
