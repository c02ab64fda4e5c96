"""``AllenClient``: the queries and downloads napari-allen needs from the Allen Brain Atlas API.

All queries are built from values (:mod:`napari_allen.api.rma`), paged with
``start_row``/``num_rows`` (stopping on an empty page even when ``total_rows`` promised more;
``msg: {}`` means no rows), cached in SQLite and returned as pandas DataFrames with documented
snake_case columns. Downloads go to the verified file store (:mod:`napari_allen.api.cache`).

Coordinates are CCF µm ``[AP, DV, ML]`` (= Allen's x, y, z). The client is thread-safe: widget
workers and batch download threads share one instance.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import pandas as pd

from .. import config
from ..errors import AllenApiError
from ..io.manifest import MANIFEST_NAME
from ..io.provenance import SIDECAR_SUFFIX
from ..progress import CancelToken, ProgressCallback, check, report
from ..space import GRID_VOLUMES, NRRD_IMAGES, NRRD_RESOLUTIONS
from . import rma
from .cache import (
    FileStore,
    download_file,
    folder_size,
    host_tag,
    metadata_db,
    verify_grid_zip,
    verify_nrrd,
)
from .http import HttpTransport

DEFAULT_FILES_URL = "http://download.alleninstitute.org"
FILES_URL_ENV = "NAPARI_ALLEN_FILES_URL"
ANNOTATION_PATH = ("/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
                   "annotation_{res}.nrrd")

ISH_PRODUCT_ID = 1
PLANES = {"coronal": 1, "sagittal": 2}
HEMISPHERES = ("left", "right", "both")

ISH_COLUMNS = ["experiment_id", "gene", "gene_name", "plane", "section_thickness",
               "specimen_id", "entrez_id", "expression", "reference_space_id"]
PLANE_CSV_COLUMNS = ["experiment_id", "section_thickness", "specimen_id", "plane", "gene",
                     "gene_name", "chromosome_id", "entrez_id", "genomic_reference_update_id",
                     "homologene_id", "organism_id"]
# The tabular listing of seed 001 / allen-api.md §5 (spaces become %20; the API reads them as
# the "+" of the documented form).
_PLANE_TABULAR = (
    "data_sets.id as experiment_id,data_sets.section_thickness,data_sets.specimen_id,"
    "plane_of_sections.name as plane,genes.acronym as gene,genes.name as gene_name,"
    "genes.chromosome_id,genes.entrez_id,genes.genomic_reference_update_id,"
    "genes.homologene_id,genes.organism_id"
)
UNIONIZE_COLUMNS = ["id", "section_data_set_id", "structure_id", "sum_pixels",
                    "sum_expressing_pixels", "sum_pixel_intensity",
                    "sum_expressing_pixel_intensity", "expression_density", "expression_energy",
                    "voxel_energy_mean", "voxel_energy_cv"]
PROJECTION_UNIONIZE_COLUMNS = [
    "id", "section_data_set_id", "structure_id", "hemisphere_id", "is_injection",
    "projection_density", "projection_energy", "projection_intensity", "projection_volume",
    "normalized_projection_volume", "volume", "sum_pixels", "sum_projection_pixels",
    "sum_pixel_intensity", "sum_projection_pixel_intensity", "max_voxel_density",
    "max_voxel_x", "max_voxel_y", "max_voxel_z",
]
CONNECTIVITY_COLUMNS = ["id", "structure_id", "structure_abbrev", "structure_name",
                        "transgenic_line", "injection_volume", "injection_x", "injection_y",
                        "injection_z", "injection_structures", "gender", "strain", "product_id"]
_SERVICE_FILTERS = {"injection_structures", "target_domain", "transgenic_lines",
                    "primary_structure_only", "injection_hemisphere", "target_hemisphere",
                    "injection_domain", "product_ids", "section_data_set"}
_ID_CHUNK = 100  # ids per $in list: keeps URLs well under server limits


def resolve_files_url(api_url: str, override: str | None = None) -> str:
    """Base URL of the file server holding the CCF annotation volumes.

    ``override``, else ``$NAPARI_ALLEN_FILES_URL``, else — when the API URL is not Allen's
    (e.g. the local server) — the API URL itself, else ``http://download.alleninstitute.org``.
    """
    url = override or os.environ.get(FILES_URL_ENV)
    if not url:
        url = DEFAULT_FILES_URL if api_url.rstrip("/") == config.DEFAULT_API_URL else api_url
    return url.rstrip("/")


def _chunks(values: Sequence, size: int) -> Iterable[list]:
    for i in range(0, len(values), size):
        yield list(values[i:i + size])


def _check_plane(plane: str | None) -> str | None:
    if plane is None:
        return None
    key = str(plane).strip().lower()
    if key not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    return key


def _check_volumes(volumes: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(volumes, str):
        volumes = (volumes,)
    vols = tuple(dict.fromkeys(str(v).strip().lower() for v in volumes))
    bad = [v for v in vols if v not in GRID_VOLUMES]
    if not vols or bad:
        raise ValueError(f"grid volumes must be among {GRID_VOLUMES}, got {list(volumes)!r}")
    return vols


def _ids(values, what: str = "experiment id") -> list[int]:
    if isinstance(values, (int, str)):
        values = [values]
    out = []
    for v in values:
        try:
            out.append(int(rma.integer(v)))
        except rma.RmaValueError:
            raise ValueError(f"{what} must be an integer, got {v!r}") from None
    return list(dict.fromkeys(out))


class AllenClient:
    """Client of the Allen Brain Atlas API (and its file server).

    Parameters: ``base_url`` (default ``napari_allen.config.api_base_url()``), ``cache_dir``
    (default ``napari_allen.config.cache_dir()``), ``timeout`` (connect, read) in seconds,
    ``retries`` and ``backoff`` (seconds, doubled per attempt, with jitter), ``offline``
    (answer only from the caches), ``files_base_url`` (see :func:`resolve_files_url`),
    ``page_size`` (rows per RMA page), ``pool_size`` (connections kept per host),
    ``expire_after`` (metadata cache lifetime).
    """

    def __init__(self, base_url: str | None = None, cache_dir: str | os.PathLike | None = None,
                 *, timeout: tuple[float, float] = (5, 60), retries: int = 5,
                 backoff: float = 0.5, offline: bool = False,
                 files_base_url: str | None = None, page_size: int = 2000,
                 pool_size: int = 16,
                 expire_after: timedelta | int = timedelta(days=30)) -> None:
        self.base_url = config.api_base_url(base_url)
        self.files_url = resolve_files_url(self.base_url, files_base_url)
        self.cache_dir = config.cache_dir(cache_dir)
        self.offline = offline
        self.page_size = int(page_size)
        self.http = HttpTransport(metadata_db(self.cache_dir), timeout=timeout, retries=retries,
                                  backoff=backoff, offline=offline, pool_size=pool_size,
                                  expire_after=expire_after)
        self.store = FileStore(self.cache_dir / "files")

    def __repr__(self) -> str:
        return (f"AllenClient(base_url={self.base_url!r}, cache_dir={str(self.cache_dir)!r}, "
                f"offline={self.offline})")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AllenClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- low-level query helpers ---------------------------------------------------------
    def rma_url(self, q: str, fmt: str = "json") -> str:
        """``<base>/api/v2/data/query.<fmt>?q=<stages>`` with AllenSDK-style encoding."""
        return f"{self.base_url}/api/v2/data/query.{fmt}?" + rma.encode_query({"q": q})

    def service_url(self, stage: str) -> str:
        """``<base>/api/v2/data/query.json?criteria=service::...`` (allen-api.md §7.2)."""
        return f"{self.base_url}/api/v2/data/query.json?" + rma.encode_query({"criteria": stage})

    def query_rows(self, query: rma.RmaQuery, *, page_size: int | None = None,
                   progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> list[dict]:
        """All records of a model query, page by page (``start_row`` advances by the rows
        received; stops on an empty page or ``msg: {}``, or when ``total_rows`` is reached)."""
        size = int(page_size or self.page_size)
        rows: list[dict] = []
        start = 0
        while True:
            check(cancel)
            url = self.rma_url(query.stages(start_row=start, num_rows=size))
            env = self.http.get_json(url, cancel=cancel)
            page = _records(env, url)
            if not page:
                break
            rows.extend(page)
            start += len(page)
            total = _int_or_none(env.get("total_rows"))
            report(progress, done=len(rows), total=total,
                   message=f"{query.model}: {len(rows)} rows")
            if total is not None and start >= total:
                break
            if total is None and len(page) < size:
                break
        return rows

    def service_rows(self, query: rma.ServiceQuery, *, page_size: int | None = None,
                     cancel: CancelToken | None = None) -> list[dict]:
        """All records of a connected service; paging goes inside the service brackets.

        Some services ignore paging (allen-api.md §4): a page that brings no new ids ends the
        loop, so a server repeating its first page cannot loop us forever.
        """
        size = int(page_size or 2000)
        rows: list[dict] = []
        seen: set = set()
        start = 0
        while True:
            check(cancel)
            url = self.service_url(query.stage(start_row=start, num_rows=size))
            env = self.http.get_json(url, cancel=cancel)
            page = _records(env, url)
            new = [r for r in page if _row_key(r) not in seen]
            if not new:
                break
            seen.update(_row_key(r) for r in new)
            rows.extend(new)
            start += len(page)
            total = _int_or_none(env.get("total_rows"))
            if total is not None and start >= total:
                break
            if total is None and len(page) < size:
                break
        return rows

    # --- ISH ---------------------------------------------------------------------------------
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
        return _ish_frame(records, gene_patterns=None if genes is None else patterns,
                          field=field)

    def ish_plane_listing(self, plane: str, *, cancel: CancelToken | None = None
                          ) -> pd.DataFrame:
        """The tabular CSV listing of every ISH experiment of a plane (allen-api.md §5):
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
        # Gene acronyms such as "Nan" or "NA" are real: only empty fields are missing values.
        frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""],
                            dtype={"gene": str, "gene_name": str, "plane": str})
        missing = [c for c in ("experiment_id", "gene", "plane") if c not in frame.columns]
        if missing:
            raise AllenApiError(url, f"CSV listing lacks columns {missing}")
        for col in PLANE_CSV_COLUMNS:
            if col not in frame.columns:
                frame[col] = pd.NA
        for col in ("experiment_id", "specimen_id", "chromosome_id", "entrez_id",
                    "genomic_reference_update_id", "homologene_id", "organism_id"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
        frame = frame.dropna(subset=["experiment_id"])
        return frame[PLANE_CSV_COLUMNS + [c for c in frame.columns if c not in PLANE_CSV_COLUMNS]
                     ].reset_index(drop=True)

    def structure_unionize(self, experiment_ids, *, progress: ProgressCallback | None = None,
                           cancel: CancelToken | None = None) -> pd.DataFrame:
        """ISH StructureUnionize rows (structure graph 1) of the experiments; columns
        id, section_data_set_id, structure_id, sum_pixels, sum_expressing_pixels,
        sum_pixel_intensity, sum_expressing_pixel_intensity, expression_density,
        expression_energy, voxel_energy_mean, voxel_energy_cv."""
        ids = _ids(experiment_ids)
        records: list[dict] = []
        for n, chunk in enumerate(_chunks(ids, _ID_CHUNK)):
            query = rma.RmaQuery("StructureUnionize", order="id")
            query.where(None, section_data_set_id__in=chunk)
            query.where("structure", graph_id=1)
            records.extend(self.query_rows(query, cancel=cancel))
            report(progress, done=min(len(ids), (n + 1) * _ID_CHUNK), total=len(ids))
        return _flat_frame(records, UNIONIZE_COLUMNS)

    def structure_graph(self, *, cancel: CancelToken | None = None):
        """The structure ontology (graph 1) from ``/api/v2/structure_graph_download/1.json``,
        as a :class:`napari_allen.atlas.ontology.Ontology`."""
        from ..atlas.ontology import Ontology

        url = f"{self.base_url}/api/v2/structure_graph_download/1.json"
        env = self.http.get_json(url, cancel=cancel)
        roots = _records(env, url)
        if not roots:
            raise AllenApiError(url, "structure graph response holds no structures")
        return Ontology.from_graph_response(roots)

    # --- connectivity ------------------------------------------------------------------------
    def connectivity_experiments(self, *, cancel: CancelToken | None = None) -> pd.DataFrame:
        """Every connectivity experiment (model ApiConnectivity), columns: id, structure_id,
        structure_abbrev, structure_name, transgenic_line (str, '' = wild type),
        injection_volume (mm³), injection_x/y/z (µm, = AP/DV/ML), injection_structures
        (list[int]), gender, strain, product_id, plus what the server adds."""
        # ApiConnectivity records carry data_set_id, not id (allen-api.md §7.1).
        query = rma.RmaQuery("ApiConnectivity", order="data_set_id")
        records = self.query_rows(query, cancel=cancel)
        return connectivity_frame(records)

    def injection_structure_search(
        self, injection_structures, *, transgenic_lines=None, primary_structure_only=False,
        target_domain=None, injection_hemisphere=None, target_hemisphere=None,
        cancel: CancelToken | None = None,
    ) -> pd.DataFrame:
        """Service ``mouse_connectivity_injection_structure``: experiments injected in the
        structures (ids or acronyms). ``transgenic_lines``: names or ids, ``0`` = wild type.
        Columns as :meth:`connectivity_experiments` plus num_voxels, sum, ... (hyphens ->
        underscores; injection_coordinates split into injection_x/y/z µm)."""
        params = self._service_params({
            "injection_structures": injection_structures, "transgenic_lines": transgenic_lines,
            "primary_structure_only": primary_structure_only, "target_domain": target_domain,
            "injection_hemisphere": injection_hemisphere,
            "target_hemisphere": target_hemisphere})
        if not params.get("injection_structures"):
            raise ValueError("injection_structure_search needs at least one injection structure")
        rows = self.service_rows(
            rma.ServiceQuery("mouse_connectivity_injection_structure", params), cancel=cancel)
        return connectivity_frame(rows)

    def injection_coordinate_search(self, seed_point_um: Sequence[float], *,
                                    cancel: CancelToken | None = None, **filters
                                    ) -> pd.DataFrame:
        """Service ``mouse_connectivity_injection_coordinate``: experiments ranked by the
        distance (µm) from their injection to ``seed_point_um`` ([AP, DV, ML] µm). Filters:
        injection_structures, transgenic_lines, primary_structure_only, product_ids, ..."""
        params = self._service_params(filters)
        params["seed_point"] = _seed(seed_point_um)
        rows = self.service_rows(
            rma.ServiceQuery("mouse_connectivity_injection_coordinate", params), cancel=cancel)
        frame = connectivity_frame(rows)
        if "distance" in frame.columns:
            frame["distance"] = pd.to_numeric(frame["distance"], errors="coerce")
        return frame

    def target_spatial_search(self, seed_point_um: Sequence[float], *,
                              section_data_set: int | None = None,
                              cancel: CancelToken | None = None, **filters) -> list[dict]:
        """Service ``mouse_connectivity_target_spatial``: the raw records (keys as served,
        hyphenated), each with ``path``: a list of ``{coord: [x, y, z] µm, density,
        intensity}`` from the seed to the injection site."""
        params = self._service_params(filters)
        params["seed_point"] = _seed(seed_point_um)
        if section_data_set is not None:
            params["section_data_set"] = int(rma.integer(section_data_set))
        return self.service_rows(
            rma.ServiceQuery("mouse_connectivity_target_spatial", params), cancel=cancel)

    def projection_structure_unionize(self, experiment_ids, *, is_injection: bool | None = None,
                                      hemisphere_ids: Sequence[int] | None = None,
                                      structure_ids: Sequence[int] | None = None,
                                      progress: ProgressCallback | None = None,
                                      cancel: CancelToken | None = None) -> pd.DataFrame:
        """ProjectionStructureUnionize rows of connectivity experiments (volumes in mm³,
        densities 0-1; hemisphere_id 1 left, 2 right, 3 both)."""
        ids = _ids(experiment_ids)
        records: list[dict] = []
        for n, chunk in enumerate(_chunks(ids, 20)):
            filters: dict = {"section_data_set_id__in": chunk}
            if is_injection is not None:
                filters["is_injection"] = bool(is_injection)
            if hemisphere_ids is not None:
                filters["hemisphere_id__in"] = _ids(hemisphere_ids, "hemisphere id")
            if structure_ids is not None:
                filters["structure_id__in"] = self._structure_ids(structure_ids)
            query = rma.RmaQuery("ProjectionStructureUnionize", order="id").where(None, **filters)
            records.extend(self.query_rows(query, cancel=cancel))
            report(progress, done=min(len(ids), (n + 1) * 20), total=len(ids))
        return _flat_frame(records, PROJECTION_UNIONIZE_COLUMNS)

    def _structure_ids(self, values) -> list[int]:
        """Structure ids from ids or acronyms (resolved with the bundled ontology, so no
        user text reaches the query)."""
        if isinstance(values, (int, str)):
            values = [values]
        out = []
        for v in values:
            if isinstance(v, str) and not v.strip().isdigit():
                from ..atlas.ontology import Ontology

                try:
                    out.append(Ontology.default().id_of(v))
                except KeyError:
                    raise ValueError(f"unknown structure acronym {v!r}") from None
            else:
                out.extend(_ids([v], "structure id"))
        return out

    def _service_params(self, filters: dict) -> dict:
        unknown = set(filters) - _SERVICE_FILTERS
        if unknown:
            raise TypeError(f"unknown connectivity search filter(s): {sorted(unknown)}")
        params: dict = {}
        for key, value in filters.items():
            if value is None or (value is False and key == "primary_structure_only"):
                continue
            if key in ("injection_structures", "target_domain", "injection_domain"):
                params[key] = self._structure_ids(value)
            elif key == "transgenic_lines":
                values = [value] if isinstance(value, (str, int)) else list(value)
                params[key] = [rma.token(v) for v in values]
            elif key in ("injection_hemisphere", "target_hemisphere"):
                text = str(value).strip().lower()
                if text not in HEMISPHERES:
                    raise ValueError(f"{key} must be one of {HEMISPHERES}, got {value!r}")
                params[key] = text
            elif key == "primary_structure_only":
                params[key] = bool(value)
            elif key == "product_ids":
                params[key] = _ids(value, "product id")
            elif key == "section_data_set":
                params[key] = int(rma.integer(value))
        return params

    # --- downloads -----------------------------------------------------------------------
    @property
    def api_host(self) -> str:
        return host_tag(self.base_url)

    def grid_zip_url(self, experiment_id: int, volumes: Sequence[str]) -> str:
        vols = _check_volumes(volumes)
        eid = int(rma.integer(experiment_id))
        return f"{self.base_url}/grid_data/download/{eid}?" + rma.encode_query(
            {"include": ",".join(vols)})

    def grid_nrrd_url(self, experiment_id: int, image: str, resolution: int) -> str:
        if image not in NRRD_IMAGES:
            raise ValueError(f"image must be one of {NRRD_IMAGES}, got {image!r}")
        if int(resolution) not in NRRD_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {NRRD_RESOLUTIONS} µm, got {resolution}")
        eid = int(rma.integer(experiment_id))
        return f"{self.base_url}/grid_data/download_file/{eid}?" + rma.encode_query(
            [("image", image), ("resolution", str(int(resolution)))])

    def annotation_url(self, resolution: int) -> str:
        if int(resolution) not in NRRD_RESOLUTIONS:
            raise ValueError(f"resolution must be one of {NRRD_RESOLUTIONS} µm, got {resolution}")
        return self.files_url + ANNOTATION_PATH.format(res=int(resolution))

    def grid_zip(self, experiment_id: int, volumes: Sequence[str] | str = ("energy",), *,
                 dest: str | os.PathLike | None = None,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Path:
        """The ``grid_data/download/<id>?include=...`` zip (200 µm ISH grids, or connectivity
        grids), downloaded once and verified. Stored per (experiment, volumes, 200 µm) in the
        cache, or at ``dest`` (a file path) when given. Returns the path."""
        vols = _check_volumes(volumes)
        url = self.grid_zip_url(experiment_id, vols)
        target = Path(dest) if dest is not None else self.store.grid_zip(
            self.api_host, int(experiment_id), vols)
        return self._download(url, target, lambda p, s: verify_grid_zip(p, vols, s),
                              progress, cancel)

    def grid_volumes(self, experiment_id: int, volumes: Sequence[str] | str = ("energy",), *,
                     progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None):
        """The experiment's grids as :class:`~napari_allen.io.volume.GridVolume` ([AP, DV, ML],
        200 µm, -1 = no data), one cached zip per volume."""
        from ..io.dataset import lookup_experiment
        from ..io.gridzip import read_grid_zip

        out = []
        vols = _check_volumes(volumes)
        for n, vol in enumerate(vols):
            path = self.grid_zip(experiment_id, (vol,), cancel=cancel)
            for grid in read_grid_zip(path, cancel=cancel):
                grid.metadata["experiment_id"] = int(experiment_id)
                # The cache's file names carry no gene: take it from the bundled listing.
                for key, value in lookup_experiment(int(experiment_id)).items():
                    grid.metadata.setdefault(key, value)
                grid.metadata.setdefault("url", self.grid_zip_url(experiment_id, (vol,)))
                out.append(grid)
            report(progress, done=n + 1, total=len(vols), message=f"{experiment_id} {vol}")
        return out

    def grid_nrrd(self, experiment_id: int, image: str = "projection_density",
                  resolution: int = 100, *, dest: str | os.PathLike | None = None,
                  progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None) -> Path:
        """A connectivity ``grid_data/download_file`` NRRD (gzip, [AP, DV, ML] at
        ``resolution`` µm), downloaded once and verified. Returns the path."""
        url = self.grid_nrrd_url(experiment_id, image, resolution)
        target = Path(dest) if dest is not None else self.store.grid_nrrd(
            self.api_host, int(experiment_id), image, int(resolution))
        return self._download(url, target, lambda p, s: verify_nrrd(p, s, cancel=cancel),
                              progress, cancel)

    def annotation_nrrd(self, resolution: int = 25, *, dest: str | os.PathLike | None = None,
                        progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> Path:
        """The CCFv3 2017 annotation NRRD (uint32 structure ids) at ``resolution`` µm from
        the file server. Returns the path."""
        url = self.annotation_url(resolution)
        target = Path(dest) if dest is not None else self.store.annotation(
            host_tag(self.files_url), int(resolution))
        return self._download(url, target, lambda p, s: verify_nrrd(p, s, cancel=cancel),
                              progress, cancel)

    def _download(self, url: str, target: Path, verify, progress, cancel) -> Path:
        moved = [0]

        def on_bytes(n: int) -> None:
            moved[0] += n
            report(progress, done=0, total=1, bytes_done=moved[0], message=target.name)

        fetched = download_file(self.http, url, target, verify,
                                on_bytes=on_bytes if progress else None, cancel=cancel)
        report(progress, done=1, total=1, bytes_done=moved[0],
               message=f"{target.name} {fetched.status}")
        return fetched.path

    # --- cache ---------------------------------------------------------------------------
    def cache_info(self) -> dict:
        """The cache folder and its sizes in bytes: metadata database, files, total."""
        meta = sum(p.stat().st_size for p in self.cache_dir.glob("http_cache.sqlite*"))
        files = folder_size(self.store.root)
        return {"folder": str(self.cache_dir), "metadata_bytes": meta, "file_bytes": files,
                "total_bytes": folder_size(self.cache_dir),
                "files": sum(1 for p in self.store.root.rglob("*")
                             if p.is_file() and p.suffix not in (".part", ".lock")
                             and p.name != MANIFEST_NAME
                             and not p.name.endswith(SIDECAR_SUFFIX))
                if self.store.root.exists() else 0}


# --- response shaping ----------------------------------------------------------------------
def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _records(env: dict, url: str) -> list[dict]:
    msg = env.get("msg")
    if isinstance(msg, list):
        return msg
    if isinstance(msg, dict):
        return []  # {} is how the services say "no rows"
    raise AllenApiError(url, f"unexpected msg in a successful response: {str(msg)[:200]}")


def _row_key(row: dict):
    return row.get("id", repr(sorted(row.items()))[:500]) if isinstance(row, dict) else repr(row)


def _seed(point: Sequence[float]) -> list[str]:
    values = list(point)
    if len(values) != 3:
        raise ValueError(f"seed point must be [AP, DV, ML] in µm, got {point!r}")
    return [rma.number(v) for v in values]


def _flat_frame(records: list[dict], columns: list[str]) -> pd.DataFrame:
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in records]
    frame = pd.DataFrame(flat)
    if "id" in frame.columns and len(frame):
        frame = frame.drop_duplicates(subset="id")  # overlapping pages
    for col in columns:
        if col not in frame.columns:
            frame[col] = pd.NA
    return frame[columns + [c for c in frame.columns if c not in columns]].reset_index(drop=True)


def _ish_frame(records: list[dict], gene_patterns, field: str) -> pd.DataFrame:
    import fnmatch

    rows = []
    planes = {v: k for k, v in PLANES.items()}
    for rec in records:
        plane = rec.get("plane_of_section")
        plane = plane.get("name") if isinstance(plane, dict) else planes.get(
            _int_or_none(rec.get("plane_of_section_id")), "")
        genes = rec.get("genes") or [{}]
        for gene in genes:
            value = str(gene.get(field) or "")
            # A data set with several genes is listed under the ones that matched.
            if gene_patterns is not None and len(genes) > 1 and not any(
                    fnmatch.fnmatch(value.lower(), str(p).strip().lower()) for p in gene_patterns):
                continue
            rows.append({
                "experiment_id": rec.get("id"), "gene": gene.get("acronym"),
                "gene_name": gene.get("name"), "plane": plane,
                "section_thickness": rec.get("section_thickness"),
                "specimen_id": rec.get("specimen_id"), "entrez_id": gene.get("entrez_id"),
                "expression": rec.get("expression"),
                "reference_space_id": rec.get("reference_space_id"),
            })
    frame = pd.DataFrame(rows, columns=ISH_COLUMNS)
    if len(frame):
        frame = frame.drop_duplicates(subset=["experiment_id", "gene"])
        frame = frame.sort_values(["gene", "experiment_id"], kind="stable")
    for col in ("experiment_id", "specimen_id", "entrez_id", "reference_space_id"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return frame.reset_index(drop=True)


def _structure_list(value) -> list[int]:
    if value is None or value is pd.NA:
        return []
    if isinstance(value, str):
        parts = [p for p in value.replace(",", "/").split("/") if p.strip()]
        return [int(p) for p in parts if p.strip().lstrip("-").isdigit()]
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            if isinstance(item, dict):
                if item.get("id") is not None:
                    out.append(int(item["id"]))
            elif str(item).strip().lstrip("-").isdigit():
                out.append(int(item))
        return out
    if isinstance(value, (int, float)):
        return [int(value)]
    return []


def _line_name(value) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, dict):
        return str(value.get("name") or "")
    return str(value)


def connectivity_frame(records: list[dict]) -> pd.DataFrame:
    """Normalise connectivity experiments from ApiConnectivity or a connected service
    (hyphenated keys) into :data:`CONNECTIVITY_COLUMNS` (+ extra columns as served)."""
    rows = []
    for rec in records:
        row = {str(k).replace("-", "_"): v for k, v in rec.items()}
        if "id" not in row and "data_set_id" in row:
            row["id"] = row.pop("data_set_id")
        coords = row.pop("injection_coordinates", None)
        if isinstance(coords, (list, tuple)) and len(coords) == 3:
            row.setdefault("injection_x", coords[0])
            row.setdefault("injection_y", coords[1])
            row.setdefault("injection_z", coords[2])
        row["injection_structures"] = _structure_list(row.get("injection_structures"))
        row["transgenic_line"] = _line_name(row.get("transgenic_line"))
        if isinstance(row.get("structure_abbrev"), str):
            row["structure_abbrev"] = row["structure_abbrev"].strip()  # 'SUM ' -> 'SUM'
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in CONNECTIVITY_COLUMNS:
        if col not in frame.columns:
            frame[col] = [[] for _ in range(len(frame))] if col == "injection_structures" \
                else pd.NA
    for col in ("id", "structure_id", "product_id"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    for col in ("injection_volume", "injection_x", "injection_y", "injection_z"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["transgenic_line"] = frame["transgenic_line"].fillna("").astype(str)
    if len(frame) and frame["id"].notna().all():
        frame = frame.drop_duplicates(subset="id")
    extra = [c for c in frame.columns if c not in CONNECTIVITY_COLUMNS]
    return frame[CONNECTIVITY_COLUMNS + extra].reset_index(drop=True)
