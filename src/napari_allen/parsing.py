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


def parse_region_groups(values: str | Iterable[str] | None) -> dict[str, list[str]]:
    """Region groups for averaging: ``"visual=VIS; motor=MOp,MOs"`` (the dock) or
    ``["visual=VIS", "motor=MOp,MOs"]`` (repeated ``--region-group``) ->
    ``{"visual": ["VIS"], "motor": ["MOp", "MOs"]}``. Raises ``ValueError`` for a part
    that is not ``NAME=ACR[,ACR...]``."""
    if values is None:
        return {}
    parts = values.split(";") if isinstance(values, str) else list(values)
    groups: dict[str, list[str]] = {}
    for part in parts:
        if not part.strip():
            continue
        name, sep, acronyms = part.partition("=")
        if not sep or not name.strip() or not split_list(acronyms):
            raise ValueError(f"region group {part.strip()!r}: write NAME=ACR[,ACR...]")
        groups[name.strip()] = split_list(acronyms)
    return groups
