"""Shared widget pieces: the array-backed table, the wrapping label, the API panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt

from napari_allen.widgets._common import (
    ApiPanel,
    DataFrameTable,
    WrappingLabel,
    reset_shared_client,
    shared_client,
    table_data,
)


def test_table_data_is_ready_arrays_built_without_qt():
    frame = pd.DataFrame({"id": [3, 1, 2], "name": ["b", None, "A"],
                          "value": [0.5, np.nan, 2.0], "ids": [[1, 2], [], [3]]})
    data = table_data(frame, first=["value", "name"], sort_by="value")
    assert list(data.frame.columns) == ["value", "name", "id", "ids"]
    assert data.text[0].tolist() == ["0.5", "", "2"]
    assert data.text[1].tolist() == ["b", "", "A"]
    assert data.text[3].tolist() == ["1, 2", "", "3"]
    assert data.sort_column == 0 and data.ascending is False
    assert all(isinstance(k, np.ndarray) and k.dtype == np.float64 for k in data.keys)


def test_table_opens_in_the_requested_order_and_sorts_with_missing_last(qtbot, tmp_path):
    table = DataFrameTable()
    qtbot.addWidget(table)
    frame = pd.DataFrame({"id": [10, 9, 100, 7], "gene": ["b", "a", "C", ""],
                          "value": [1.0, np.nan, 3.0, 2.0]})
    table.set_frame(table_data(frame, sort_by="value"))
    assert table.view_frame()["id"].tolist() == [100, 7, 10, 9]  # value desc, NaN last
    table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    view = [table.model().index(r, 0).data() for r in range(4)]
    assert view == ["7", "9", "10", "100"]  # numeric, not lexicographic
    table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    assert table.view_frame()["gene"].tolist() == ["a", "b", "C", ""]  # case-blind, empty last
    table.select_rows([2])
    assert table.selected_frame()["id"].tolist() == [100]
    out = table.export_csv(str(tmp_path / "t.csv"))
    assert pd.read_csv(out, keep_default_na=False)["gene"].tolist() == ["a", "b", "C", ""]


def test_plain_frame_keeps_api_order(qtbot):
    table = DataFrameTable()
    qtbot.addWidget(table)
    table.set_frame(pd.DataFrame({"id": [5, 3, 9]}))
    assert table.view_frame()["id"].tolist() == [5, 3, 9]
    assert table.horizontalHeader().sortIndicatorSection() == -1


def test_wrapping_label_never_asks_for_width(qtbot):
    label = WrappingLabel("x" * 2000)
    qtbot.addWidget(label)
    assert label.text() == "x" * 2000
    label.resize(300, 50)
    assert label.minimumSizeHint().width() < 400
    assert label.sizePolicy().horizontalPolicy() == label.sizePolicy().Policy.Ignored


def test_api_panel_shows_and_changes_the_shared_client(qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_ALLEN_API_URL", "http://127.0.0.1:8765/")
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "my-cache"))
    reset_shared_client()
    first, second = ApiPanel(), ApiPanel()
    qtbot.addWidget(first)
    qtbot.addWidget(second)
    assert first.url_edit.text() == "http://127.0.0.1:8765"
    assert str(tmp_path / "my-cache") in first.cache_label.text()
    first.url_edit.setText("http://127.0.0.1:9999/")
    first.apply()
    assert shared_client().base_url == "http://127.0.0.1:9999"
    assert second.url_edit.text() == "http://127.0.0.1:9999"  # every dock follows
    first.url_edit.setText("not a url")
    first.apply()
    assert shared_client().base_url == "http://127.0.0.1:9999"
    assert "not an http(s) address" in first.cache_label.text()
    reset_shared_client()
