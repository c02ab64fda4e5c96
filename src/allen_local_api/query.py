"""Evaluate a parsed RMA model query against in-memory records.

A :class:`Model` yields base records (dicts with alphabetical public keys; keys starting with
``_`` are private and never served) and knows its associations. The engine applies filters,
association joins, ``order``, paging, ``only``/``except``, ``include`` and ``tabular``.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .rma import Association, Filter, Query, RmaSyntaxError, split_top

DEFAULT_ROWS = 50
MAX_ROWS = 25_000
#: Selections kept by :meth:`Engine.select` (model + criteria -> matching records).
SELECTION_CACHE = 64
#: Selections computed faster than this (seconds) are not worth a place in that cache.
SELECTION_WORTH_S = 0.005
#: Association filters whose per-target results :meth:`Engine.select` remembers.
ASSOC_MEMO = 256

Record = dict[str, Any]


class QueryError(ValueError):
    """The query is well formed but cannot be answered (unknown model, attribute, id ...)."""


@dataclass
class AssocSpec:
    """How to reach associated records from a record."""

    getter: Callable[[Record], list[Record]]
    many: bool
    table: str
    model: str | None = None  # model name of the targets, for nested associations
    #: The record's attribute that alone decides its targets (a foreign key such as
    #: ``structure_id``), or None: a filter on the association is then tested once per
    #: distinct value of it, not once per record.
    via: str | None = None


@dataclass
class Model:
    name: str
    table: str
    element: str  # XML element of one record, e.g. "section-data-set"
    records: Callable[[Query], list[Record]]
    associations: dict[str, AssocSpec] = field(default_factory=dict)


def public(record: Record) -> Record:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _coerce(sample: Any, text: str) -> Any:
    """Convert filter text to the type of the record's value."""
    kind = bool if isinstance(sample, bool) else int if isinstance(sample, int) else \
        float if isinstance(sample, float) else str
    return _coerce_to(kind, text)


@functools.lru_cache(maxsize=4096)
def _coerce_to(kind: type, text: str) -> Any:
    """:func:`_coerce` for one value type (cached: a filter is compared with every record)."""
    sample = kind()
    if isinstance(sample, bool):
        low = text.strip().lower()
        if low in ("true", "t", "1"):
            return True
        if low in ("false", "f", "0"):
            return False
        raise QueryError(f"not a boolean: {text!r}")
    if isinstance(sample, int):
        try:
            return int(float(text))
        except ValueError:
            raise QueryError(f"not an integer: {text!r}") from None
    if isinstance(sample, float):
        try:
            return float(text)
        except ValueError:
            raise QueryError(f"not a number: {text!r}") from None
    return text


def _match_one(value: Any, op: str, target: str) -> bool:
    if op in ("$li", "$il"):
        if value is None:
            return False
        text = str(value)
        pattern = target
        if op == "$il":
            text, pattern = text.lower(), pattern.lower()
        # '*' is the only wildcard; escape fnmatch's others.
        pattern = re.sub(r"([\[\]?])", r"[\1]", pattern)
        return fnmatch.fnmatchcase(text, pattern)
    if value is None:  # only an explicit null matches a null
        is_null = target.lower() in ("null", "nil")
        return is_null if op in ("$eq", "$is") else (op == "$ne" and not is_null)
    wanted = _coerce(value, target)
    if op == "$eq" or op == "$is":
        return value == wanted
    if op == "$ne":
        return value != wanted
    try:
        if op == "$gt":
            return value > wanted
        if op == "$lt":
            return value < wanted
        if op == "$ge":
            return value >= wanted
        if op == "$le":
            return value <= wanted
    except TypeError:
        return False
    raise QueryError(f"unsupported operator {op}")


def matches(record: Record, flt: Filter, model: Model) -> bool:
    attr = flt.attr.split(".")[-1]
    if attr not in record or attr.startswith("_"):
        raise QueryError(f"{model.name} has no attribute {flt.attr!r}")
    value = record[attr]
    if flt.op is None:
        return value is not None
    if flt.op == "$in":
        return any(_match_one(value, "$eq", v) for v in (flt.value or []))
    return _match_one(value, flt.op, str(flt.value))


