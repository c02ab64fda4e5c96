"""Progress reporting and cancellation shared by every long-running task (no Qt).

Library functions that take time accept two keyword arguments:

- ``progress``: a callable receiving :class:`Progress` snapshots (may be called from any thread);
- ``cancel``: a :class:`CancelToken`; the function calls ``cancel.check()`` often and stops
  with :class:`Cancelled` once it is set.

The CLI prints the snapshots; the widgets forward them from a napari thread worker to a
progress bar on the main thread and wire their Cancel button to ``CancelToken.cancel``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

#: Least time (s) between two updates of one napari activity-dock bar: each change of such a
#: bar runs ``processEvents()``, a repaint of the whole window (30-100 ms under Xvfb + llvmpipe
#: with the GL canvas in it). Task bars (widgets) and conversion bars (layers) both keep to it.
ACTIVITY_BAR_EVERY_S = 0.5


class Cancelled(Exception):
    """Raised inside a task when its :class:`CancelToken` was cancelled."""


class CancelToken:
    """A thread-safe cancel flag."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True (early) if cancelled meanwhile."""
        return self._event.wait(seconds)


@dataclass(frozen=True)
class Progress:
    """A snapshot of a task's progress.

    ``done``/``total`` count items (experiments, seeds, files...); ``bytes_done``/``bytes_total``
    count transferred bytes when known. ``total`` is None while unknown.
    """

    done: int = 0
    total: int | None = None
    message: str = ""
    bytes_done: int = 0
    bytes_total: int | None = None
    failed: int = 0


ProgressCallback = Callable[[Progress], None]


def report(callback: ProgressCallback | None, **kwargs) -> None:
    """Call ``callback(Progress(**kwargs))`` when a callback was given."""
    if callback is not None:
        callback(Progress(**kwargs))


def check(cancel: CancelToken | None) -> None:
    """``cancel.check()`` when a token was given."""
    if cancel is not None:
        cancel.check()


# --- reaching the GUI thread (installed from above; this package holds no Qt) -------------------
MainThreadCaller = Callable[[Callable[[], None]], object]

#: ``caller(fn)`` queues ``fn`` on napari's main (GUI) thread. Installed by
#: :mod:`napari_allen.widgets.main_thread` when npe2 activates the plugin (its first reader,
#: sample or dock use in napari) or the widgets are imported; None in headless scripts.
_MAIN_THREAD_CALLER: MainThreadCaller | None = None


def set_main_thread_caller(caller: MainThreadCaller | None) -> None:
    """Install how work finished in background threads reaches the GUI thread."""
    global _MAIN_THREAD_CALLER
    _MAIN_THREAD_CALLER = caller


def main_thread_caller() -> MainThreadCaller | None:
    """The installed GUI-thread caller, or None (no GUI: nothing on screen to update)."""
    return _MAIN_THREAD_CALLER
