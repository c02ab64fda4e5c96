"""Byte-exact output formats of the Allen API (docs/allen-api-notes.md §3 and §8).

- JSON envelope ``{"success", "id", "start_row", "num_rows", "total_rows", "msg"}``;
- XML ``<Response ...>`` with hyphenated element names, ``nil="true"`` nulls and ``type=`` on
  nested values (top-level record fields carry no type, as in the real data_set.xml);
- CSV: header row, no BOM, no paging info, nulls empty, commas quoted;
- MetaImage ``.mhd`` text, gzip NRRD headers and zip layout as the real Allen files.

Synthetic data carry their mark inside the bytes (``synthetic=True``): a ``.mhd`` header line,
an NRRD key/value line, the zip comment (and ``<synthetic>`` in data_set.xml, see grids.py),
with the constants of :mod:`napari_allen.io.provenance`, so any copy of the file is flagged.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from napari_allen.io.elements import met_name, nrrd_name  # the one element-type table
from napari_allen.io.provenance import (  # the in-band synthetic marks, defined once
    MHD_SYNTHETIC_LINE,
    NRRD_SYNTHETIC_LINE,
    SYNTHETIC_ZIP_COMMENT,
)

# ------------------------------------------------------------------ envelopes


def json_envelope(msg: Any, start_row: int = 0, total_rows: int | None = None,
                  success: bool = True) -> bytes:
    """The RMA JSON envelope. ``num_rows`` counts ``msg`` rows (0 for ``{}``/strings)."""
    num = len(msg) if isinstance(msg, list) else 0
    body = {"success": success, "id": 0, "start_row": start_row, "num_rows": num,
            "total_rows": num if total_rows is None else total_rows, "msg": msg}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def json_error(message: str) -> bytes:
    """``success: false`` with the message as a string ``msg``."""
    return json.dumps({"success": False, "id": 0, "start_row": 0, "num_rows": 0,
                       "total_rows": 0, "msg": message}, separators=(",", ":")).encode()


def xml_error(message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response success="false" id="0">'
            f"<msg>{escape(message)}</msg></Response>\n").encode()


def hyphen(name: str) -> str:
    return name.replace("_", "-")


def plural(element: str) -> str:
    """``section-data-set`` -> ``section-data-sets``; ``api-connectivity`` -> ``...ities``."""
    if element.endswith("y") and not element.endswith(("ay", "ey", "oy")):
        return element[:-1] + "ies"
    if element.endswith(("s", "x")):
        return element + "es"
    return element + "s"


def singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith(("sses", "xes")):
        return name[:-2]
    if name.endswith("s"):
        return name[:-1]
    return name


def _xml_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return None


def _xml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return escape(str(value))


def _xml_value(name: str, value: Any, out: list[str], indent: str, typed: bool) -> None:
    tag = hyphen(name)
    if value is None:
        out.append(f'{indent}<{tag} nil="true"/>')
    elif isinstance(value, dict):
        out.append(f"{indent}<{tag}>")
        for key, val in value.items():
            _xml_value(key, val, out, indent + "  ", True)
        out.append(f"{indent}</{tag}>")
    elif isinstance(value, list):
        if not value:
            out.append(f"{indent}<{tag}/>")
            return
        out.append(f"{indent}<{tag}>")  # the real data_set.xml: <products><product>...
        item_tag = singular(name)
        for item in value:
            if isinstance(item, dict):
                _xml_value(item_tag, item, out, indent + "  ", True)
            else:
                kind = _xml_type(item)
                attr = f' type="{kind}"' if kind else ""
                out.append(f"{indent}  <{hyphen(item_tag)}{attr}>{_xml_scalar(item)}"
                           f"</{hyphen(item_tag)}>")
        out.append(f"{indent}</{tag}>")
    else:
        kind = _xml_type(value) if typed else None
        attr = f' type="{kind}"' if kind else ""
        out.append(f"{indent}<{tag}{attr}>{_xml_scalar(value)}</{tag}>")


def xml_record(element: str, record: dict[str, Any], indent: str = "",
               declaration: bool = False) -> str:
    """One record as XML (top-level fields untyped, nested typed, underscores -> hyphens)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>'] if declaration else []
    out.append(f"{indent}<{element}>")
    for key, value in record.items():
        _xml_value(key, value, out, indent + "  ", False)
    out.append(f"{indent}</{element}>")
    return "\n".join(out)


