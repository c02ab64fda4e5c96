"""Helpers shared by the sub-command modules: the API client options (one parent parser) and
the client built from them, progress on stderr and Ctrl-C as a clean cancel (list arguments:
:mod:`napari_allen.parsing`)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from napari_allen import config
from napari_allen.progress import CancelToken, Progress


def _client_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("Allen API and cache")
    group.add_argument("--api-url", metavar="URL", default=None,
                       help=f"base URL of the Allen API (default ${config.API_URL_ENV}, else "
                            f"{config.DEFAULT_API_URL})")
    group.add_argument("--cache-dir", metavar="DIR", type=Path, default=None,
                       help=f"cache folder (default ${config.CACHE_ENV}, else the user cache "
                            "folder)")
    group.add_argument("--offline", action="store_true",
                       help="answer from the cache only (no network)")
    group.add_argument("--retries", type=int, default=5, metavar="N",
                       help="retries per request on transient errors (default 5)")
    return parent


#: The parent parser of every sub-command that talks to the API or its cache:
#: ``subparsers.add_parser(name, parents=[CLIENT_OPTIONS], ...)``.
CLIENT_OPTIONS = _client_options()


def client_from_args(args: argparse.Namespace):
    """The :class:`~napari_allen.api.client.AllenClient` of the :data:`CLIENT_OPTIONS`
    (``--api-url``, ``--cache-dir``, ``--offline``, ``--retries``); unset ones fall back to
    ``NAPARI_ALLEN_API_URL``, ``NAPARI_ALLEN_CACHE`` and the defaults."""
    from napari_allen.api.client import AllenClient

    client = AllenClient(args.api_url, args.cache_dir, offline=args.offline,
                         retries=max(0, args.retries))
    _clients.append(client)
    return client


_clients: list = []  # clients of this command, for served_note()


def served_note() -> str:
    """'note: ... from the cache' when this command's metadata came (partly) from the cache."""
    if not _clients:
        return ""  # nothing to say (and no HTTP stack to import for a command without one)
    from napari_allen.api.metacache import Served

    total = Served()
    for client in _clients:
        total.cache += client.http.served.total.cache
        total.network += client.http.served.total.network
    _clients.clear()
    return f"note: results {total.label} (metadata cache)" if total.label else ""


#: The interpreter's switch interval while :func:`importing_meanwhile` imports (seconds).
SWITCH_INTERVAL_S = 0.0005


@contextlib.contextmanager
def importing_meanwhile(*modules: str | Callable[[], object]) -> Iterator[None]:
    """Import ``modules`` on a background thread while the block runs; joined at its end.
    A callable among them is called there, in its turn (a warm-up of what the block will
    use, e.g. :func:`napari_allen.api.metacache.warm_up`).

    Process start is on the critical path of the short commands: numpy, pandas and the
    analysis modules take 0.1-0.4 s to import, time in which a command that starts with
    network requests only waits for the server. Begin the block after the imports its first
    request needs (so the two do not compete for the interpreter) and list what the block needs
    *after* its responses arrive. Code in the block that needs one of them meanwhile waits for
    its import to finish (Python's per-module import lock): nothing is imported twice. A
    module that fails to import here is left to the block, which imports it again and sees
    the error itself.
    """

    interval = sys.getswitchinterval()

    def run() -> None:
        try:
            for name in modules:
                try:
                    if callable(name):
                        name()
                    else:
                        importlib.import_module(name)
                except Exception as exc:  # noqa: BLE001 - the block's own import reports it
                    logging.getLogger(__name__).debug("background import of %s failed: %s",
                                                      name, exc)
                    return
        finally:
            # Only while importing: 16 download threads contending for the interpreter with
            # a short interval hand it over several times more often (3.5x the futex calls).
            sys.setswitchinterval(interval)

    thread = threading.Thread(target=run, name="napari-allen-imports", daemon=True)
    # The block's threads wait on sockets and files, each wait handing the interpreter to the
    # import thread: a short switch interval gives it back to them quickly (with the default
    # 5 ms, every return from the network could wait that long behind a busy import).
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
    thread.start()
    try:
        yield
    finally:
        thread.join()


def gene_pattern(text: str) -> str:
    """argparse type for a gene acronym/pattern: refuses what no gene symbol contains (quotes,
    brackets, control characters) with the reason, instead of failing in the query."""
    from napari_allen.api.rma import RmaValueError, _check_text
    from napari_allen.parsing import split_list

    try:
        for gene in split_list(text) or [text]:  # "Nrp1,Gad1" is a list (split later)
            _check_text(gene, "gene")
        return text.strip()
    except RmaValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (gene symbols are letters, digits, '-', "
                                         "'.', and '*' as a wildcard, e.g. Nrp1 or Calb*)"
                                         ) from None


def format_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


class ProgressPrinter:
    """A progress callback writing to stderr: rewritten in place on a terminal, about once a
    second otherwise (logs stay short). A new stage (the total changes or the count restarts)
    and each stage's final state are always shown; per-item messages do not force a line."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._stage: tuple[int | None, int] = (None, -1)  # (total, last done)
        self._final_shown = False
        self._lock = threading.Lock()  # callbacks arrive from worker threads

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        with self._lock:
            final = p.total is not None and p.done >= p.total
            total, last_done = self._stage
            new_stage = p.total != total or p.done < last_done
            self._stage = (p.total, p.done)
            if new_stage:
                self._final_shown = False
            if final and self._final_shown:
                return
            if not (final or new_stage) and now - self._last < (0.1 if self.tty else 1.0):
                return
            self._last = now
            self._final_shown = final
            parts = [f"[{p.done}/{p.total if p.total is not None else '?'}]"]
            if p.message:
                parts.append(p.message)
            if p.bytes_done:
                parts.append(f"{format_size(p.bytes_done)} downloaded")
            parts.append(f"{p.failed} failed")
            line = " ".join(parts[:-1]) + ", " + parts[-1]
            if self.tty:
                self.stream.write("\r" + line.ljust(70) + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()


@contextlib.contextmanager
def cancel_on_sigint(token: CancelToken) -> Iterator[CancelToken]:
    """Ctrl-C sets ``token`` (workers stop at their next check and clean up) instead of
    killing the process mid-write. Only possible on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield token
        return

    def handler(signum, frame):
        print("\ncancelling...", file=sys.stderr)
        token.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield token
    finally:
        signal.signal(signal.SIGINT, previous)
