"""Parse RMA query strings (``q=`` / ``criteria=`` stages, model-shortcut parameters).

The grammar follows docs/allen-api-notes.md §2: stages are comma-joined (``model::X``,
``service::Y``, ``rma::criteria``, ``rma::include``, ``rma::options``); commas inside
``[...]``/``(...)`` do not split; filters are ``[attr$op value]`` with ``$eq $ne $gt $lt
$ge $le $in $li $il`` (``*`` wildcards for ``$li``/``$il``), ``[attr]`` alone means "not
null"; associations are ``name[filters]`` and may nest with parentheses
(``specimen(donor(age[days$eq56]))``).

Percent-decoding and ``+`` -> space happen before this module sees the text (the server decodes the
query string with :func:`urllib.parse.parse_qsl`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OPERATORS = ("$eq", "$ne", "$gt", "$lt", "$ge", "$le", "$in", "$li", "$il", "$is")


class RmaSyntaxError(ValueError):
    """The query text is not valid RMA; the message says where."""


@dataclass
class Filter:
    """One ``[attr$op value]`` clause. ``op`` is None for ``[attr]`` (attribute not null)."""

    attr: str
    op: str | None = None
    value: str | list[str] | None = None


@dataclass
class Association:
    """``name[filters](children...)``: a filter/join (criteria) or a nested include."""

    name: str
    filters: list[Filter] = field(default_factory=list)
    children: list[Association] = field(default_factory=list)


@dataclass
class Query:
    """A parsed model or service query."""

    model: str | None = None
    service: str | None = None
    filters: list[Filter] = field(default_factory=list)  # on the model itself
    associations: list[Association] = field(default_factory=list)  # criteria joins
    includes: list[Association] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # raw option values
    params: dict[str, str] = field(default_factory=dict)  # service parameters


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, parentheses and single quotes."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise RmaSyntaxError(f"unbalanced {ch!r} at character {i} of {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise RmaSyntaxError(f"unbalanced brackets in {text!r}")
    if quoted:
        raise RmaSyntaxError(f"unterminated quote in {text!r}")
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


def _bracket_groups(text: str) -> tuple[str, list[str]]:
    """``name[a][b]`` -> ("name", ["a", "b"]); the name part may be empty."""
    i = text.find("[")
    if i < 0:
        return text.strip(), []
    name = text[:i].strip()
    groups: list[str] = []
    depth = 0
    quoted = False
    start = None
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "[":
            if depth == 0:
                start = j + 1
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                groups.append(text[start:j])
        elif depth == 0 and not ch.isspace():
            raise RmaSyntaxError(f"unexpected {ch!r} after filters in {text!r}")
    if depth != 0:
        raise RmaSyntaxError(f"unbalanced brackets in {text!r}")
    return name, groups


_FILTER_RE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(\$[a-z]{2})?(.*)$", re.S)


def parse_filter(text: str) -> Filter:
    """``attr$op value`` (the text inside one pair of brackets)."""
    match = _FILTER_RE.match(text)
    if not match:
        raise RmaSyntaxError(f"bad filter [{text}]")
    attr, op, rest = match.group(1), match.group(2), match.group(3)
    if op is None:
        if rest.strip():
            raise RmaSyntaxError(f"bad filter [{text}]: expected $eq, $in, ... after {attr!r}")
        return Filter(attr)
    if op not in OPERATORS:
        raise RmaSyntaxError(f"bad filter [{text}]: unknown operator {op}")
    if op == "$in":
        return Filter(attr, op, [_unquote(v) for v in split_top(rest) if v.strip() != ""])
    return Filter(attr, op, _unquote(rest))


def parse_association(text: str) -> Association:
    """``name[filters]``, ``name(child,child[f])`` or combinations."""
    text = text.strip()
    children: list[Association] = []
    paren = _top_paren(text)
    if paren is not None:
        head, inner, tail = text[:paren[0]], text[paren[0] + 1:paren[1]], text[paren[1] + 1:]
        if tail.strip():
            raise RmaSyntaxError(f"unexpected text after ')' in {text!r}")
        children = [parse_association(p) for p in split_top(inner) if p.strip()]
        text = head
    name, groups = _bracket_groups(text)
    if not re.fullmatch(r"[A-Za-z_][\w]*", name):
        raise RmaSyntaxError(f"bad association name {name!r}")
    return Association(name, [parse_filter(g) for g in groups], children)


def _top_paren(text: str) -> tuple[int, int] | None:
    """Span of the first top-level ``(...)`` outside brackets, or None."""
    depth_b = 0
    start = None
    depth_p = 0
    quoted = False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "[":
            depth_b += 1
        elif ch == "]":
            depth_b -= 1
        elif depth_b == 0 and ch == "(":
            if depth_p == 0:
                start = i
            depth_p += 1
        elif depth_b == 0 and ch == ")":
            depth_p -= 1
            if depth_p == 0:
                return start, i
    return None


def parse_filters(text: str) -> list[Filter]:
    """``[a$eq1][b$in2,3]`` -> filters (empty text -> [])."""
    name, groups = _bracket_groups(text)
    if name:
        raise RmaSyntaxError(f"expected '[' in {text!r}")
    return [parse_filter(g) for g in groups]


def parse_options(text: str) -> dict[str, str]:
    """``[num_rows$eq'all'][order$eqid]`` -> {"num_rows": "all", "order": "id"}."""
    options: dict[str, str] = {}
    for flt in parse_filters(text):
        if flt.op not in ("$eq", "$in"):
            raise RmaSyntaxError(f"rma::options only take $eq: [{flt.attr}{flt.op or ''}]")
        value = flt.value if isinstance(flt.value, str) else ",".join(flt.value or [])
        options[flt.attr] = value
    return options


def _add_criteria(query: Query, item: str) -> None:
    item = item.strip()
    if not item:
        return
    if item.startswith("["):
        query.filters.extend(parse_filters(item))
    else:
        query.associations.append(parse_association(item))


def parse_stages(text: str) -> Query:
    """Parse a full ``q=``/``criteria=`` value made of ``model::``/``service::`` stages."""
    if not text.strip():
        raise RmaSyntaxError("empty query")
    items = split_top(text)
    query = Query()
    section: str | None = None
    for raw in items:
        item = raw.strip()
        if item.startswith("model::"):
            if query.model or query.service:
                raise RmaSyntaxError("only one model:: or service:: stage is supported")
            name, groups = _bracket_groups(item[len("model::"):])
            query.model = name
            query.filters.extend(parse_filter(g) for g in groups)
            section = "model"
        elif item.startswith("service::"):
            if query.model or query.service:
                raise RmaSyntaxError("only one model:: or service:: stage is supported")
            name, groups = _bracket_groups(item[len("service::"):])
            query.service = name
            for group in groups:
                flt = parse_filter(group)
                if flt.op != "$eq":
                    raise RmaSyntaxError(f"service parameters take $eq: [{group}]")
                query.params[flt.attr] = flt.value if isinstance(flt.value, str) else ""
            section = "service"
        elif item.startswith("pipe::"):
            raise RmaSyntaxError("pipe:: stages are not supported by the local server")
        elif item.startswith("rma::criteria"):
            section = "criteria"
            _add_criteria(query, item[len("rma::criteria"):])
        elif item.startswith("rma::include"):
            section = "include"
            rest = item[len("rma::include"):].strip()
            if rest:
                query.includes.append(parse_association(rest))
        elif item.startswith("rma::options"):
            section = "options"
            query.options.update(parse_options(item[len("rma::options"):]))
        elif item.startswith("rma::"):
            raise RmaSyntaxError(f"unknown stage {item!r}")
        elif section == "criteria" or section == "model":
            _add_criteria(query, item)
        elif section == "include":
            if item:
                query.includes.append(parse_association(item))
        elif not item:
            continue
        else:
            raise RmaSyntaxError(f"unexpected {item!r} (stage must start with model::, "
                                 "service:: or rma::)")
    if not query.model and not query.service:
        raise RmaSyntaxError("the query has no model:: or service:: stage")
    if query.service and (query.filters or query.associations or query.includes
                          or query.options):
        # Allen's services reportedly reject rma::options: paging goes inside the brackets.
        raise RmaSyntaxError(f"service::{query.service} takes parameters (and paging) in its "
                             "brackets only, not rma:: stages")
    return query


def parse_shortcut(model: str, params: dict[str, str]) -> Query:
    """The model-shortcut form ``/api/v2/data/<Model>/query.<fmt>?criteria=...&num_rows=...``.

    ``criteria`` holds filters/associations (and may itself hold ``rma::`` stages);
    ``include, only, except, tabular, order, start_row, num_rows, count`` are URL parameters.
    """
    criteria = params.get("criteria", "")
    if criteria.strip().startswith(("model::", "service::")):
        return parse_stages(criteria)
    query = parse_stages(f"model::{model}" + ("," + criteria if criteria.strip() else ""))
    if "id" in params:
        query.filters.append(Filter("id", "$eq", params["id"]))
    if params.get("include"):
        query.includes.extend(parse_association(p) for p in split_top(params["include"])
                              if p.strip())
    for key in ("only", "except", "tabular", "order", "start_row", "num_rows", "count"):
        if key in params:
            query.options[key] = params[key]
    # 2013 examples page with camelCase names [U]; accepting them costs nothing.
    for camel, snake in (("startRow", "start_row"), ("numRows", "num_rows")):
        if camel in params and snake not in params:
            query.options[snake] = params[camel]
    return query
