"""Reference-space downloads: Allen's structure meshes (:class:`ReferenceSpaceApi`).

The counterpart of AllenSDK's ``ReferenceSpaceApi.download_structure_mesh``: the mesh of a
structure is the file-server path
``<files>/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/structure_meshes/<id>.obj``,
stored once (verified by parsing it) under ``files/<host>/ccf_2017/structure_meshes/<id>.obj``.
The file server is ``files_url`` (``download.alleninstitute.org``, or the local API server
when the client points at one). The ontology (``get_structure_tree``) is
:meth:`~.ontology.OntologyApi.structure_graph`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..progress import CancelToken, ProgressCallback, report
from .base import ApiBase
from .cache import download_file, host_tag

if TYPE_CHECKING:  # the mesh reader (numpy) is imported where a mesh is read
    from ..io.obj_mesh import Mesh

STRUCTURE_MESH_PATH = ("/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
                       "structure_meshes/{id}.obj")


def _verify_obj(path: Path, source: str) -> None:
    from ..io.obj_mesh import read_obj

    read_obj(path)  # raises AllenFormatError naming the file when it is not a mesh


class ReferenceSpaceApi(ApiBase):
    """Structure meshes from the file server."""

    def structure_mesh_url(self, structure_id: int) -> str:
        """The ``.obj`` URL of one structure's mesh on the file server."""
        return self.files_url + STRUCTURE_MESH_PATH.format(id=int(structure_id))

    def structure_mesh_path(self, structure_id: int) -> Path:
        """Where the verified download of a structure mesh lives in the file store."""
        return (self.store.root / host_tag(self.files_url) / "ccf_2017" / "structure_meshes"
                / f"{int(structure_id)}.obj")

    def download_structure_mesh(self, structure_id: int, *,
                                dest: str | os.PathLike | None = None,
                                progress: ProgressCallback | None = None,
                                cancel: CancelToken | None = None) -> Path:
        """Download (once, verified) the structure's ``.obj`` mesh; returns its path."""
        url = self.structure_mesh_url(structure_id)
        target = Path(dest) if dest is not None else self.structure_mesh_path(structure_id)
        fetched = download_file(self.http, url, target, _verify_obj, cancel=cancel)
        report(progress, done=1, total=1, message=f"{target.name} {fetched.status}")
        return fetched.path

    def structure_mesh(self, structure_id: int, *, progress: ProgressCallback | None = None,
                       cancel: CancelToken | None = None) -> Mesh:
        """Allen's mesh of a structure (read as CCF µm ``[AP, DV, ML]`` [U], see
        ``io/obj_mesh.py``), downloaded once; ``metadata['source']`` is the URL."""
        from ..io.obj_mesh import read_obj

        path = self.download_structure_mesh(structure_id, progress=progress, cancel=cancel)
        mesh = read_obj(path)
        mesh.metadata.update(structure_id=int(structure_id), cache_file=str(path),
                             source=self.structure_mesh_url(structure_id))
        return mesh