def xml_envelope(element: str | None, rows: list[dict[str, Any]], start_row: int = 0,
                 total_rows: int | None = None) -> bytes:
    """``<Response ...><plural><element>..``; services (element None) use objects/object."""
    element = element or "object"
    group = "objects" if element == "object" else plural(element)
    total = len(rows) if total_rows is None else total_rows
    opening = (f'<Response success="true" id="0" start_row="{start_row}" '
               f'num_rows="{len(rows)}" total_rows="{total}">')
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', opening, f"  <{group}>"]
    parts.extend(xml_record(element, row, indent="    ") for row in rows)
    parts.append(f"  </{group}>")
    parts.append("</Response>")
    return ("\n".join(parts) + "\n").encode()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def csv_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> bytes:
    """Header + rows, nulls empty, minimal quoting, LF line ends, no BOM."""
    if columns is None:
        columns = list(rows[0]) if rows else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return buf.getvalue().encode()


# ------------------------------------------------------------------ volumes

def mhd_header(name: str, shape: tuple[int, int, int], spacing: float, dtype: np.dtype,
               synthetic: bool = False) -> bytes:
    """The ``.mhd`` text of docs/allen-api-notes.md §8. ``shape`` is ``(AP, DV, ML)`` = DimSize
    order; ``synthetic`` adds the mark line (before ``ElementDataFile``, which stays last).

    gridAnnotation's header (uint32) carries ``CompressedData = False``; energy's does not.
    """
    element = met_name(dtype)
    lines = ["ObjectType = Image", "NDims = 3", "BinaryData = True",
             "BinaryDataByteOrderMSB = False"]
    if element == "MET_UINT":
        lines.append("CompressedData = False")
    sp = f"{spacing:g}"
    lines += ["TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = 0 0 0", "CenterOfRotation = 0 0 0",
              "AnatomicalOrientation = RAI", f"ElementSpacing = {sp} {sp} {sp}",
              "DimSize = {} {} {}".format(*shape), f"ElementType = {element}"]
    if synthetic:
        lines.append(MHD_SYNTHETIC_LINE)
    lines.append(f"ElementDataFile = {name}.raw")
    return ("\n".join(lines) + "\n").encode()


def raw_bytes(volume: np.ndarray) -> bytes:
    """``[AP, DV, ML]`` array -> little-endian bytes with AP (x) fastest (Fortran order)."""
    arr = np.asarray(volume)
    return np.asfortranarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).tobytes(
        order="F")


def nrrd_header(shape: tuple[int, int, int], resolution: float, dtype: np.dtype,
                synthetic: bool = False) -> bytes:
    """The gzip NRRD header of docs/allen-api-notes.md §8 (ends with the blank line);
    ``synthetic`` adds the mark as a key/value line."""
    kind = nrrd_name(dtype)
    r = f"{resolution:g}"
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        f"type: {kind}",
        "dimension: 3",
        "space: left-posterior-superior",
        "sizes: {} {} {}".format(*shape),
        f"space directions: ({r},0,0) (0,{r},0) (0,0,{r})",
        "kinds: domain domain domain",
        "endian: little",
        "encoding: gzip",
        "space origin: (0,0,0)",
    ]
    if synthetic:
        lines.append(NRRD_SYNTHETIC_LINE)
    return ("\n".join(lines) + "\n\n").encode()


def nrrd_bytes(volume: np.ndarray, resolution: float, synthetic: bool = False) -> bytes:
    """A complete gzip NRRD file; gzip mtime 0 so the bytes are deterministic."""
    body = gzip.compress(raw_bytes(volume), compresslevel=6, mtime=0)
    return nrrd_header(volume.shape, resolution, volume.dtype, synthetic) + body


#: Member timestamps of the real zips: volumes 2015-02-23 17:28, data_set.xml 2020-06-13 07:02.
VOLUME_DATE = (2015, 2, 23, 17, 28, 0)
XML_DATE = (2020, 6, 13, 7, 2, 0)


def zip_bytes(members: list[tuple[str, bytes, tuple[int, ...]]],
              synthetic: bool = False) -> bytes:
    """A deflated zip with the members at the root, in the given order, fixed timestamps;
    ``synthetic`` sets the zip comment mark."""
    buf = io.BytesIO()
    # Level 1: still deflate (any unzip reads it), several times faster than the default.
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        if synthetic:
            zf.comment = SYNTHETIC_ZIP_COMMENT
        for name, data, date in members:
            info = zipfile.ZipInfo(name, date_time=date)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    return buf.getvalue()
