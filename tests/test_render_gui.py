"""Real rendering under Xvfb: the sample data must show up in a 3-D screenshot."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _lit_fraction(shot: np.ndarray, threshold: int = 40) -> float:
    """Fraction of pixels brighter than the black background."""
    return float((shot[..., :3].astype(int).sum(axis=-1) > threshold).mean())


def test_nrp1_sample_renders_in_3d(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-allen", "nrp1")
    energy = next(layer for layer in viewer.layers if layer._type_string == "image")
    for layer in viewer.layers:
        layer.visible = layer is energy

    blank = viewer.screenshot(canvas_only=True, flash=False)
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)

    assert shot.ndim == 3 and shot.shape[-1] in (3, 4)
    # The volume covers a good part of the canvas in 3-D: not a blank or uniform frame.
    assert _lit_fraction(shot) > 0.05, "3-D canvas is (almost) blank"
    assert shot[..., :3].std() > 5
    # And the 3-D view differs from the 2-D slice it came from.
    assert blank.shape != shot.shape or np.abs(blank.astype(int) - shot.astype(int)).mean() > 1

    energy.visible = False
    hidden = viewer.screenshot(canvas_only=True, flash=False)
    assert _lit_fraction(hidden) < 0.01, "hiding the only layer should leave a black canvas"


def test_annotation_labels_render_in_atlas_colours(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-allen", "nrp1")
    labels = next(layer for layer in viewer.layers if layer._type_string == "labels")
    for layer in viewer.layers:
        layer.visible = layer is labels
    viewer.dims.set_point(0, 5400.0)  # a coronal slice through the middle of the brain
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].reshape(-1, 3)
    lit = shot[shot.sum(axis=1) > 40]
    assert len(lit) > 0.05 * len(shot)
    # Atlas colouring: many distinct colours (one per structure), not a single flat colour.
    assert len(np.unique(lit // 8, axis=0)) > 20


def test_demo_screenshot_shows_the_brain_outline(tmp_path):
    """``make demo``'s scene under Xvfb: the outline is drawn, dorsal view, anterior left."""
    from qtpy.QtWidgets import QApplication

    from napari_allen._demo import build_viewer

    demo = build_viewer(show=True, log=lambda _msg: None)
    viewer = demo.viewer
    try:
        viewer.window.resize(1600, 1000)
        for _ in range(20):
            QApplication.processEvents()
        outline = viewer.layers["brain outline (CCFv3)"]
        assert viewer.dims.ndisplay == 3
        # The screenshot waits for the docks' deferred steps: the Structures tree is filled.
        from napari_allen._demo import _settle

        _settle()
        structures = demo.docks["Structures"][1]
        assert structures.tree.topLevelItemCount() == 1  # root (0 until the tree's turn)
        names = {layer.name for layer in viewer.layers}
        assert {"VPM mesh", "spatial search 158375425 lines"} <= names
        others = [layer for layer in viewer.layers if layer is not outline and layer.visible]
        for layer in others:
            layer.visible = False
        viewer.reset_view()
        from napari_allen.widgets._view import canonical_camera

        canonical_camera(viewer, "dorsal", zoom=0.8)
        from napari_allen.widgets._view import _overlays

        axes, scale_bar = _overlays(viewer)
        assert axes.visible and scale_bar.visible  # orientation on in the demo
        axes.visible = scale_bar.visible = False  # measure the brain alone
        for _ in range(10):
            QApplication.processEvents()
        shot = viewer.screenshot(canvas_only=True, flash=False)
        outline.visible = False
        blank = viewer.screenshot(canvas_only=True, flash=False)
        assert _lit_fraction(blank, 20) < 0.01
        lit = shot[..., :3].astype(int).sum(axis=-1) > 20
        assert lit.mean() > 0.05, "the outline is not drawn"
        rows, cols = np.nonzero(lit)
        width, height = np.ptp(cols), np.ptp(rows)
        # The whole brain is in view (not cut by the canvas edges).
        assert cols.min() > 0 and cols.max() < lit.shape[1] - 1, (lit.shape, width, height)
        assert rows.min() > 0 and rows.max() < lit.shape[0] - 1, (lit.shape, width, height)
        # Dorsal view: AP (13.2 mm) across, ML (10.4 mm) up; the brain is wider than tall.
        assert 1.05 < width / height < 1.6
        # Anterior (olfactory bulbs) to the left: the left end is narrower than the right half.
        left = lit[:, cols.min():cols.min() + width // 10].sum(axis=0).mean()
        middle = lit[:, cols.min() + width // 2 - width // 20:
                     cols.min() + width // 2 + width // 20].sum(axis=0).mean()
        assert left < 0.6 * middle
        for layer in others:
            layer.visible = True
        outline.visible = True
        full = viewer.screenshot(canvas_only=True, flash=False)
        assert _lit_fraction(full, 20) >= 0.9 * lit.mean()
    finally:
        demo.close()
