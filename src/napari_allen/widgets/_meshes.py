"""One-click structure meshes for the connectivity and spatial-search docks.

:func:`mesh_task` wraps "which structures?" (a function run in the worker, e.g. the injection
and strongest targets of the selected experiments) into a
:class:`~napari_allen.widgets._tasks.TaskRunner` task that emits one Surface LayerDataTuple
per structure, computed from the bundled annotation (offline, cached).
"""

from __future__ import annotations

from collections.abc import Callable

from napari_allen.atlas.ontology import Ontology


def mesh_task(pick: Callable[..., dict[str, list[int]]], *, opacity: float = 0.35):
    """A task ``fn(*, progress, cancel, emit)``: ``pick(cancel=...)`` returns
    ``{"injection": ids, "targets": ids}``; every structure's mesh is emitted as a layer
    tuple (injection structures more opaque). Returns the acronyms shown."""

    def task(*, progress, cancel, emit):
        from napari_allen.layers.meshes import structure_mesh_layer
        from napari_allen.workflows.structure_meshes import get_structure_mesh

        onto = Ontology.default()
        chosen = pick(cancel=cancel)
        shown: list[str] = []
        for role in ("injection", "targets"):
            for sid in chosen.get(role, []):
                mesh = get_structure_mesh(sid, source="computed", ontology=onto,
                                          progress=progress, cancel=cancel)
                layer = structure_mesh_layer(
                    mesh, sid, ontology=onto,
                    opacity=min(1.0, 2 * opacity) if role == "injection" else opacity)
                layer[1]["metadata"]["role"] = role
                emit(layer)
                shown.append(onto.acronym(sid))
        if not shown:
            raise ValueError("no injection or target structure found to mesh")
        return shown

    return task
