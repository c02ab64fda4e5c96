"""Build Allen RMA queries from values, never by pasting user text into a query string.

RMA (``/api/v2/data/query.json``) queries are comma-joined stages such as::

    model::SectionDataSet,rma::criteria,[failed$eq'false'],genes[acronym$il'nrp1'],
    rma::include,genes,rma::options[num_rows$eq2000][start_row$eq0][order$eq'id']

Everything structural (model, attribute and association names, operators) comes from code and is
checked against an identifier pattern; everything that may come from a user (gene acronyms,
transgenic line names, numbers) goes through :func:`literal`, :func:`token` or :func:`number`,
which refuse the characters that would let a value close a bracket, start a new filter or a new
stage (``'`` ``"`` ``[`` ``]`` ``(`` ``)`` ``$`` ``,`` ``\\`` and control characters). RMA has no
documented escape for them, so refusing is the only safe choice; no Allen gene or structure
acronym contains them. Spaces are allowed inside quoted literals (percent-encoded on the wire).

:func:`encode_query` percent-encodes a finished query like AllenSDK does (``[ ] '`` and spaces
encoded, ``$ , : / *`` kept literal), so the URL is readable and the real server accepts it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Characters that could end a literal, a filter, a list or a stage, or escape something.
_FORBIDDEN = set("'\"[]()$,\\`")
# Unquoted service values (e.g. transgenic line names): a conservative alphabet.
_TOKEN = re.compile(r"^[A-Za-z0-9_.\-/+:]+$")
OPERATORS = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "in", "li", "il"})


class RmaValueError(ValueError):
    """A value cannot be placed in an RMA query safely (message names the value)."""


def identifier(name: str) -> str:
    """Check a model/attribute/association name (``genes``, ``data_sets.id``)."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise RmaValueError(f"not a valid RMA identifier: {name!r}")
    return name


