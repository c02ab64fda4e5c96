"""A dock opened as the first thing of a napari session imports no pandas on napari's main
thread (``napari_allen.lazy``): napari imports a dock's modules inside the click, and pandas
took ~250 ms of the session's first dock. The docks' background warm-up imports it instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_CHILD = r"""
import importlib.abc, json, sys, threading, time

main_thread_imports = []


class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pandas":  # asked only while pandas is not imported yet
            main_thread_imports.append(threading.current_thread() is threading.main_thread())
        return None


sys.meta_path.insert(0, Spy())
import napari
from qtpy.QtWidgets import QApplication

from napari_allen.widgets import _warmup

_warmup.WARM_AFTER_MS = 200
viewer = napari.Viewer(show=False)
app = QApplication.instance()
viewer.window.add_plugin_dock_widget("napari-allen", sys.argv[1])
at_add = list(main_thread_imports)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not _warmup.warmed.is_set():
    app.processEvents()
    time.sleep(0.01)
for _ in range(20):
    app.processEvents()
print(json.dumps({"at_add": at_add, "all": main_thread_imports,
                  "loaded": "pandas" in sys.modules, "warmed": _warmup.warmed.is_set()}))
viewer.close()
"""


@pytest.mark.parametrize("title", ["Structures", "Connectivity", "Gene expression",
                                   "Spatial search"])
def test_first_dock_of_a_session_imports_no_pandas_on_the_main_thread(title):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _CHILD, title], capture_output=True,
                          text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert True not in out["at_add"], "the dock's import or construction imported pandas"
    assert True not in out["all"], "a first use on the main thread imported pandas"
    assert out["warmed"] and out["loaded"], "the background warm-up imports pandas"
