"""The adult mouse structure ontology (structure graph 1), shipped with the package.

:class:`Ontology` answers lookups by id or acronym, ancestors, descendants and colours. It is
built from the nested ``structure_graph_download/1.json`` response (the real file ships in
``napari_allen/data/ontology``), or from any such response fetched by the API client.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources

import numpy as np

from napari_allen.lazy import lazy_module

pd = lazy_module("pandas")  # imported at first use: the docks open without it

ROOT_ID = 997
FIBER_TRACTS_ID = 1009

_COLUMNS = [
    "id", "acronym", "name", "parent_id", "color_hex", "graph_order", "st_level", "depth",
]


def hex_to_rgb(hex_triplet: str | int) -> tuple[int, int, int]:
    """``'08858C'`` -> ``(8, 133, 140)``; tolerates a leading ``#`` and lost leading zeros."""
    text = str(hex_triplet).strip().lstrip("#").zfill(6)
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


class Ontology:
    """Structures of one ontology, indexed by id.

    ``table`` is a DataFrame indexed by structure id with columns ``acronym, name, parent_id,
    color_hex, graph_order, st_level, depth``, ordered by ``graph_order`` (depth-first).
    """

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table.sort_values("graph_order")
        self._by_acronym = {a.strip().lower(): int(i) for i, a in self.table["acronym"].items()}
        parent = self.table["parent_id"]
        self._children: dict[int, list[int]] = {}
        self._parent: dict[int, int] = {}  # plain dict: ancestors() walks it per cursor move
        for sid, pid in parent.items():
            if pd.notna(pid):
                self._children.setdefault(int(pid), []).append(int(sid))
                self._parent[int(sid)] = int(pid)
        self._search_columns: tuple[pd.Series, pd.Series] | None = None
        self._parent_rows: np.ndarray | None = None

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_graph_response(cls, response: Mapping | list) -> Ontology:
        """Build from a ``structure_graph_download`` JSON envelope (or its ``msg`` list)."""
        roots = response["msg"] if isinstance(response, Mapping) else response
        rows: list[dict] = []
        stack = [(node, 0) for node in reversed(roots)]
        while stack:
            node, depth = stack.pop()
            rows.append({
                "id": int(node["id"]),
                "acronym": str(node["acronym"]),
                "name": str(node["name"]),
                "parent_id": node.get("parent_structure_id"),
                "color_hex": str(node.get("color_hex_triplet") or "FFFFFF").zfill(6),
                "graph_order": int(node.get("graph_order", len(rows))),
                "st_level": node.get("st_level"),
                "depth": depth,
            })
            stack.extend((child, depth + 1) for child in reversed(node.get("children") or []))
        table = pd.DataFrame(rows, columns=_COLUMNS).set_index("id")
        table["parent_id"] = table["parent_id"].astype("Int64")
        return cls(table)

    @classmethod
    def default_if_parsed(cls) -> Ontology | None:
        """The bundled ontology if this process has parsed it already, else None (nothing
        parsed or imported here)."""
        return _bundled() if _bundled.cache_info().currsize else None

    @classmethod
    def default(cls) -> Ontology:
        """The bundled adult mouse ontology (structure graph 1, 1,327 structures)."""
        return _bundled()

    # --- lookups ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.table)

    def __contains__(self, structure_id: object) -> bool:
        try:
            return int(structure_id) in self.table.index  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    @property
    def ids(self) -> np.ndarray:
        return self.table.index.to_numpy()

    def id_of(self, key: int | str) -> int:
        """Structure id from an id or an acronym (case-insensitive); KeyError if unknown."""
        if isinstance(key, (int, np.integer)):
            if int(key) not in self.table.index:
                raise KeyError(f"unknown structure id {key}")
            return int(key)
        text = str(key).strip()
        if text.isdigit():
            return self.id_of(int(text))
        try:
            return self._by_acronym[text.lower()]
        except KeyError:
            raise KeyError(f"unknown structure acronym {key!r}") from None

    def ids_of(self, keys: Iterable[int | str]) -> list[int]:
        return [self.id_of(k) for k in keys]

    def acronym(self, structure_id: int) -> str:
        return str(self.table.at[int(structure_id), "acronym"])

    def name(self, structure_id: int) -> str:
        return str(self.table.at[int(structure_id), "name"])

    def rgb(self, structure_id: int) -> tuple[int, int, int]:
        return hex_to_rgb(self.table.at[int(structure_id), "color_hex"])

    def parent(self, structure_id: int) -> int | None:
        sid = int(structure_id)
        pid = self._parent.get(sid)
        if pid is None and sid not in self.table.index:
            raise KeyError(f"unknown structure id {structure_id}")
        return pid

    def children(self, structure_id: int) -> list[int]:
        return list(self._children.get(int(structure_id), []))

    def ancestors(self, structure_id: int, include_self: bool = False) -> list[int]:
        """Ancestor ids from the root down to the parent (and the structure itself)."""
        chain: list[int] = [int(structure_id)] if include_self else []
        current = self.parent(structure_id)
        while current is not None:
            chain.append(current)
            current = self.parent(current)
        return list(reversed(chain))

    def descendants(self, structure_id: int, include_self: bool = True) -> list[int]:
        """All descendant ids in graph order (depth-first)."""
        out: list[int] = [int(structure_id)] if include_self else []
        stack = list(reversed(self.children(structure_id)))
        while stack:
            sid = stack.pop()
            out.append(sid)
            stack.extend(reversed(self.children(sid)))
        return out

    def is_leaf(self, structure_id: int) -> bool:
        return not self._children.get(int(structure_id))

    def leaves(self, under: int = ROOT_ID) -> list[int]:
        return [s for s in self.descendants(under) if self.is_leaf(s)]

    def structure_id_path(self, structure_id: int) -> str:
        """Allen's ``/997/8/.../<id>/`` path string."""
        return "/" + "/".join(str(s) for s in self.ancestors(structure_id, True)) + "/"

    # --- whole-table searches (rows of ``table``, graph order) ----------------------------
    @property
    def parent_rows(self) -> np.ndarray:
        """Row (position in ``table``) of each structure's parent, -1 for a root (int64)."""
        if self._parent_rows is None:
            rows = self.table.index.get_indexer(self.table["parent_id"].fillna(-1).astype(int))
            self._parent_rows = rows.astype(np.int64)  # -1 where the parent is not a row
        return self._parent_rows

    def matching(self, text: str) -> np.ndarray:
        """Boolean mask over ``table`` rows: acronym or name contains ``text`` (a plain
        substring, case-insensitive; blank text matches every row)."""
        needle = (text or "").strip().lower()
        if not needle:
            return np.ones(len(self.table), dtype=bool)
        if self._search_columns is None:
            self._search_columns = (self.table["acronym"].astype(str).str.lower(),
                                    self.table["name"].astype(str).str.lower())
        acronyms, names = self._search_columns
        hits = (acronyms.str.contains(needle, regex=False)
                | names.str.contains(needle, regex=False))
        return hits.to_numpy(dtype=bool)

    def with_ancestors(self, rows: np.ndarray) -> np.ndarray:
        """Boolean row mask ``rows`` plus every ancestor of a True row (one vectorised step
        per tree level)."""
        out = np.array(rows, dtype=bool)
        parents = self.parent_rows
        frontier = out.copy()
        while frontier.any():
            up = parents[frontier]
            up = up[up >= 0]
            new = np.zeros_like(out)
            new[up] = True
            frontier = new & ~out
            out |= new
        return out

    # --- bulk views used by layers and analysis -----------------------------------------
    def color_dict(self, ids: Iterable[int] | None = None, alpha: float = 1.0) -> dict:
        """``{id: (r, g, b, a)}`` floats in 0..1 for napari ``DirectLabelColormap``.

        Includes ``0: transparent`` and ``None: transparent`` (default for unknown labels).
        """
        wanted = self.table.index if ids is None else [int(i) for i in ids if int(i) in self]
        colors: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
        for sid in wanted:
            if int(sid) == 0:
                continue
            r, g, b = self.rgb(sid)
            colors[int(sid)] = (r / 255.0, g / 255.0, b / 255.0, alpha)
        return colors

    def features_for(self, ids: Iterable[int]) -> pd.DataFrame:
        """A napari ``features`` table (``index, acronym, name``) for label values ``ids``.

        Label 0 is ``background``; ids missing from the ontology are ``unknown``.
        """
        rows = []
        for sid in sorted({int(i) for i in ids} | {0}):
            if sid == 0:
                rows.append((0, "", "background"))
            elif sid in self:
                rows.append((sid, self.acronym(sid), self.name(sid)))
            else:
                rows.append((sid, "?", f"unknown structure {sid}"))
        return pd.DataFrame(rows, columns=["index", "acronym", "name"])

    def membership(self, ancestor: int, ids: Iterable[int]) -> np.ndarray:
        """Boolean array: is each id ``ancestor`` or one of its descendants."""
        members = set(self.descendants(ancestor))
        return np.fromiter((int(i) in members for i in ids), dtype=bool)


@cache
def _bundled() -> Ontology:
    ref = resources.files("napari_allen") / "data" / "ontology" / "structure_graph_1.json.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        return Ontology.from_graph_response(json.load(fh))
