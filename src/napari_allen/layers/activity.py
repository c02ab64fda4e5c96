"""A background pyramid conversion shown in napari's activity dock, with a Cancel button.

napari's ``progress`` bars are plain (non-Qt) objects that its activity dock watches; the dock's
widgets are Qt, so every bar is created, advanced and closed on the GUI thread through the
main-thread caller (``caller(fn)``) the widgets package installs. Steps arriving from the
conversion thread are coalesced to whole percents, at most two a second (each change of napari's
bar repaints the whole window).
"""

from __future__ import annotations

import threading
import time

from ..io.pyramid import PyramidJob
from ..progress import ACTIVITY_BAR_EVERY_S
from ..progress import MainThreadCaller as Caller

#: Least time between two updates of a bar (s).
UPDATE_EVERY_S = ACTIVITY_BAR_EVERY_S

#: The job each pyramid key's bar shows (a failed or cancelled job restarts as a new job).
_SHOWN: dict[str, PyramidJob] = {}


def _bar_class():
    from napari.utils import cancelable_progress

    class _JobBar(cancelable_progress):
        """napari's cancelable bar calls ``cancel_callback`` only while it is iterated; a
        conversion is not iterated here, so the job is cancelled at the click."""

        def cancel(self) -> None:
            super().cancel()
            if self.cancel_callback is not None:
                self.cancel_callback()

    return _JobBar


def show_job_progress(job: PyramidJob, caller: Caller, title: str) -> None:
    """Show ``job``'s fraction (0-100 %) as a cancelable bar titled ``title`` until it ends."""
    if _SHOWN.get(job.key) is job:  # the same file opened twice: one bar
        return
    _SHOWN[job.key] = job
    state: dict = {"bar": None, "percent": -1, "closed": False, "at": -UPDATE_EVERY_S,
                   "timer": None}
    lock = threading.Lock()

    def open_bar() -> None:
        if not state["closed"]:
            state["bar"] = _bar_class()(total=100, desc=title, cancel_callback=job.cancel)
            pending = state.pop("pending", None)
            if pending is not None:
                advance(*pending)

    def advance(percent: int, message: str) -> None:
        bar = state["bar"]
        if state["closed"]:
            return
        if bar is None:  # still being created: napari runs nested event loops in there
            state["pending"] = (percent, message)
            return
        if percent > bar.n:
            bar.update(percent - bar.n)
        if message and message != state.get("message"):
            state["message"] = message
            bar.set_description(f"{title}: {message}")

    def close() -> None:
        state["closed"] = True
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def send() -> None:
        with lock:
            state["timer"], state["at"] = None, time.monotonic()
            percent, message = state["percent"], job.message
        caller(lambda: advance(percent, message))

    def on_progress(job: PyramidJob) -> None:
        percent = min(int(job.fraction * 100), 99)  # 100 % is the finished pyramid
        # Each change of napari's bar runs QApplication.processEvents(): a repaint of the
        # whole window (30-100 ms under llvmpipe), so a few per second at most; a step
        # arriving sooner is shown when the interval is over (never lost).
        with lock:
            if percent <= state["percent"]:
                return
            state["percent"] = percent
            if state["timer"] is not None:
                return
            wait = state["at"] + UPDATE_EVERY_S - time.monotonic()
            if wait > 0:
                state["timer"] = threading.Timer(wait, send)
                state["timer"].daemon = True
                state["timer"].start()
                return
        send()

    caller(open_bar)
    job.add_progress_callback(on_progress)
    on_progress(job)  # steps reported before the callback was added
    job.add_done_callback(lambda _job: caller(close))
