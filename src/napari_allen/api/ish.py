"""ISH queries (Allen Mouse Brain Atlas, product 1): gene search, a plane's tabular listing,
StructureUnionize expression per structure (:class:`IshApi`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..concurrency import bounded_map
from ..progress import CancelToken, ProgressCallback, check, report
from . import rma
from .base import ApiBase, checked_ids

if TYPE_CHECKING:  # frames (pandas) are built on use: downloads never import pandas
    import pandas as pd

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
        from .frames import ish_frame

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
        from .frames import plane_listing_frame

        return plane_listing_frame(text, url)

    def structure_unionize(self, experiment_ids, *, columns: Sequence[str] | None = None,
                           jobs: int = 8, progress: ProgressCallback | None = None,
                           cancel: CancelToken | None = None) -> pd.DataFrame:
        """ISH StructureUnionize rows (structure graph 1) of the experiments, in the order of
        ``experiment_ids`` (:meth:`structure_unionize_records`); columns id,
        section_data_set_id, structure_id, sum_pixels, sum_expressing_pixels,
        sum_pixel_intensity, sum_expressing_pixel_intensity, expression_density,
        expression_energy, voxel_energy_mean, voxel_energy_cv (those not asked for in
        ``columns`` are empty)."""
        per_experiment = self.structure_unionize_records(
            experiment_ids, columns=columns, jobs=jobs, progress=progress, cancel=cancel)
        records = [r for rows in per_experiment.values() for r in rows]
        from .frames import UNIONIZE_COLUMNS, flat_frame

        return flat_frame(records, UNIONIZE_COLUMNS)

    def structure_unionize_records(
        self, experiment_ids, *, columns: Sequence[str] | None = None, jobs: int = 8,
        progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
        convert: Callable[[int, list[dict]], Any] | None = None,
    ) -> dict[int, Any]:
        """``{experiment_id: StructureUnionize records}`` in the order of ``experiment_ids``,
        records as the API sent them (no type conversion).

        One query per experiment (``[section_data_set_id$eq<id>],structure[graph_id$eq1]``, as
        Allen's structure-correlation script asks), ``jobs`` at a time, with
        ``rma::options[only$eq...]`` when ``columns`` are given: the API serves a unionize per
        experiment from its table, one experiment's rows fit one page (about 1,300 rows), and
        only the needed columns travel. ``experiment_ids`` may be an iterator (ids of listing
        pages still arriving): requests start with its first ids. ``convert(id, records)``,
        when given, runs on the calling thread as each experiment's records arrive (while the
        others are still on the way) and the dict holds what it returns.
        """
        only = list(columns) if columns else []
        if isinstance(experiment_ids, (int, str)) or hasattr(experiment_ids, "__len__"):
            ids: Iterable[int] = checked_ids(experiment_ids)
            order: list[int] = list(ids)
        else:  # an iterator (e.g. ids from listing pages still arriving): consumed lazily
            order = []
            ids = _lazy_ids(experiment_ids, order)

        def fetch(experiment_id: int, token: CancelToken) -> list[dict]:
            query = rma.RmaQuery("StructureUnionize", only=only)
            query.where(None, section_data_set_id=experiment_id)
            query.where("structure", graph_id=1)
            return self.query_rows(query, cancel=token)

        self.http.ensure_pool(jobs)  # one kept-alive connection per worker
        out: dict[int, Any] = {}
        for outcome in bounded_map(fetch, ids, jobs=jobs, cancel=cancel, progress=progress,
                                   message="StructureUnionize", thread_name="allen-unionize"):
            if outcome.error is not None:
                raise outcome.error
            out[outcome.item] = (outcome.value if convert is None
                                 else convert(outcome.item, outcome.value))
        check(cancel)
        return {i: out[i] for i in order}

    def ish_data_set_records(self, plane: str, *, columns: Sequence[str] | None = None,
                             first: int | None = None,
                             cancel: CancelToken | None = None) -> list[dict]:
        """SectionDataSet records of the adult mouse ISH atlas (product 1) in ``plane`` that
        did not fail and show expression, in the API's order: the data sets Allen's
        correlation script takes its first N from (only ``columns`` when given; only the
        ``first`` N records when given: rows ``start_row=0..N-1`` of the same query)."""
        return [r for page in self.ish_data_set_pages(plane, columns=columns, first=first,
                                                      cancel=cancel)
                for r in page]

    def ish_data_set_pages(self, plane: str, *, columns: Sequence[str] | None = None,
                           first: int | None = None,
                           cancel: CancelToken | None = None) -> Iterator[list[dict]]:
        """:meth:`ish_data_set_records` page by page, each as it arrives."""
        plane_id = PLANES[_check_plane(plane)]
        query = rma.RmaQuery("SectionDataSet", only=list(columns or []))
        query.where(None, failed=False, expression=True)
        query.where("products", id=1)
        query.where("plane_of_section", id=plane_id)
        return self.query_pages(query, limit=first if first and first > 0 else None,
                                cancel=cancel)


def _lazy_ids(values: Iterable, order: list[int]) -> Iterator[int]:
    """:func:`checked_ids` of an iterator, one id at a time (duplicates dropped), appending each
    new id to ``order``."""
    seen: set[int] = set()
    for value in values:
        (i,) = checked_ids([value])
        if i not in seen:
            seen.add(i)
            order.append(i)
            yield i
