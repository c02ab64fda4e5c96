"""A large grid opened in napari with no dock ever opened fills in by itself when its
background conversion ends, and the conversion shows (cancelable) in napari's activity dock."""

from __future__ import annotations

import numpy as np
import pytest

from grid_writers import write_mhd

SHAPE = (40, 30, 70)


@pytest.fixture
def gated_build(monkeypatch):
    """Conversions run in a thread (the fallback when no converter process can start), report
    25 % and then wait for ``gate.set()`` before building."""
    import threading

    from napari_allen import child_process
    from napari_allen.io import pyramid
    from napari_allen.progress import report

    monkeypatch.setattr(child_process, "child_command", lambda: None)

    gate = threading.Event()
    real_build = pyramid.build_pyramid

    def build(vol, target, *, progress=None, cancel=None, **kw):
        report(progress, done=1, total=4, message="level 0")
        gate.wait(30)
        return real_build(vol, target, progress=progress, cancel=cancel, **kw)

    monkeypatch.setattr(pyramid, "build_pyramid", build)
    return gate


@pytest.fixture
def fresh_activation(monkeypatch):
    """As in a new napari session: no main-thread caller installed (no dock imported), the
    plugin not activated yet, and every grid large enough for the multiscale path."""
    npe2 = pytest.importorskip("npe2")
    from napari_allen import progress
    from napari_allen.layers import multiscale

    monkeypatch.setattr(multiscale, "MULTISCALE_VOXELS", 1000)
    monkeypatch.setattr(progress, "_MAIN_THREAD_CALLER", None)
    pm = npe2.PluginManager.instance()
    pm.discover()
    pm.deactivate("napari-allen")  # the next use activates it, as napari's first use does
    return pm


def _conversion_lock(path):
    """Holding it keeps a converter process waiting before it builds anything."""
    from napari_allen.io import pyramid
    from napari_allen.io.atomic import file_lock

    target = pyramid.pyramid_path(path)
    return file_lock(target.with_name(target.name + ".lock"))


def test_layer_fills_in_without_a_dock(make_napari_viewer, qtbot, tmp_path, fresh_activation):
    from napari_allen.io import pyramid
    from napari_allen.progress import main_thread_caller

    data = (np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) % 97) + 3.0
    path = write_mhd(tmp_path, "projection_density_100", data, res=100)
    viewer = make_napari_viewer()
    with _conversion_lock(path):
        (layer,) = viewer.open(str(path), plugin="napari-allen")
        assert layer.multiscale and layer.metadata["pyramid"] == "converting"
        assert main_thread_caller() is not None  # installed by npe2's on_activate
        job = pyramid._JOBS[pyramid.pyramid_path(path).stem]
        assert float(np.asarray(layer._slice.image.raw).max()) == 0  # empty while converting
    assert job.done.wait(60) and job.error is None
    assert job.mode == "process"
    # No slider moved, no zoom: only the event loop runs.
    qtbot.waitUntil(lambda: layer.metadata.get("pyramid") == "ready", timeout=20_000)
    assert layer.contrast_limits[0] == pytest.approx(3.0)
    assert layer.contrast_limits[1] > 90
    shown = np.asarray(layer._slice.image.raw)  # what the canvas draws
    assert shown.size and float(shown.min()) >= 3.0 and float(shown.max()) > 90


def test_conversion_shows_in_activity_dock_and_cancels(make_napari_viewer, qtbot, tmp_path,
                                                       fresh_activation, gated_build):
    from napari.utils import progress

    from napari_allen.io import pyramid

    data = np.ones(SHAPE, dtype=np.float32)
    path = write_mhd(tmp_path, "projection_density_100", data, res=100)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-allen")
    job = pyramid._JOBS[pyramid.pyramid_path(path).stem]

    def bar():
        bars = [b for b in progress._all_instances if "multiscale cache" in (b.desc or "")]
        return bars[0] if bars else None

    qtbot.waitUntil(lambda: bar() is not None and bar().n > 0, timeout=20_000)
    bar().cancel()  # what the activity dock's Cancel button calls
    assert job.cancel_token.cancelled
    gated_build.set()
    assert job.done.wait(60) and job.error is not None
    qtbot.waitUntil(lambda: layer.metadata.get("pyramid") == "cancelled", timeout=20_000)
    qtbot.waitUntil(lambda: bar() is None, timeout=20_000)  # the bar closed


def test_converter_process_cancelled_from_the_activity_dock(make_napari_viewer, qtbot, tmp_path,
                                                          fresh_activation, monkeypatch):
    """The activity dock's Cancel stops a converter process (terminated when it cannot stop by
    itself: here it waits for a lock), the layer says so and the bar closes."""
    import os

    from napari.utils import progress

    from napari_allen import child_process
    from napari_allen.io import pyramid
    from napari_allen.progress import Cancelled

    monkeypatch.setattr(child_process, "CANCEL_GRACE_S", 0.5)
    path = write_mhd(tmp_path, "projection_density_100", np.ones(SHAPE, dtype=np.float32), res=100)
    viewer = make_napari_viewer()

    def bar():
        bars = [b for b in progress._all_instances if "multiscale cache" in (b.desc or "")]
        return bars[0] if bars else None

    with _conversion_lock(path):
        (layer,) = viewer.open(str(path), plugin="napari-allen")
        job = pyramid._JOBS[pyramid.pyramid_path(path).stem]
        qtbot.waitUntil(lambda: bar() is not None and job.pid is not None, timeout=30_000)
        pid = job.pid
        bar().cancel()  # what the activity dock's Cancel button calls
        qtbot.waitUntil(job.done.is_set, timeout=30_000)
    assert isinstance(job.error, Cancelled) and job.mode == "process"
    qtbot.waitUntil(lambda: layer.metadata.get("pyramid") == "cancelled", timeout=20_000)
    qtbot.waitUntil(lambda: bar() is None, timeout=20_000)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
