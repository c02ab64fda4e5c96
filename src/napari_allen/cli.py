"""The ``napari-allen`` command line: the plugin's capabilities for batch work, no GUI needed.

Each area registers its sub-commands from its own module in :mod:`napari_allen.commands`.
All commands honour ``NAPARI_ALLEN_API_URL`` and ``NAPARI_ALLEN_CACHE``.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import sqlite3
import sys
import traceback
from collections.abc import Sequence

from napari_allen import __version__
from napari_allen.errors import AllenError
from napari_allen.progress import Cancelled

#: Modules of napari_allen.commands, each with ``register(subparsers)``.
COMMAND_MODULES = ("api_commands", "local_api", "export", "ish", "connectivity", "spatial",
                   "meshes")

#: Which module registers each sub-command: a run imports only its command's module (pandas and
#: the analysis modules cost ~1 s of process start, which ``download`` and ``correlate`` need
#: not pay for the other commands' imports). ``tests/test_cli_common.py`` checks it is complete.
COMMANDS = {
    **dict.fromkeys(("search-ish", "download", "cache-info", "cache-prune"), "api_commands"),
    "local-api": "local_api",
    "export": "export",
    **dict.fromkeys(("plane-store", "correlate", "gene-correlation", "genes-at",
                     "expression-table"), "ish"),
    **dict.fromkeys(("search-connectivity", "average-projections", "fetch-connectivity",
                     "threshold-projection"), "connectivity"),
    "spatial-search": "spatial",
    "structure-mesh": "meshes",
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option: the top-level
    options take no value), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or only of ``command`` when it is a known one (so a run
    imports one command module; help and unknown names list them all)."""
    parser = argparse.ArgumentParser(
        prog="napari-allen",
        description="Allen Mouse Brain Atlas tools: search, download, analyse (see README).",
    )
    parser.add_argument("--version", action="version", version=f"napari-allen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        module = importlib.import_module(f"napari_allen.commands.{name}")
        module.register(subparsers)
    return parser


#: The cyclic garbage collector's first-generation threshold while a command runs as its own
#: process (CPython's default: 700 allocations).
COMMAND_GC_THRESHOLD = 50_000


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; ``argv=None`` means this process is that command (the console
    script, ``python -m napari_allen.cli``): the garbage collector is then tuned for a short
    process (:func:`_short_process_gc`). Returns the exit code."""
    whole_process = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    if whole_process:
        _short_process_gc()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from napari_allen.commands._common import served_note

    served_note()  # forget clients of an earlier main() in this process (tests)
    try:
        code = int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    # Anticipated failures end with one line (the traceback only with --verbose): API and
    # format errors, bad values (RmaValueError is a ValueError), files, the cache database.
    except (AllenError, OSError, ValueError, sqlite3.Error, MemoryError) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"napari-allen {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    note = served_note()
    if note:
        print(note, file=sys.stderr)
    return code


def _short_process_gc() -> None:
    """Cyclic GC for a process that runs one command and exits.

    The commands hold large trees of API records (``correlate`` of 100 data sets: 130,000
    unionize dicts) that the collector's default thresholds scan again and again, twice in
    full, and the interpreter's exit scans once more: ~150 ms of a 1.6 s run. Objects alive
    after the imports are frozen (never scanned; modules live until exit anyway), collections
    stay on but run after 50,000 new objects instead of 700 (reference cycles are still
    freed; few API records form any), and :func:`atexit` freezes what is left so the exit does
    not scan it (memory is returned to the system with the process)."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(COMMAND_GC_THRESHOLD, gen1, gen2)
    atexit.register(gc.freeze)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (type name if it has none), at most 600 characters."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if isinstance(exc, MemoryError):
        text = f"not enough memory ({text})"
    elif isinstance(exc, sqlite3.Error):
        text = f"metadata cache database: {text}"
    return text if len(text) <= 600 else text[:597] + "..."


if __name__ == "__main__":
    sys.exit(main())
