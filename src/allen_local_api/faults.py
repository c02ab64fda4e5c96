"""The fault plan: which requests fail, and how (docs/allen-api-notes.md §3.4, §4, §11, §12).

Rules match a substring of the request's path-and-query (as sent, or percent-decoded) and fire
``times`` times (None = every time) or with a probability. A global ``fault_rate`` adds random
faults among the retryable modes; everything is seeded, so a run is reproducible.

Modes:

- ``http500``, ``http429`` (with ``Retry-After: 0``);
- ``success_false``: HTTP 200 ``{"success": false, "msg": "Error in query: service::...,
  Informatics service request failed"}``;
- ``html200``: HTTP 200 HTML "site unavailable" page; ``empty_body``: HTTP 200, zero bytes;
- ``truncated``: the body is cut at ``fraction`` (default 0.5). By default ``Content-Length``
  announces the full size and the connection closes early; with ``matching_length=True`` the
  header matches the short body, so only verification can catch it;
- ``slow_headers``: waits ``delay`` s (default 3) before the status line;
  ``slow_body``: sends the headers and the first chunk, then waits ``delay`` s before the rest;
- ``short_pages``: RMA JSON/XML queries report ``total_rows`` ``extra`` (default 200) rows more
  than exist, so clients must stop on an empty page.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

MODES = ("http500", "http429", "success_false", "html200", "empty_body", "truncated",
         "slow_headers", "slow_body", "short_pages")
#: Modes a global ``fault_rate`` draws from (each a transient failure a client should retry).
RETRYABLE = ("http500", "http429", "success_false", "html200", "empty_body", "truncated")

SERVICE_FAILED = ("Error in query: service::mouse_connectivity_injection_structure, "
                  "Informatics service request failed")
SITE_UNAVAILABLE = (b"<!DOCTYPE html>\n<html><head><title>Site unavailable</title></head>"
                    b"<body><h1>The site is temporarily unavailable</h1><p>site unavailable: "
                    b"the Allen Brain Atlas is undergoing maintenance; please try again later."
                    b"</p></body></html>\n")


@dataclass
class FaultRule:
    mode: str
    path_contains: str = ""
    times: int | None = None
    probability: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


@dataclass
class Fault:
    """A fault chosen for one request."""

    mode: str
    options: dict[str, Any] = field(default_factory=dict)


class FaultPlan:
    """Rules plus a global random fault rate; thread-safe."""

    def __init__(self, fault_rate: float = 0.0, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self.fault_rate = float(fault_rate)
        self.seed = seed
        self._rng = random.Random(seed)

    def add(self, mode: str, path_contains: str = "", times: int | None = None,
            probability: float | None = None, **options: Any) -> FaultRule:
        """Add a rule, e.g. ``add("http500", path_contains="grid_data", times=2)``.

        Options: ``fraction`` and ``matching_length`` (truncated), ``delay`` s (slow_*),
        ``extra`` rows (short_pages), ``message`` (success_false).
        """
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; choose from {', '.join(MODES)}")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], not {probability}")
        rule = FaultRule(mode, path_contains, times, probability, dict(options))
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove all rules and reseed (the global rate stays as set)."""
        with self._lock:
            self.rules.clear()
            self._rng = random.Random(self.seed)

    def pick(self, target: str, is_query: bool) -> Fault | None:
        """The fault for a request to ``target`` (path?query), or None. Rules first, in order."""
        decoded = unquote_plus(target)
        with self._lock:
            for rule in self.rules:
                if rule.exhausted() or (rule.path_contains not in target
                                        and rule.path_contains not in decoded):
                    continue
                if rule.mode in ("success_false", "short_pages") and not is_query:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return Fault(rule.mode, dict(rule.options))
            if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
                modes = RETRYABLE if is_query else tuple(m for m in RETRYABLE
                                                         if m != "success_false")
                return Fault(self._rng.choice(modes))
        return None
