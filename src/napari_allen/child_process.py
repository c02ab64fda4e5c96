"""Running a function of this package in a child process, so it never holds napari's GIL.

Work in a thread of the GUI process shares one interpreter lock with napari's event loop: its
numpy, scipy and bookkeeping steps hold that lock in pieces of 100-250 ms on a loaded machine,
and the user feels each as a freeze (issue #13). :func:`iter_child` / :func:`run_in_child` run
a *named* function of the package (``"napari_allen.io.pyramid:convert_file"``) in a fresh
interpreter started with :mod:`subprocess` (fork + exec: *spawn* semantics, safe in a process
running Qt and other threads; ``multiprocessing``'s spawn would also re-import the GUI's
``__main__``, i.e. napari). Users: the multiscale-cache converter (``io/pyramid.py``) and the
structure meshes and annotation index (``atlas/meshes.py``).

The child imports only this module and the named function's module (no napari or Qt unless
that module imports them), runs at a lower CPU priority (niceness :data:`CHILD_NICENESS`:
napari's event loop and renderer come first) and talks to the parent through its standard
streams, one JSON object a line:

- parent -> child, stdin: the request ``{"function": ..., "kwargs": {...}}``, then ``cancel``
  lines; end of file (the parent went away) also cancels;
- child -> parent, a dup of stdout: ``started`` (once the function is imported), ``progress``
  (``done``/``total``/``message``, at most ~10 a second), ``partial`` (a value the function
  emitted; the parent's iterator yields it), then ``done`` (the return value) or ``error``
  (type, message, arguments, the file and problem of an :class:`AllenFormatError`,
  traceback). Anything else the child prints goes to its stderr, kept in a temporary file for
  the error message.

The function is called as ``fn(**kwargs, progress=..., cancel=...)`` (plus ``emit=...`` when it
takes that keyword); ``kwargs``, emitted values and the return value must be JSON values.

The parent's side runs in the calling (worker) thread and blocks on a queue fed by a reader
thread (no GIL held while waiting). Cancel asks the child to stop (it stops at its next
``cancel`` check) and terminates it after :data:`CANCEL_GRACE_S`; a terminated child raises
``SystemExit`` in its main thread, so files written with ``io.atomic`` are removed, not left
half-written. Errors keep their type in the parent: :class:`~napari_allen.progress.Cancelled`,
:class:`~napari_allen.errors.AllenFormatError` (same file and problem) and the built-in
exceptions (``ValueError``, ``KeyError``, ``OSError``, ...; same arguments, so the same
message); any other error, or a child that died without a result (killed, crashed), is a
:class:`ChildFailed` naming the work (``what``), the pid and how it ended. A child that could
not start (no interpreter, a restricted environment, an import failure before ``started``)
raises :class:`ChildUnavailable` so the caller can run the same function in a thread instead.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from .errors import AllenFormatError
from .progress import Cancelled, CancelToken, Progress, ProgressCallback

#: Seconds a cancelled child gets to stop by itself before it is terminated.
CANCEL_GRACE_S = 5.0
#: Least time between two progress lines from the child (s); the last one always goes.
PROGRESS_EVERY_S = 0.1
#: CPU niceness added in the child: napari's event loop (and its renderer) come first.
CHILD_NICENESS = 10
#: The only functions a child runs: this package's.
_PACKAGE = "napari_allen."

#: The child's entry: first a lower CPU priority (its start-up and imports too), then the
#: package root goes on ``sys.path`` only when it is not there yet (a source tree run with
#: PYTHONPATH keeps its place; an installed package is found as usual).
_BOOT = ("import sys, os; r = sys.argv[1]\n"
         "try:\n"
         f"    os.nice({CHILD_NICENESS})\n"
         "except (AttributeError, OSError):\n"
         "    pass\n"
         "if not any(os.path.realpath(p or '.') == r for p in sys.path): sys.path.insert(0, r)\n"
         "from napari_allen.child_process import child_main; sys.exit(child_main())")


class ChildUnavailable(RuntimeError):
    """No child process could be started (the caller runs the function in a thread)."""


class ChildFailed(RuntimeError):
    """The child failed with an error that has no counterpart here, or died without a result;
    the message names the work, the child's pid and how it ended."""


def child_command() -> list[str] | None:
    """The command starting a child, or None when this interpreter cannot start one (a frozen
    application has no Python to run)."""
    if getattr(sys, "frozen", False) or not sys.executable:
        return None
    root = str(Path(__file__).resolve().parents[1])  # the folder holding napari_allen/
    # -P: the current folder is not put on the child's sys.path (a stray numpy.py there).
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe, "-c", _BOOT, root]


