"""A sortable table of a DataFrame that costs the main thread nothing per cell.

:func:`table_data` (run it in the worker) turns a DataFrame into ready arrays: the text of
every cell, one float sort key per cell (text columns are ranked once) and column widths in
characters. :class:`DataFrameTable` then only indexes those arrays (``data()`` is one array
lookup) and sorts with one ``numpy.argsort`` per header click, so a 1,300-structure table
appears without freezing napari.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QHeaderView, QTableView, QWidget

from napari_allen.lazy import lazy_module

pd = lazy_module("pandas")  # imported at first use: the docks open without it

MAX_COLUMN_CHARS = 28  # wider text is elided: key columns stay on screen


@dataclass
class TableData:
    """A DataFrame ready for display (see module docstring). ``sort_column`` / ``ascending``:
    the initial order (None keeps the frame's own order, e.g. API order or relevance)."""

    frame: pd.DataFrame
    text: list[np.ndarray]
    keys: list[np.ndarray]
    widths: list[int]
    sort_column: int | None = None
    ascending: bool = False


def _cell_text(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values):
        return values.map(str).to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(values):
        arr = values.to_numpy(dtype=np.float64)
        out = np.char.mod("%.6g", arr).astype(object)
        out[np.isnan(arr)] = ""
        return out
    if pd.api.types.is_integer_dtype(values):
        return values.astype(str).to_numpy(dtype=object)

    def one(v: Any) -> str:
        if isinstance(v, (list, tuple, np.ndarray)):
            return ", ".join(str(x) for x in v)
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return ""
        return f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v)

    return np.array([one(v) for v in values], dtype=object)


def _sort_key(values: pd.Series, text: np.ndarray) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum() and len(values):
        return numeric.to_numpy(dtype=np.float64)
    # Text: rank once (case-insensitive); empty cells sort last like NaN.
    lowered = pd.Series(text).str.lower()
    ranks = np.array(lowered.rank(method="first"), dtype=np.float64)  # writable copy
    ranks[lowered.to_numpy() == ""] = np.nan
    return ranks


def table_data(
    frame: pd.DataFrame,
    *,
    first: Sequence[str] = (),
    sort_by: str | None = None,
    ascending: bool = False,
) -> TableData:
    """Prepare ``frame`` for :class:`DataFrameTable` (worker thread). ``first``: columns moved
    to the left so the ones users read (name, value) are visible; ``sort_by``: the column the
    table opens sorted by (None = the frame's order)."""
    cols = [c for c in first if c in frame.columns]
    frame = frame[cols + [c for c in frame.columns if c not in cols]].reset_index(drop=True)
    text, keys, widths = [], [], []
    for name in frame.columns:
        column = frame[name]
        cells = _cell_text(column)
        text.append(cells)
        keys.append(_sort_key(column, cells))
        longest = max((len(c) for c in cells), default=0)
        widths.append(min(MAX_COLUMN_CHARS, max(len(str(name)), longest)))
    sort_column = list(frame.columns).index(sort_by) if sort_by in frame.columns else None
    return TableData(frame, text, keys, widths, sort_column, ascending)


def _order(keys: np.ndarray, ascending: bool) -> np.ndarray:
    """Stable order of ``keys``; NaN (missing) always last."""
    finite = ~np.isnan(keys)
    idx = np.flatnonzero(finite)
    idx = idx[np.argsort(keys[idx] if ascending else -keys[idx], kind="stable")]
    return np.concatenate([idx, np.flatnonzero(~finite)])


class _ArrayModel(QAbstractTableModel):
    """Read-only model over a :class:`TableData`; ``order`` maps view rows to frame rows."""

    def __init__(self) -> None:
        super().__init__()
        # No table yet, and no DataFrame: a dock opens without importing pandas (lazy.py).
        self._table: TableData | None = None
        self.order = np.zeros(0, dtype=np.int64)

    @property
    def table(self) -> TableData:
        """The table shown; before any was set, an empty one built at this first request."""
        if self._table is None:
            self._table = table_data(pd.DataFrame())
        return self._table

    def set_table(self, table: TableData) -> None:
        self.beginResetModel()
        self._table = table
        n = len(table.frame)
        self.order = (np.arange(n) if table.sort_column is None
                      else _order(table.keys[table.sort_column], table.ascending))
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() or self._table is None else len(self._table.text)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        return self.table.text[index.column()][self.order[index.row()]]

    def headerData(  # noqa: N802
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self.table.frame.columns[section])
        return str(section + 1)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if self._table is None or not 0 <= column < len(self._table.keys):
            return
        self.layoutAboutToBeChanged.emit()
        self.order = _order(self.table.keys[column], order == Qt.SortOrder.AscendingOrder)
        self.layoutChanged.emit()


class DataFrameTable(QTableView):
    """A sortable, multi-select table. ``set_frame(TableData or DataFrame)``, ``frame()``,
    ``selected_frame()`` (selected rows in frame order), ``select_rows(frame rows)``,
    ``export_csv(path=None)`` (asks for a path if None)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = _ArrayModel()
        self.setModel(self._model)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        # No initial sort (Qt would sort by column 0, descending): the data's order stands.
        header.setSortIndicator(-1, Qt.SortOrder.DescendingOrder)
        self.setSortingEnabled(True)  # header clicks -> _ArrayModel.sort (one argsort)
        self.verticalHeader().setVisible(False)
        self.setMinimumHeight(120)

    def set_frame(self, table: TableData | pd.DataFrame) -> None:
        """Show ``table`` (a plain DataFrame is prepared here: small frames only)."""
        if isinstance(table, pd.DataFrame):
            table = table_data(table)
        header = self.horizontalHeader()
        header.blockSignals(True)  # the indicator follows the data's order, no re-sort
        if table.sort_column is None:
            header.setSortIndicator(-1, Qt.SortOrder.DescendingOrder)
        else:
            header.setSortIndicator(table.sort_column, Qt.SortOrder.AscendingOrder
                                    if table.ascending else Qt.SortOrder.DescendingOrder)
        header.blockSignals(False)
        self._model.set_table(table)
        char = max(6, self.fontMetrics().averageCharWidth())
        for column, width in enumerate(table.widths):
            self.setColumnWidth(column, (width + 2) * char)

    def frame(self) -> pd.DataFrame:
        return self._model.table.frame

    def view_frame(self) -> pd.DataFrame:
        """The rows in the order the table shows them."""
        return self._model.table.frame.iloc[self._model.order]

    def selected_frame(self) -> pd.DataFrame:
        rows = sorted({int(self._model.order[i.row()])
                       for i in self.selectionModel().selectedRows()})
        return self._model.table.frame.iloc[rows]

    def select_rows(self, rows: list[int]) -> None:
        """Select frame rows (tests and programmatic use)."""
        self.clearSelection()
        selection = self.selectionModel()
        where = np.empty_like(self._model.order)
        where[self._model.order] = np.arange(len(self._model.order))
        for row in rows:
            selection.select(self._model.index(int(where[row]), 0),
                             selection.SelectionFlag.Select | selection.SelectionFlag.Rows)

    def export_csv(self, path: str | None = None) -> str | None:
        """Write the table (all rows, in view order) to ``path``; ask for one if None."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export table", "", "CSV (*.csv)")
            if not path:
                return None
        from napari_allen.io.atomic import atomic_write_text

        atomic_write_text(path, self.view_frame().to_csv(index=False))
        return path
