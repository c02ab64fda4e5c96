"""Where did a GUI freeze go? Per-thread CPU clocks and full garbage collections, for
``bench_gui_freeze.py``'s ``BENCH_FREEZE_GAPS`` diagnostics (Linux only: ``/proc``).

A process of its own (:class:`ThreadClocks`) samples each thread's CPU time and its time spent
runnable but waiting for a CPU (``/proc/<pid>/task/<tid>/schedstat``, ns) every 10 ms. Between
the samples around a freeze this splits the freeze into:

- napari's main thread running (Python or Qt/GL work of its own);
- the main thread waiting for a CPU (other processes, or Mesa's llvmpipe threads, on 2 cores);
- the plugin's worker threads running meanwhile (their GIL holds, or their Python work
  competing with the main thread for the GIL);
- full (generation 2) garbage collections, with the thread that ran them (:class:`GcLog`).

- the X server (Xvfb) running or waiting for a CPU meanwhile (the main thread waits for its
  replies: a starved X server freezes napari however little Python runs);
- with ``BENCH_FREEZE_STACKS`` also what the main thread was doing (:class:`StackSampler`: its
  Python stack, sampled every 10 ms while the heartbeat is late): the calls common to most
  samples of the freeze, outermost first, so a one-off freeze can be named after the run.

What remains (the freeze minus main-thread CPU and CPU wait) is the main thread blocked: on the
GIL, or on the X server / GL driver.
"""

from __future__ import annotations

import collections
import gc
import os
import sys
import threading
import time
from collections.abc import Callable

_TASKS = "/proc/self/task"

#: How often the sampler process reads the clocks (s).
SAMPLE_EVERY_S = 0.01


def available() -> bool:
    return os.path.isdir(_TASKS)


def _x_server_pid() -> int | None:
    """The process serving ``$DISPLAY`` if it is an Xvfb on this machine (else None)."""
    display = os.environ.get("DISPLAY", "")
    if not display.startswith(":"):
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"Xvfb") and display.encode() in args:
            return int(pid)
    return None


def _x_server_clock(pid: int | None) -> tuple[int, int] | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            run, wait, _ = fh.read().split()
    except (OSError, ValueError):
        return None
    return int(run), int(wait)


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


def _sample_forever(pid: int, x_pid: int | None, out: str) -> None:
    """The sampler process: every ``SAMPLE_EVERY_S`` one line ``t x_run x_wait tid:run:wait
    ...`` (``time.perf_counter`` s - the system's monotonic clock, shared with the measured
    process - and ns) appended to ``out``, until process ``pid`` is gone. Each thread's
    ``schedstat`` stays open and is re-read with ``pread`` (one system call a thread)."""
    tasks = f"/proc/{pid}/task"
    fds: dict[int, int] = {}
    with open(out, "a", buffering=1) as fh:
        while True:
            try:
                tids = {int(tid) for tid in os.listdir(tasks)}
            except OSError:
                return  # the measured process ended
            for tid in set(fds) - tids:
                os.close(fds.pop(tid))
            clocks = []
            for tid in tids:
                try:
                    if tid not in fds:
                        fds[tid] = os.open(f"{tasks}/{tid}/schedstat", os.O_RDONLY)
                    run, wait, _ = os.pread(fds[tid], 128, 0).split()
                except (OSError, ValueError):
                    continue
                clocks.append(f"{tid}:{int(run)}:{int(wait)}")
            x = _x_server_clock(x_pid) or (-1, -1)
            fh.write(f"{time.perf_counter():.6f} {x[0]} {x[1]} {' '.join(clocks)}\n")
            time.sleep(SAMPLE_EVERY_S)


class ThreadClocks:
    """Every thread's clocks (and the X server's), sampled every ``SAMPLE_EVERY_S`` by a
    process of its own. Read in this process, the ~3 system calls per thread each released
    the GIL, and taking it back from busy worker threads cost up to the interpreter's switch
    interval (5 ms) each: with 4 threads running Python, one reading of ~20 threads took
    ~1.7 s of the main thread instead of ~0.3 ms - the diagnostics made the freezes they were
    explaining. Out of process, nothing here runs on the measured main thread until
    :meth:`explain`, after the action."""

    def __init__(self) -> None:
        import subprocess
        import tempfile

        self.main = threading.main_thread().native_id
        fd, self._path = tempfile.mkstemp(prefix="freeze-clocks-", suffix=".txt")
        os.close(fd)
        self._offset = 0
        self._sampler = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(os.getpid()),
             str(_x_server_pid() or ""), self._path])

    def clear(self) -> None:
        """Forget the samples so far (explanations look at later ones only)."""
        self._offset = os.path.getsize(self._path)

    def close(self) -> None:
        self._sampler.terminate()
        self._sampler.wait()
        os.unlink(self._path)

    def _around(self, t0: float, t1: float):
        """The last sample at or before ``t0`` and the first at or after ``t1`` (None if
        missing)."""
        before = after = None
        with open(self._path) as fh:
            fh.seek(self._offset)
            for line in fh:
                if not line.endswith("\n"):
                    break  # being written
                t = float(line.split(" ", 1)[0])
                if t <= t0:
                    before = line
                elif t >= t1:
                    after = line
                    break
        return _parse(before) if before else None, _parse(after) if after else None

    def explain(self, t0: float, t1: float) -> str:
        """The freeze from ``t0`` to ``t1`` (perf_counter s), in words."""
        before, after = self._around(t0, t1)
        if before is None or after is None:
            return "no clock samples around it"
        (tb, xb, threads0), (ta, xa, threads1) = before, after
        names = _thread_names()
        main_run = main_wait = 0.0
        others: list[tuple[float, str]] = []
        for tid, (run, wait) in threads1.items():
            run0, wait0 = threads0.get(tid, (0, 0))
            if tid == self.main:
                main_run, main_wait = (run - run0) / 1e9, (wait - wait0) / 1e9
            elif run - run0 >= 5e6:
                others.append(((run - run0) / 1e9, names.get(tid, str(tid))))
        others.sort(reverse=True)
        text = (f"main thread {1000 * main_run:.0f} ms CPU + {1000 * main_wait:.0f} ms "
                f"waiting for a CPU (clocks over {1000 * (ta - tb):.0f} ms)")
        if others:
            text += "; meanwhile " + ", ".join(f"{name} {1000 * run:.0f} ms"
                                              for run, name in others[:4])
        if xb[0] >= 0 and xa[0] >= 0:
            text += (f"; X server {(xa[0] - xb[0]) / 1e6:.0f} ms CPU + "
                     f"{(xa[1] - xb[1]) / 1e6:.0f} ms waiting for a CPU")
        return text


