"""Pieces every dock widget shares.

- :func:`shared_client` / :func:`set_api_url`: one :class:`~napari_allen.api.client.AllenClient`
  per process (thread-safe, so workers share its connection pool and cache); changing the API
  address rebuilds it and tells every :class:`ApiPanel`.
- :func:`add_layer_tuple`: add (or refresh, by name) a LayerDataTuple or a layer built in a
  worker (:mod:`napari_allen.layers.prebuilt`) on the main thread.
- :func:`find_annotation_layer`: an annotation layer already in the viewer (whatever its
  name), reused instead of adding the same one twice; for the 200 µm grid annotation,
  :func:`grid_annotation_layer` (built in a worker) and :func:`show_grid_annotation` (reuses
  or adds it in turns).
- :class:`WrappingLabel`: a status label that wraps any text, even a long URL, and never widens
  the dock.
- :func:`cursor_position_um`: the viewer cursor in CCF µm ``[AP, DV, ML]``.
- Tables: :mod:`napari_allen.widgets._table`.
"""

from __future__ import annotations

import re
import threading
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_allen.widgets._table import DataFrameTable, TableData, table_data

if TYPE_CHECKING:
    import napari

    from napari_allen.api.client import AllenClient

__all__ = ["DataFrameTable", "TableData", "table_data", "shared_client", "set_api_url",
           "reset_shared_client", "add_layer_tuple", "update_same_named", "find_annotation_layer",
           "grid_annotation_layer", "show_grid_annotation",
           "WrappingLabel", "ApiPanel", "cursor_position_um"]

_client_lock = threading.Lock()
_client: AllenClient | None = None
_api_url: str | None = None  # chosen in a dock; None = NAPARI_ALLEN_API_URL / the default
_listeners: list[weakref.ref] = []


def shared_client() -> AllenClient:
    """The process-wide API client (base URL from the dock or the environment at first use)."""
    global _client
    with _client_lock:
        if _client is None:
            from napari_allen.api.client import AllenClient

            _client = AllenClient(_api_url)
        return _client


def set_api_url(url: str) -> AllenClient:
    """Point every dock at ``url`` (``http(s)://host[:port]``): a new shared client is built
    (running tasks finish with the old one). Raises ``ValueError`` for a malformed address."""
    global _client, _api_url
    url = url.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise ValueError(f"{url!r} is not an http(s) address, e.g. http://127.0.0.1:8642")
    from napari_allen.api.client import AllenClient

    client = AllenClient(url)
    with _client_lock:
        _client, _api_url = client, url
    for ref in list(_listeners):
        listener = ref()
        try:
            if listener is not None:
                listener()
                continue
        except RuntimeError:  # its Qt widget was deleted (the Python wrapper lingers)
            pass
        _listeners.remove(ref)
    return client


def reset_shared_client() -> None:
    """Forget the shared client and any address chosen in a dock (tests)."""
    global _client, _api_url
    with _client_lock:
        _client, _api_url = None, None


def add_layer_tuple(viewer: napari.Viewer, layer_tuple: Any) -> Any:
    """Add ``(data, kwargs, layer_type)`` or a ready napari layer (built in a worker by
    :func:`napari_allen.layers.prebuilt.build_layer`) to ``viewer``. A same-named layer of the
    same type is updated instead of piling up duplicates (:func:`update_same_named`); a ready
    layer napari cannot take in place, or a Shapes layer too costly to triangulate again,
    replaces it at the same position (nothing is recomputed here). Returns the layer. Main
    thread only."""
    from napari.layers import Layer

    updated = update_same_named(viewer, layer_tuple)
    if updated is not None:
        return updated
    if isinstance(layer_tuple, Layer):
        return _replace_or_add(viewer, layer_tuple)
    data, kwargs, layer_type = _unpack(layer_tuple)
    layer = Layer.create(data, kwargs, layer_type)
    viewer.add_layer(layer)
    return layer


def update_same_named(viewer: napari.Viewer, layer_tuple: Any) -> Any:
    """The same-named layer of the same type in ``viewer``, updated in place to show
    ``layer_tuple`` (a LayerDataTuple or a ready layer), or None when there is none or it
    has to be replaced (see :func:`add_layer_tuple`). In place, napari neither removes a layer
    (which it ends with a full ``gc.collect()``) nor builds one.

    - a tuple's data, metadata, features and per-item colours go into the layer (partial
      results refreshing the layer shown);
    - a ready layer gives it its data and every setting napari records (``_in_place``).
      A Shapes layer only when that is cheap (:func:`shapes_cheap_in_place`): napari's
      Shapes data setter triangulates every path again, on the main thread."""
    from napari.layers import Layer

    from napari_allen.layers.prebuilt import layer_type_name
    from napari_allen.widgets._in_place import update_in_place

    name = layer_name(layer_tuple)
    if name is None or name not in viewer.layers:
        return None
    existing = viewer.layers[name]
    kind = layer_type_name(existing)
    if isinstance(layer_tuple, Layer):
        if layer_type_name(layer_tuple) != kind or (
                kind == "shapes" and not shapes_cheap_in_place(layer_tuple)):
            return None
        return existing if update_in_place(existing, layer_tuple) else None
    data, kwargs, layer_type = _unpack(layer_tuple)
    if layer_type != kind:
        return None
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


