"""``make demo``: napari with the plugin, its dock widgets and the bundled sample data.

With a display, the viewer opens for interactive use. With ``--screenshot PATH`` (what
``make demo`` does when there is no display, under Xvfb) it renders the 3-D view, saves a PNG of
the window and prints the PNG's path on its last line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PLUGIN = "napari-allen"
SAMPLES = ("nrp1", "connectivity_158375425")
DOCK_WIDGETS = ("Gene expression", "Connectivity", "Spatial search")


def build_viewer(show: bool = True):
    """A viewer with both samples in 3-D and the plugin's dock widgets."""
    import napari

    viewer = napari.Viewer(title="napari-allen demo", show=show)
    for key in SAMPLES:
        viewer.open_sample(PLUGIN, key)
    for name in reversed(DOCK_WIDGETS):  # the last tab added is the one shown
        viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
    for layer in viewer.layers:
        if layer._type_string == "labels":
            layer.opacity = 0.35  # context, without hiding the expression inside
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    # napari 0.9 moved the camera to viewer.scene; older releases keep viewer.camera.
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (15.0, -35.0, 130.0)
    camera.zoom *= 1.6
    return viewer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--screenshot", type=Path, help="render, save a PNG here and exit")
    args = parser.parse_args(argv)

    import napari

    viewer = build_viewer(show=True)
    if args.screenshot is None:
        napari.run()
        return 0
    from qtpy.QtWidgets import QApplication

    viewer.window.resize(1600, 1000)
    for _ in range(20):  # let Qt lay out the docks and vispy draw before grabbing
        QApplication.processEvents()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
    layers = ", ".join(layer.name for layer in viewer.layers)
    viewer.close()
    print(f"layers: {layers}")
    print(args.screenshot.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
