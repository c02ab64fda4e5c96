"""Run a widget's heavy work in a napari thread worker, with progress, cancel and stale-result
suppression.

A task is a plain function ``fn(*, progress, cancel, emit)`` from the pure layers: it reports
:class:`~napari_allen.progress.Progress` snapshots through ``progress``, polls ``cancel``, and may
hand partial results (e.g. one LayerDataTuple per experiment) to ``emit`` (``emit(obj,
wait=True)`` returns once the main thread has handled it, steps queued included: the task's
threads then leave the GIL to napari while it shows the result). The runner calls it in
a worker thread and delivers everything back on the main thread, where the widget may touch the
viewer. Starting a new task cancels the previous one; anything the old task still sends is
dropped, so a slow stale search can never overwrite a newer one.

Long work shows determinate progress twice: in the widget's status row and, once it has run
for :data:`ACTIVITY_AFTER_S`, in napari's activity dock (a :class:`napari.utils.progress` bar
whose cancel button cancels the task).
Errors are shown in the row (wrapped, never widening the dock) and as a napari notification.

Everything a task sends back (progress, partial results, its result, its end) is delivered
through one plugin-wide queue, one handler per event-loop turn and never inside another
handler: napari's activity bar (and other Qt code) runs ``processEvents()``, which would otherwise
deliver the next layer *inside* the current handler, chaining several layer additions and
repaints into one long freeze. Widgets queue further main-thread steps with
:meth:`TaskRunner.then` (e.g. one layer per turn); the runner counts as running until they ran.

Each task runs inside the shared client's ``served_block``: when it ends, the row (and the
widgets' summaries, through :meth:`TaskRunner.with_note`) say whether its results came from the
metadata cache and how its file downloads went (downloaded / verified / re-fetched / failed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QWidget

from napari_allen.progress import ACTIVITY_BAR_EVERY_S, Cancelled, CancelToken, Progress
from napari_allen.widgets._common import WrappingLabel

logger = logging.getLogger(__name__)

#: Minimum time between two progress updates shown (seconds).
PROGRESS_EVERY_S = 0.1

Task = Callable[..., Any]
ACTIVITY_EVERY_S = ACTIVITY_BAR_EVERY_S  # napari activity-bar updates at most this often
#: napari's activity-dock bar appears once a task has run this long (s). Creating it repaints
#: the window synchronously (napari's activity dialog runs ``processEvents``: 80-165 ms on the
#: main thread), which a click whose work ends sooner should not pay; the dock's own row shows
#: the task from its first moment.
ACTIVITY_AFTER_S = 0.5


def _shared_transport():
    """The shared client's HTTP transport (None if no client can be made: the task will say
    why when it tries)."""
    from napari_allen.widgets._common import shared_client

    try:
        return shared_client().http
    except Exception:  # noqa: BLE001 - the task reports the real error
        logger.debug("no shared client", exc_info=True)
        return None


#: Quick deliveries (e.g. progress text) run together in one turn while they take less than this
#: (seconds); anything slower ends the turn so the event loop runs between two layer additions.
TURN_BUDGET_S = 0.01
#: The queue is drained by a timer of this many ms, not a 0 ms one: Qt 6 turns a 0 ms single
#: shot into a posted event, and posted events posted while posted events are being sent run
#: in the same pass - the whole queue (and the repaints it causes) would run back to back
#: without input or timer events in between.
DRAIN_TIMER_MS = 1
#: After a slow handler (e.g. a layer insert) the next one waits this long (ms): the repaint the
#: insert caused, input and timers get a pass of the event loop of their own first.
AFTER_SLOW_MS = 20


class _Deliveries:
    """The plugin-wide FIFO of main-thread handlers (see the module doc): drained by a short
    timer (``DRAIN_TIMER_MS``), one slow handler per event-loop turn, never while another
    handler runs (a nested ``processEvents()`` inside a handler finds the queue parked until
    the handler returns). A handler posted ``own_turn`` ends its turn however quick it was:
    its cost is the repaint it causes (e.g. showing a layer), which Qt runs right after the
    turn, before any timer."""

    def __init__(self) -> None:
        # (runner or None, generation or None = never stale, handler, args, own turn)
        self.queue: deque[tuple[TaskRunner | None, int | None, Callable, tuple, bool]] = deque()
        self.depth = 0  # handlers running (>0 inside a nested event loop)
        self.scheduled = False
        self.draining = False  # drain() schedules the next pass itself

    def post(self, runner: TaskRunner | None, generation: int | None, fn: Callable, *args: Any,
             own_turn: bool = False) -> None:
        self.queue.append((runner, generation, fn, args, own_turn))
        self.schedule()

    def pending(self, runner: TaskRunner) -> bool:
        return any(r is runner and (g is None or r._current(g)) for r, g, _, _, _ in self.queue)

    def schedule(self, delay_ms: int = DRAIN_TIMER_MS) -> None:
        if self.queue and not self.scheduled and not self.depth:
            self.scheduled = True
            QTimer.singleShot(delay_ms, self.drain)

    def drain(self) -> None:
        self.scheduled = False
        if self.depth:
            return  # the running handler reschedules when it returns
        start = time.perf_counter()
        self.draining = True
        own_turn = False
        try:
            while (self.queue and not own_turn
                   and time.perf_counter() - start < TURN_BUDGET_S):
                _, _, fn, args, own_turn = self.queue.popleft()
                self.run(fn, *args)
        finally:
            self.draining = False
            slow = own_turn or time.perf_counter() - start >= TURN_BUDGET_S
            self.schedule(AFTER_SLOW_MS if slow else DRAIN_TIMER_MS)

    def run(self, fn: Callable, *args: Any) -> Any:
        """Run a handler now, marking it as running (deliveries wait until it returns)."""
        self.depth += 1
        try:
            return fn(*args)
        finally:
            self.depth -= 1
            if not self.depth and not self.draining:
                self.schedule()


_deliveries = _Deliveries()


def deliveries_idle() -> bool:
    """True when the plugin-wide queue holds no main-thread step and no drain is scheduled
    (scripts driving the event loop, e.g. the demo's screenshot, wait for this)."""
    return not _deliveries.queue and not _deliveries.scheduled


def run_in_turns(steps: list[Callable[[], Any]], delay_ms: int = 0) -> None:
    """Run ``steps`` on the main thread through the plugin-wide delivery queue, one per
    event-loop turn (each ``own_turn``, the next queued when the previous one has run), the
    first ``delay_ms`` from now: main-thread work that belongs to no task (e.g. switching
    overlays on) then never shares a turn with a task's steps. A step that raises
    ``RuntimeError`` (its Qt object was deleted, e.g. the viewer closed) ends the chain."""
    remaining = list(steps)

    def next_step() -> None:
        if not remaining:
            return
        try:
            remaining.pop(0)()
        except RuntimeError:
            logger.debug("step chain ended", exc_info=True)
            return
        post()

    def post() -> None:
        if remaining:
            _deliveries.post(None, None, next_step, own_turn=True)

    QTimer.singleShot(delay_ms, post)


class _DeferredProgressBar(QProgressBar):
    """A progress bar whose updates are painted with the window's next repaint.

    ``QProgressBar.setValue`` repaints the bar synchronously; in napari's window (a GL canvas
    composed with the widgets, llvmpipe) each such repaint cost 60-300 ms on the main thread,
    once per progress step of a task."""

    def show_progress(self, done: int, total: int) -> None:
        """Range ``0..total`` (0: busy indicator) at ``done``, painted asynchronously."""
        self.setUpdatesEnabled(False)  # setValue's synchronous repaint becomes a no-op...
        try:
            self.setRange(0, total)
            if total:
                self.setValue(done)
        finally:
            self.setUpdatesEnabled(True)  # ...and this schedules one ordinary update()


class TaskRunner(QObject):
    """One task at a time for one widget.

    ``runner.widget`` is a row (progress bar, status text, Cancel button) to put in the widget's
    layout. ``run(fn, on_result=..., on_partial=..., on_error=...)`` starts ``fn`` in a worker.
    """

    # (generation, payload): the generation tags every message so stale ones can be dropped.
    _progressed = Signal(object)
    _partial = Signal(object)
    #: True when a task starts, False when it ends (done, failed or cancelled): widgets
    #: disable the actions that would use a result that is about to be replaced.
    running_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.widget = QWidget(parent)
        self._bar = _DeferredProgressBar(self.widget)
        self._bar.setTextVisible(True)
        self._status = WrappingLabel("", self.widget)
        self._cancel_button = QPushButton("Cancel", self.widget)
        self._cancel_button.setEnabled(False)
        self._cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout(self.widget)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self._bar, 2)
        row.addWidget(self._status, 3)
        row.addWidget(self._cancel_button)
        self._bar.setVisible(False)

        self._generation = 0
        #: Cache/download counts (:class:`~napari_allen.api.metacache.Served`) of the last
        #: task that ended; None before any, or when no client could be made.
        self.served = None
        self._token: CancelToken | None = None
        self._callbacks: dict[str, Callable | None] = {}
        self.worker = None
        self._activity = None  # the napari activity-dock progress bar of the current task
        self._last_snap: Progress | None = None  # the current task's latest progress
        self._activity_at = 0.0  # when it was last updated (time.monotonic)
        self._in_activity = False
        # Queued: emitted from the worker thread, received on the thread owning this object,
        # then handled through the plugin-wide delivery queue (one per event-loop turn).
        self._progressed.connect(lambda m: self._deliver(self._on_progress, m),
                                 Qt.ConnectionType.QueuedConnection)
        self._partial.connect(lambda m: self._deliver(self._on_partial, m),
                              Qt.ConnectionType.QueuedConnection)
        if parent is not None:
            parent.destroyed.connect(self.cancel)

    # --- public API ---------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        """A task runs, or its results / :meth:`then` steps still wait for their turn."""
        return self.worker is not None or _deliveries.pending(self)

    def then(self, fn: Callable, *args: Any, own_turn: bool = False,
             even_if_cancelled: bool = False) -> None:
        """Run ``fn(*args)`` on the main thread in a later event-loop turn, after everything
        delivered or queued before it, unless a new task or a cancel makes it stale. Use it to
        split main-thread work (e.g. adding several layers) so the GUI breathes in between.

        ``own_turn``: nothing else runs in ``fn``'s turn, however quick ``fn`` is (for steps
        whose cost is the repaint they cause, e.g. showing a layer). ``even_if_cancelled``:
        run it even if the task is cancelled or replaced meanwhile (to finish what a step
        started, e.g. show a layer inserted hidden); it still counts as running."""
        generation = None if even_if_cancelled else self._generation
        step = fn if even_if_cancelled else self._if_current(self._generation, fn)
        _deliveries.post(self, generation, step, *args, own_turn=own_turn)

    def _if_current(self, generation: int, fn: Callable) -> Callable:
        return lambda *args: fn(*args) if self._current(generation) else None

    def _deliver(self, handler: Callable, message: Any) -> None:
        """Queue a message from the worker (``message[0]`` is its generation)."""
        _deliveries.post(self, message[0], handler, message)

    @property
    def status_text(self) -> str:
        return self._status.text()

    @property
    def note(self) -> str:
        """How the last finished task got its data: 'results from the cache' when its metadata
        came from the metadata cache, and its file downloads as 'n downloaded, n verified,
        n re-fetched, n failed'; '' when neither applies."""
        served = self.served
        if served is None:
            return ""
        parts = [f"results {served.label}"] if served.label else []
        if served.files_label:
            parts.append(f"files: {served.files_label}")
        return "; ".join(parts)

    def with_note(self, text: str) -> str:
        """``text`` followed by :attr:`note` (if any), for the widgets' summaries."""
        note = self.note
        return f"{text} ({note})" if note else text

    def run(
        self,
        fn: Task,
        *,
        on_result: Callable[[Any], None] | None = None,
        on_partial: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
        description: str = "",
    ) -> None:
        """Start ``fn(progress=..., cancel=..., emit=...)`` in a worker thread.

        ``on_partial(obj)`` receives each ``emit(obj)``, ``on_result(value)`` the return value,
        ``on_error(exc)`` any exception but a cancellation (after the error is shown) and
        ``on_cancel()`` a cancellation (so partial results can be labelled or dropped); all run
        on the main thread and only while this task is the current one.
        """
        self.cancel()
        self._generation += 1
        generation = self._generation
        token = CancelToken()
        self._token = token
        self._callbacks = {"result": on_result, "partial": on_partial, "error": on_error,
                           "cancel": on_cancel}

        last_sent = [0.0]

        def progress(snapshot: Progress) -> None:
            # At most PROGRESS_EVERY_S apart (the last step always): each update repaints the
            # bar synchronously, and with it the OpenGL canvas - hundreds of repaints per
            # search froze the window.
            now = time.monotonic()
            final = snapshot.total is not None and snapshot.done >= snapshot.total
            if not final and now - last_sent[0] < PROGRESS_EVERY_S:
                return
            last_sent[0] = now
            self._progressed.emit((generation, snapshot))

        # One partial result in flight: the worker waits until the main thread has handled the
        # previous one, so several layers finished together are added in separate event-loop
        # turns (the GUI stays responsive between them) instead of one long freeze.
        consumed = threading.Event()
        consumed.set()

        def emit(obj: Any, *, wait: bool = False) -> None:
            token.check()
            while not consumed.wait(0.05):
                token.check()
            consumed.clear()
            self._partial.emit((generation, obj, consumed))
            if wait:  # until handled, the steps it queued with then() included
                while not consumed.wait(0.05):
                    token.check()

        served: list = []  # the task's cache/download counts, read when it has ended

        def job() -> Any:
            http = _shared_transport()
            if http is None:
                return fn(progress=progress, cancel=token, emit=emit)
            with http.served_block() as counts:
                served.append(counts)
                return fn(progress=progress, cancel=token, emit=emit)

        # Errors are ours to report (on_error or a notification), not to re-raise in Qt.
        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda value: _deliveries.post(
            self, generation, self._on_returned, generation, value, served))
        worker.errored.connect(lambda exc: _deliveries.post(
            self, generation, self._on_errored, generation, exc, served))
        worker.finished.connect(lambda: _deliveries.post(
            self, generation, self._on_finished, generation))
        self.worker = worker
        self._description = description or "Working…"
        self._set_busy(True, self._description)
        self._close_activity()
        self._last_snap = None
        QTimer.singleShot(int(ACTIVITY_AFTER_S * 1000), lambda: _deliveries.post(
            self, generation, self._open_activity_if_running, generation, own_turn=True))
        self.running_changed.emit(True)
        worker.start()

    def cancel(self) -> None:
        """Ask the current task to stop; its late results are ignored."""
        if self._token is not None:
            self._token.cancel()
        if self.worker is not None:
            self._generation += 1  # everything the old task still sends is now stale
            self.worker.quit()
            self.worker = None
            self._set_busy(False, "Cancelled")
            self._end(self._callbacks.get("cancel"))
        elif _deliveries.pending(self):
            # The result is in; drop the steps it queued with then() (e.g. layers not yet
            # added). The task itself completed, so no cancel callback.
            self._generation += 1

    # --- slots (main thread) ------------------------------------------------------------
    def _current(self, generation: int) -> bool:
        return generation == self._generation

    def _on_progress(self, message: tuple[int, Progress]) -> None:
        generation, snap = message
        if not self._current(generation):
            return
        if snap.total:
            self._bar.show_progress(min(int(snap.done), int(snap.total)), int(snap.total))
        else:
            self._bar.show_progress(0, 0)  # busy indicator while the total is unknown
        text = snap.message or ""
        if snap.total:
            text = f"{text} {snap.done}/{snap.total}".strip()
        if snap.bytes_done:
            text = f"{text} ({snap.bytes_done / 1e6:.1f} MB)"
        if snap.failed:
            text = f"{text}, {snap.failed} failed"
        self._status.setText(text)
        # Last: napari's activity bar runs processEvents, which may deliver the task's result
        # inside this call; nothing written after it could then overwrite the final status.
        self._last_snap = snap
        self._update_activity(snap)

    def _on_partial(self, message: tuple[int, Any, threading.Event]) -> None:
        generation, obj, consumed = message
        callback = self._callbacks.get("partial")
        try:
            if self._current(generation) and callback is not None:
                callback(obj)
        finally:
            self._release_when_steps_ran(consumed)

    def _release_when_steps_ran(self, consumed: threading.Event) -> None:
        """Let the worker send its next partial once the steps this runner has queued (with
        :meth:`then`, e.g. a layer added in turns, whose steps queue the next) and the
        runner-less ones (``run_in_turns``) have run:
        meanwhile the task's threads wait instead of competing with those steps for the GIL
        (PyQt releases it in every Qt call and taking it back from a busy thread costs up to
        5 ms: a first insert with a spatial search's four query threads running took 3x as
        long)."""
        release = self._release_when_steps_ran
        # This runner's steps and runner-less ones (e.g. the overlays' first draws), not other
        # releases (two of them waiting for each other would never end).
        if any(item[0] in (self, None) and item[2] != release for item in _deliveries.queue):
            _deliveries.post(self, None, release, consumed)
        else:
            consumed.set()

    def _on_returned(self, generation: int, value: Any, served: list) -> None:
        if not self._current(generation):
            return
        self.served = served[0] if served else None
        self._set_busy(False, self.with_note("Done"))
        callback = self._callbacks.get("result")
        self._end(None)
        if callback is not None:
            callback(value)

    def _on_errored(self, generation: int, exc: BaseException, served: list) -> None:
        if not self._current(generation):
            return
        self.served = served[0] if served else None
        if isinstance(exc, Cancelled):
            self._set_busy(False, self.with_note("Cancelled"))
            self._end(self._callbacks.get("cancel"))
            return
        self._set_busy(False, self.with_note(f"Error: {exc}"))
        callback = self._callbacks.get("error")
        self._end(None)
        from napari.utils.notifications import show_error

        show_error(f"{self._description.rstrip('…')}: {exc}")
        if callback is not None:
            callback(exc)

    def _on_finished(self, generation: int) -> None:
        if self._current(generation):
            self.worker = None
            self._cancel_button.setEnabled(False)

    def _end(self, callback: Callable[[], None] | None) -> None:
        """Close the activity bar, tell listeners the task ended, then run ``callback``."""
        self._close_activity()
        self.running_changed.emit(False)
        if callback is not None:
            callback()

    # --- napari's activity dock -----------------------------------------------------------
    def _open_activity_if_running(self, generation: int) -> None:
        """The task of ``generation`` still runs after :data:`ACTIVITY_AFTER_S`: its bar in
        napari's activity dock, at the progress reached so far."""
        if not self._current(generation) or self.worker is None or self._activity is not None:
            return
        self._open_activity(self._description)
        if self._last_snap is not None:
            self._activity_at = 0.0
            self._update_activity(self._last_snap)

    def _open_activity(self, description: str) -> None:
        from napari.utils import cancelable_progress

        runner = self

        class _Bar(cancelable_progress):
            def cancel(self) -> None:  # the activity dock's cancel button
                super().cancel()
                runner.cancel()

        self._close_activity()
        try:
            self._activity = _Bar(total=0, desc=description)
        except Exception:  # noqa: BLE001 - no activity dock (e.g. no viewer): the row suffices
            logger.debug("no napari progress bar", exc_info=True)
            self._activity = None

    def _update_activity(self, snap: Progress) -> None:
        # napari's activity bar calls QApplication.processEvents() on every value change,
        # which delivers our next queued message inside this one: never nest, and update it
        # a few times a second at most (the dock's row shows every step).
        bar = self._activity
        now = time.monotonic()
        final = bool(snap.total) and snap.done >= (snap.total or 0)
        if bar is None or self._in_activity or (now - self._activity_at < ACTIVITY_EVERY_S
                                                and not final):
            return
        self._in_activity, self._activity_at = True, now
        try:
            self._set_activity(bar, snap)
        finally:
            self._in_activity = False

    @staticmethod
    def _set_activity(bar, snap: Progress) -> None:
        total = int(snap.total or 0)
        if total != bar.total:
            bar.total = total
        done = min(int(snap.done), total) if total else 0
        if done != bar.n:
            bar.update(done - bar.n)
        # tqdm stores a description set later as "text: ": compared without that, an unchanged
        # text does not cost another processEvents (a repaint of the whole window) per update.
        if snap.message and snap.message != bar.desc.removesuffix(": "):
            bar.set_description(snap.message)

    def _close_activity(self) -> None:
        bar, self._activity = self._activity, None
        if bar is not None:
            bar.close()

    @property
    def activity(self):
        """The napari progress bar of the running task (None when idle, and during its first
        :data:`ACTIVITY_AFTER_S`)."""
        return self._activity

    def _set_busy(self, busy: bool, text: str) -> None:
        self._status.setText(text)
        self._cancel_button.setEnabled(busy)
        self._bar.setVisible(busy)
        if busy:
            self._bar.show_progress(0, 0)
        if not busy:
            self.worker = None
