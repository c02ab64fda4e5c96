"""Pyramids built in a converter process (``child_process`` running ``io/pyramid.convert_file``):
same result as the thread, cancel, errors, a killed child and the thread fallback (issue #13:
no GIL held in the GUI)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

import numpy as np
import pytest

from child_commands import process_gone, unstartable_child
from grid_writers import write_mhd
from napari_allen import child_process
from napari_allen.errors import AllenFormatError
from napari_allen.io import pyramid
from napari_allen.io.atomic import file_lock
from napari_allen.io.pyramid import (
    build_pyramid,
    open_pyramid,
    pyramid_path,
    read_single_grid,
    start_pyramid_job,
)
from napari_allen.progress import Cancelled, CancelToken

SHAPE = (60, 40, 640)  # ten ML slabs; 640 > 2 * 256 on ML: three levels


def _gzip_nrrd(path, data: np.ndarray):
    import nrrd

    nrrd.write(str(path), data, {"encoding": "gzip", "space directions": np.diag([25.0] * 3),
                                 "space": "left-posterior-superior"})
    return path


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.random(SHAPE, dtype=np.float32)
    data[:, :, :70] = -1  # no data
    return write_mhd(tmp_path, "projection_density_25", data, "MET_FLOAT"), data


def _lock_of(target):
    return file_lock(target.with_name(target.name + ".lock"))


def _wait_started(job, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while job.pid is None:
        assert not job.done.is_set(), f"job ended before its child started: {job.error}"
        assert time.monotonic() < deadline, "converter process did not start"
        time.sleep(0.01)
    return job.pid


@pytest.mark.parametrize("kind", ["image", "labels"])
def test_child_built_pyramid_equals_the_thread_built_one(kind, image, tmp_path):
    if kind == "image":
        path, _ = image
    else:  # a compressed annotation: the child decodes it too
        data = np.zeros(SHAPE, dtype=np.uint32)
        data[10:30, 5:20, 100:500] = 385
        data[40:, :, 300:] = 614454277
        path = _gzip_nrrd(tmp_path / "annotation_25.nrrd", data)
    steps: list[str] = []
    pids: list[int | None] = []
    job = start_pyramid_job(path, cache_root=tmp_path / "proc")
    job.add_progress_callback(lambda j: (steps.append(j.message), pids.append(j.pid)))
    assert start_pyramid_job(path, cache_root=tmp_path / "proc") is job  # opened twice: one job
    assert job.done.wait(120), "conversion hung"
    assert job.error is None and job.mode == "process" and job.pid is None
    assert any("ML planes" in s for s in steps) and any(p for p in pids)  # from the child
    thread_built = build_pyramid(read_single_grid(path), tmp_path / "thread.zarr",
                                 identity=pyramid.source_identity(path))
    child_built = open_pyramid(job.target)
    assert job.pyramid is not None and job.pyramid.store == job.target
    assert len(child_built.levels) == len(thread_built.levels) == 3
    for ours, theirs in zip(child_built.levels, thread_built.levels, strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours[...], theirs[...])
    assert child_built.attrs == thread_built.attrs
    assert not job.target.with_name(job.target.name + ".part").exists()


def test_cancel_stops_the_child_and_leaves_no_cache(image, tmp_path):
    """Cancel reaches the child, which stops; the partial store (here one left by an earlier,
    interrupted conversion, which the child resumes) is removed: nothing half-built stays."""
    path, _ = image
    target = pyramid_path(path)
    token = CancelToken()

    def stop_after_first_slab(p) -> None:
        if p.done:
            token.cancel()

    with pytest.raises(Cancelled):
        build_pyramid(read_single_grid(path), target, progress=stop_after_first_slab,
                      cancel=token)
    part = target.with_name(target.name + ".part")
    assert part.is_dir()
    with _lock_of(target):  # the child waits for the lock: cancel arrives before it builds
        job = start_pyramid_job(path)
        pid = _wait_started(job)
        job.cancel()
        time.sleep(0.5)
    assert job.done.wait(60), "cancel hung"
    assert isinstance(job.error, Cancelled) and job.mode == "process"
    assert not part.exists() and not target.exists()
    assert process_gone(pid)


def test_cancel_terminates_a_child_that_does_not_stop(image, tmp_path, monkeypatch):
    monkeypatch.setattr(child_process, "CANCEL_GRACE_S", 0.3)
    path, _ = image
    target = pyramid_path(path)
    with _lock_of(target):  # the child stays blocked on the lock: it cannot stop by itself
        job = start_pyramid_job(path)
        pid = _wait_started(job)
        job.cancel()
        assert job.done.wait(30), "cancel hung"
    assert isinstance(job.error, Cancelled)
    assert process_gone(pid) and not target.exists()


def test_corrupt_input_error_names_the_file(tmp_path):
    path = _gzip_nrrd(tmp_path / "annotation_25.nrrd", np.ones(SHAPE, dtype=np.uint32))
    raw = path.read_bytes()
    header_end = raw.index(b"\n\n") + 2
    path.write_bytes(raw[:header_end] + b"\x1f\x8b\x08\x00" + b"not gzip " * 200)
    job = start_pyramid_job(path)
    assert job.done.wait(60), "conversion hung"
    assert job.mode == "process"
    assert isinstance(job.error, AllenFormatError)
    assert str(path) in str(job.error) and "corrupt" in str(job.error)
    assert not job.target.exists()


def test_killed_child_is_reported_not_waited_for(image, tmp_path):
    path, _ = image
    target = pyramid_path(path)
    with _lock_of(target):
        job = start_pyramid_job(path)
        pid = _wait_started(job)
        if hasattr(os, "getpriority"):  # the child yields the CPU to napari's event loop
            assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, 0) \
                or os.getpriority(os.PRIO_PROCESS, 0) == 19
        os.kill(pid, signal.SIGKILL)
        assert job.done.wait(30), "a killed converter hung the job"
    assert isinstance(job.error, child_process.ChildFailed)
    message = str(job.error)
    assert str(path) in message and "SIGKILL" in message and str(pid) in message
    assert not target.exists()
    again = start_pyramid_job(path)  # a failed job is not reused: opening again retries
    assert again is not job and again.done.wait(120) and again.error is None


@unstartable_child
def test_without_a_process_the_conversion_runs_in_a_thread(command, image, monkeypatch,
                                                           caplog):
    monkeypatch.setattr(child_process, "child_command", lambda: command)
    path, data = image
    with caplog.at_level(logging.WARNING, logger="napari_allen.io.pyramid"):
        job = start_pyramid_job(path)
        assert job.done.wait(120), "fallback hung"
    assert job.error is None and job.mode == "thread"
    assert any("converting in a thread" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)
    np.testing.assert_array_equal(job.pyramid.levels[0][...], data)


def test_the_converter_imports_no_gui_or_table_library(image, tmp_path):
    """The child's start-up cost is only what converting needs: no napari, Qt or pandas."""
    import json
    import subprocess

    path, _ = image
    heavy = ("napari", "qtpy", "PyQt5", "PySide2", "vispy", "pandas")
    script = ("import atexit, sys\n"
              f"atexit.register(lambda: sys.stderr.write('LOADED=' + ','.join("
              f"m for m in {heavy!r} if m in sys.modules) + '\\n'))\n"
              "from napari_allen.child_process import child_main\n"
              "sys.exit(child_main())")
    request = {"function": "napari_allen.io.pyramid:convert_file",
               "kwargs": {"source": str(path), "target": str(tmp_path / "p.zarr"),
                          "identity": pyramid.source_identity(path)}}
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    child.stdin.write(json.dumps(request) + "\n")
    child.stdin.flush()  # kept open: its end would mean "the parent went away", i.e. cancel
    events = [json.loads(line)["event"] for line in child.stdout]
    child.stdin.close()
    stderr = child.stderr.read()
    assert child.wait(120) == 0, stderr
    assert events[0] == "started" and "progress" in events and events[-1] == "done"
    assert "LOADED=\n" in stderr
    assert open_pyramid(tmp_path / "p.zarr") is not None


def test_the_child_starts_after_the_before_hook(image):
    """``before`` (the reader's wait until napari has shown the layer) runs first: the
    converter's interpreter start-up does not compete with napari's insert for the cores."""
    path, data = image
    seen: list = []
    job = start_pyramid_job(path, before=lambda job: seen.append((job.pid, job.mode)))
    assert job.done.wait(120) and job.error is None and job.mode == "process"
    assert seen == [(None, "")]
    np.testing.assert_array_equal(job.pyramid.levels[0][:, 3], data[:, 3])
