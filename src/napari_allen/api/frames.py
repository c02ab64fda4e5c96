"""DataFrame shaping of Allen API records, kept apart from query building: every table the
client returns has its documented snake_case columns (listed here) in this order, then whatever
else the server sent. Pure pandas; no HTTP.
"""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Mapping

import pandas as pd

from ..errors import AllenApiError
from .base import int_or_none

ISH_COLUMNS = ["experiment_id", "gene", "gene_name", "plane", "section_thickness",
               "specimen_id", "entrez_id", "expression", "reference_space_id"]
PLANE_CSV_COLUMNS = ["experiment_id", "section_thickness", "specimen_id", "plane", "gene",
                     "gene_name", "chromosome_id", "entrez_id", "genomic_reference_update_id",
                     "homologene_id", "organism_id"]
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


def flat_frame(records: list[dict], columns: list[str]) -> pd.DataFrame:
    """Records without nested values, deduplicated on ``id``, ``columns`` first."""
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in records]
    frame = pd.DataFrame(flat)
    if "id" in frame.columns and len(frame):
        frame = frame.drop_duplicates(subset="id")  # overlapping pages
    for col in columns:
        if col not in frame.columns:
            frame[col] = pd.NA
    return frame[columns + [c for c in frame.columns if c not in columns]].reset_index(drop=True)


def ish_frame(records: list[dict], gene_patterns, field: str,
              plane_names: Mapping[int, str]) -> pd.DataFrame:
    """SectionDataSet records (with their genes) -> one row per (experiment, matching gene),
    :data:`ISH_COLUMNS`, sorted by gene then experiment. ``plane_names``: plane id -> name."""
    rows = []
    for rec in records:
        plane = rec.get("plane_of_section")
        plane = plane.get("name") if isinstance(plane, dict) else plane_names.get(
            int_or_none(rec.get("plane_of_section_id")), "")
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


def plane_listing_frame(text: str, url: str) -> pd.DataFrame:
    """The tabular CSV listing of a plane's ISH experiments -> :data:`PLANE_CSV_COLUMNS` first;
    AllenApiError naming ``url`` if a key column is missing."""
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
