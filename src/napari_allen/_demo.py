"""``make demo``: a figure-like view of the atlas with the plugin's docks.

The viewer shows, in CCF µm ``[AP, DV, ML]``:

- the 25 µm CCFv3 annotation (atlas colours; shown in 2-D) and the brain outline;
- experiment 158375425 (real Allen data, injection in VPM): projection and injection density
  (100 µm), the meshes of its injection structure and strongest projection targets;
- a set of spatial-search lines of that experiment, from the local Allen API server run in
  this process (its grids for 158375425 are Allen's; its line paths are computed locally);
- AP/DV/ML axes, the µm scale bar, a dorsal 3-D camera (anterior to the left).

With a display, the viewer opens for interactive use. With ``--screenshot PATH`` (what
``make demo`` does without a display, under Xvfb) it renders the 3-D view, saves a PNG of the
window and prints the PNG's path on its last line. ``--readme-images DIR`` also writes the
small PNGs the README embeds (3-D view, coronal view, one per dock).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLUGIN = "napari-allen"
EXPERIMENT = 158375425
DOCK_WIDGETS = ("Structures", "Gene expression", "Connectivity", "Spatial search")
DEMO_SEEDS = 150  # spatial-search seeds: enough lines to read the projection, quick to query
README_WIDTH = 960  # px of the README images
DEMO_ZOOM = 1.0  # of the fitted zoom (the brain fills 90% of the canvas)


def _scene_layers(client, log) -> list:
    """Layer tuples of the demo scene (reference, experiment, meshes, spatial-search lines)."""
    from napari_allen._sample_data import connectivity_158375425
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.layers.lines import lines_layers
    from napari_allen.layers.meshes import ccf_reference_layers, structure_mesh_layer
    from napari_allen.workflows.spatial_search import run_experiment_search
    from napari_allen.workflows.structure_meshes import (
        experiment_target_structures,
        get_structure_mesh,
    )

    onto = Ontology.default()
    t0 = time.perf_counter()
    annotation, outline = ccf_reference_layers(labels_opacity=0.45)
    log(f"reference (25 µm annotation + outline): {time.perf_counter() - t0:.1f} s")
    projection, injection = connectivity_158375425()
    t0 = time.perf_counter()
    chosen = experiment_target_structures(client, [EXPERIMENT],
                                          injection_structures=[onto.id_of("VPM")], top=3)
    meshes = []
    for role in ("injection", "targets"):
        for sid in chosen[role]:
            mesh = get_structure_mesh(sid, source="computed", ontology=onto)
            meshes.append(structure_mesh_layer(mesh, sid, ontology=onto,
                                               opacity=0.6 if role == "injection" else 0.3))
    log(f"meshes {[onto.acronym(s) for r in chosen.values() for s in r]}: "
        f"{time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    search = run_experiment_search(client, EXPERIMENT, max_seeds=DEMO_SEEDS)
    lines = lines_layers(search.lines, search.injection_coordinates,
                         name=f"spatial search {EXPERIMENT}", metadata=search.metadata)
    log(f"spatial search: {len(search.lines)} lines in {time.perf_counter() - t0:.1f} s")
    return [annotation, outline, projection, injection, *meshes, *lines]


@dataclass
class Demo:
    """The demo viewer, the in-process local API server its docks use, and the docks."""

    viewer: Any
    server: Any
    docks: dict = field(default_factory=dict)  # display name -> (dock wrapper, widget)

    def close(self) -> None:
        self.viewer.close()
        self.server.stop()


def build_viewer(show: bool = True, log=print) -> Demo:
    """The demo viewer (see module doc), with the local Allen API server started in-process
    (it stays up for the docks; :meth:`Demo.close` stops both)."""
    import napari

    from allen_local_api.server import LocalAllenServer
    from napari_allen.api.client import AllenClient
    from napari_allen.widgets._common import add_layer_tuple, reset_shared_client
    from napari_allen.widgets._view import canonical_camera, show_orientation

    server = LocalAllenServer(host="127.0.0.1", port=0)
    server.start()
    os.environ["NAPARI_ALLEN_API_URL"] = server.url  # the docks talk to it too
    reset_shared_client()
    client = AllenClient(server.url)
    viewer = napari.Viewer(title="napari-allen demo", show=show)
    demo = Demo(viewer, server)
    for layer_tuple in _scene_layers(client, log):
        add_layer_tuple(viewer, layer_tuple)
    client.close()
    for name in reversed(DOCK_WIDGETS):  # the last tab added is the one shown
        demo.docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
    show_orientation(viewer)
    annotation = viewer.layers["annotation (25 µm)"]
    annotation.visible = False  # 3-D: the outline and meshes give the context; 2-D: shown
    canonical_camera(viewer, "dorsal", zoom=DEMO_ZOOM)
    return demo


def _save_small(source: Path, target: Path, width: int = README_WIDTH,
                indexed: bool = False) -> Path:
    from qtpy.QtCore import Qt
    from qtpy.QtGui import QImage

    image = QImage(str(source))
    if image.width() > width:
        image = image.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
    if indexed:  # 256 colours: a 3-D render shrinks from ~600 to ~200 kB, no visible loss
        image = image.convertToFormat(QImage.Format.Format_Indexed8)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(str(target), "PNG")
    return target


#: The event loop runs at least this long per settle (s): the docks' deferred steps (the
#: Structures tree, the orientation overlays) start from timers of 30-60 ms.
SETTLE_MIN_S = 0.25


def _settle(n: int = 30, timeout_s: float = 10.0) -> None:
    """Run the event loop until the plugin's queued main-thread steps have all run (for at
    least :data:`SETTLE_MIN_S`, so their timers fire), then ``n`` more passes for Qt to lay
    out the docks and vispy to draw before grabbing."""
    from qtpy.QtWidgets import QApplication

    from napari_allen.widgets._tasks import deliveries_idle

    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        QApplication.processEvents()
        if time.monotonic() - start >= SETTLE_MIN_S and deliveries_idle():
            break
        time.sleep(0.005)
    for _ in range(n):
        QApplication.processEvents()


def _settle_conversions(timeout_s: float = 120.0) -> None:
    """Run the event loop until the background multiscale conversions (the 25 µm annotation's
    on a first run) have ended and their layers show the data."""
    from napari_allen.io.pyramid import conversions_running

    deadline = time.monotonic() + timeout_s
    while conversions_running() and time.monotonic() < deadline:
        _settle(5)
        time.sleep(0.02)
    _settle()


def _dismiss_notifications() -> None:
    """Close napari's notification toasts (e.g. "building a multiscale cache", shown on a
    first run) so the screenshot shows the viewer, not a message already logged on stderr.
    Found by class name among Qt's widgets: napari has no public call for it."""
    from qtpy.QtWidgets import QApplication

    for widget in QApplication.allWidgets():
        if type(widget).__name__ == "NapariQtNotification" and widget.isVisible():
            widget.close()
    _settle()


