"""Commands that cannot run a napari_allen child process (``child_process.child_command``
patched to each): every user of the child mechanism must fall back to a thread."""

from __future__ import annotations

import sys

import pytest

unstartable_child = pytest.mark.parametrize("command", [
    None,  # e.g. a frozen application
    ["/nonexistent/python-for-napari-allen-tests"],  # cannot be executed
    [sys.executable, "-c", "raise SystemExit(3)"],  # starts, dies before it is ready
], ids=["no-interpreter", "not-executable", "dies-at-start"])


def process_gone(pid: int) -> bool:
    """True when no process ``pid`` exists any more (a child that was stopped or killed)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
