"""A background pyramid conversion shown in napari's activity dock, with a Cancel button.

napari's ``progress`` bars are plain (non-Qt) objects that its activity dock watches; the dock's
widgets are Qt, so every bar is created, advanced and closed on the GUI thread through the
main-thread caller (``caller(fn)``) the widgets package installs. Steps arriving from the
conversion thread are coalesced to whole percents (at most 100 GUI calls per conversion).
"""

from __future__ import annotations

from ..io.pyramid import PyramidJob
from ..progress import MainThreadCaller as Caller

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
    state: dict = {"bar": None, "percent": -1, "closed": False}

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
        if message:
            bar.set_description(f"{title}: {message}")

    def close() -> None:
        state["closed"] = True
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def on_progress(job: PyramidJob) -> None:
        percent = min(int(job.fraction * 100), 99)  # 100 % is the finished pyramid
        if percent > state["percent"]:
            state["percent"] = percent
            message = job.message
            caller(lambda: advance(percent, message))

    caller(open_bar)
    job.add_progress_callback(on_progress)
    on_progress(job)  # steps reported before the callback was added
    job.add_done_callback(lambda _job: caller(close))
