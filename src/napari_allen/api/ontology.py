"""The structure ontology: the structure graph download (:class:`OntologyApi`) and structure
ids from ids or acronyms for queries."""

from __future__ import annotations

from ..errors import AllenApiError
from ..progress import CancelToken
from . import rma
from .base import ApiBase, checked_ids, records_of


def resolve_structure_ids(values) -> list[int]:
    """Structure ids from ids or acronyms (resolved with the bundled ontology, so no
    user text reaches the query)."""
    # The ontology is pandas-backed: imported when needed, so downloads never load pandas.
    from ..atlas.ontology import Ontology

    if isinstance(values, (int, str)):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, str) and not v.strip().isdigit():
            try:
                out.append(Ontology.default().id_of(v))
            except KeyError:
                raise ValueError(f"unknown structure acronym {v!r}") from None
        else:
            out.extend(checked_ids([v], "structure id"))
    return out


class OntologyApi(ApiBase):
    """The structure graph."""

    def structure_graph(self, *, cancel: CancelToken | None = None):
        """The structure ontology (graph 1) from ``/api/v2/structure_graph_download/1.json``,
        as a :class:`napari_allen.atlas.ontology.Ontology`."""
        url = f"{self.base_url}/api/v2/structure_graph_download/1.json"
        env = self.http.get_json(url, cancel=cancel)
        roots = records_of(env, url)
        if not roots:
            raise AllenApiError(url, "structure graph response holds no structures")
        from ..atlas.ontology import Ontology

        return Ontology.from_graph_response(roots)

    def structure_records(self, *, cancel: CancelToken | None = None) -> list[dict]:
        """All Structure records of structure graph 1 as the API sends them, in its order
        (``/api/v2/data/Structure`` with ``[graph_id$eq1]``: what Allen's correlation script
        reads; every model attribute, ``structure_id_path`` as text)."""
        return self.query_rows(rma.RmaQuery("Structure").where(None, graph_id=1), cancel=cancel)
