"""One-click structure meshes for the connectivity and spatial-search docks.

:func:`mesh_task` wraps "which structures?" (a function run in the worker, e.g. the injection
and strongest targets of the selected experiments) into a
:class:`~napari_allen.widgets._tasks.TaskRunner` task that emits one Surface LayerDataTuple
per structure, computed from the bundled annotation (offline, cached). Each Surface layer is
built in the worker; the worker then waits until the dock has added it (napari's insert
steps are not slowed by meshing the next structure in the same interpreter).
"""

from __future__ import annotations

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
        from napari_allen.workflows.structure_meshes import get_structure_mesh

        onto = Ontology.default()
        chosen = pick(cancel=cancel)
        todo = [(role, sid) for role in ("injection", "targets") for sid in chosen.get(role, [])]
        shown: list[str] = []
        for k, (role, sid) in enumerate(todo):
            within = _counting_structures(progress, k, len(todo), onto.acronym(sid))
            within(Progress(message="meshing"))
            mesh = get_structure_mesh(sid, source="computed", ontology=onto,
                                      progress=within, cancel=cancel)
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


def _counting_structures(progress: Callable[[Progress], None], k: int, n: int,
                         acronym: str) -> Callable[[Progress], None]:
    """The progress callback for structure ``k`` of ``n``: the bar counts structures; the
    structure's own steps (the first time: indexing the annotation) show in the text."""

    def within(snap: Progress) -> None:
        detail = f" {snap.done}/{snap.total}" if snap.total else ""
        progress(Progress(done=k, total=n, message=f"{acronym}: {snap.message}{detail}"))

    return within
