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
