"""Experiment metadata for grid files: ``data_set.xml``, file-name hints, the bundled gene table.

Real ``data_set.xml`` files (served with ``grid_data/download`` zips) carry the experiment id,
reference space, section thickness, products, specimen/donor, age, but often no ``<genes>`` and
an empty ``<plane_of_section/>`` (docs/allen-api-notes.md §8). Missing gene/plane are then
looked up by experiment id in the bundled ``ABI_genes.csv.gz`` (26,061 ISH experiments), and last
taken from the file name (``Nrp1_P56_coronal_74272479_200um.zip``).
"""

from __future__ import annotations

import csv
import gzip
import re
import xml.etree.ElementTree as ET
from functools import cache
from importlib import resources

from ..errors import AllenFormatError
from .provenance import xml_is_synthetic

_PLANES = {"1": "coronal", "2": "sagittal"}


def _text(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    found = node.find(path)
    if found is None or found.get("nil") == "true":
        return None
    text = (found.text or "").strip()
    return text or None


def parse_data_set_xml(content: bytes | str, source) -> dict:
    """Metadata from a ``data_set.xml``: experiment_id, plane, gene(s), reference_space_id,
    section_thickness (µm), age, strain, sex, products. AllenFormatError if not XML."""
    try:
        root = ET.fromstring(content)
    except (ET.ParseError, ValueError, RecursionError) as exc:
        raise AllenFormatError(source, f"data_set.xml is not valid XML: {exc}") from exc
    synthetic = xml_is_synthetic(root)
    if root.tag.replace("_", "-") not in ("section-data-set", "data-set"):
        # Some responses wrap the record: <Response><section-data-sets><section-data-set>.
        inner = root.find(".//section-data-set")
        if inner is None:
            raise AllenFormatError(source, f"data_set.xml root <{root.tag}> is not a data set")
        root = inner
    meta: dict = {}
    if synthetic:
        meta["synthetic"] = True
    exp = _text(root, "id")
    if exp and exp.isascii() and exp.isdigit():
        meta["experiment_id"] = int(exp)
    plane = (_text(root, "plane-of-section/name") or _text(root, "plane_of_section/name")
             or _PLANES.get(_text(root, "plane-of-section-id") or ""))
    if plane:
        meta["plane"] = plane
    genes = [g.text.strip() for g in root.findall(".//genes/gene/acronym") if g.text]
    if genes:
        meta["gene"] = genes[0]
        if len(genes) > 1:
            meta["genes"] = genes
    for key, path in [("reference_space_id", "reference-space-id"),
                      ("section_thickness", "section-thickness"),
                      ("age", "age"), ("strain", "specimen/donor/strain"),
                      ("sex", "specimen/donor/sex"), ("specimen_id", "specimen-id")]:
        value = _text(root, path)
        if value is not None:
            meta[key] = value
    for key in ("reference_space_id", "specimen_id"):
        if key in meta and str(meta[key]).isascii() and str(meta[key]).isdigit():
            meta[key] = int(meta[key])
    if "section_thickness" in meta:
        try:
            meta["section_thickness"] = float(meta["section_thickness"])
        except (ValueError, OverflowError):
            del meta["section_thickness"]
    products = [p.text.strip() for p in root.findall("products/product/abbreviation")
                if p.text]
    if products:
        meta["products"] = products
    for flag in ("failed", "expression"):
        value = _text(root, flag)
        if value in ("true", "false"):
            meta[flag] = value == "true"
    return meta


@cache
def _gene_text() -> tuple[str, int, int, int]:
    """The bundled ABI_genes.csv.gz as text (2.7 MB, kept: smaller than a 26k-entry dict) and
    the column indices of (Section_Data_ID, acronym, cutting_plane)."""
    ref = resources.files("napari_allen") / "data" / "ish" / "ABI_genes.csv.gz"
    with ref.open("rb") as raw:
        text = gzip.decompress(raw.read()).decode("utf-8")
    header = next(csv.reader([text[:text.find("\n")]]))
    return (text, *(header.index(key) for key in ("Section_Data_ID", "acronym", "cutting_plane")))


def lookup_experiment(experiment_id: int) -> dict:
    """``{gene, plane}`` for an ISH experiment id from the bundled table ({} if unknown).

    Only the rows holding the id as a field are parsed (a file opened from File > Open Sample
    looks up one id on napari's GUI thread: parsing all 26k rows took ~50-100 ms there); the
    last such row wins, as a table built row by row would have it."""
    text, i_id, i_gene, i_plane = _gene_text()
    needle = str(int(experiment_id))
    found = None
    start = text.find(needle)
    while start >= 0:
        after = start + len(needle)
        if text[start - 1:start] not in ",\n" or text[after:after + 1] not in ",\r\n":
            start = text.find(needle, after)  # part of a longer field
            continue
        first = text.rfind("\n", 0, start) + 1
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        row = next(csv.reader([text[first:end]]), [])
        if len(row) > max(i_id, i_gene, i_plane) and row[i_id].strip() == needle:
            # The table marks some acronyms with a trailing '*' (unconfirmed symbols).
            found = (row[i_gene].rstrip("*"), row[i_plane])
        start = text.find(needle, end)
    return {"gene": found[0], "plane": found[1]} if found else {}


_NAME_FULL = re.compile(r"^(?P<gene>[A-Za-z0-9.\-]+?)_(?:P\d+_)?(?P<plane>coronal|sagittal)_"
                        r"(?P<id>\d{3,})", re.IGNORECASE)
# An id anywhere (5+ digits, so resolutions such as "200um" never match), or any leading
# number followed by a volume name: the "<id>_<volume>_<res>um.zip" of `napari-allen download`.
_NAME_ID = re.compile(r"(?:^|[_\-. ])(?P<id>\d{5,})(?=$|[_\-. ])"
                      r"|^(?P<lead>\d+)_(?=[a-z])", re.IGNORECASE)


def hints_from_name(name: str) -> dict:
    """Experiment id / gene / plane guessed from a file name (ABIgeneRMINC and id-only names)."""
    match = _NAME_FULL.match(name)
    if match:
        return {"gene": match["gene"], "plane": match["plane"].lower(),
                "experiment_id": int(match["id"])}
    match = _NAME_ID.search(name)
    return {"experiment_id": int(match["id"] or match["lead"])} if match else {}


def merge_metadata(xml_meta: dict, name: str) -> dict:
    """Combine data_set.xml, the bundled table and the file name (in that priority)."""
    meta = dict(xml_meta)
    hints = hints_from_name(name)
    if "experiment_id" not in meta and "experiment_id" in hints:
        meta["experiment_id"] = hints["experiment_id"]
    if "experiment_id" in meta and ("gene" not in meta or "plane" not in meta):
        for key, value in lookup_experiment(meta["experiment_id"]).items():
            meta.setdefault(key, value)
    if hints.get("experiment_id") == meta.get("experiment_id"):
        for key in ("gene", "plane"):
            if key in hints:
                meta.setdefault(key, hints[key])
    return meta
