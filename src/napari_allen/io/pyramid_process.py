"""Building a pyramid in a converter process of its own, so it never holds napari's GIL.

A conversion in a thread of the GUI process shares one interpreter lock with napari's event
loop: its numpy and bookkeeping steps hold that lock in pieces of 100-250 ms on a loaded
machine, and the user feels each as a freeze. Here the same :func:`build_pyramid` runs in a
fresh interpreter started with :mod:`subprocess` (fork + exec: *spawn* semantics, safe in a
process running Qt and other threads; ``multiprocessing``'s spawn would also re-import the
GUI's ``__main__``, i.e. napari). The child imports only what converting needs (numpy, zarr,
this package's ``io``; no napari, Qt or pandas), runs at a lower CPU priority (niceness
:data:`CHILD_NICENESS`: napari's event loop and renderer come first) and talks to the
parent through its standard streams:

- parent -> child, stdin: one JSON request line (source, target, identity), then ``cancel``
  lines; end of file (the GUI process went away) also cancels;
- child -> parent, a dup of stdout: JSON lines ``started`` (after its imports), ``progress``
  (``done``/``total``/``message``, at most ~10 a second), then ``done`` or ``error`` (type,
  message, the file and problem of an :class:`AllenFormatError`, traceback). Anything else the
  child prints goes to its stderr, kept in a temporary file for the error message.

The parent's side (:func:`convert_in_process`) runs in the job's thread and blocks on the pipe
(no GIL held); Cancel asks the child to stop (it stops at its next slab, leaving the store to the
caller to discard) and terminates it after :data:`CANCEL_GRACE_S`. A child that dies without a
result (killed, crashed) is reported as :class:`ConverterError`; a child that could not start
(no interpreter, restricted environment, import failure before ``started``) raises
:class:`ConverterUnavailable` so the caller can convert in a thread instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..errors import AllenFormatError
from ..progress import Cancelled, CancelToken, Progress, ProgressCallback

#: Seconds a cancelled child gets to stop by itself before it is terminated.
CANCEL_GRACE_S = 5.0
#: Least time between two progress lines from the child (s); the last one always goes.
PROGRESS_EVERY_S = 0.1
#: CPU niceness added in the child: napari's event loop (and its renderer) come first.
CHILD_NICENESS = 10

#: The child's entry: first a lower CPU priority (its start-up and imports too), then the
#: package root goes on ``sys.path`` only when it is not there yet (a source tree run with
#: PYTHONPATH keeps its place; an installed package is found as usual).
_BOOT = ("import sys, os; r = sys.argv[1]\n"
         "try:\n"
         f"    os.nice({CHILD_NICENESS})\n"
         "except (AttributeError, OSError):\n"
         "    pass\n"
         "if not any(os.path.realpath(p or '.') == r for p in sys.path): sys.path.insert(0, r)\n"
         "from napari_allen.io.pyramid_process import child_main; sys.exit(child_main())")


class ConverterUnavailable(RuntimeError):
    """The converter process could not be started (the caller converts in a thread)."""


class ConverterError(RuntimeError):
    """The converter process failed or died; the message names the source file."""


def converter_command() -> list[str] | None:
    """The command starting a converter child, or None when this interpreter cannot start one
    (a frozen application has no Python to run)."""
    if getattr(sys, "frozen", False) or not sys.executable:
        return None
    root = str(Path(__file__).resolve().parents[2])  # the folder holding napari_allen/
    # -P: the current folder is not put on the child's sys.path (a stray numpy.py there).
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe, "-c", _BOOT, root]


def convert_in_process(source: str | os.PathLike, target: str | os.PathLike, identity: dict,
                       *, progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None,
                       on_started=None) -> None:
    """Build the pyramid of ``source`` (one grid; read with the package's reader) at
    ``target`` in a child process; returns once the child reports the complete store.

    ``progress`` receives the child's steps (in the calling thread); ``on_started(pid)`` is
    called once the child has started. Raises :class:`Cancelled` (``cancel`` set),
    :class:`AllenFormatError` (bad input), :class:`ConverterError` (any other failure, or the
    child died) or :class:`ConverterUnavailable` (no child could be started)."""
    command = converter_command()
    if command is None:
        raise ConverterUnavailable("this application cannot start a Python interpreter")
    cancel = cancel or CancelToken()
    with tempfile.TemporaryFile(prefix="napari-allen-converter-") as errors:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=errors, close_fds=True)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise ConverterUnavailable(f"{command[0]}: {exc}") from exc
        try:
            result = _talk(proc, source, target, identity, progress, cancel, on_started)
        finally:
            _stop(proc)
        _raise_for(result, proc, source, errors, cancel)


def _talk(proc: subprocess.Popen, source, target, identity, progress, cancel,
          on_started) -> dict:
    """Send the request, relay the child's lines until it ends; returns what it said last
    (``started`` noted under that key)."""
    request = {"source": str(source), "target": str(target), "identity": identity}
    _send(proc, json.dumps(request))
    state: dict = {"started": False}
    ended = threading.Event()

    def read() -> None:
        try:
            for raw in proc.stdout:  # blocks in the OS (GIL released) between lines
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                event = msg.get("event")
                if event == "started":
                    state["started"] = True
                    if on_started is not None:
                        on_started(int(msg.get("pid", proc.pid)))
                elif event == "progress":
                    if progress is not None:
                        with contextlib.suppress(Exception):  # a display never stops it
                            progress(Progress(done=int(msg.get("done", 0)),
                                              total=msg.get("total"),
                                              message=str(msg.get("message", ""))))
                elif event in ("done", "error"):
                    state["result"] = msg
        finally:
            ended.set()

    reader = threading.Thread(target=read, name=f"napari-allen converter {proc.pid}",
                              daemon=True)
    reader.start()
    while not ended.is_set():
        if cancel.wait(0.1):  # wakes at once on Cancel; notices the end within 0.1 s
            _send(proc, "cancel")
            try:
                proc.wait(CANCEL_GRACE_S)
            except subprocess.TimeoutExpired:
                _stop(proc)  # stuck (e.g. waiting for another process's lock)
            break
    reader.join()
    proc.wait()
    return state


def _send(proc: subprocess.Popen, line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # the child is gone: its exit tells why
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()


def _stop(proc: subprocess.Popen) -> None:
    """Make sure the child is gone (the job thread itself was interrupted, ...)."""
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raise_for(state: dict, proc: subprocess.Popen, source, errors, cancel: CancelToken
               ) -> None:
    result = state.get("result") or {}
    if result.get("event") == "done":
        return
    if cancel.cancelled:
        raise Cancelled("cancelled by the user")
    if result.get("event") == "error":
        raise _rebuilt(result, source)
    tail = _tail(errors)
    if not state["started"]:
        raise ConverterUnavailable(f"the converter process ended before starting "
                                   f"({_how_it_ended(proc.returncode)}){tail}")
    raise ConverterError(f"{source}: building the multiscale cache failed: the converter "
                         f"process (pid {proc.pid}) {_how_it_ended(proc.returncode)} before "
                         f"finishing{tail}; the partial cache is resumed at the next open")


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


def _rebuilt(result: dict, source) -> BaseException:
    """The child's error as an exception of this process (format errors keep their class)."""
    kind, message = str(result.get("type", "Error")), str(result.get("message", ""))
    if kind == "Cancelled":
        exc: BaseException = Cancelled(message or "cancelled")
    elif result.get("format_path") is not None:
        exc = AllenFormatError(result["format_path"], str(result.get("format_problem", "")))
    else:
        where = "" if str(source) in message else f"{source}: "
        exc = ConverterError(f"{where}building the multiscale cache failed: {kind}: {message}")
    if result.get("traceback"):
        exc.add_note("in the converter process:\n" + str(result["traceback"]).rstrip())
    return exc


# --- the child -----------------------------------------------------------------------------
def child_main() -> int:
    """The converter process: read the request, build, report (see the module docstring)."""
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            channel.write(json.dumps(msg) + "\n")
            channel.flush()

    from .pyramid import build_pyramid, read_single_grid

    send({"event": "started", "pid": os.getpid()})
    line = sys.stdin.readline()
    if not line:
        return 0  # the parent went away before asking anything
    request = json.loads(line)
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

    source = request["source"]
    try:
        vol = read_single_grid(source, progress=progress, cancel=token)
        build_pyramid(vol, request["target"], identity=request["identity"],
                      progress=progress, cancel=token)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        import traceback

        send({"event": "error", "type": type(exc).__name__, "message": str(exc),
              "format_path": getattr(exc, "path", None) if isinstance(exc, AllenFormatError)
              else None,
              "format_problem": getattr(exc, "problem", None),
              "traceback": "".join(traceback.format_exception(exc))[-4000:]})
        return 1
    send({"event": "done"})
    return 0