def readme_images(demo: Demo, folder: Path) -> list[Path]:
    """The README's images: 3-D view, coronal view with the annotation, one per dock."""
    from napari_allen.widgets._view import canonical_camera, focus_on

    viewer = demo.viewer
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    tmp = folder / ".full.png"
    for dock, _widget in demo.docks.values():  # a wide canvas for the scene images
        dock.hide()
    _settle()  # the canvas takes the freed width before the camera is fitted to it
    canonical_camera(viewer, "dorsal", zoom=DEMO_ZOOM)
    _settle()
    viewer.screenshot(str(tmp), canvas_only=True, flash=False)
    written.append(_save_small(tmp, folder / "demo-3d.png", indexed=True))
    # Coronal slice through the injection site, annotation on.
    _settle_conversions()
    viewer.layers["annotation (25 µm)"].visible = True
    viewer.dims.ndisplay = 2
    viewer.reset_view()
    focus_on(viewer, [6600, 4300, 7650])
    _settle()
    viewer.screenshot(str(tmp), canvas_only=True, flash=False)
    written.append(_save_small(tmp, folder / "demo-coronal.png"))
    viewer.layers["annotation (25 µm)"].visible = False
    canonical_camera(viewer, "dorsal", zoom=DEMO_ZOOM)
    for name in DOCK_WIDGETS:
        dock, widget = demo.docks[name]
        dock.show()
        dock.raise_()
        _settle(10)
        widget.grab().save(str(tmp), "PNG")
        slug = name.lower().replace(" ", "-")
        written.append(_save_small(tmp, folder / f"dock-{slug}.png", width=520))
    tmp.unlink(missing_ok=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--screenshot", type=Path, help="render, save a PNG here and exit")
    parser.add_argument("--readme-images", type=Path,
                        help="also write the README's small PNGs into this folder")
    args = parser.parse_args(argv)

    import napari

    from napari_allen.widgets._view import canonical_camera

    demo = build_viewer(show=True)
    viewer = demo.viewer
    if args.screenshot is None:
        napari.run()
        demo.server.stop()
        return 0
    viewer.window.resize(1600, 1000)
    _settle()
    # Fit the camera to the final canvas (it was fitted to the window's first size).
    canonical_camera(viewer, "dorsal")
    _settle_conversions()
    _dismiss_notifications()
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
    if args.readme_images is not None:
        for path in readme_images(demo, args.readme_images):
            print(f"README image: {path}")
    layers = ", ".join(layer.name for layer in viewer.layers)
    demo.close()
    print(f"layers: {layers}")
    print(args.screenshot.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
