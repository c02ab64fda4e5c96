"""TaskRunner: work in a worker, results on the main thread, cancel, stale-result suppression."""

from __future__ import annotations

import threading
import time

from napari_allen.progress import Progress
from napari_allen.widgets._tasks import TaskRunner


def test_results_progress_and_partials_arrive_on_main_thread(qtbot, runner):
    main = threading.get_ident()
    seen: dict = {"partial": [], "threads": set()}

    def task(*, progress, cancel, emit):
        seen["worker"] = threading.get_ident()
        for i in range(3):
            cancel.check()
            progress(Progress(done=i + 1, total=3, message="step"))
            emit(i)
        return "done"

    def on_partial(obj):
        seen["threads"].add(threading.get_ident())
        seen["partial"].append(obj)

    def on_result(value):
        seen["threads"].add(threading.get_ident())
        seen["result"] = value

    runner.run(task, on_result=on_result, on_partial=on_partial)
    qtbot.waitUntil(lambda: "result" in seen, timeout=5000)
    assert seen["result"] == "done"
    assert seen["partial"] == [0, 1, 2]
    assert seen["worker"] != main
    assert seen["threads"] == {main}
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)


def test_partials_are_handed_over_one_per_event_loop_turn(qtbot, runner):
    """The worker does not run ahead of the main thread: each layer is added in its own turn
    (layers finished together would otherwise be added in one long freeze)."""
    sent: list = []
    sent_when_handled: list = []

    def task(*, progress, cancel, emit):
        for i in range(4):
            emit(i)
            sent.append(i)
        return "done"

    def on_partial(obj):
        time.sleep(0.05)  # adding a layer takes a while; the worker must wait for it
        sent_when_handled.append(len(sent))

    done: list = []
    runner.run(task, on_partial=on_partial, on_result=done.append)
    qtbot.waitUntil(lambda: bool(done), timeout=5000)
    # When partial i is handled the worker has handed over at most i + 1 of them.
    assert all(n <= i + 1 for i, n in enumerate(sent_when_handled)), sent_when_handled
    assert len(sent_when_handled) == 4


def test_new_run_cancels_and_drops_stale_results(qtbot, runner):
    release = threading.Event()
    results: list = []
    stale_cancelled = threading.Event()

    def slow(*, progress, cancel, emit):
        release.wait(5)
        if cancel.cancelled:
            stale_cancelled.set()
        return "stale"

    def fast(*, progress, cancel, emit):
        return "fresh"

    runner.run(slow, on_result=results.append)
    runner.run(fast, on_result=results.append)
    qtbot.waitUntil(lambda: "fresh" in results, timeout=5000)
    release.set()
    assert stale_cancelled.wait(5)
    qtbot.wait(200)  # give the stale worker time to (not) deliver
    assert results == ["fresh"]


def test_cancel_stops_task_and_reports_cancelled(qtbot, runner):
    started = threading.Event()
    stopped = threading.Event()
    results: list = []
    errors: list = []

    def loop(*, progress, cancel, emit):
        started.set()
        try:
            while True:
                cancel.check()
                time.sleep(0.01)
        finally:
            stopped.set()

    runner.run(loop, on_result=results.append, on_error=errors.append)
    assert started.wait(5)
    runner.cancel()
    assert stopped.wait(5)
    qtbot.wait(100)
    assert results == [] and errors == []
    assert not runner.is_running
    assert runner.status_text == "Cancelled"


