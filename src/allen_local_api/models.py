"""The RMA models the local server answers, wired to the catalog tables.

SectionDataSet (ISH, NISSL and connectivity sets; associations genes, products, plane_of_section,
treatments, specimen, probes), Gene, Structure (graph 1), ApiConnectivity (the real records),
StructureUnionize and ProjectionStructureUnionize (computed from the grids, see unionize.py),
Product, PlaneOfSection.
"""

from __future__ import annotations

from typing import Any

from .catalog import PLANES, PRODUCTS, TREATMENTS, WELL_KNOWN_FILES, Catalog
from .grids import GridStore
from .query import AssocSpec, Engine, Model, QueryError
from .rma import Query


def _ids_from(query: Query, attr: str = "id") -> set[int] | None:
    """Ids pinned by ``[id$eq..]``/``[id$in..]`` filters, to skip a full scan (or None)."""
    for flt in query.filters:
        if flt.attr.split(".")[-1] == attr and flt.op in ("$eq", "$in"):
            values = flt.value if isinstance(flt.value, list) else [flt.value]
            try:
                return {int(float(v)) for v in values}
            except (TypeError, ValueError):
                raise QueryError(f"{attr} must be an integer, not {values!r}") from None
    return None


def build_engine(catalog: Catalog, store: GridStore) -> Engine:
    """All models of the local server."""
    from . import unionize

    def sds_records(query: Query) -> list[dict[str, Any]]:
        ids = _ids_from(query)
        if ids is not None:
            by_id = catalog.section_data_set_by_id
            return [by_id[i] for i in sorted(ids) if i in by_id]
        return catalog.section_data_sets

    def sds_genes(rec: dict[str, Any]) -> list[dict[str, Any]]:
        return [catalog.gene_by_acronym[g] for g in rec["_genes"] if g in catalog.gene_by_acronym]

    def sds_specimen(rec: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"donor_id": rec["specimen_id"] + 7, "external_specimen_name": None,
                 "hemisphere": "(none)", "id": rec["specimen_id"], "is_cell_specimen": False,
                 "is_ish": rec["_product"] == 1, "name": rec["_specimen_name"],
                 "parent_id": None, "sex": rec["_sex"]}]

    def sds_probes(rec: dict[str, Any]) -> list[dict[str, Any]]:
        if rec["_orientation"] is None:
            return []
        return [{"id": rec["id"] + 3, "orientation_id": rec["_orientation"],
                 "name": f"RP_{rec['id']}"}]

    sds = Model("SectionDataSet", "data_sets", "section-data-set", sds_records, {
        "genes": AssocSpec(sds_genes, True, "genes", "Gene"),
        "products": AssocSpec(lambda r: [PRODUCTS[r["_product"]]], True, "products", "Product"),
        "plane_of_section": AssocSpec(lambda r: [PLANES[r["plane_of_section_id"]]], False,
                                      "plane_of_sections", "PlaneOfSection"),
        "treatments": AssocSpec(lambda r: [TREATMENTS[r["_treatment"]]] if r["_treatment"]
                                else [], True, "treatments", "Treatment"),
        "specimen": AssocSpec(sds_specimen, False, "specimens", "Specimen"),
        "probes": AssocSpec(sds_probes, True, "probes", "Probe"),
    })

    def gene_records(query: Query) -> list[dict[str, Any]]:
        return catalog.genes

    def structure_records(query: Query) -> list[dict[str, Any]]:
        ids = _ids_from(query)
        if ids is not None:
            return [catalog.structure_by_id[i] for i in sorted(ids)
                    if i in catalog.structure_by_id]
        return catalog.structures

    def api_connectivity_records(query: Query) -> list[dict[str, Any]]:
        ids = _ids_from(query, "data_set_id")
        if ids is not None:
            return [catalog.connectivity_by_id[i] for i in sorted(ids)
                    if i in catalog.connectivity_by_id]
        return catalog.connectivity_experiments

    structure_assoc = AssocSpec(
        lambda r: [catalog.structure_by_id[r["structure_id"]]]
        if r.get("structure_id") in catalog.structure_by_id else [],
        False, "structures", "Structure", via="structure_id")
    sds_assoc = AssocSpec(
        lambda r: [catalog.section_data_set_by_id[r["section_data_set_id"]]]
        if r.get("section_data_set_id") in catalog.section_data_set_by_id else [],
        False, "data_sets", "SectionDataSet", via="section_data_set_id")

    def flat(name: str, table: str, element: str, rows: list[dict[str, Any]]) -> Model:
        return Model(name, table, element, lambda q: rows)

    # Well-known files the server can send (ids made up; see catalog.WELL_KNOWN_FILES).
    files = [{"attachable_id": 10, "attachable_type": "ReferenceSpace",
              "download_link": f"/api/v2/well_known_file_download/{fid}", "id": fid,
              "path": f"/external/mouse/prod/{folder}/{name}", "well_known_file_type_id": None}
             for fid, (folder, name) in sorted(WELL_KNOWN_FILES.items())]
    spaces = [{"id": 9, "name": "P56 Mouse (CCF v2)", "organism_id": 2},
              {"id": 10, "name": "P56 Mouse (CCF v3)", "organism_id": 2}]

    models = [
        sds,
        Model("Gene", "genes", "gene", gene_records),
        Model("Structure", "structures", "structure", structure_records, {
            "parent_structure": AssocSpec(
                lambda r: [catalog.structure_by_id[r["parent_structure_id"]]]
                if r["parent_structure_id"] in catalog.structure_by_id else [],
                False, "parent_structures", "Structure"),
            # Structure-set membership is not in the bundled files: served empty, so AllenSDK's
            # get_structures_with_sets (include=structure_sets) works but lists no sets.
            "structure_sets": AssocSpec(lambda r: [], True, "structure_sets", "StructureSet"),
        }),
        Model("ApiConnectivity", "api_connectivities", "api-connectivity",
              api_connectivity_records),
        Model("StructureUnionize", "structure_unionizes", "structure-unionize",
              lambda q: unionize.ish_unionize_records(catalog, store, q),
              {"structure": structure_assoc, "section_data_set": sds_assoc}),
        Model("ProjectionStructureUnionize", "projection_structure_unionizes",
              "projection-structure-unionize",
              lambda q: unionize.projection_unionize_records(catalog, store, q),
              {"structure": structure_assoc, "section_data_set": sds_assoc}),
        Model("ReferenceSpace", "reference_spaces", "reference-space", lambda q: spaces, {
            "well_known_files": AssocSpec(lambda r: files, True, "well_known_files",
                                          "WellKnownFile")}),
        flat("WellKnownFile", "well_known_files", "well-known-file", files),
        flat("Product", "products", "product", list(PRODUCTS.values())),
        flat("PlaneOfSection", "plane_of_sections", "plane-of-section", list(PLANES.values())),
        flat("Treatment", "treatments", "treatment", list(TREATMENTS.values())),
        flat("Specimen", "specimens", "specimen", []),
        flat("StructureSet", "structure_sets", "structure-set", []),
        flat("Probe", "probes", "probe", []),
    ]
    return Engine({m.name: m for m in models})
