"""Connectivity dock, "Load" tab: the selected experiments' volumes, injection sites and
injection voxels as layers (:func:`napari_allen.workflows.connectivity.load_experiments`;
CLI ``napari-allen fetch-connectivity``). Layers are built in the worker, added one by one;
the worker loads the next experiment only once napari has shown the previous layer
(``emit(..., wait=True)``): its downloads, decoding and layer building then never compete
with napari's insert, selection and first draw for the GIL (measured under Xvfb: 25-55 ms of
worker CPU inside ~10 of the action's longest main-thread gaps otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_allen.lazy import lazy_module
from napari_allen.space import NRRD_RESOLUTIONS
from napari_allen.widgets._common import WrappingLabel, shared_client
from napari_allen.widgets._tasks import TaskRunner
from napari_allen.widgets._view import add_and_focus_later, add_in_turns

pd = lazy_module("pandas")  # imported at first use: the docks open without it

if TYPE_CHECKING:
    import napari

SOURCE_GRID = "100 µm grid (density.raw)"
SOURCE_NRRD = "NRRD"


class LoadTab(QWidget):
    """Volume source/resolution (also used by the Average tab), what to load, Load."""

    def __init__(self, viewer: napari.Viewer, selected: Callable[[], pd.DataFrame],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._selected = selected
        form = QFormLayout()
        self.source_combo = QComboBox()
        self.source_combo.addItems([SOURCE_NRRD, SOURCE_GRID])
        form.addRow("Source", self.source_combo)
        self.resolution_combo = QComboBox()
        self.resolution_combo.addItems([str(r) for r in sorted(NRRD_RESOLUTIONS, reverse=True)])
        self.resolution_combo.setToolTip(
            "NRRD grid spacing; one float32 volume is 4.8 MB at 100 µm, 39 MB at 50 µm, "
            "308 MB at 25 µm and 4.8 GB at 10 µm")
        form.addRow("Resolution (µm)", self.resolution_combo)
        self.load_projection = QCheckBox("projection density")
        self.load_projection.setChecked(True)
        self.load_injection_density = QCheckBox("injection density")
        self.load_injection_fraction = QCheckBox("injection fraction")
        self.load_sites = QCheckBox("injection sites (points)")
        self.load_sites.setChecked(True)
        self.load_voxels = QCheckBox("injection voxels above threshold")
        for box in (self.load_projection, self.load_injection_density,
                    self.load_injection_fraction, self.load_sites, self.load_voxels):
            form.addRow("", box)
        self.voxel_threshold = QDoubleSpinBox()
        self.voxel_threshold.setRange(0.0, 1.0)
        self.voxel_threshold.setSingleStep(0.05)
        self.voxel_threshold.setValue(0.5)
        form.addRow("Injection threshold", self.voxel_threshold)
        self.load_button = QPushButton("Load selected")
        self.load_button.clicked.connect(self.load_selected)
        self.meshes_button = QPushButton("Add injection + target structure meshes")
        self.meshes_button.setToolTip("meshes of the selected experiments' injection structures "
                                      "and their strongest projection targets")
        self.meshes_button.clicked.connect(self.add_structure_meshes)
        self.status = WrappingLabel("")
        self.runner = TaskRunner(self)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.load_button)
        layout.addWidget(self.meshes_button)
        layout.addWidget(self.status)
        layout.addWidget(self.runner.widget)
        layout.addStretch(1)

    def volume_source(self) -> tuple[str, int]:
        """``(source, resolution µm)`` as the workflows take them."""
        source = "grid" if self.source_combo.currentText() == SOURCE_GRID else "nrrd"
        return source, 100 if source == "grid" else int(self.resolution_combo.currentText())

    def images(self) -> list[str]:
        images = ["projection_density"] if self.load_projection.isChecked() else []
        if self.load_injection_density.isChecked():
            images.append("injection_density")
        if self.load_injection_fraction.isChecked() or self.load_voxels.isChecked():
            images.append("injection_fraction")
        return images

    def load_selected(self) -> None:
        frame = self._selected()
        if frame.empty:
            self.status.setText("Select experiments in the results table first")
            return
        source, resolution = self.volume_source()
        images = self.images()
        if source == "grid" and "injection_density" in images:
            self.status.setText("Injection density comes as NRRD only")
            return
        show_fraction = self.load_injection_fraction.isChecked()
        want_voxels = self.load_voxels.isChecked()
        threshold = float(self.voxel_threshold.value())
        sites = self.load_sites.isChecked()
        records = frame.to_dict("records")

        def task(*, progress, cancel, emit):
            from napari_allen.layers.connectivity import (
                experiment_volume_layer,
                injection_sites_layer,
                injection_voxels_layer,
            )
            from napari_allen.layers.focus import with_focus_point
            from napari_allen.layers.prebuilt import build_layer
            from napari_allen.workflows.connectivity import load_experiments

            def build(layer_tuple):  # layer and focus point made here, not on the main thread
                return build_layer(with_focus_point(layer_tuple))

            def show(layer_tuple) -> None:  # built here, then wait until napari has shown it
                emit(build(layer_tuple), wait=True)

            if sites:
                show(injection_sites_layer(frame))
            n = 0
            if images:
                for exp, image, vol in load_experiments(shared_client(), records, images,
                                                        resolution, source=source,
                                                        progress=progress, cancel=cancel):
                    if image != "injection_fraction" or show_fraction:
                        show(experiment_volume_layer(vol, exp))
                    if image == "injection_fraction" and want_voxels:
                        show(injection_voxels_layer(vol, threshold=threshold, experiment=exp))
                    n += 1
            return n

        self.runner.run(task, on_partial=self._add_and_focus,
                        on_result=lambda n: self.status.setText(
                            self.runner.with_note(f"loaded {n} volume(s)")),
                        description=f"Loading {len(records)} experiment(s)…")

    def _add_and_focus(self, layer) -> None:
        add_and_focus_later(self.viewer, self.runner, layer)  # sliders to the injection site

    def add_structure_meshes(self) -> None:
        """Meshes of the selected experiments' injection structures and their strongest
        projection targets (computed from the bundled annotation, cached)."""
        frame = self._selected()
        if frame.empty:
            self.status.setText("Select experiments in the results table first")
            return
        ids = frame["id"].astype(int).tolist()
        injections = (frame["structure_id"].dropna().astype(int).tolist()
                      if "structure_id" in frame else None)
        client = shared_client()

        def pick(*, cancel):
            from napari_allen.workflows.structure_meshes import experiment_target_structures

            return experiment_target_structures(client, ids, injection_structures=injections,
                                                cancel=cancel)

        from napari_allen.widgets._meshes import mesh_task

        self.runner.run(mesh_task(pick),
                        on_partial=lambda t: add_in_turns(self.viewer, self.runner, t),
                        on_result=lambda names: self.status.setText(
                            "meshes: " + ", ".join(names)),
                        description="Meshing injection and target structures…")
