"""Shared test fixtures.

Every test runs with its own cache folder and with the API URL pointing at a closed local port,
so nothing can reach the internet by accident; tests that need the API use ``allen_api``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "napari-allen-cache"))
    # Port 9 (discard) on loopback: an accidental real request fails fast, never leaves the host.
    monkeypatch.setenv("NAPARI_ALLEN_API_URL", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def allen_server():
    """The local Allen API server on 127.0.0.1 with a free port, for the whole session."""
    from allen_local_api.server import LocalAllenServer

    with LocalAllenServer(host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def allen_api(allen_server, monkeypatch):
    """The running local server, reset (no faults, empty request log), with
    ``NAPARI_ALLEN_API_URL`` pointing at it. Yields the server object."""
    allen_server.reset()
    monkeypatch.setenv("NAPARI_ALLEN_API_URL", allen_server.url)
    yield allen_server
    allen_server.reset()


@pytest.fixture
def client(allen_api):
    """An :class:`AllenClient` of the local server (short backoff so fault tests stay fast)."""
    from napari_allen.api.client import AllenClient

    c = AllenClient(backoff=0.01, retries=4)
    yield c
    c.close()


@pytest.fixture
def layer_build_threads(monkeypatch) -> list[tuple[str, bool]]:
    """(layer type, built on the main thread?) for every napari layer built from a tuple
    during the test (``layers.prebuilt.build_layer``: the workers' builder, and
    ``add_in_turns``' for tuples handed to the main thread)."""
    import threading

    from napari_allen.layers import prebuilt

    threads: list[tuple[str, bool]] = []
    original = prebuilt.build_layer

    def spy(layer_tuple):
        threads.append((layer_tuple[2], threading.current_thread() is threading.main_thread()))
        return original(layer_tuple)

    monkeypatch.setattr(prebuilt, "build_layer", spy)
    return threads


@pytest.fixture
def runner(qtbot):
    """A dock's task runner (``widgets._tasks.TaskRunner``) on a throw-away parent widget."""
    from qtpy.QtWidgets import QWidget

    from napari_allen.widgets._tasks import TaskRunner

    parent = QWidget()
    qtbot.addWidget(parent)  # pytest-qt keeps only a weak reference
    runner = TaskRunner(parent)
    runner.test_parent = parent
    yield runner
    runner.cancel()


@pytest.fixture
def collections(monkeypatch) -> list[int]:
    """One entry per ``gc.collect()`` call during the test (napari's canvas asks for a full
    collection after every layer removal outside a batch)."""
    import gc

    calls: list[int] = []
    real = gc.collect

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gc, "collect", counting)
    return calls