def test_errors_reach_on_error(qtbot, runner):
    errors: list = []

    def broken(*, progress, cancel, emit):
        raise ValueError("bad input file x.raw")

    runner.run(broken, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert "x.raw" in str(errors[0])
    assert "x.raw" in runner.status_text


def test_deliveries_never_run_inside_another_handler(qtbot, runner):
    """A handler that processes events (napari's activity bar calls processEvents on every
    update) never receives the next partial or the result inside it: each is its own turn."""
    from qtpy.QtWidgets import QApplication

    depth = [0]
    nested: list = []
    order: list = []

    def task(*, progress, cancel, emit):
        emit("first")
        for i in range(20):
            progress(Progress(done=i + 1, total=20, message="step"))
        return "done"

    def handler(obj):
        if depth[0]:
            nested.append(obj)
        depth[0] += 1
        try:
            order.append(obj)
            for _ in range(10):  # like napari's progress bar: other events run in here
                QApplication.processEvents()
                time.sleep(0.01)
        finally:
            depth[0] -= 1

    runner.run(task, on_partial=handler, on_result=handler)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert order == ["first", "done"]
    assert nested == []


def test_then_steps_run_in_order_in_later_turns_and_count_as_running(qtbot, runner):
    steps: list = []

    def on_result(value):
        runner.then(steps.append, f"{value}-1")
        runner.then(steps.append, f"{value}-2")
        assert steps == []  # not inside this handler
        assert runner.is_running  # queued steps keep the runner busy

    runner.run(lambda **_: "r", on_result=on_result)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert steps == ["r-1", "r-2"]
    # A cancelled or replaced task drops its queued steps.
    runner.run(lambda **_: "s", on_result=lambda v: (runner.then(steps.append, v),
                                                     runner.cancel()))
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    qtbot.wait(50)
    assert steps == ["r-1", "r-2"]


def test_own_turn_steps_end_their_turn_and_finishing_steps_survive_a_cancel(qtbot, runner):
    """``own_turn``: nothing else runs in the step's turn (its cost is the repaint after it);
    ``even_if_cancelled``: it runs even after a cancel, and counts as running until then."""
    from qtpy.QtCore import QTimer

    order: list = []
    turns = [0]
    beat = QTimer()
    beat.setInterval(0)
    beat.timeout.connect(lambda: turns.__setitem__(0, turns[0] + 1))

    def on_result(value):
        beat.start()
        runner.then(lambda: order.append(("show", turns[0])), own_turn=True,
                    even_if_cancelled=True)
        runner.then(lambda: order.append(("quick", turns[0])))
        runner.then(lambda: order.append(("finish", turns[0])), even_if_cancelled=True)

    runner.run(lambda **_: "r", on_result=on_result)
    qtbot.waitUntil(lambda: len(order) == 3, timeout=5000)
    beat.stop()
    assert [name for name, _ in order] == ["show", "quick", "finish"]
    assert order[1][1] > order[0][1]  # the timer ran between: "quick" waited for a new turn

    order.clear()
    runner.run(lambda **_: "s", on_result=lambda v: (
        runner.then(order.append, "finish", even_if_cancelled=True),
        runner.then(order.append, "stale"), runner.cancel(),
        order.append(runner.is_running)))
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    qtbot.wait(50)
    assert order == [True, "finish"]


def test_next_partial_waits_for_the_steps_its_handler_queued(qtbot, runner):
    """The worker sends its next partial only once the steps queued by the previous one's
    handler, and the steps those queue (as ``add_in_turns`` chains them), have run: its
    threads do not compete with them for the GIL."""
    sent: list = []
    seen_by_step: list = []

    def task(*, progress, cancel, emit):
        for i in range(3):
            emit(i)
            sent.append(i)
        return "done"

    def step(i: int, chained: bool) -> None:
        time.sleep(0.1)  # the worker would hand over the next partial meanwhile
        seen_by_step.append((i, chained, len(sent)))
        if not chained:
            runner.then(step, i, True, own_turn=True)

    runner.run(task, on_partial=lambda i: runner.then(step, i, False))
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert [(i, chained) for i, chained, _ in seen_by_step] == [
        (0, False), (0, True), (1, False), (1, True), (2, False), (2, True)]
    # While partial i's steps run, the worker has come back from emit(i) at most.
    assert all(n <= i + 1 for i, _, n in seen_by_step), seen_by_step


def test_emit_wait_returns_once_the_partial_and_its_steps_were_handled(qtbot, runner):
    handled: list = []
    seen_by_worker: list = []

    def task(*, progress, cancel, emit):
        emit("a", wait=True)
        seen_by_worker.append(list(handled))
        return "done"

    def on_partial(obj):
        runner.then(lambda: (time.sleep(0.05), handled.append(f"{obj} step")))

    runner.run(task, on_partial=on_partial)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)
    assert seen_by_worker == [["a step"]]


def test_activity_description_is_set_only_when_it_changes(qtbot, runner, monkeypatch):
    """Each napari activity-bar description change repaints the whole window
    (processEvents): an unchanged message must not set it again (tqdm stores it as
    'text: ')."""
    from napari.utils import progress as napari_progress

    calls: list = []
    original = napari_progress.set_description
    monkeypatch.setattr(napari_progress, "set_description",
                        lambda self, desc: (calls.append(desc), original(self, desc)))
    bar = napari_progress(total=10, desc="spatial search of 156394513")
    calls.clear()
    try:
        for done in range(1, 4):
            TaskRunner._set_activity(bar, Progress(done=done, total=10, message="spatial search"))
    finally:
        bar.close()
    assert calls == ["spatial search"]


def test_releases_queued_together_do_not_wait_for_each_other(qtbot, runner):
    """A partial's release waits for the runner's queued steps, not for another partial's
    release (e.g. a cancelled task's, queued with the next task's): both end."""
    first, second = threading.Event(), threading.Event()
    runner.then(lambda: None)  # a step still to run
    runner._release_when_steps_ran(first)
    runner._release_when_steps_ran(second)
    assert not first.is_set() and not second.is_set()
    qtbot.waitUntil(lambda: first.is_set() and second.is_set(), timeout=5000)
    qtbot.waitUntil(lambda: not runner.is_running, timeout=5000)


def test_progress_bar_paints_with_the_next_repaint_not_at_once(qtbot, runner):
    """QProgressBar.setValue repaints synchronously (60-300 ms in napari's window under
    llvmpipe, per progress step); the runner's bar only schedules a repaint."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QApplication, QProgressBar

    class PaintCounter(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.paints = 0

        def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Paint:
                self.paints += 1
            return False

    parent = runner.test_parent
    parent.resize(400, 60)
    parent.show()
    qtbot.waitExposed(parent)
    bars = {"runner": runner._bar, "plain": QProgressBar(runner.widget)}
    synchronous = {}
    for name, bar in bars.items():
        bar.setVisible(True)
        bar.setTextVisible(True)
        bar.setRange(0, 10)
        bar.setValue(1)
        for _ in range(5):
            QApplication.processEvents()
        counter = PaintCounter()
        bar.installEventFilter(counter)
        if name == "runner":
            bar.show_progress(7, 10)
        else:
            bar.setValue(7)
        synchronous[name] = counter.paints
        qtbot.waitUntil(lambda c=counter: c.paints > 0, timeout=2000)  # painted later
        assert bar.value() == 7 and bar.maximum() == 10
        bar.removeEventFilter(counter)
    assert synchronous == {"runner": 0, "plain": 1}  # the plain bar shows the cost avoided
