"""One-click structure meshes for the connectivity and spatial-search docks.

:func:`mesh_task` wraps "which structures?" (a function run in the worker, e.g. the injection
and strongest targets of the selected experiments) into a
:class:`~napari_allen.widgets._tasks.TaskRunner` task that emits one Surface LayerDataTuple
per structure, computed from the bundled annotation (offline, cached) by one child process
(``workflows.structure_meshes.iter_structure_meshes``: the meshing never holds napari's GIL).
Each Surface layer is built in the worker; the worker then waits until the dock has added
it, while the child meshes the next structure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from napari_allen.atlas.ontology import Ontology
from napari_allen.progress import Progress


def mesh_task(pick: Callable[..., dict[str, list[int]]], *, opacity: float = 0.35):
    """A task ``fn(*, progress, cancel, emit)``: ``pick(cancel=...)`` returns
    ``{"injection": ids, "targets": ids}``; every structure's mesh is emitted as a ready
    Surface layer (injection structures more opaque; ``emit(..., wait=True)``: add it with
    ``widgets/_view.add_in_turns``). Returns the acronyms shown."""

    def task(*, progress, cancel, emit):
        from napari_allen.layers.meshes import structure_mesh_layer
        from napari_allen.layers.prebuilt import build_layer
        from napari_allen.workflows.structure_meshes import iter_structure_meshes

        onto = Ontology.default()
        chosen = pick(cancel=cancel)
        todo = [(role, sid) for role in ("injection", "targets") for sid in chosen.get(role, [])]
        shown: list[str] = []
        # Built by one child process (never holding napari's GIL) while the previous
        # structure's layer is being added; the bar counts structures.
        meshes = iter_structure_meshes([sid for _, sid in todo], source="computed",
                                       ontology=onto, progress=progress, cancel=cancel)
        with contextlib.closing(meshes):  # leaving early (an error) stops the child
            for (role, _), (sid, mesh) in zip(todo, meshes, strict=True):
                layer = structure_mesh_layer(
                    mesh, sid, ontology=onto,
                    opacity=min(1.0, 2 * opacity) if role == "injection" else opacity)
                layer[1]["metadata"]["role"] = role
                emit(build_layer(layer), wait=True)
                shown.append(onto.acronym(sid))
        progress(Progress(done=len(todo), total=len(todo), message="meshes added"))
        if not shown:
            raise ValueError("no injection or target structure found to mesh")
        return shown

    return task
