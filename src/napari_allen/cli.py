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
COMMAND_MODULES = ("api_commands", "local_api", "export", "ish", "connectivity", "spatial")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-allen",
        description="Allen Mouse Brain Atlas tools: search, download, analyse (see README).",
    )
    parser.add_argument("--version", action="version", version=f"napari-allen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"napari_allen.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
