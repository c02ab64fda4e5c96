"""The frame every napari-allen dock shares, so any number of them fit one window.

:class:`AllenDock` puts the dock's content in a scroll area (its minimum size stays small: the
window never grows to fit a tall dock), adds the :class:`~napari_allen.widgets._common.ApiPanel`
(API address and cache folder) at the bottom, and, when napari shows it, tabs it together with
the napari-allen docks already open in the same dock area (the Plugins menu adds docks side by
side or stacked; stacked, three docks would need ~2,200 px). A future dock gets all of this by
subclassing :class:`AllenDock` and filling ``self.body_layout``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QScrollArea, QVBoxLayout, QWidget

from napari_allen.widgets._common import ApiPanel
from napari_allen.widgets._view import prime_activity_indicator, show_orientation_stepwise
from napari_allen.widgets._warmup import warm_up_later

if TYPE_CHECKING:
    import napari

#: Width (px) a dock asks for; users can drag it wider.
DOCK_WIDTH = 380


class AllenDock(QWidget):
    """Base class of the plugin's docks (see module docstring)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(4, 4, 4, 4)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.body)
        self.scroll = scroll
        self.api_panel = ApiPanel(self)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.api_panel)
        self._tabbed = False
        # AP/DV/ML axes, µm scale bar, coronal slicing (overlays in later event-loop turns)
        show_orientation_stepwise(napari_viewer)
        # napari's status-bar spinner at its final size: laid out with this dock, not
        # inside the first task's activity bar (a repaint of the whole window there)
        prime_activity_indicator(napari_viewer)
        # the libraries the docks import at first use (pandas) and napari's first-Labels costs
        # (imports, vispy's dash patterns), once per process, in a background thread: not
        # inside the first action that needs them
        warm_up_later()

    def sizeHint(self):  # noqa: N802 - Qt override
        hint = super().sizeHint()
        hint.setWidth(DOCK_WIDTH)
        return hint

    def minimumSizeHint(self):  # noqa: N802 - Qt override
        hint = super().minimumSizeHint()
        hint.setWidth(min(hint.width(), 240))
        hint.setHeight(min(hint.height(), 200))
        return hint

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self._tabbed:
            self._tabbed = True
            # After napari has placed the dock (it may resize docks right after showing it).
            QTimer.singleShot(0, self.tab_with_other_docks)

    def dock_widget(self) -> QDockWidget | None:
        """The QDockWidget holding this dock (None while not docked)."""
        parent = self.parentWidget()
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parentWidget()
        return parent

    def tab_with_other_docks(self) -> bool:
        """Tab this dock with another napari-allen dock in the same area; True if done."""
        dock = self.dock_widget()
        window = dock.parentWidget() if dock is not None else None
        if dock is None or window is None or dock.isFloating():
            return False
        area = window.dockWidgetArea(dock)
        # Open (a tab behind another tab is open but not visible), docked in the same area.
        others = [other for other in window.findChildren(QDockWidget)
                  if other is not dock and not other.isFloating()
                  and other.toggleViewAction().isChecked()
                  and window.dockWidgetArea(other) == area and other.findChildren(AllenDock)]
        grouped = window.tabifiedDockWidgets(dock)
        if any(other in grouped for other in others):
            return True
        if not others:
            return False
        # Join the largest existing group, so docks opened together end up in one.
        anchor = max(others, key=lambda other: len(window.tabifiedDockWidgets(other)))
        window.tabifyDockWidget(anchor, dock)
        dock.show()
        dock.raise_()
        return True