def _parse(line: str):
    t, x_run, x_wait, *threads = line.split()
    clocks = {}
    for item in threads:
        tid, run, wait = item.split(":")
        clocks[int(tid)] = (int(run), int(wait))
    return float(t), (int(x_run), int(x_wait)), clocks


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

    def overlaps(self, t0: float, t1: float) -> bool:
        """Did a full collection run (partly) between ``t0`` and ``t1``?"""
        return any(end > t0 and start < t1 for start, end, _ in self.collections)

    def within(self, t0: float, t1: float) -> str:
        hits = [f"{1000 * (end - start):.0f} ms in {name}"
                for start, end, name in self.collections if end > t0 and start < t1]
        return f"; full GC {', '.join(hits)}" if hits else ""


_NAMES: dict = {}  # code object -> its short name (a sample names each frame in one look-up)


def _frame_name(code) -> str:
    """``folder/module:function`` of a code object (short enough to print in a chain)."""
    name = _NAMES.get(code)
    if name is None:
        parts = code.co_filename.replace("\\", "/").rsplit("/", 2)
        where = "/".join(parts[-2:]).removesuffix(".py")
        name = _NAMES[code] = f"{where}:{code.co_name}"
    return name


class StackSampler:
    """Samples the main thread's Python stack every ``interval_s`` while the heartbeat is late
    (its last tick older than ``late_s``), from a daemon thread. Each sample takes the GIL from
    the main thread once (after at most the interpreter's switch interval, 5 ms), which
    lengthens the freezes it samples: it runs only with ``BENCH_FREEZE_STACKS`` set, apart from
    the timing diagnostics."""

    def __init__(self, last_tick: Callable[[], float | None], interval_s: float = 0.01,
                 late_s: float = 0.05) -> None:
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._last_tick, self._interval, self._late = last_tick, interval_s, late_s
        self._main = threading.main_thread().ident
        self._running = threading.Event()
        threading.Thread(target=self._loop, name="freeze-stack-sampler", daemon=True).start()

    def start(self) -> None:
        self.samples.clear()
        self._running.set()

    def stop(self) -> None:
        self._running.clear()

    def _loop(self) -> None:
        while True:
            self._running.wait()
            time.sleep(self._interval)
            last = self._last_tick()
            now = time.perf_counter()
            if last is None or now - last < self._late:
                continue
            frame = sys._current_frames().get(self._main)
            stack = []
            while frame is not None:
                stack.append(_frame_name(frame.f_code))
                frame = frame.f_back
            self.samples.append((now, tuple(reversed(stack))))

    def within(self, t0: float, t1: float, share: float = 0.5, deepest: int = 4) -> str:
        """The calls on the main thread's stack in at least ``share`` of the samples taken
        between ``t0`` and ``t1`` (the ``deepest`` innermost of them, outermost first), then
        where the samples went from there (the next call down, most frequent first) and the
        most frequent innermost call; "" without samples."""
        stacks = [stack for t, stack in self.samples if t0 < t < t1]
        if not stacks:
            return ""
        n = len(stacks)
        counts = collections.Counter(name for stack in stacks for name in set(stack))
        common = list(dict.fromkeys(
            name for name in max(stacks, key=len) if counts[name] >= share * n))
        below: collections.Counter = collections.Counter()
        if common:
            for stack in stacks:
                if common[-1] in stack:
                    i = len(stack) - 1 - stack[::-1].index(common[-1])
                    if i + 1 < len(stack):
                        below[stack[i + 1]] += 1
        leaf, k = collections.Counter(stack[-1] for stack in stacks).most_common(1)[0]
        then = ", ".join(f"{name} ({m}/{n})" for name, m in below.most_common(3))
        return (f"\n        main thread ({n} samples): {' > '.join(common[-deepest:])}"
                + (f"\n          then {then}" if then else "")
                + f"\n          innermost {leaf} ({k}/{n})")


if __name__ == "__main__":  # the sampler process of ThreadClocks: <pid> <x server pid|""> <out>
    _sample_forever(int(sys.argv[1]), int(sys.argv[2]) if sys.argv[2] else None, sys.argv[3])
