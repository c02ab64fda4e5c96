"""One bounded, cancel-aware concurrent map for every fan-out of network work (no Qt).

Batch downloads (:mod:`napari_allen.api.batch`), spatial search over many seeds
(:mod:`napari_allen.workflows.seed_search`), whole-plane downloads
(:mod:`napari_allen.workflows.plane_download`) and the connectivity prefetch
(:mod:`napari_allen.workflows.connectivity`) all run one function over many items on a few
threads. :func:`bounded_map` is that loop, written once:

- at most ``window`` items are submitted and not yet handed back, so memory stays flat for
  26,000 items and a cancel never waits for a long queue;
- results come back as :class:`Outcome` in completion order (or, with ``ordered=True``, in input
  order), each with its item's index; an exception raised by the function is handed back in
  :attr:`Outcome.error`, never lost and never ending the other items;
- ``fn(item, token)`` receives a :class:`~napari_allen.progress.CancelToken` that fires when the
  caller's ``cancel`` does, or when the caller leaves the loop early (an exception, ``break``),
  so running work can stop at its next check;
- once cancelled no new item starts; the items already running finish (they see the token) and
  are still handed back, then the iteration ends and the caller decides (raise, report);
- when the iteration ends, however it ends, no worker thread is still running.

Progress: with ``progress`` given, a :class:`~napari_allen.progress.Progress` snapshot
(``done``, ``total``, ``failed`` = outcomes with an error, ``message``) follows every outcome.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from .progress import Cancelled, CancelToken, ProgressCallback, report

T = TypeVar("T")
R = TypeVar("R")

#: Seconds between two looks at the cancel token while waiting for results.
_POLL_S = 0.1


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """The result of one item: ``value`` if ``fn`` returned, else the exception in ``error``."""

    index: int
    item: T
    value: R | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class LinkedToken(CancelToken):
    """A cancel token that is also cancelled when its ``parent`` is (``parent`` may be None)."""

    def __init__(self, parent: CancelToken | None) -> None:
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.cancelled)

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled("cancelled by the user")

    def wait(self, seconds: float) -> bool:
        # Wake on our own event at once, and look at the parent's every 50 ms.
        deadline = time.monotonic() + seconds
        while not self.cancelled:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._event.wait(min(left, 0.05))
        return True


def bounded_map(
    fn: Callable[[T, CancelToken], R],
    items: Iterable[T],
    *,
    jobs: int,
    window: int | None = None,
    ordered: bool = False,
    cancel: CancelToken | None = None,
    progress: ProgressCallback | None = None,
    total: int | None = None,
    message: str = "",
    thread_name: str = "napari-allen",
) -> Iterator[Outcome[T, R]]:
    """Run ``fn(item, token)`` on ``jobs`` threads; yield one :class:`Outcome` per started item.

    ``window`` (default ``2 * jobs``, at least ``jobs``) bounds the items in flight: running,
    queued, or finished but not yet handed back. ``ordered=True`` hands outcomes back in input
    order (a finished item waits, inside the window, for the ones before it), else in completion
    order. ``items`` is consumed lazily. Items never started because of a cancel yield nothing:
    compare the indices seen with the input to find them. ``total`` (default ``len(items)`` when
    it has one) is the progress total.
    """
    jobs = max(1, int(jobs))
    window = max(jobs, int(window) if window is not None else 2 * jobs)
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    token = LinkedToken(cancel)
    source = iter(enumerate(items))
    exhausted = False
    done = failed = 0
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix=thread_name)
    pending: dict[Future, tuple[int, T]] = {}
    held: dict[int, Outcome[T, R]] = {}  # ordered: finished, waiting for earlier items
    next_index = 0  # ordered: the index to hand back next
    try:
        while True:
            while (not exhausted and len(pending) + len(held) < window
                   and not token.cancelled):
                nxt = next(source, None)
                if nxt is None:
                    exhausted = True
                    break
                # In a copy of the caller's context: per-task tallies (ContextVars, e.g. the
                # widgets' cache/download counts) see the work done on pool threads.
                ctx = contextvars.copy_context()
                pending[pool.submit(ctx.run, fn, nxt[1], token)] = nxt
            if not pending:
                # Cancelled with gaps before them: what finished is still handed back, in order.
                for index in sorted(held):
                    yield held.pop(index)
                return
            finished, _ = wait(list(pending), timeout=_POLL_S, return_when=FIRST_COMPLETED)
            if token.cancelled:
                for future in list(pending):
                    if future.cancel():  # not started yet: it never will
                        del pending[future]
            for future in finished:
                index, item = pending.pop(future)
                error = future.exception()
                done += 1
                failed += error is not None
                report(progress, done=done, total=total, failed=failed, message=message)
                outcome = Outcome(index, item, None if error is not None else future.result(),
                                  error)
                if not ordered:
                    yield outcome
                    continue
                held[index] = outcome
                while next_index in held:
                    yield held.pop(next_index)
                    next_index += 1
    finally:
        token.cancel()  # early exit: running items stop at their next check
        pool.shutdown(wait=True, cancel_futures=True)