def _filtered(rows: list[Record], flt: Filter, model: Model) -> list[Record]:
    """The ``rows`` that match one plain filter (:func:`matches`), each distinct value (and
    type) tested once: one experiment's 1,300 unionize rows are one test of
    ``section_data_set_id``, not 1,300. A row without the attribute raises the error naming
    it (:func:`matches`)."""
    attr = flt.attr.split(".")[-1]

    def key_of(r: Record) -> tuple[type, Any]:
        value = r.get(attr, _MISSING)
        return value.__class__, value

    return _kept_by_key(rows, key_of, lambda r: matches(r, flt, model), {})


def _kept_by_key(rows: list[Record], key_of, test, decided: dict) -> list[Record]:
    """The ``rows`` passing ``test``, decided once per ``key_of(row)`` and remembered in
    ``decided``; a row whose key is unhashable (a list) is tested alone."""
    kept = []
    for r in rows:
        try:
            key = key_of(r)
            hit = decided[key]
        except KeyError:
            hit = decided[key] = test(r)
        except TypeError:
            hit = test(r)
        if hit:
            kept.append(r)
    return kept


_MISSING = object()


class Engine:
    """Runs queries over a registry of models."""

    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models
        self._selections: OrderedDict[tuple, list[Record]] = OrderedDict()
        self._selection_lock = threading.Lock()
        self._assoc_memo: dict[str, dict[Any, bool]] = {}

    def model(self, name: str | None) -> Model:
        if name not in self.models:
            raise QueryError(f"unknown model {name!r}; this server knows "
                             + ", ".join(sorted(self.models)))
        return self.models[name]

    # -- associations -----------------------------------------------------------------
    def _assoc(self, model: Model, name: str) -> AssocSpec:
        spec = model.associations.get(name)
        if spec is None:
            raise QueryError(f"{model.name} has no association {name!r}")
        return spec

    def _assoc_matches(self, model: Model, record: Record, assoc: Association,
                       memo: dict[Any, bool] | None = None) -> bool:
        spec = self._assoc(model, assoc.name)
        targets = spec.getter(record)
        sub = self.models.get(spec.model or "")
        for target in targets:
            # Association targets are catalog records: one (model, id) has one content, so
            # each target is tested once per association filter (many data sets share a
            # product; every unionize row of every experiment names one of 1,327 structures).
            key = (spec.model, target.get("id")) if memo is not None and "id" in target else None
            hit = memo.get(key) if key is not None else None
            if hit is None:
                hit = all(matches(target, f, sub or model) for f in assoc.filters) and all(
                    sub is not None and self._assoc_matches(sub, target, child)
                    for child in assoc.children
                )
                if key is not None:
                    memo[key] = hit
            if hit:
                return True
        return False

    def _table_filter(self, model: Model, flt: Filter) -> Association | None:
        """``[genes.acronym$eqX]`` -> an association filter; base-table prefixes are dropped."""
        if "." not in flt.attr:
            return None
        table, attr = flt.attr.rsplit(".", 1)
        if table in (model.table, model.name):
            return None
        for name, spec in model.associations.items():
            if table in (spec.table, name):
                return Association(name, [Filter(attr, flt.op, flt.value)])
        raise QueryError(f"{model.name}: unknown table {table!r} in filter {flt.attr!r}")

    def select(self, query: Query) -> tuple[Model, list[Record]]:
        """All records matching the criteria (before paging).

        The selection of the last queries is kept (a small LRU keyed by model and criteria),
        so the pages of one query, and the same query again, do not filter everything again.
        Only selections that took a while are kept: a hundred cheap ones (one experiment's
        StructureUnionize, served from its own memo) must not evict a listing that filters
        every data set (0.5 s to recompute).
        """
        model = self.model(query.model)
        key = (model.name, repr(query.filters), repr(query.associations))
        with self._selection_lock:
            cached = self._selections.get(key)
            if cached is not None:
                self._selections.move_to_end(key)
                return model, cached
        rows, seconds = self._select(model, query)
        if seconds < SELECTION_WORTH_S:
            return model, rows
        with self._selection_lock:
            self._selections[key] = rows
            while len(self._selections) > SELECTION_CACHE:
                self._selections.popitem(last=False)
        return model, rows

    def _select(self, model: Model, query: Query) -> tuple[list[Record], float]:
        """The matching records and the seconds spent filtering them (what the selection
        cache saves; the model's own records, e.g. a unionize, are memoized by the model)."""
        rows = model.records(query)
        started = time.perf_counter()
        plain: list[Filter] = []
        assocs = list(query.associations)
        for flt in query.filters:
            joined = self._table_filter(model, flt)
            if joined is None:
                plain.append(flt)
            else:
                assocs.append(joined)
        for flt in plain:
            rows = _filtered(rows, flt, model)
        for assoc in assocs:
            spec = self._assoc(model, assoc.name)  # unknown association -> error even if no rows
            with self._selection_lock:
                if len(self._assoc_memo) > ASSOC_MEMO:
                    self._assoc_memo.clear()
                memo = self._assoc_memo.setdefault(repr(assoc), {})
            if spec.via is None:
                rows = [r for r in rows if self._assoc_matches(model, r, assoc, memo)]
            else:
                rows = self._assoc_filtered_via(model, rows, assoc, spec.via, memo)
        return rows, time.perf_counter() - started

    def _assoc_filtered_via(self, model: Model, rows: list[Record], assoc: Association,
                            via: str, memo: dict[Any, bool]) -> list[Record]:
        """The ``rows`` whose association ``assoc`` matches, decided once per distinct value
        of their ``via`` attribute (the association's targets depend on it alone: 100
        experiments' unionize rows name the same 1,300 structures)."""
        return _kept_by_key(rows, lambda r: r.get(via),
                            lambda r: self._assoc_matches(model, r, assoc, memo),
                            memo.setdefault(("via", model.name, via), {}))

    # -- ordering and paging ----------------------------------------------------------
    def order(self, model: Model, rows: list[Record], order: str) -> list[Record]:
        keys = [k.strip().strip("'") for k in split_top(order) if k.strip().strip("'")]
        for key in reversed(keys):  # stable sorts, last key first
            desc = False
            for suffix in ("$desc", " desc", "$asc", " asc"):
                if key.lower().endswith(suffix):
                    desc = "desc" in suffix
                    key = key[: -len(suffix)].strip()
            table, _, attr = key.rpartition(".")
            if table and table not in (model.table, model.name):
                # An associated table: sort by its first record's attribute.
                name = next((n for n, s in model.associations.items() if table in (s.table, n)),
                            None)
                if name is None:
                    raise QueryError(f"{model.name}: cannot order by {key!r}")
                spec = model.associations[name]

                def keyfunc(r, spec=spec, attr=attr):
                    targets = spec.getter(r)
                    value = targets[0].get(attr) if targets else None
                    return (value is None, value if value is not None else 0)
            else:
                if rows and attr not in rows[0]:
                    raise QueryError(f"{model.name} has no attribute {attr!r} to order by")

                def keyfunc(r, attr=attr):
                    value = r.get(attr)
                    return (value is None, value if value is not None else 0)
            rows = sorted(rows, key=keyfunc, reverse=desc)
        return rows


