"""Parsing of user-typed lists, shared by the command line and the widgets."""

from __future__ import annotations

import re
from collections.abc import Iterable

_LIST_SPLIT = re.compile(r"[,\s]+")


def split_list(values: str | Iterable[str] | None) -> list[str]:
    """``"VISp, VISl MOs"`` or ``["VISp,VISl", "MOs"]`` -> ``["VISp", "VISl", "MOs"]``."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item for value in values for item in _LIST_SPLIT.split(value) if item]