def run_in_child(function: str, kwargs: dict | None = None, *, what: str,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                 on_started: Callable[[int], object] | None = None) -> Any:
    """Run ``function`` (``"napari_allen.module:name"``) with ``kwargs`` in a child process
    and return what it returned (values it emitted are dropped). See :func:`iter_child`."""
    steps = iter_child(function, kwargs, what=what, progress=progress, cancel=cancel,
                       on_started=on_started)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def iter_child(function: str, kwargs: dict | None = None, *, what: str,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
               on_started: Callable[[int], object] | None = None) -> Generator[Any, None, Any]:
    """Run ``function`` in a child process; yield each value it emits as it arrives; the
    generator's return value is the function's.

    ``what`` (e.g. ``"<file>: building the multiscale cache"``) starts the message of a
    :class:`ChildFailed`. ``progress`` receives the child's steps and ``on_started(pid)`` is
    called once the child has imported the function, both in the calling thread. Leaving the
    iteration early (``break``, an exception in the loop's body) stops the child. Raises the
    child's error (see the module docstring), :class:`Cancelled` once ``cancel`` is set,
    :class:`ChildFailed` or :class:`ChildUnavailable`."""
    if not function.startswith(_PACKAGE) or ":" not in function:
        raise ValueError(f"a child runs a function of this package ('napari_allen.x:fn'), "
                         f"not {function!r}")
    command = child_command()
    if command is None:
        raise ChildUnavailable("this application cannot start a Python interpreter")
    cancel = cancel or CancelToken()
    with tempfile.TemporaryFile(prefix="napari-allen-child-") as errors:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=errors, close_fds=True)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise ChildUnavailable(f"{command[0]}: {exc}") from exc
        state: dict = {"started": False}
        try:
            _send(proc, json.dumps({"function": function, "kwargs": kwargs or {}}))
            yield from _relay(proc, state, progress, cancel, on_started)
        finally:
            _stop(proc)
        return _result(state, proc, what, errors, cancel)


def _relay(proc: subprocess.Popen, state: dict, progress, cancel: CancelToken,
           on_started) -> Generator[Any, None, None]:
    """Relay the child's lines until it ends (or is cancelled): progress and ``started`` to
    the callbacks, emitted values to the caller; the last ``done``/``error`` goes in
    ``state['result']``."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for raw in proc.stdout:  # blocks in the OS (GIL released) between lines
                with contextlib.suppress(ValueError):
                    lines.put(json.loads(raw))
        finally:
            lines.put(None)

    reader = threading.Thread(target=read, name=f"napari-allen child {proc.pid}", daemon=True)
    reader.start()
    while True:
        try:
            msg = lines.get(timeout=0.1)  # wakes at once on a line; looks at cancel every 0.1 s
        except queue.Empty:
            msg = {}
        if cancel.cancelled:
            _send(proc, "cancel")
            try:
                proc.wait(CANCEL_GRACE_S)
            except subprocess.TimeoutExpired:
                _stop(proc)  # stuck in one long step, or waiting for another process's lock
            break
        if msg is None:
            break
        event = msg.get("event")
        if event == "started":
            state["started"] = True
            if on_started is not None:
                on_started(int(msg.get("pid", proc.pid)))
        elif event == "progress":
            if progress is not None:
                with contextlib.suppress(Exception):  # a display never stops the work
                    progress(Progress(done=int(msg.get("done", 0)), total=msg.get("total"),
                                      message=str(msg.get("message", ""))))
        elif event == "partial":
            yield msg.get("value")
        elif event in ("done", "error"):
            state["result"] = msg
    reader.join()
    proc.wait()


def _send(proc: subprocess.Popen, line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # the child is gone: its exit tells why
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()


def _stop(proc: subprocess.Popen) -> None:
    """Make sure the child is gone (the calling thread left early, was interrupted, ...)."""
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _result(state: dict, proc: subprocess.Popen, what: str, errors, cancel: CancelToken):
    result = state.get("result") or {}
    if result.get("event") == "done":
        return result.get("result")
    if cancel.cancelled:
        raise Cancelled("cancelled by the user")
    if result.get("event") == "error":
        raise rebuilt_error(result, what)
    tail = _tail(errors)
    if not state["started"]:
        raise ChildUnavailable(f"the child process ended before starting "
                               f"({_how_it_ended(proc.returncode)}){tail}")
    raise ChildFailed(f"{what} failed: the child process (pid {proc.pid}) "
                      f"{_how_it_ended(proc.returncode)} before finishing{tail}")


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def _tail(errors, n_chars: int = 600) -> str:
    """The end of the child's stderr, as ``: <last lines>`` (empty when it said nothing)."""
    try:
        errors.seek(0, os.SEEK_END)
        size = errors.tell()
        errors.seek(max(0, size - n_chars))
        text = errors.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f": {' | '.join(text.splitlines()[-4:])}" if text else ""