def page_bounds(options: dict[str, str], default_rows: int = DEFAULT_ROWS,
                cap: int | None = MAX_ROWS) -> tuple[int, int | None]:
    """(start_row, num_rows or None for all) from the options; 25,000 cap like Allen's."""
    try:
        start = int(options.get("start_row", "0") or 0)
    except ValueError:
        raise RmaSyntaxError(f"start_row must be an integer, not {options['start_row']!r}") \
            from None
    raw = str(options.get("num_rows", default_rows)).strip().strip("'")
    if raw.lower() == "all":
        return max(start, 0), None
    try:
        num = int(raw)
    except ValueError:
        raise RmaSyntaxError(f"num_rows must be an integer or 'all', not {raw!r}") from None
    if cap is not None:
        num = min(num, cap)
    return max(start, 0), max(num, 0)


def attr_list(text: str) -> list[str]:
    return [p.strip().strip("'") for p in split_top(text) if p.strip()]


def tabular_rows(engine: Engine, model: Model, rows: Iterable[Record], spec: str,
                 query: Query) -> list[Record]:
    """Flat rows for ``tabular=table.attr as alias,...``; has-many joins explode rows."""
    distinct = False
    columns: list[tuple[str | None, str, str]] = []  # (association or None, attr, label)
    for item in attr_list(spec):
        if item.lower().startswith("distinct "):
            distinct = True
            item = item[len("distinct "):].strip()
        aliased = re.match(r"^(.*?)\s+as\s+(.+)$", item)
        expr, alias = (aliased.group(1).strip(), aliased.group(2).strip()) if aliased \
            else (item, "")
        table, _, attr = expr.rpartition(".")
        assoc = None
        if table and table not in (model.table, model.name):
            assoc = next((n for n, s in model.associations.items() if table in (s.table, n)),
                         None)
            if assoc is None:
                raise QueryError(f"{model.name}: unknown table {table!r} in tabular {expr!r}")
        columns.append((assoc, attr, alias or attr))
    # Criteria on an association restrict the joined rows too (SQL inner join semantics).
    join_filters = {a.name: a.filters for a in query.associations}
    out: list[Record] = []
    seen: set[tuple] = set()
    for record in rows:
        combos: list[dict[str | None, Record]] = [{None: record}]
        for assoc in dict.fromkeys(c[0] for c in columns if c[0]):
            spec = model.associations[assoc]
            sub = engine.models.get(spec.model or "", model)
            targets = [t for t in spec.getter(record)
                       if all(matches(t, f, sub) for f in join_filters.get(assoc, []))]
            if not targets:
                targets = [{}]  # left join: the columns come out null
            combos = [{**c, assoc: t} for c in combos for t in targets]
        for combo in combos:
            row = {label: combo[assoc].get(attr) for assoc, attr, label in columns}
            if distinct:
                key = tuple(row.values())
                if key in seen:
                    continue
                seen.add(key)
            out.append(row)
    return out


