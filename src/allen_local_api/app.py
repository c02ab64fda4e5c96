"""Routing: one request target -> one fault-free :class:`Response` (no sockets here).

URL forms (docs/allen-api-notes.md §12): ``/api/v2/data/query.<fmt>?q=|criteria=``,
``/api/v2/data/<Model>/query.<fmt>?criteria=...``, ``/api/v2/data/<Model>/<id>.<fmt>``,
``/api/v2/structure_graph_download/1.json``, ``/api/v2/tree_search/Structure/<id>.json``,
``/api/v2/well_known_file_download/<id>``, ``/grid_data/download/<id>[?include=]``,
``/grid_data/download_file/<id>?image=&resolution=``, and the files host paths
``/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_<res>.nrrd``,
``.../ccf_2017/structure_meshes/<id>.obj`` (AllenSDK ``ReferenceSpaceApi``'s mesh URL; made
here from the annotation) and
``/informatics-archive/current-release/mouse_annotation/P56_Mouse_gridAnnotation.zip``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from napari_allen.io.provenance import SYNTHETIC_HEADER  # one header name for server and client

from . import formats, services
from .catalog import WELL_KNOWN_FILES, Catalog
from .grids import GridStore, NotServed, Payload
from .models import build_engine
from .query import (
    DEFAULT_ROWS,
    QueryError,
    attr_list,
    page_bounds,
    shape_records,
    tabular_rows,
)
from .rma import RmaSyntaxError, parse_shortcut, parse_stages

#: ``filename=`` values the CSV download accepts (nothing that could break the header line).
_SAFE_FILENAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
CONTENT_TYPES = {"json": "application/json; charset=utf-8",
                 "xml": "application/xml; charset=utf-8", "csv": "text/csv; charset=utf-8"}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    is_query: bool = False  # an RMA query (success_false / short_pages faults apply)
    binary: bool = False  # a file download (Range requests apply)


def _error(fmt: str, message: str, status: int = 400) -> Response:
    if fmt == "xml":
        return Response(status, formats.xml_error(message), CONTENT_TYPES["xml"], is_query=True)
    return Response(status, formats.json_error(message), CONTENT_TYPES["json"], is_query=True)


class App:
    """The request router over the shared catalog and grid store."""

    def __init__(self, catalog: Catalog, store: GridStore) -> None:
        self.catalog = catalog
        self.store = store
        self.engine = build_engine(catalog, store)

    def handle(self, target: str, extra_total: int = 0) -> Response:
        """Answer ``target`` (path?query as sent). ``extra_total`` overstates total_rows
        (short_pages fault)."""
        parts = urlsplit(target)
        path = parts.path
        # parse_qsl percent-decodes and reads '+' as space, as the RMA server does.
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            return self._route(path, params, extra_total)
        except NotServed as exc:
            return _error("json", str(exc), 404)
        except (RmaSyntaxError, QueryError) as exc:
            fmt = path.rsplit(".", 1)[-1] if "." in path else "json"
            return _error(fmt if fmt in CONTENT_TYPES else "json", f"Error in query: {exc}")

    # ---------------------------------------------------------------- routing
    def _route(self, path: str, params: dict[str, str], extra: int) -> Response:
        m = re.fullmatch(r"/api/v2/data/query\.(json|xml|csv)", path)
        if m:
            text = params.get("q") or params.get("criteria")
            if not text:
                return _error(m.group(1), "Error in query: missing q= or criteria=")
            return self._query(parse_stages(text), m.group(1), extra,
                               filename=params.get("filename"))
        m = re.fullmatch(r"/api/v2/data/(\w+)/query\.(json|xml|csv)", path)
        if m:
            self.engine.model(m.group(1))
            return self._query(parse_shortcut(m.group(1), params), m.group(2), extra,
                               filename=params.get("filename"))
        m = re.fullmatch(r"/api/v2/data/(\w+)/(\d+)\.(json|xml|csv)", path)
        if m:
            query = parse_shortcut(m.group(1), {**params, "id": m.group(2)})
            if not self.engine.select(query)[1]:
                return _error(m.group(3), f"{m.group(1)} with id {m.group(2)} not found", 404)
            return self._query(query, m.group(3), 0)
        m = re.fullmatch(r"/api/v2/structure_graph_download/(\d+)\.json", path)
        if m:
            if m.group(1) != "1":
                return _error("json", f"structure graph {m.group(1)} is not served (only 1)", 404)
            return Response(200, self.catalog.structure_graph_bytes, CONTENT_TYPES["json"])
        m = re.fullmatch(r"/api/v2/tree_search/Structure/(\d+)\.json", path)
        if m:
            return self._tree_search(int(m.group(1)), params)
        m = re.fullmatch(r"/api/v2/well_known_file_download/(\d+)", path)
        if m:
            return self._well_known(int(m.group(1)))
        m = re.fullmatch(r"/grid_data/download/(\d+)", path)
        if m:
            include = [v.strip() for v in params["include"].split(",") if v.strip()] \
                if params.get("include") else None
            return self._file(self.store.grid_download(int(m.group(1)), include))
        m = re.fullmatch(r"/grid_data/download_file/(\d+)", path)
        if m:
            image = params.get("image", "projection_density")
            if "," in image:
                return _error("json", f"one image per request, not {image!r}", 400)
            try:
                resolution = int(params.get("resolution", "100"))
            except ValueError:
                return _error("json", f"bad resolution {params.get('resolution')!r}", 400)
            return self._file(self.store.grid_download_file(int(m.group(1)), image, resolution))
        m = re.fullmatch(r"/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
                         r"annotation_(\d+)\.nrrd", path)
        if m:
            return self._file(self.store.annotation_nrrd(int(m.group(1))))
        m = re.fullmatch(r"/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
                         r"structure_meshes/(\d+)\.obj", path)
        if m:
            return self._file(self.store.structure_mesh_obj(int(m.group(1))))
        if path == ("/informatics-archive/current-release/mouse_annotation/"
                    "P56_Mouse_gridAnnotation.zip"):
            return self._file(Payload(self.store.grid_annotation_zip, False, "application/zip",
                                      "P56_Mouse_gridAnnotation.zip"))
        if path in ("/", "/api/v2"):
            return Response(200, b"napari-allen local Allen API server\n",
                            "text/plain; charset=utf-8")
        return _error("json", f"no route for {path}", 404)

    # ---------------------------------------------------------------- handlers
    def _file(self, payload: Payload) -> Response:
        headers = {"Content-Disposition": f'attachment; filename="{payload.filename}"'}
        if payload.synthetic:
            headers[SYNTHETIC_HEADER] = "1"
        return Response(200, payload.body, payload.content_type, headers, binary=True)

    def _well_known(self, file_id: int) -> Response:
        if file_id not in WELL_KNOWN_FILES:
            return _error("json", f"no well-known file with id {file_id}", 404)
        folder, name = WELL_KNOWN_FILES[file_id]
        if name == "annotationFiber.zip":
            payload = self.store.fiber_annotation_zip
        elif name.endswith(".zip"):
            payload = Payload(self.store.grid_annotation_zip, False, "application/zip", name)
        else:
            payload = self.store.annotation_nrrd(25)
        return self._file(payload)

    def _tree_search(self, structure_id: int, params: dict[str, str]) -> Response:
        if structure_id not in self.catalog.structure_by_id:
            return _error("json", f"no Structure with id {structure_id}", 404)
        ids: list[int] = []
        if params.get("ancestors", "false").lower() == "true":
            ids.extend(self.catalog.ancestors(structure_id)[:-1])
        ids.append(structure_id)
        if params.get("descendants", "false").lower() == "true":
            ids.extend(sorted(self.catalog.descendants(structure_id) - {structure_id},
                              key=lambda s: self.catalog.structure_by_id[s]["graph_order"]))
        rows = [self.catalog.structure_by_id[i] for i in ids]
        return Response(200, formats.json_envelope(rows), CONTENT_TYPES["json"], is_query=True)

    def _query(self, query, fmt: str, extra: int, filename: str | None = None) -> Response:
        if query.service:
            if fmt == "csv":
                return _error("json", "Error in query: csv is not available after a service")
            rows, start, total = services.run(self.catalog, self.store, query)
            element = None
            msg: list | dict = rows if rows else {}
        else:
            model, selected = self.engine.select(query)
            options = query.options
            if "order" in options:
                selected = self.engine.order(model, selected, options["order"])
            start, num = page_bounds(options, DEFAULT_ROWS)
            total = len(selected)
            page = selected[start:] if num is None else selected[start:start + num]
            if "tabular" in options:
                rows = tabular_rows(self.engine, model, page, options["tabular"], query)
            else:
                only = attr_list(options["only"]) if options.get("only") else None
                excpt = attr_list(options["except"]) if options.get("except") else None
                includes = [] if fmt == "csv" else query.includes
                rows = shape_records(self.engine, model, page, includes, only, excpt)
            element = model.element
            msg = rows
        if fmt == "json":
            body = formats.json_envelope(msg, start, total + extra)
        elif fmt == "xml":
            body = formats.xml_envelope(element, rows, start, total + extra)
        else:
            body = formats.csv_table(rows)
        headers = {}
        if fmt == "csv":
            if filename is not None and not _SAFE_FILENAME.fullmatch(filename):
                # CR/LF or quotes here would inject response headers: refuse, say why.
                return _error("json", f"filename={filename[:60]!r}: use letters, digits, "
                              "'.', '_' and '-' (at most 128)", 400)
            headers["Content-Disposition"] = f'attachment; filename="{filename or "query.csv"}"'
        return Response(200, body, CONTENT_TYPES[fmt], headers, is_query=True)
