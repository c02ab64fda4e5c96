"""How work finished in background threads below the widgets reaches napari's GUI thread.

``layers/`` holds no Qt, so it asks for a *main-thread caller*
(:func:`napari_allen.progress.set_main_thread_caller`) and this module installs one
built on superqt's ``ensure_main_thread``. It is installed twice over:

- by npe2 when the plugin is activated (``on_activate`` in ``napari.yaml``): the first use of
  any contribution - typically dragging a 25 µm file into napari - so a background pyramid
  conversion refreshes its layer even if no dock was ever opened;
- by importing the widgets package (a dock opened through a script).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _call_on_main_thread(fn: Callable[[], None]) -> None:
    """Queue ``fn`` on the QApplication's thread; drop it when there is no QApplication
    (a script reading files headless has no layer on screen to refresh)."""
    from qtpy.QtCore import QCoreApplication
    from superqt.utils import ensure_main_thread

    if QCoreApplication.instance() is None:
        return
    ensure_main_thread(fn)()


def install() -> bool:
    """Install :func:`_call_on_main_thread` as the layers' main-thread caller. False (and
    nothing installed) when no Qt binding can be imported (napari installed headless)."""
    from napari_allen.progress import set_main_thread_caller

    try:
        import qtpy.QtCore  # noqa: F401 - fails without a Qt binding
        import superqt.utils  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError or qtpy's PythonQtError
        log.debug("no Qt binding, background layers refresh on the next slice: %s", exc)
        return False
    set_main_thread_caller(_call_on_main_thread)
    return True


def activate(context=None) -> None:
    """npe2 ``on_activate`` hook (``context`` is npe2's PluginContext, unused)."""
    install()