def _check_text(value: str, what: str = "value") -> str:
    if not isinstance(value, str):
        raise RmaValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RmaValueError(f"empty {what} in RMA query")
    bad = sorted({c for c in value if c in _FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise RmaValueError(
            f"{what} {value!r} contains characters that cannot be used safely in an Allen RMA "
            f"query: {' '.join(repr(c) for c in bad)}"
        )
    return value


def number(value: float | int) -> str:
    """An integer or finite float as RMA text (``6900``, ``0.25``); never exponent notation."""
    if isinstance(value, bool):
        raise RmaValueError(f"expected a number, got a boolean {value!r}")
    if isinstance(value, int) or (hasattr(value, "dtype") and "int" in str(value.dtype)):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RmaValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise RmaValueError(f"expected a finite number, got {value!r}")
    if x.is_integer():
        return str(int(x))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def integer(value) -> str:
    """An integer id as text; refuses strings that are not all digits (``'12 OR 1'``)."""
    if isinstance(value, bool):
        raise RmaValueError(f"expected an integer id, got {value!r}")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise RmaValueError(f"expected an integer id, got {value!r}")
        return str(int(value.strip()))
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise RmaValueError(f"expected an integer id, got {value!r}") from None
    if as_int != value:
        raise RmaValueError(f"expected an integer id, got {value!r}")
    return str(as_int)


def literal(value) -> str:
    """A filter value: booleans -> ``true``/``false``, numbers as text, strings single-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + _check_text(value) + "'"
    return number(value)


def token(value) -> str:
    """An unquoted value for a connected-service parameter (ids, acronyms, line names)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return number(value)
    text = value.strip()
    _check_text(text)
    if not _TOKEN.match(text):
        raise RmaValueError(f"value {value!r} is not allowed in an Allen service query")
    return text


@dataclass(frozen=True)
class Filter:
    """``[attr$op value]``; ``value`` is a scalar or, for ``in``, a sequence."""

    attr: str
    op: str
    value: object = None

    def render(self) -> str:
        identifier(self.attr)
        if self.op not in OPERATORS:
            raise RmaValueError(f"unknown RMA operator {self.op!r}")
        if self.op == "in":
            values = list(self.value)  # type: ignore[arg-type]
            if not values:
                raise RmaValueError(f"empty list for {self.attr}$in")
            text = ",".join(literal(v) for v in values)
        else:
            text = literal(self.value)
        return f"[{self.attr}${self.op}{text}]"


@dataclass
class Criterion:
    """Filters on the model (``association=None``) or on an association path such as
    ``genes`` or ``specimen.donor`` (rendered ``specimen(donor[...])``)."""

    association: str | None = None
    filters: list[Filter] = field(default_factory=list)

    def render(self) -> str:
        body = "".join(f.render() for f in self.filters)
        if self.association is None:
            return body
        parts = [identifier(p) for p in self.association.split(".")]
        # Nested associations: a(b(c[...])).
        text = parts[-1] + body
        for outer in reversed(parts[:-1]):
            text = f"{outer}({text})"
        return text


@dataclass
class RmaQuery:
    """A model query: criteria, includes and options; paging is added per page."""

    model: str
    criteria: list[Criterion] = field(default_factory=list)
    include: list[str] = field(default_factory=list)
    order: str | None = None
    only: list[str] = field(default_factory=list)

    def where(self, association: str | None = None, **filters) -> RmaQuery:
        """Add filters: ``where(None, failed=False)`` or ``where("genes", acronym__il="nrp1")``.

        Keys are ``attr`` (``$eq``) or ``attr__op``.
        """
        crit = Criterion(association)
        for key, value in filters.items():
            attr, _, op = key.partition("__")
            crit.filters.append(Filter(attr, op or "eq", value))
        self.criteria.append(crit)
        return self

    def stages(self, *, start_row: int | None = None, num_rows: int | str | None = None,
               count: bool | None = None) -> str:
        """The ``q=`` value: ``model::M,rma::criteria,...,rma::options[...]``."""
        out = [f"model::{identifier(self.model)}"]
        crit = [c.render() for c in self.criteria]
        crit = [c for c in crit if c]
        if crit:
            out.append("rma::criteria")
            out.extend(crit)
        if self.include:
            out.append("rma::include")
            out.extend(identifier(i) for i in self.include)
        opts = _options(start_row=start_row, num_rows=num_rows, order=self.order,
                        only=self.only, count=count)
        if opts:
            out.append("rma::options" + opts)
        return ",".join(out)


def _options(*, start_row=None, num_rows=None, order=None, only=(), count=None) -> str:
    opts = []
    if only:
        opts.append("[only$eq" + ",".join(identifier(o) for o in only) + "]")
    if num_rows is not None:
        rows = "'all'" if num_rows == "all" else integer(num_rows)
        opts.append(f"[num_rows$eq{rows}]")
    if start_row is not None:
        opts.append(f"[start_row$eq{integer(start_row)}]")
    if order is not None:
        name, _, direction = order.partition("$")
        if direction not in ("", "desc", "asc"):
            raise RmaValueError(f"bad order direction in {order!r}")
        opts.append(f"[order$eq'{identifier(name)}{'$' + direction if direction else ''}']")
    if count is not None:
        opts.append(f"[count$eq{'true' if count else 'false'}]")
    return "".join(opts)


@dataclass
class ServiceQuery:
    """A connected-service stage ``service::name[param$eqvalue]...``.

    Parameters are sorted by name like AllenSDK does; lists are comma-joined tokens; booleans
    are ``true``/``false``; ``None`` values are left out. Paging goes inside the brackets.
    """

    service: str
    params: dict[str, object] = field(default_factory=dict)

    def stage(self, *, start_row: int | None = None, num_rows: int | None = None) -> str:
        parts = [f"service::{identifier(self.service)}"]
        for name in sorted(self.params):
            value = self.params[name]
            if value is None:
                continue
            identifier(name)
            if isinstance(value, (list, tuple)):
                if not value:
                    continue
                text = ",".join(token(v) for v in value)
            else:
                text = token(value)
            parts.append(f"[{name}$eq{text}]")
        if start_row is not None:
            parts.append(f"[start_row$eq{integer(start_row)}]")
        if num_rows is not None:
            parts.append(f"[num_rows$eq{integer(num_rows)}]")
        return "".join(parts)


# AllenSDK keeps these literal and percent-encodes the rest (brackets, quotes, spaces...).
_SAFE = "$,:/*@!.-_~"


def encode_query(params: Sequence[tuple[str, str]] | dict[str, str]) -> str:
    """``key=value&...`` with values percent-encoded the AllenSDK way (``+`` encoded too, so a
    value's ``+`` never turns into a space on the server)."""
    items = params.items() if isinstance(params, dict) else params
    return "&".join(f"{quote(k, safe='_')}={quote(str(v), safe=_SAFE)}" for k, v in items)


