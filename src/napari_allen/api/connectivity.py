"""Connectivity queries (Allen Mouse Brain Connectivity Atlas): experiments, the connected
search services (injection structure, injection coordinate, target spatial) and
ProjectionStructureUnionize (:class:`ConnectivityApi`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..concurrency import bounded_map
from ..progress import CancelToken, ProgressCallback, check, report
from . import rma
from .base import ApiBase, checked_ids, chunks
from .ontology import resolve_structure_ids

if TYPE_CHECKING:  # frames (pandas) are built on use: downloads never import pandas
    import pandas as pd

HEMISPHERES = ("left", "right", "both")
_SERVICE_FILTERS = {"injection_structures", "target_domain", "transgenic_lines",
                    "primary_structure_only", "injection_hemisphere", "target_hemisphere",
                    "injection_domain", "product_ids", "section_data_set"}


def _seed(point: Sequence[float]) -> list[str]:
    values = list(point)
    if len(values) != 3:
        raise ValueError(f"seed point must be [AP, DV, ML] in µm, got {point!r}")
    return [rma.number(v) for v in values]


class ConnectivityApi(ApiBase):
    """Connectivity experiments and the connected services."""

    def connectivity_experiments(self, *, cancel: CancelToken | None = None) -> pd.DataFrame:
        """Every connectivity experiment (model ApiConnectivity), columns: id, structure_id,
        structure_abbrev, structure_name, transgenic_line (str, '' = wild type),
        injection_volume (mm³), injection_x/y/z (µm, = AP/DV/ML), injection_structures
        (list[int]), gender, strain, product_id, plus what the server adds."""
        # ApiConnectivity records carry data_set_id, not id (docs/allen-api-notes.md §7.1).
        query = rma.RmaQuery("ApiConnectivity", order="data_set_id")
        records = self.query_rows(query, cancel=cancel)
        from .frames import connectivity_frame

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
        from .frames import connectivity_frame

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
        from .frames import connectivity_frame

        frame = connectivity_frame(rows)
        if "distance" in frame.columns:
            import pandas as pd

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
                                      jobs: int = 8,
                                      progress: ProgressCallback | None = None,
                                      cancel: CancelToken | None = None) -> pd.DataFrame:
        """ProjectionStructureUnionize rows of connectivity experiments (volumes in mm³,
        densities 0-1; hemisphere_id 1 left, 2 right, 3 both), in the order of
        ``experiment_ids``' chunks of 20 (short URLs), ``jobs`` chunks at a time: 300
        experiments cost one round trip per 8 x 20, not 15 in a row."""
        ids = checked_ids(experiment_ids)
        filters: dict = {}
        if is_injection is not None:
            filters["is_injection"] = bool(is_injection)
        if hemisphere_ids is not None:
            filters["hemisphere_id__in"] = checked_ids(hemisphere_ids, "hemisphere id")
        if structure_ids is not None:
            filters["structure_id__in"] = resolve_structure_ids(structure_ids)

        def fetch(chunk: list[int], token: CancelToken) -> list[dict]:
            query = rma.RmaQuery("ProjectionStructureUnionize", order="id").where(
                None, section_data_set_id__in=chunk, **filters)
            return self.query_rows(query, cancel=token)

        records: list[dict] = []
        done = 0
        for outcome in bounded_map(fetch, list(chunks(ids, 20)), jobs=jobs, ordered=True,
                                   cancel=cancel, thread_name="allen-projection-unionize"):
            if outcome.error is not None:
                raise outcome.error
            records.extend(outcome.value or [])
            done += len(outcome.item)
            report(progress, done=done, total=len(ids))
        check(cancel)
        from .frames import PROJECTION_UNIONIZE_COLUMNS, flat_frame

        return flat_frame(records, PROJECTION_UNIONIZE_COLUMNS)

    def _service_params(self, filters: dict) -> dict:
        unknown = set(filters) - _SERVICE_FILTERS
        if unknown:
            raise TypeError(f"unknown connectivity search filter(s): {sorted(unknown)}")
        params: dict = {}
        for key, value in filters.items():
            if value is None or (value is False and key == "primary_structure_only"):
                continue
            if key in ("injection_structures", "target_domain", "injection_domain"):
                params[key] = resolve_structure_ids(value)
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
                params[key] = checked_ids(value, "product id")
            elif key == "section_data_set":
                params[key] = int(rma.integer(value))
        return params
