"""The ``napari-allen`` command line: the plugin's capabilities for batch work, no GUI needed.

Each area registers its sub-commands from its own module in :mod:`napari_allen.commands`.
All commands honour ``NAPARI_ALLEN_API_URL`` and ``NAPARI_ALLEN_CACHE``.
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
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
