"""The local server's data: tables built once (lazily) from real Allen files: the server's own
``allen_local_api/data`` (listings only the server needs) and the product's ``napari_allen/data``
(files the product ships too, read in place so no file is stored twice).

Sources and what is made up (deterministically) where the files are silent:

- ISH SectionDataSets: ``ish/ABI_genes.csv.gz`` (26,061 experiments: id, gene acronym,
  plane, Entrez id) plus ``ish/coronal_p56_experiments.csv.gz`` (coronal sets: specimen id and
  name, sex, probe orientation, ISH or NISSL). The trailing ``*`` some acronyms carry in
  ABI_genes.csv (a mark of that file, not part of Allen acronyms) is dropped. Made up: gene ids
  (rank of the acronym + 1,000,000), specimen ids of sagittal sets (id - 1,000,000),
  ``sphinx_id``; ``section_thickness`` is 25.0 (as in every real P56 set);
  ``reference_space_id`` 9 as in the real data_set.xml of 74272479. Gene *names* are unknown
  in these files and served as null (empty in CSV).
- Connectivity experiments: ``connectivity/experiments.json.gz`` (2,992 ApiConnectivity records,
  served verbatim) and ``connectivity/allenAtlasProjection_info.csv.gz`` (hyphenated service
  fields: colours, injection-structure abbreviations).
- Ontology: ``ontology/structure_graph_1.json.gz`` (served verbatim) and
  ``ontology/structure_tree_safe_2017.csv`` (flat fields: weight, sphinx_id, safe_name, ...).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

from ._memo import memoized

#: Real files (exact bytes served) for some experiments.
NRP1_ID = 74272479
CONNECTIVITY_REAL_ID = 158375425
CONNECTIVITY_IMAGES = ("projection_density", "projection_energy", "injection_fraction",
                       "injection_density", "injection_energy", "data_mask")

PRODUCTS: dict[int, dict[str, Any]] = {
    1: {"abbreviation": "Mouse", "description": "Genome-wide, high-resolution ISH data detailing "
        "gene expression throughout the adult mouse brain.", "id": 1, "name": "Mouse Brain",
        "resource": "Allen Mouse Brain Atlas", "species": "Mouse"},
    5: {"abbreviation": "MouseConn", "description": "High resolution map of neural connections "
        "in the mouse brain.", "id": 5, "name": "Mouse Connectivity Projection",
        "resource": "Allen Mouse Brain Connectivity Atlas", "species": "Mouse"},
    31: {"abbreviation": "MouseConnCre", "description": "Cre-dependent connectivity tracing.",
         "id": 31, "name": "Mouse Connectivity Projection (Cre)",
         "resource": "Allen Mouse Brain Connectivity Atlas", "species": "Mouse"},
}
# Other connectivity products in experiments.json (names not in the bundled files).
for _pid in (35, 36, 42, 44, 45):
    PRODUCTS[_pid] = {"abbreviation": f"MouseConn{_pid}", "description": "Connectivity tracing "
                      f"(product {_pid}).", "id": _pid, "name": f"Mouse Connectivity ({_pid})",
                      "resource": "Allen Mouse Brain Connectivity Atlas", "species": "Mouse"}
#: Well-known files (ids made up for the local server; download links as Allen's).
WELL_KNOWN_FILES = {
    900000001: ("annotation", "P56_Mouse_gridAnnotation.zip"),
    900000002: ("annotation", "annotation_25.nrrd"),
    # The lines demo's 25 µm fibre-tract annotation (allen-api-notes §7.3): derived from the
    # real 25 µm annotation, fibre tracts (1009 and descendants) kept, everything else 0.
    197646984: ("annotation", "annotationFiber.zip"),
}
PLANES = {1: {"id": 1, "name": "coronal"}, 2: {"id": 2, "name": "sagittal"}}
PLANE_IDS = {"coronal": 1, "sagittal": 2}
TREATMENTS = {"ISH": {"id": 304, "name": "ISH"}, "NISSL": {"id": 305, "name": "NISSL"}}


def data_path(*parts: str) -> Path:
    """A real data file: the server's own (``allen_local_api/data/...``) if it has it, else the
    product's (``napari_allen/data/...``: sample data, annotation, ontology, gene table)."""
    own = Path(str(resources.files("allen_local_api").joinpath("data", *parts)))
    if own.exists():
        return own
    return Path(str(resources.files("napari_allen").joinpath("data", *parts)))