def rebuilt_error(result: dict, what: str) -> BaseException:
    """The child's ``error`` line as an exception of this process: the same type and message
    for :class:`Cancelled`, :class:`AllenFormatError` and built-in exceptions, else a
    :class:`ChildFailed` starting with ``what``; the child's traceback as a note."""
    kind, message = str(result.get("type", "Error")), str(result.get("message", ""))
    args = result.get("args")
    cls = getattr(builtins, kind, None)
    exc: BaseException
    if kind == "Cancelled":
        exc = Cancelled(message or "cancelled")
    elif result.get("format_path") is not None:
        exc = AllenFormatError(result["format_path"], str(result.get("format_problem", "")))
    elif (result.get("module") == "builtins" and isinstance(cls, type)
          and issubclass(cls, Exception)):
        try:
            exc = cls(*args) if isinstance(args, list) else cls(message)
        except Exception:  # noqa: BLE001 - a constructor with other needs: keep the text
            exc = cls(message)
        if isinstance(exc, OSError) and result.get("filename") is not None:
            exc.filename = result["filename"]
    else:
        exc = ChildFailed(f"{what} failed: {kind}: {message}")
    if result.get("traceback"):
        exc.add_note("in the child process:\n" + str(result["traceback"]).rstrip())
    return exc


# --- the child -----------------------------------------------------------------------------
def _described(exc: BaseException) -> dict:
    """An exception as the ``error`` line (see :func:`rebuilt_error`)."""
    import traceback

    try:
        args: list | None = json.loads(json.dumps(list(exc.args)))
    except (TypeError, ValueError):
        args = None
    return {"event": "error", "type": type(exc).__name__, "module": type(exc).__module__,
            "message": str(exc), "args": args,
            "format_path": exc.path if isinstance(exc, AllenFormatError) else None,
            "format_problem": exc.problem if isinstance(exc, AllenFormatError) else None,
            "filename": (None if not isinstance(exc, OSError) or exc.filename is None
                         else str(exc.filename)),
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


class _Terminated(BaseException):
    """Raised in the child's main thread by SIGTERM (the parent stopped waiting for it)."""


def _terminated(_signum, _frame) -> None:
    """SIGTERM: unwind the function, so atomic writers remove their temporary files."""
    raise _Terminated()


def child_main() -> int:
    """The child process: read the request, import and run the function, report (see the
    module docstring)."""
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            channel.write(json.dumps(msg) + "\n")
            channel.flush()

    with contextlib.suppress(ValueError, OSError):  # not the main thread: no handler
        signal.signal(signal.SIGTERM, _terminated)
    line = sys.stdin.readline()
    if not line:
        return 0  # the parent went away before asking anything
    request = json.loads(line)
    module_name, _, name = str(request["function"]).partition(":")
    if not module_name.startswith(_PACKAGE):
        print(f"refusing to run {request['function']!r}: not a function of napari_allen",
              file=sys.stderr)
        return 2
    import importlib
    import inspect

    fn = getattr(importlib.import_module(module_name), name)  # failing here: "unavailable"
    send({"event": "started", "pid": os.getpid()})
    token = CancelToken()

    def watch_stdin() -> None:
        for _ in sys.stdin:  # "cancel"; end of file: the parent is gone
            break
        token.cancel()

    threading.Thread(target=watch_stdin, daemon=True).start()
    last = [0.0]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S and not (p.total and p.done >= p.total):
            return
        last[0] = now
        send({"event": "progress", "done": p.done, "total": p.total, "message": p.message})

    extra: dict = {"progress": progress, "cancel": token}
    if "emit" in inspect.signature(fn).parameters:
        extra["emit"] = lambda value: send({"event": "partial", "value": value})
    try:
        result = fn(**request.get("kwargs", {}), **extra)
    except _Terminated:  # unwound: now end as a terminated process does
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 128 + signal.SIGTERM
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        send(_described(exc))
        return 1
    send({"event": "done", "result": result})
    return 0
