"""napari's first-Labels costs are paid by a background warm-up once a dock opens
(widgets/_warmup.py): what it fills, that docks schedule it once, and that it never raises."""

from __future__ import annotations

import os
import subprocess
import sys

from napari_allen.widgets import _warmup


def test_warm_up_fills_the_caches_napari_first_labels_layer_would_fill():
    """In a fresh interpreter, the warm-up imports what napari's ``Labels.__init__`` imports
    (its random label colormap: ``skimage.color``) and fills vispy's dash-pattern cache that
    the labels polygon overlay's line reads on the main thread; before it, neither."""
    code = (
        "import sys\n"
        "from vispy.visuals.line import dash_atlas\n"
        "from napari_allen.widgets import _warmup\n"
        "def state():\n"
        "    cached = dash_atlas._make_pattern.cache_info().currsize\n"
        "    return 'skimage.color' in sys.modules, cached\n"
        "before = state()\n"
        "_warmup.warm_labels()\n"
        "print(before, state(), _warmup.warmed.is_set())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120, env=env).stdout.strip().splitlines()[-1]
    assert out == "(False, 0) (True, 13) True"


def test_docks_schedule_the_warm_up_once_per_process(make_napari_viewer, qtbot, monkeypatch):
    from napari_allen.widgets._dock import AllenDock

    calls: list = []
    monkeypatch.setattr(_warmup, "WARM_AFTER_MS", 0)
    monkeypatch.setattr(_warmup, "_state", {"scheduled": False})
    monkeypatch.setattr(_warmup, "warm_labels", lambda: calls.append(1))
    viewer = make_napari_viewer()
    docks = [AllenDock(viewer) for _ in range(3)]
    # The warm-up imports pandas before the Labels work: alone in a process that is ~0.3 s.
    qtbot.waitUntil(lambda: bool(calls), timeout=10000)
    qtbot.wait(100)  # the other docks scheduled nothing more
    assert calls == [1]
    assert all(dock.viewer is viewer for dock in docks)


def test_warm_up_failures_are_logged_not_raised(monkeypatch, caplog):
    import napari.utils.colormaps.colormap_utils as cu

    def broken(*args, **kwargs):
        raise RuntimeError("another napari")

    monkeypatch.setattr(cu, "label_colormap", broken)
    _warmup.warmed.clear()
    with caplog.at_level("DEBUG", logger=_warmup.__name__):
        _warmup.warm_labels()
    assert _warmup.warmed.is_set()
    assert "warm-up skipped" in caplog.text
