"""A thread-safe lazily computed attribute for the server's shared tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class memoized:  # noqa: N801 - used like functools.cached_property
    """Like :func:`functools.cached_property`, but computed under the instance's ``_lock``
    (an ``RLock``).

    Python 3.11's ``cached_property`` holds a per-attribute lock while computing; mixing it with
    an instance lock taken inside the bodies let two request threads wait on each other (each
    held one attribute's lock and wanted the other's). One re-entrant lock per instance cannot
    form such a cycle, and a table is still built once.
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        cache = obj.__dict__
        if self.name in cache:  # fast path, no lock once built
            return cache[self.name]
        with obj._lock:
            if self.name not in cache:
                cache[self.name] = self.fn(obj)
            return cache[self.name]
