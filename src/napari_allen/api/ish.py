"""ISH queries (Allen Mouse Brain Atlas, product 1): gene search, a plane's tabular listing,
StructureUnionize expression per structure (:class:`IshApi`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..progress import CancelToken, ProgressCallback, check, report
from . import rma
from .base import ID_CHUNK, ApiBase, checked_ids, chunks
from .frames import UNIONIZE_COLUMNS, flat_frame, ish_frame, plane_listing_frame

ISH_PRODUCT_ID = 1
PLANES = {"coronal": 1, "sagittal": 2}
# The tabular listing of docs/allen-api-notes.md §5 (spaces become %20; the API reads them as
# the "+" of the documented form).
_PLANE_TABULAR = (
    "data_sets.id as experiment_id,data_sets.section_thickness,data_sets.specimen_id,"
    "plane_of_sections.name as plane,genes.acronym as gene,genes.name as gene_name,"
    "genes.chromosome_id,genes.entrez_id,genes.genomic_reference_update_id,"
    "genes.homologene_id,genes.organism_id"
)


def _check_plane(plane: str | None) -> str | None:
    if plane is None:
        return None
    key = str(plane).strip().lower()
    if key not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    return key


class IshApi(ApiBase):
    """ISH SectionDataSets and their per-structure expression."""

    def search_ish(self, genes: Sequence[str] | str | None = None, plane: str | None = None, *,
                   field: str = "acronym", progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> pd.DataFrame:
        """Adult mouse (product 1) ISH (treatment 'ISH') SectionDataSets that did not fail.

        ``genes``: gene acronyms (or names with ``field='name'``), case-insensitive, ``*``
        wildcards; None = every gene. ``plane``: 'coronal', 'sagittal' or None (both).
        Columns: experiment_id, gene, gene_name, plane, section_thickness (µm), specimen_id,
        entrez_id, expression, reference_space_id; one row per (experiment, gene).
        """
        plane = _check_plane(plane)
        if field not in ("acronym", "name"):
            raise ValueError(f"field must be 'acronym' or 'name', got {field!r}")
        patterns: list[str | None]
        if genes is None:
            patterns = [None]
        else:
            patterns = [genes] if isinstance(genes, str) else list(genes)
            if not patterns:
                raise ValueError("search_ish: give at least one gene (or None for all)")
        records: list[dict] = []
        for n, pattern in enumerate(patterns):
            check(cancel)
            query = rma.RmaQuery("SectionDataSet", include=["genes"], order="id")
            query.where(None, failed=False)
            query.where("products", id=ISH_PRODUCT_ID)
            query.where("treatments", name="ISH")  # not the Nissl series of product 1
            if plane is not None:
                query.where(None, plane_of_section_id=PLANES[plane])
            if pattern is not None:
                query.where("genes", **{f"{field}__il": str(pattern).strip()})
            records.extend(self.query_rows(query, cancel=cancel))
            report(progress, done=n + 1, total=len(patterns), message=f"searched {pattern}")
        return ish_frame(records, gene_patterns=None if genes is None else patterns,
                         field=field, plane_names={v: k for k, v in PLANES.items()})

    def ish_plane_listing(self, plane: str, *, cancel: CancelToken | None = None
                          ) -> pd.DataFrame:
        """The tabular CSV listing of every ISH experiment of a plane (docs/allen-api-notes.md §5):
        columns experiment_id, section_thickness, specimen_id, plane, gene, gene_name,
        chromosome_id, entrez_id, genomic_reference_update_id, homologene_id, organism_id."""
        plane = _check_plane(plane)
        if plane is None:
            raise ValueError("ish_plane_listing needs a plane ('coronal' or 'sagittal')")
        criteria = [
            rma.Criterion(None, [rma.Filter("failed", "eq", False)]),
            rma.Criterion("plane_of_section", [rma.Filter("name", "eq", plane)]),
            rma.Criterion("products", [rma.Filter("abbreviation", "eq", "Mouse")]),
            rma.Criterion("treatments", [rma.Filter("name", "eq", "ISH")]),
            rma.Criterion("genes"),
        ]
        params = [("criteria", ",".join(c.render() for c in criteria)),
                  ("tabular", _PLANE_TABULAR), ("start_row", "0"), ("num_rows", "all")]
        url = f"{self.base_url}/api/v2/data/SectionDataSet/query.csv?" + rma.encode_query(params)
        text = self.http.get_csv(url, cancel=cancel)
        return plane_listing_frame(text, url)

    def structure_unionize(self, experiment_ids, *, progress: ProgressCallback | None = None,
                           cancel: CancelToken | None = None) -> pd.DataFrame:
        """ISH StructureUnionize rows (structure graph 1) of the experiments; columns
        id, section_data_set_id, structure_id, sum_pixels, sum_expressing_pixels,
        sum_pixel_intensity, sum_expressing_pixel_intensity, expression_density,
        expression_energy, voxel_energy_mean, voxel_energy_cv."""
        ids = checked_ids(experiment_ids)
        records: list[dict] = []
        for n, chunk in enumerate(chunks(ids, ID_CHUNK)):
            query = rma.RmaQuery("StructureUnionize", order="id")
            query.where(None, section_data_set_id__in=chunk)
            query.where("structure", graph_id=1)
            records.extend(self.query_rows(query, cancel=cancel))
            report(progress, done=min(len(ids), (n + 1) * ID_CHUNK), total=len(ids))
        return flat_frame(records, UNIONIZE_COLUMNS)
