"""Pieces every dock widget shares.

- :func:`shared_client`: one :class:`~napari_allen.api.client.AllenClient` per process
  (thread-safe, so workers share its connection pool and cache).
- :func:`add_layer_tuple`: add (or refresh, by name) a LayerDataTuple on the main thread.
- :class:`DataFrameTable`: a sortable, multi-select table view of a pandas DataFrame with CSV
  export.
- :func:`cursor_position_um`: the viewer cursor in CCF µm ``[AP, DV, ML]``.
- :func:`data_source_label`: where data comes from (API address) and goes (cache folder).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHeaderView,
    QLabel,
    QTableView,
    QWidget,
)

if TYPE_CHECKING:
    import napari

    from napari_allen.api.client import AllenClient

_client_lock = threading.Lock()
_client: AllenClient | None = None


def shared_client() -> AllenClient:
    """The process-wide API client (base URL and cache from the environment at first use)."""
    global _client
    with _client_lock:
        if _client is None:
            from napari_allen.api.client import AllenClient

            _client = AllenClient()
        return _client


def reset_shared_client() -> None:
    """Forget the shared client (tests: after changing ``NAPARI_ALLEN_API_URL``)."""
    global _client
    with _client_lock:
        _client = None


def add_layer_tuple(viewer: napari.Viewer, layer_tuple: Any) -> Any:
    """Add ``(data, kwargs, layer_type)`` or a ready napari layer (built in a worker by
    :func:`napari_allen.layers.prebuilt.build_layer`) to ``viewer``. A same-named layer of the
    same type is updated instead of piling up duplicates: a ready layer replaces it at the same
    position (nothing is recomputed here), a tuple's data go into it. Returns the layer. Main
    thread only."""
    from napari.layers import Layer

    from napari_allen.layers.prebuilt import layer_type_name

    if isinstance(layer_tuple, Layer):
        return _replace_or_add(viewer, layer_tuple)
    data, kwargs, layer_type = (tuple(layer_tuple) + ({}, "image"))[:3]
    kwargs = dict(kwargs or {})
    name = kwargs.get("name")
    if name is not None and name in viewer.layers:
        existing = viewer.layers[name]
        if layer_type_name(existing) == layer_type:
            existing.data = data
            if "metadata" in kwargs:
                existing.metadata = kwargs["metadata"]
            if "features" in kwargs and hasattr(existing, "features"):
                existing.features = kwargs["features"]
            # Per-item colours must follow the new items (a Shapes/Points/Vectors layer would
            # otherwise colour new lines or points with its old colours).
            for key in ("edge_color", "face_color"):
                value = kwargs.get(key)
                if isinstance(value, np.ndarray) and hasattr(existing, key):
                    setattr(existing, key, value)
            return existing
    layer = Layer.create(data, kwargs, layer_type)
    viewer.add_layer(layer)
    return layer


def _replace_or_add(viewer: napari.Viewer, layer: Any) -> Any:
    """Insert a ready layer, taking the place of a same-named layer of the same type."""
    from napari_allen.layers.prebuilt import layer_type_name

    if layer.name in viewer.layers:
        existing = viewer.layers[layer.name]
        if layer_type_name(existing) == layer_type_name(layer):
            index = viewer.layers.index(existing)
            viewer.layers.remove(existing)
            viewer.layers.insert(index, layer)
            return layer
    viewer.add_layer(layer)
    return layer


def layer_name(item: Any) -> str | None:
    """The name of a LayerDataTuple or of a napari layer."""
    from napari.layers import Layer

    if isinstance(item, Layer):
        return item.name
    return (tuple(item) + ({},))[1].get("name")


def cursor_position_um(viewer: napari.Viewer) -> np.ndarray:
    """The cursor position in world coordinates (CCF µm, ``[AP, DV, ML]`` for Allen layers).

    The last three world axes are used, so a 4-D store layer with an experiment axis works too.
    """
    return np.asarray(viewer.cursor.position, dtype=float)[-3:]


def data_source_label(parent: QWidget | None = None) -> QLabel:
    """A small label naming the API address and the cache folder (``NAPARI_ALLEN_API_URL``,
    ``NAPARI_ALLEN_CACHE``), so users know what is downloaded from where, and to where."""
    from napari_allen import config

    url, folder = config.api_base_url(), config.cache_dir()
    label = QLabel(f"API: {url}<br>cache: {folder}", parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setToolTip("Set NAPARI_ALLEN_API_URL (e.g. a 'napari-allen local-api' server) and "
                     "NAPARI_ALLEN_CACHE before starting napari to change these.")
    label.setStyleSheet("color: gray; font-size: small;")
    return label


class _FrameModel(QAbstractTableModel):
    """Read-only Qt model of a DataFrame; sorts numerically via ``Qt.UserRole`` values."""

    def __init__(self, frame: pd.DataFrame | None = None) -> None:
        super().__init__()
        self._frame = pd.DataFrame() if frame is None else frame.reset_index(drop=True)

    def set_frame(self, frame: pd.DataFrame) -> None:
        self.beginResetModel()
        self._frame = frame.reset_index(drop=True)
        self.endResetModel()

    @property
    def frame(self) -> pd.DataFrame:
        return self._frame

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._frame)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._frame.columns)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        value = self._frame.iat[index.row(), index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, float):
                return "" if np.isnan(value) else f"{value:.6g}"
            if isinstance(value, (list, tuple, np.ndarray)):
                return ", ".join(str(v) for v in value)
            return "" if value is None or value is pd.NA else str(value)
        if role == Qt.ItemDataRole.UserRole:
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool
            ):
                return float(value)
            return "" if value is None or value is pd.NA else str(value)
        return None

    def headerData(  # noqa: N802
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self._frame.columns[section])
        return str(section + 1)


class DataFrameTable(QTableView):
    """A sortable table of a DataFrame. ``set_frame(df)``, ``frame()``, ``selected_frame()``
    (the selected rows, in view order), ``export_csv(path=None)`` (asks for a path if None)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = _FrameModel()
        self._proxy = QSortFilterProxyModel(self)
        self._proxy.setSourceModel(self._model)
        self._proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.setModel(self._proxy)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().setVisible(False)

    def set_frame(self, frame: pd.DataFrame) -> None:
        self._model.set_frame(frame)
        self.resizeColumnsToContents()

    def frame(self) -> pd.DataFrame:
        return self._model.frame

    def selected_frame(self) -> pd.DataFrame:
        selected = self.selectionModel().selectedRows()
        rows = sorted({self._proxy.mapToSource(index).row() for index in selected})
        return self._model.frame.iloc[rows]

    def select_rows(self, rows: list[int]) -> None:
        """Select source rows (tests and programmatic use)."""
        self.clearSelection()
        selection = self.selectionModel()
        for row in rows:
            index = self._proxy.mapFromSource(self._model.index(row, 0))
            selection.select(
                index,
                selection.SelectionFlag.Select | selection.SelectionFlag.Rows,
            )

    def export_csv(self, path: str | None = None) -> str | None:
        """Write the table (all rows, current columns) to ``path``; ask for one if None."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export table", "", "CSV (*.csv)")
            if not path:
                return None
        from napari_allen.io.atomic import atomic_write_text

        atomic_write_text(path, self._model.frame.to_csv(index=False))
        return path
