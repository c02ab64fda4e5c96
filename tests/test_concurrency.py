"""bounded_map: bounded in-flight work, errors handed back, cancel and early exit stop work."""

from __future__ import annotations

import threading
import time

import pytest

from napari_allen.concurrency import LinkedToken, bounded_map
from napari_allen.progress import Cancelled, CancelToken


class Probe:
    """Counts calls and the most items running at once."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.active = self.max_active = 0

    def __call__(self, item: int, token: CancelToken) -> int:
        with self.lock:
            self.started.append(item)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if token.wait(self.delay):
                token.check()
            if item % 7 == 3:
                raise ValueError(f"bad item {item}")
            return item * item
        finally:
            with self.lock:
                self.active -= 1


def test_every_item_once_with_errors_handed_back_and_progress():
    probe = Probe()
    snapshots = []
    outcomes = list(bounded_map(probe, range(40), jobs=4, progress=snapshots.append,
                                message="squares"))
    assert sorted(o.index for o in outcomes) == list(range(40))
    assert sorted(probe.started) == list(range(40))
    for o in outcomes:
        if o.item % 7 == 3:
            assert not o.ok and "bad item" in str(o.error) and o.value is None
        else:
            assert o.ok and o.value == o.item * o.item
    assert probe.max_active <= 4
    assert snapshots[-1].done == 40 and snapshots[-1].total == 40
    assert snapshots[-1].failed == sum(1 for i in range(40) if i % 7 == 3)
    assert {s.message for s in snapshots} == {"squares"}


def test_window_bounds_what_is_taken_from_a_lazy_source():
    taken = []

    def source():
        for i in range(1000):
            taken.append(i)
            yield i

    gen = bounded_map(Probe(0.05), source(), jobs=2, window=3)
    first = next(gen)
    assert first.index in (0, 1, 2)
    assert len(taken) <= 4  # window + the one refilled after the first result
    gen.close()


def test_cancel_stops_new_work_and_lets_running_items_finish():
    probe = Probe(0.05)
    token = CancelToken()
    seen = []
    for outcome in bounded_map(probe, range(500), jobs=3, cancel=token):
        seen.append(outcome)
        if len(seen) == 2:
            token.cancel()
    assert len(probe.started) < 20
    assert len(seen) == len(probe.started)  # running items were still handed back
    assert probe.active == 0


def test_leaving_the_loop_early_stops_running_work():
    stopped = []

    def slow_unless_cancelled(item: int, token: CancelToken) -> int:
        if item == 0:
            return 0
        stopped.append(token.wait(5.0))  # True: woken by the cancel, not the timeout
        return item

    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="consumer failed"):
        for _ in bounded_map(slow_unless_cancelled, range(10), jobs=3):
            raise RuntimeError("consumer failed")
    # The consumer's exception closed the map: running items were woken, none was left running.
    assert time.perf_counter() - start < 2.0
    assert stopped and all(stopped)
    assert not [t for t in threading.enumerate() if t.name.startswith("napari-allen")]


def test_linked_token_follows_its_parent():
    parent = CancelToken()
    child = LinkedToken(parent)
    assert not child.cancelled and not child.wait(0.01)
    parent.cancel()
    assert child.cancelled and child.wait(1.0)
    with pytest.raises(Cancelled):
        child.check()
    orphan = LinkedToken(None)
    orphan.cancel()
    assert orphan.cancelled
    assert not LinkedToken(CancelToken()).cancelled


def test_ordered_hands_back_in_input_order_within_the_window():
    delays = [0.03 if i % 3 == 0 else 0.001 for i in range(30)]  # some finish out of order
    running = {"n": 0, "max": 0}
    lock = threading.Lock()

    def slow_first(item: int, token: CancelToken) -> int:
        with lock:
            running["n"] += 1
            running["max"] = max(running["max"], running["n"])
        time.sleep(delays[item])
        with lock:
            running["n"] -= 1
        return -item

    taken = []

    def source():
        for i in range(30):
            taken.append(i)
            yield i

    seen = []
    for outcome in bounded_map(slow_first, source(), jobs=3, window=4, ordered=True):
        seen.append(outcome.index)
        assert outcome.value == -outcome.index
        # Never more than the window taken beyond what was handed back.
        assert len(taken) - len(seen) <= 4
    assert seen == list(range(30))
    assert running["max"] <= 3
