"""Modules imported at their first use instead of at the importing module's import.

Opening a dock imports the plugin's widget modules on napari's main thread, inside the click
(napari imports a dock's module when the Plugins menu item is chosen). Importing pandas there
took ~250 ms of the first dock of a session (napari itself imports pandas only with its
first Labels layer), a freeze users meet before anything else the plugin does (issue #13).
Modules on the docks' import path bind such a library with :func:`lazy_module`; it is
imported when first used - in the worker that first builds a table, or in the docks'
background warm-up (``widgets/_warmup.py``) - and the name then behaves as the module itself.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for module ``name`` until an attribute is read: the first read imports it
    (Python's import lock makes concurrent first reads wait for one import) and copies its
    namespace here, so later reads are plain attribute look-ups."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


def lazy_module(name: str) -> Any:
    """Module ``name`` itself if it is imported already, else a :class:`LazyModule` that
    imports it at its first attribute read. Never puts anything in ``sys.modules``."""
    import sys

    return sys.modules.get(name) or LazyModule(name)