#: A ready Shapes layer goes into the shown one when napari built it in at most this much
#: CPU time (s). Its data setter then triangulates the paths again on the main thread, and
#: that step with its repaint took 1.5-2.7x the build (400 spatial-search paths: built in
#: 36-70 ms with napari's compiled ``bermuda`` triangulation, 100-180 ms in place; 120-155
#: ms in pure Python, 184-210 ms in place). Replacing the layer instead costs a removal,
#: which napari ends with a full ``gc.collect()`` (170-280 ms on the benchmark machine),
#: then an insert, in turns of their own: up to this budget, in place is the shorter freeze.
SHAPES_IN_PLACE_MAX_BUILD_S = 0.1


def shapes_cheap_in_place(layer: Any) -> bool:
    """Whether a ready Shapes layer's paths can be triangulated again on the main thread
    within a dock step's budget, judged by the CPU time napari took to build it (see
    :data:`SHAPES_IN_PLACE_MAX_BUILD_S`); a layer not built by ``build_layer`` is not."""
    from napari_allen.layers.prebuilt import build_cpu_seconds

    seconds = build_cpu_seconds(layer)
    return seconds is not None and seconds <= SHAPES_IN_PLACE_MAX_BUILD_S


def _unpack(layer_tuple: Any) -> tuple[Any, dict, str]:
    data, kwargs, layer_type = (tuple(layer_tuple) + ({}, "image"))[:3]
    return data, dict(kwargs or {}), layer_type


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


def find_annotation_layer(viewer: napari.Viewer, resolution: float, shape: tuple) -> Any:
    """An atlas Labels layer already in ``viewer`` with this grid (any name), or None."""
    from napari.layers import Labels

    for layer in viewer.layers:
        if (isinstance(layer, Labels) and tuple(layer.data.shape) == tuple(shape)
                and np.allclose(layer.scale[-3:], resolution)
                and "structure_ids" in layer.metadata):
            return layer
    return None


def cursor_position_um(viewer: napari.Viewer) -> np.ndarray:
    """The cursor position in world coordinates (CCF µm, ``[AP, DV, ML]`` for Allen layers).

    The last three world axes are used, so a 4-D store layer with an experiment axis works too.
    """
    return np.asarray(viewer.cursor.position, dtype=float)[-3:]


_LONG_WORD = re.compile(r"(\S{24})(?=\S)")


class WrappingLabel(QLabel):
    """A word-wrapped label that never asks for more width than the dock has: long unbroken
    words (URLs, paths) get break opportunities, and its width hint is ignored by layouts.
    ``text()`` returns the text as set."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._raw = ""
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        policy.setHeightForWidth(True)
        self.setSizePolicy(policy)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        self._raw = str(text)
        super().setText(_LONG_WORD.sub("\\1\u200b", self._raw))
        self.setToolTip(self._raw if len(self._raw) > 80 else "")

    def text(self) -> str:
        return self._raw


class ApiPanel(QWidget):
    """Where data comes from and goes: the API address (editable; "Use" rebuilds the shared
    client for every dock) and the cache folder."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.url_edit = QLineEdit(self)
        self.url_edit.setToolTip("Allen API address, e.g. https://api.brain-map.org or a "
                                 "'napari-allen local-api' server; NAPARI_ALLEN_API_URL sets "
                                 "the default")
        self.apply_button = QPushButton("Use", self)
        self.apply_button.clicked.connect(self.apply)
        self.url_edit.returnPressed.connect(self.apply)
        self.cache_label = WrappingLabel("", self)
        self.cache_label.setStyleSheet("color: gray;")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("API", self))
        row.addWidget(self.url_edit, 1)
        row.addWidget(self.apply_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.cache_label)
        self.refresh()
        _listeners.append(weakref.WeakMethod(self.refresh))

    def refresh(self) -> None:
        from napari_allen import config

        url = _api_url or config.api_base_url()
        self.url_edit.setText(url)
        self.cache_label.setText(f"cache: {config.cache_dir()}")

    def apply(self) -> None:
        """Use the typed address for every dock (errors shown here and as a notification)."""
        try:
            set_api_url(self.url_edit.text())
        except ValueError as exc:
            from napari.utils.notifications import show_error

            self.cache_label.setText(str(exc))
            show_error(str(exc))


#: The name the sample data and the docks give the 200 µm ISH grid annotation.
GRID_ANNOTATION_NAME = "grid annotation (200 µm)"


def grid_annotation_layer() -> Any:
    """Worker side: the 200 µm gridAnnotation as a ready, atlas-coloured Labels layer (hover
    names structures; its compact labels, colours and structure features made off the main
    thread), for :func:`show_grid_annotation`."""
    from napari_allen.atlas.annotation import grid_annotation
    from napari_allen.layers.prebuilt import build_layer
    from napari_allen.layers.volumes import labels_layer

    return build_layer(labels_layer(grid_annotation(), name=GRID_ANNOTATION_NAME))


def show_grid_annotation(viewer: napari.Viewer, runner, layer) -> Any:
    """Main thread: the viewer's annotation layer of ``layer``'s grid (any name, e.g. the
    sample's), else ``layer`` (from :func:`grid_annotation_layer`) added in turns
    (``widgets/_view.add_in_turns``). Returns the layer shown."""
    from napari_allen.widgets._view import add_in_turns

    existing = find_annotation_layer(viewer, float(layer.scale[-1]), tuple(layer.data.shape))
    return existing if existing is not None else add_in_turns(viewer, runner, layer)
