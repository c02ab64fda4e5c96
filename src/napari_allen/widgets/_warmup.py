"""napari's once-per-process costs of its first Labels layer, and the import of the libraries the
docks load at first use (``napari_allen.lazy``: pandas), paid in a background thread after a
dock opens instead of inside the user's first action that needs them.

Every napari ``Labels`` layer builds a random label colormap at creation (even when given the
atlas colours), which imports ``skimage.color`` with parts of scipy (~65 modules) the first
time, and its vispy node's polygon overlay draws an anti-aliased line whose dash patterns vispy
computes in Python once per process (~60-80 ms). The docks build layers in worker threads, but
the vispy node is created on napari's main thread, inside the insert of the session's first
mask, annotation or CCF reference (and File > Open Sample builds its layers there too). Here
both run once, in a daemon thread started :data:`WARM_AFTER_MS` after the first dock opened:
the thread holds the GIL in slices of the interpreter's switch interval (5 ms), never a turn
of its own, and the caches it fills are the process-wide ones napari and vispy read
(``functools.lru_cache``, ``sys.modules``).
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

#: Delay (ms) between a dock opening and the warm-up thread's start: the dock's own layout,
#: first paint and overlay steps come first.
WARM_AFTER_MS = 1000

_state = {"scheduled": False}  # docks open on napari's main thread: no lock needed
#: Set when the warm-up has run (tests wait on it).
warmed = threading.Event()


def warm_up_later() -> None:
    """Schedule the warm-up (:func:`warm_imports`, then :func:`warm_labels`) in a background
    thread, once per process (later calls do nothing)."""
    from qtpy.QtCore import QTimer

    if _state["scheduled"]:
        return
    _state["scheduled"] = True

    def start() -> None:
        threading.Thread(target=_warm, name="napari-allen-warm-up", daemon=True).start()

    QTimer.singleShot(WARM_AFTER_MS, start)


#: Libraries the docks' modules bind lazily (``napari_allen.lazy``): imported here so that no
#: first use on napari's main thread imports them (pandas: ~250 ms).
LAZY_LIBRARIES = ("pandas",)


def _warm() -> None:
    warm_imports()
    warm_labels()


def warm_imports() -> None:
    """Import :data:`LAZY_LIBRARIES` (a failure is logged: the first use imports it)."""
    import importlib

    for name in LAZY_LIBRARIES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the first use will say what is wrong
            logger.debug("warm-up import of %s failed", name, exc_info=True)


def warm_labels() -> None:
    """Run napari's first-Labels work that needs no viewer: the random label colormap its
    ``Labels.__init__`` builds (its imports) and vispy's dash atlas of the labels polygon
    overlay's line (its pattern cache). Failures are logged, never raised: this only moves
    costs, and napari would pay them itself."""
    try:
        from napari.utils.colormaps.colormap_utils import label_colormap
        from vispy.visuals.line.dash_atlas import DashAtlas

        label_colormap(49, 0.5, background_value=0)  # as napari's Labels.__init__ calls it
        DashAtlas()
    except Exception:  # noqa: BLE001 - another napari or vispy: nothing to warm
        logger.debug("napari Labels warm-up skipped", exc_info=True)
    finally:
        warmed.set()
