"""Where did a GUI freeze go? Per-thread CPU clocks and full garbage collections, for
``bench_gui_freeze.py``'s ``BENCH_FREEZE_GAPS`` diagnostics (Linux only: ``/proc``).

At every heartbeat tick :class:`ThreadClocks` reads each thread's CPU time and its time spent
runnable but waiting for a CPU (``/proc/self/task/<tid>/schedstat``, ns). Between the two ticks
around a freeze this splits the freeze into:

- napari's main thread running (Python or Qt/GL work of its own);
- the main thread waiting for a CPU (other processes, or Mesa's llvmpipe threads, on 2 cores);
- the plugin's worker threads running meanwhile (their GIL holds, or their Python work
  competing with the main thread for the GIL);
- full (generation 2) garbage collections, with the thread that ran them (:class:`GcLog`).

What remains (the freeze minus main-thread CPU and CPU wait) is the main thread blocked: on the
GIL, or on the X server / GL driver.
"""

from __future__ import annotations

import gc
import os
import threading
import time

_TASKS = "/proc/self/task"


def available() -> bool:
    return os.path.isdir(_TASKS)


def _read_clocks() -> dict[int, tuple[float, float]]:
    """``{native thread id: (CPU s, runqueue wait s)}`` of this process's threads."""
    out = {}
    for tid in os.listdir(_TASKS):
        try:
            with open(f"{_TASKS}/{tid}/schedstat") as fh:
                run, wait, _ = fh.read().split()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (int(run) / 1e9, int(wait) / 1e9)
    return out


def _thread_names() -> dict[int, str]:
    names = {}
    for tid in os.listdir(_TASKS):
        try:
            with open(f"{_TASKS}/{tid}/comm") as fh:
                names[int(tid)] = fh.read().strip()
        except OSError:
            continue
    for thread in threading.enumerate():  # Python threads by their own names
        if thread.native_id is not None:
            names[thread.native_id] = thread.name
    return names


class ThreadClocks:
    """Per-tick snapshots of every thread's clocks (``tick()`` from the heartbeat)."""

    def __init__(self) -> None:
        self.snapshots: list[dict[int, tuple[float, float]]] = []
        self.main = threading.main_thread().native_id

    def clear(self) -> None:
        self.snapshots.clear()

    def tick(self) -> None:
        self.snapshots.append(_read_clocks())

    def explain(self, i: int) -> str:
        """The freeze between tick ``i`` and tick ``i + 1``, in words."""
        before, after = self.snapshots[i], self.snapshots[i + 1]
        names = _thread_names()
        main_run = main_wait = 0.0
        others: list[tuple[float, str]] = []
        for tid, (run, wait) in after.items():
            run0, wait0 = before.get(tid, (0.0, 0.0))
            if tid == self.main:
                main_run, main_wait = run - run0, wait - wait0
            elif run - run0 >= 0.005:
                others.append((run - run0, names.get(tid, str(tid))))
        others.sort(reverse=True)
        text = (f"main thread {1000 * main_run:.0f} ms CPU + {1000 * main_wait:.0f} ms "
                "waiting for a CPU")
        if others:
            text += "; meanwhile " + ", ".join(f"{name} {1000 * run:.0f} ms"
                                              for run, name in others[:4])
        return text


class GcLog:
    """Full garbage collections (generation 2): ``(start, end, thread name)``, perf_counter s."""

    def __init__(self) -> None:
        self.collections: list[tuple[float, float, str]] = []
        self._started: dict[int, float] = {}

    def __enter__(self) -> GcLog:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        now = time.perf_counter()
        ident = threading.get_ident()
        if phase == "start":
            self._started[ident] = now
        elif ident in self._started:
            self.collections.append((self._started.pop(ident), now,
                                     threading.current_thread().name))

    def within(self, t0: float, t1: float) -> str:
        hits = [f"{1000 * (end - start):.0f} ms in {name}"
                for start, end, name in self.collections if end > t0 and start < t1]
        return f"; full GC {', '.join(hits)}" if hits else ""