@functools.lru_cache(maxsize=1024)
def _kept_keys(table: str, keys: tuple[str, ...], only: tuple[str, ...] | None,
               excpt: tuple[str, ...] | None) -> tuple[str, ...]:
    """The public keys of a record with these ``keys``, alphabetical, ``only``/``except``
    applied (computed once per key set, not per record)."""
    def keep(key: str) -> bool:
        if key.startswith("_"):
            return False
        if only and not any(o in (key, f"{table}.{key}") for o in only):
            return False
        return not (excpt and any(e in (key, f"{table}.{key}") for e in excpt))

    return tuple(k for k in sorted(keys) if keep(k))


def shape_records(engine: Engine, model: Model, records: Iterable[Record],
                  includes: list[Association], only: list[str] | None,
                  excpt: list[str] | None) -> list[Record]:
    """:func:`shape_record` of each record; without includes, the kept keys are worked out
    once per key set (a page's records share theirs) instead of once per record."""
    if includes:
        return [shape_record(engine, model, r, includes, only, excpt) for r in records]
    only_t = tuple(only) if only else None
    excpt_t = tuple(excpt) if excpt else None
    out = []
    keys: Any = None
    kept: tuple[str, ...] = ()
    for record in records:
        if keys is None or record.keys() != keys:  # as sets: the kept keys are sorted
            keys = record.keys()
            kept = _kept_keys(model.table, tuple(record), only_t, excpt_t)
        out.append({k: record[k] for k in kept})
    return out


def shape_record(engine: Engine, model: Model, record: Record, includes: list[Association],
                 only: list[str] | None, excpt: list[str] | None) -> Record:
    """Public attributes (alphabetical), ``only``/``except`` applied, includes appended."""
    kept = _kept_keys(model.table, tuple(record), tuple(only) if only else None,
                      tuple(excpt) if excpt else None)
    out = {k: record[k] for k in kept}
    for inc in includes:
        spec = engine._assoc(model, inc.name)
        sub = engine.models.get(spec.model or "")
        targets = [t for t in spec.getter(record)
                   if all(matches(t, f, sub or model) for f in inc.filters)]
        shaped = []
        for target in targets:
            if sub is not None:
                shaped.append(shape_record(engine, sub, target, inc.children, only, excpt))
            else:
                shaped.append(dict(sorted(public(target).items())))
        out[inc.name] = shaped if spec.many else (shaped[0] if shaped else None)
    return out