def _read_gz_text(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read()


def stable_int(*parts: object, modulo: int = 2**31) -> int:
    """A deterministic integer from the parts (crc32; never Python's salted ``hash``)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) % modulo


class Catalog:
    """All tables of the local server. Each property is computed once, on first use."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- ontology
    @memoized
    def structure_graph_bytes(self) -> bytes:
        """The real ``structure_graph_download/1.json`` response, byte for byte."""
        with gzip.open(data_path("ontology", "structure_graph_1.json.gz"), "rb") as fh:
            return fh.read()

    @memoized
    def structures(self) -> list[dict[str, Any]]:
        """Flat Structure records (alphabetical keys), depth-first graph order."""
        with self._lock:
            graph = json.loads(self.structure_graph_bytes)
            extra: dict[int, dict[str, str]] = {}
            with open(data_path("ontology", "structure_tree_safe_2017.csv"), newline="",
                      encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    extra[int(row["id"])] = row
            rows: list[dict[str, Any]] = []
            stack = [(node, [], 0) for node in reversed(graph["msg"])]
            while stack:
                node, path, depth = stack.pop()
                sid = int(node["id"])
                ids = [*path, sid]
                more = extra.get(sid, {})
                rows.append({
                    "acronym": node["acronym"],
                    "atlas_id": node.get("atlas_id"),
                    "color_hex_triplet": str(node.get("color_hex_triplet") or "").zfill(6),
                    "depth": depth,
                    "failed": False,
                    "failed_facet": 734881840,
                    "graph_id": 1,
                    "graph_order": node.get("graph_order"),
                    "hemisphere_id": node.get("hemisphere_id"),
                    "id": sid,
                    "name": node["name"],
                    "neuro_name_structure_id": None,
                    "neuro_name_structure_id_path": None,
                    "ontology_id": node.get("ontology_id", 1),
                    "parent_structure_id": node.get("parent_structure_id"),
                    "safe_name": more.get("safe_name") or node["name"],
                    "sphinx_id": int(more["sphinx_id"]) if more.get("sphinx_id") else None,
                    "st_level": node.get("st_level"),
                    "structure_id_path": "/" + "/".join(str(i) for i in ids) + "/",
                    "structure_name_facet": (int(more["structure_name_facet"])
                                             if more.get("structure_name_facet") else None),
                    "weight": int(more["weight"]) if more.get("weight") else 8690,
                })
                stack.extend((c, ids, depth + 1) for c in reversed(node.get("children") or []))
            return rows

    @memoized
    def structure_by_id(self) -> dict[int, dict[str, Any]]:
        return {s["id"]: s for s in self.structures}

    @memoized
    def structure_by_acronym(self) -> dict[str, int]:
        return {s["acronym"].strip().lower(): s["id"] for s in self.structures}

    @memoized
    def children(self) -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for s in self.structures:
            if s["parent_structure_id"] is not None:
                kids.setdefault(int(s["parent_structure_id"]), []).append(s["id"])
        return kids

    def descendants(self, structure_id: int) -> set[int]:
        """The structure and all its descendants."""
        out = {structure_id}
        stack = [structure_id]
        while stack:
            for kid in self.children.get(stack.pop(), ()):
                out.add(kid)
                stack.append(kid)
        return out

    def ancestors(self, structure_id: int) -> list[int]:
        """Root first, the structure itself last."""
        path = self.structure_by_id[structure_id]["structure_id_path"]
        return [int(p) for p in path.strip("/").split("/")]

    def resolve_structure(self, key: str) -> int:
        """A structure id from an id or an acronym (case-insensitive); KeyError if unknown."""
        text = str(key).strip()
        if text.lstrip("-").isdigit():
            sid = int(text)
            if sid not in self.structure_by_id:
                raise KeyError(f"unknown structure id {sid}")
            return sid
        try:
            return self.structure_by_acronym[text.lower()]
        except KeyError:
            raise KeyError(f"unknown structure acronym {text!r}") from None

    # ---------------------------------------------------------------- genes / ISH
    @memoized
    def _ish_sources(self) -> tuple[list[dict[str, str]], dict[int, dict[str, str]]]:
        abi = list(csv.DictReader(io.StringIO(_read_gz_text(data_path("ish",
                                                                       "ABI_genes.csv.gz")))))
        coronal = {int(r["experiment_id"]): r for r in csv.DictReader(io.StringIO(
            _read_gz_text(data_path("ish", "coronal_p56_experiments.csv.gz"))))}
        return abi, coronal

    @memoized
    def genes(self) -> list[dict[str, Any]]:
        """Gene records (alphabetical keys), ids made up as 1,000,000 + rank of the acronym."""
        with self._lock:
            abi, coronal = self._ish_sources
            entrez: dict[str, int | None] = {}
            for row in abi:
                acr = row["acronym"].rstrip("*")
                ent = row.get("entrez.id", "NA")
                entrez.setdefault(acr, int(ent) if ent not in ("", "NA") else None)
            for row in coronal.values():
                if row["treatment"] == "ISH" and row["gene"] not in ("", "Nothing"):
                    entrez.setdefault(row["gene"], None)
            genes = []
            for rank, acr in enumerate(sorted(entrez)):
                genes.append({
                    "acronym": acr, "alias_tags": None, "chromosome_id": None,
                    "ensembl_id": None, "entrez_id": entrez[acr],
                    "genomic_reference_update_id": None, "homologene_id": None,
                    "id": 1_000_000 + rank, "legacy_ensembl_gene_id": None, "name": None,
                    "organism_id": 2, "original_name": None, "original_symbol": acr,
                    "reference_genome_id": None, "sphinx_id": 500_000 + rank,
                    "version_status": "no change",
                })
            return genes

    @memoized
    def gene_by_acronym(self) -> dict[str, dict[str, Any]]:
        return {g["acronym"]: g for g in self.genes}

    @memoized
    def section_data_sets(self) -> list[dict[str, Any]]:
        """SectionDataSet records: ISH (product 1), coronal NISSL, and connectivity (5/31).

        Each record carries hidden keys (leading ``_``) for its associations; the query engine
        strips them before serving.
        """
        with self._lock:
            abi, coronal = self._ish_sources
            out: dict[int, dict[str, Any]] = {}
            for row in abi:
                sid = int(row["Section_Data_ID"])
                extra = coronal.get(sid, {})
                out[sid] = self._ish_record(sid, row["acronym"].rstrip("*"),
                                            row["cutting_plane"], extra)
            for sid, row in coronal.items():
                if sid in out:
                    continue
                gene = row["gene"] if row["gene"] not in ("", "Nothing") else None
                out[sid] = self._ish_record(sid, gene, "coronal", row)
            for exp in self.connectivity_experiments:
                sid = int(exp["data_set_id"])
                out[sid] = {
                    "blue_channel": None, "delegate": False, "expression": False,
                    "failed": False, "failed_facet": 734881840, "green_channel": None,
                    "id": sid, "name": None, "plane_of_section_id": 1, "qc_date": None,
                    "red_channel": None, "reference_space_id": 9, "rnaseq_design_id": None,
                    "section_thickness": 100.0, "specimen_id": sid - 2_000_000,
                    "sphinx_id": stable_int("sds", sid, modulo=10**6),
                    "storage_directory": exp.get("storage_directory"), "weight": 5470,
                    "_product": int(exp.get("product_id") or 5), "_genes": [],
                    "_treatment": None, "_specimen_name": exp.get("specimen_name"),
                    "_sex": exp.get("gender"), "_orientation": None,
                }
            return [out[k] for k in sorted(out)]

    def _ish_record(self, sid: int, gene: str | None, plane: str,
                    extra: dict[str, str]) -> dict[str, Any]:
        treatment = extra.get("treatment", "ISH") or "ISH"
        specimen = int(extra["animal_id"]) if extra.get("animal_id") else sid - 1_000_000
        orientation = extra.get("probe_orientation", "2")
        return {
            "blue_channel": None, "delegate": False, "expression": treatment == "ISH",
            "failed": False, "failed_facet": 734881840, "green_channel": None, "id": sid,
            "name": None, "plane_of_section_id": PLANE_IDS.get(plane, 1), "qc_date": None,
            "red_channel": None, "reference_space_id": 9, "rnaseq_design_id": None,
            "section_thickness": 25.0, "specimen_id": specimen,
            "sphinx_id": stable_int("sds", sid, modulo=10**6),
            "storage_directory": f"/external/aibssan/production32/prod339/image_series_{sid}/",
            "weight": 5470,
            "_product": 1, "_genes": [gene] if gene else [], "_treatment": treatment,
            "_specimen_name": (extra.get("animal_name")
                               or f"{specimen % 100:02d}-{sid % 10000:04d}"),
            "_sex": {"Male": "M", "Female": "F"}.get(extra.get("sex", ""), "M"),
            "_orientation": int(orientation) if str(orientation).isdigit() else None,
        }

    @memoized
    def section_data_set_by_id(self) -> dict[int, dict[str, Any]]:
        return {r["id"]: r for r in self.section_data_sets}

    def is_ish(self, experiment_id: int) -> bool:
        rec = self.section_data_set_by_id.get(int(experiment_id))
        return bool(rec) and rec["_product"] == 1 and rec["_treatment"] == "ISH"

    def plane_of(self, experiment_id: int) -> str:
        rec = self.section_data_set_by_id[int(experiment_id)]
        return PLANES[rec["plane_of_section_id"]]["name"]

    # ---------------------------------------------------------------- connectivity
    @memoized
    def connectivity_experiments(self) -> list[dict[str, Any]]:
        """The real ApiConnectivity records (experiments.json), in file order."""
        with self._lock:
            return json.loads(_read_gz_text(data_path("connectivity", "experiments.json.gz")))

    @memoized
    def connectivity_by_id(self) -> dict[int, dict[str, Any]]:
        return {int(e["data_set_id"]): e for e in self.connectivity_experiments}

    @memoized
    def projection_info(self) -> dict[int, dict[str, Any]]:
        """Rows of allenAtlasProjection_info.csv by id, ``injection-structures`` parsed."""
        with self._lock:
            rows: dict[int, dict[str, Any]] = {}
            text = _read_gz_text(data_path("connectivity", "allenAtlasProjection_info.csv.gz"))
            for row in csv.DictReader(io.StringIO(text)):
                try:
                    # The export writes Ruby hashes ({"id"=>104, ...}); '=>' -> ':' makes JSON.
                    structures = json.loads(row["injection-structures"].replace("=>", ":"))
                except ValueError:
                    structures = []
                row = dict(row)
                row["injection-structures"] = structures
                rows[int(row["id"])] = row
            return rows

    def injection_structure_ids(self, exp: dict[str, Any]) -> list[int]:
        text = exp.get("injection_structures") or ""
        return [int(p) for p in str(text).split("/") if p.strip()]

    def transgenic_line_name(self, exp: dict[str, Any]) -> str:
        line = exp.get("transgenic_line")
        if isinstance(line, dict):
            return str(line.get("name") or "")
        return str(line or "")

    def injection_point(self, exp: dict[str, Any]) -> tuple[float, float, float]:
        """Injection coordinate in µm ``(x, y, z)`` = ``[AP, DV, ML]``."""
        return (float(exp["injection_x"]), float(exp["injection_y"]), float(exp["injection_z"]))


_CATALOG: Catalog | None = None
_CATALOG_LOCK = threading.Lock()


def catalog() -> Catalog:
    """The process-wide catalog (tables are shared by every server in the process)."""
    global _CATALOG
    with _CATALOG_LOCK:
        if _CATALOG is None:
            _CATALOG = Catalog()
        return _CATALOG
