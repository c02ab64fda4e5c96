"""Spatial search dock: the experiment search form (values as
:func:`~napari_allen.workflows.spatial_search.run_experiment_search` keywords)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QSpinBox,
    QWidget,
)

from napari_allen.analysis.seeds import (
    DEFAULT_DENSITY_RANGE,
    DEFAULT_INJECTION_THRESHOLD,
    SAMPLE_MODES,
)
from napari_allen.workflows.seed_search import DEFAULT_JOBS
from napari_allen.workflows.spatial_search import (
    DEFAULT_EXPERIMENT,
    DEFAULT_INJECTION_IMAGE,
    INJECTION_IMAGES,
)

DEFAULT_SEED_CAP = 500


class SpatialSearchForm(QWidget):
    """Experiment, density range, seed cap and sampling, parallel queries, injection mask,
    fibre-tract options."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.experiment = QSpinBox()
        self.experiment.setRange(1, 2**31 - 1)
        self.experiment.setValue(DEFAULT_EXPERIMENT)
        self.density_min = QDoubleSpinBox()
        self.density_max = QDoubleSpinBox()
        for box, value in ((self.density_min, DEFAULT_DENSITY_RANGE[0]),
                           (self.density_max, DEFAULT_DENSITY_RANGE[1])):
            box.setRange(0.0, 1.0)
            box.setDecimals(3)
            box.setSingleStep(0.01)
            box.setValue(value)
        self.seed_cap = QSpinBox()
        self.seed_cap.setRange(0, 1_000_000)
        self.seed_cap.setSpecialValueText("no cap")  # 0 = all seeds
        self.seed_cap.setValue(DEFAULT_SEED_CAP)
        self.sample = QComboBox()
        self.sample.addItems(list(SAMPLE_MODES))
        self.jobs = QSpinBox()
        self.jobs.setRange(1, 64)
        self.jobs.setValue(DEFAULT_JOBS)
        self.injection_image = QComboBox()
        self.injection_image.addItems(list(INJECTION_IMAGES))
        self.injection_image.setCurrentText(DEFAULT_INJECTION_IMAGE)
        self.injection_threshold = QDoubleSpinBox()
        self.injection_threshold.setRange(0.0, 1.0)
        self.injection_threshold.setDecimals(2)
        self.injection_threshold.setSingleStep(0.05)
        self.injection_threshold.setValue(DEFAULT_INJECTION_THRESHOLD)
        self.skip_fibers = QCheckBox("skip seeds in fibre tracts")
        self.skip_fibers.setChecked(True)
        self.show_fibers = QCheckBox("show fibre tracts (100 µm labels)")
        form = QFormLayout(self)
        form.addRow("experiment", self.experiment)
        form.addRow("min density", self.density_min)
        form.addRow("max density", self.density_max)
        form.addRow("seed cap", self.seed_cap)
        form.addRow("cap keeps", self.sample)
        form.addRow("parallel queries", self.jobs)
        form.addRow("injection mask", self.injection_image)
        form.addRow("injection threshold", self.injection_threshold)
        form.addRow(self.skip_fibers)
        form.addRow(self.show_fibers)

    def parameters(self) -> dict[str, Any]:
        """The current form values as ``run_experiment_search`` keywords."""
        lo, hi = self.density_min.value(), self.density_max.value()
        return {
            "experiment_id": int(self.experiment.value()),
            "density_range": (min(lo, hi), max(lo, hi)),
            "max_seeds": int(self.seed_cap.value()) or None,
            "sample": self.sample.currentText(),
            "jobs": int(self.jobs.value()),
            "fiber_tracts": self.skip_fibers.isChecked(),
            "injection_image": self.injection_image.currentText(),
            "injection_threshold": float(self.injection_threshold.value()),
        }
