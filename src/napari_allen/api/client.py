"""``AllenClient``: the queries and downloads napari-allen needs from the Allen Brain Atlas API.

One façade over the per-domain APIs (as AllenSDK splits its API by domain):

- :mod:`.base`: URLs, HTTP transport, file store, RMA paging (``ApiBase``);
- :mod:`.ish`: gene search, plane listings, StructureUnionize (``IshApi``);
- :mod:`.connectivity`: experiments, connected services, ProjectionStructureUnionize
  (``ConnectivityApi``);
- :mod:`.ontology`: the structure graph (``OntologyApi``);
- :mod:`.grids`: grid zips, NRRDs, the CCF annotation (``GridApi``);
- :mod:`.reference_space`: structure meshes (``ReferenceSpaceApi``);
- :mod:`.frames`: DataFrame shaping of the records, apart from query building.

All queries are built from values (:mod:`napari_allen.api.rma`), paged with
``start_row``/``num_rows`` (stopping on an empty page even when ``total_rows`` promised more;
``msg: {}`` means no rows), cached in SQLite and returned as pandas DataFrames with documented
snake_case columns. Downloads go to the verified file store (:mod:`napari_allen.api.cache`).

Coordinates are CCF µm ``[AP, DV, ML]`` (= Allen's x, y, z). The client is thread-safe: widget
workers and batch download threads share one instance.
"""

from __future__ import annotations

from ..io.manifest import MANIFEST_NAME
from ..io.provenance import SIDECAR_SUFFIX
from .cache import folder_size
from .connectivity import ConnectivityApi
from .grids import GridApi
from .ish import IshApi
from .ontology import OntologyApi
from .reference_space import ReferenceSpaceApi


class AllenClient(IshApi, ConnectivityApi, OntologyApi, GridApi, ReferenceSpaceApi):
    """Client of the Allen Brain Atlas API (and its file server): every domain's queries and
    downloads on one thread-safe instance. Parameters: see :class:`~.base.ApiBase`."""

    def cache_info(self) -> dict:
        """The cache folder and its sizes in bytes: metadata database, files, total."""
        _ = self.http.meta  # checks the metadata database (a damaged one is moved aside)
        meta = sum(p.stat().st_size for p in self.cache_dir.glob("http_cache.sqlite*"))
        files = folder_size(self.store.root)
        return {"folder": str(self.cache_dir), "metadata_bytes": meta, "file_bytes": files,
                "total_bytes": folder_size(self.cache_dir),
                "files": sum(1 for p in self.store.root.rglob("*")
                             if p.is_file() and p.suffix not in (".part", ".lock")
                             and p.name != MANIFEST_NAME
                             and not p.name.endswith(SIDECAR_SUFFIX))
                if self.store.root.exists() else 0}
