"""``napari-allen structure-mesh``: a structure's surface as an Allen-style ``.obj`` file
(AllenSDK's ``ReferenceSpaceCache.get_structure_mesh`` counterpart).

By default the mesh is computed from the bundled 25 µm CCFv3 annotation (offline; marching
cubes of the structure and all its descendants, smoothed, decimated, cached); ``--source
allen`` downloads Allen's ``structure_meshes/<id>.obj`` from the API's file server instead.
Vertices are CCF µm ``[AP, DV, ML]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from napari_allen.commands._common import CLIENT_OPTIONS, client_from_args


def register(subparsers) -> None:
    """Add ``structure-mesh`` to the ``napari-allen`` command line."""
    p = subparsers.add_parser(
        "structure-mesh", parents=[CLIENT_OPTIONS],
        help="write structure meshes (.obj, CCF µm) computed or from Allen",
        description=__doc__.split("\n\n", 1)[1])
    p.add_argument("structures", nargs="+", metavar="STRUCTURE",
                   help="acronyms or ids, e.g. VPM CP 997 (root = brain outline)")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    p.add_argument("--source", choices=("computed", "allen", "auto"), default="computed",
                   help="computed from the bundled annotation (default), Allen's .obj files, "
                        "or Allen's with the computed mesh as fallback")
    p.set_defaults(func=structure_mesh_command)


def structure_mesh_command(args: argparse.Namespace) -> int:
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.io.obj_mesh import write_obj
    from napari_allen.workflows.structure_meshes import get_structure_mesh

    onto = Ontology.default()
    try:
        ids = onto.ids_of(args.structures)
    except KeyError as exc:
        print(f"napari-allen: error: {exc.args[0]}", file=sys.stderr)
        return 2
    client = client_from_args(args) if args.source != "computed" else None
    for sid in ids:
        t0 = time.perf_counter()
        mesh = get_structure_mesh(sid, client=client, source=args.source, ontology=onto,
                                  cache_dir=args.cache_dir)
        path = write_obj(args.out / f"{sid}.obj", mesh,
                         comment=f"{onto.acronym(sid)} ({onto.name(sid)}), CCF µm [AP, DV, ML]; "
                                 f"{mesh.metadata.get('source', '')}")
        note = f" ({mesh.metadata['fallback']})" if mesh.metadata.get("fallback") else ""
        print(f"{path}\t{onto.acronym(sid)}\t{mesh.n_vertices} vertices\t{mesh.n_faces} faces\t"
              f"{time.perf_counter() - t0:.2f} s{note}")
    if client is not None:
        client.close()
    return 0
