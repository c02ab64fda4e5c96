"""Surface LayerDataTuples for CCF meshes: the brain outline and structure meshes.

Vertices are CCF µm ``[AP, DV, ML]`` with scale 1, so surfaces overlay every grid layer
(voxel ``i`` at ``i*res`` µm). In 2-D, napari draws a surface's intersection with the slice:
the outline becomes the brain contour of each coronal section. No Qt here.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from napari_allen.atlas.ontology import ROOT_ID, Ontology
from napari_allen.io.obj_mesh import Mesh
from napari_allen.space import AXES, UNITS

LayerDataTuple = tuple[Any, dict, str]

OUTLINE_NAME = "brain outline (CCFv3)"
#: Outline colour: light grey, like brainrender's root.
OUTLINE_RGB = (0.85, 0.85, 0.85)


def mesh_layer_name(acronym: str) -> str:
    """``"VPM mesh"``: one name per structure, so re-adding a structure replaces its layer."""
    return f"{acronym} mesh"


def surface_layer(mesh: Mesh, *, name: str, rgb: tuple[float, float, float],
                  opacity: float = 0.4, metadata: dict | None = None,
                  **overrides) -> LayerDataTuple:
    """A single-colour, translucent, smooth-shaded Surface of ``mesh`` (``rgb`` in 0..1)."""
    from napari.utils.colormaps import Colormap

    rgba = [float(c) for c in rgb] + [1.0]
    meta = {"kind": "mesh", "color_rgb": tuple(float(c) for c in rgb),
            "n_vertices": mesh.n_vertices, "n_faces": mesh.n_faces, "units": "um",
            "axes": AXES, **mesh.metadata, **(metadata or {})}
    kwargs: dict = {
        "name": name,
        # A two-stop constant colormap: every vertex value (1) gets the atlas colour.
        "colormap": Colormap([rgba, rgba], name=f"atlas {name}"),
        "contrast_limits": (0.0, 1.0),
        "opacity": float(opacity),
        "shading": "smooth",
        # No depth test: translucent closed surfaces otherwise speckle where their front and
        # back faces fight over depth; later layers draw over earlier ones.
        "blending": "translucent_no_depth",
        "normals": {"vertex": {"visible": False}},
        "units": UNITS,
        "axis_labels": AXES,
        "metadata": meta,
    }
    kwargs.update(overrides)
    values = np.ones(mesh.n_vertices, dtype=np.float32)
    return (mesh.vertices, mesh.faces, values), kwargs, "surface"


def structure_mesh_layer(mesh: Mesh, structure_id: int, *, ontology: Ontology | None = None,
                         opacity: float = 0.4) -> LayerDataTuple:
    """A structure's mesh in its atlas colour, named ``"<acronym> mesh"``."""
    onto = ontology or Ontology.default()
    sid = onto.id_of(structure_id)
    rgb = tuple(c / 255.0 for c in onto.rgb(sid))
    meta = {"structure_id": sid, "acronym": onto.acronym(sid), "structure_name": onto.name(sid)}
    return surface_layer(mesh, name=mesh_layer_name(onto.acronym(sid)), rgb=rgb,
                         opacity=opacity, metadata=meta)


def outline_layer(mesh: Mesh, *, opacity: float = 0.2) -> LayerDataTuple:
    """The whole-brain surface, faint grey (context around everything else)."""
    meta = {"structure_id": ROOT_ID, "acronym": "root", "outline": True}
    return surface_layer(mesh, name=OUTLINE_NAME, rgb=OUTLINE_RGB, opacity=opacity,
                         metadata=meta)


_OUTLINES: dict[tuple[str, str], Mesh] = {}  # (cache folder, bundled folder) -> outline
_OUTLINES_LOCK = threading.Lock()


def cached_brain_outline() -> Mesh:
    """The brain outline (:func:`napari_allen.atlas.meshes.brain_outline`), read once per
    process and cache folder: reading it checks the bundled file's SHA-256 and inflates its
    arrays (~6 ms on napari's main thread at every File > Open Sample). Each call returns
    its own arrays (napari may edit a layer's data in place)."""
    from napari_allen import config
    from napari_allen.atlas.meshes import brain_outline, bundled_meshes_dir

    key = (str(config.cache_dir()), str(bundled_meshes_dir()))
    with _OUTLINES_LOCK:
        mesh = _OUTLINES.get(key)
    if mesh is None:
        mesh = brain_outline()
        with _OUTLINES_LOCK:
            mesh = _OUTLINES.setdefault(key, mesh)
    return Mesh(mesh.vertices.copy(), mesh.faces.copy(), mesh.normals.copy(),
                dict(mesh.metadata))


def ccf_reference_layers(*, outline: bool = True, labels_opacity: float = 0.5
                         ) -> list[LayerDataTuple]:
    """The offline CCF reference: the bundled 25 µm CCFv3 annotation as Labels (atlas
    colours, acronym/name on hover), opened exactly as the reader opens that file (a
    multiscale layer over the pyramid cache, built once in the background), and the brain
    outline Surface (shipped with the package, else from the mesh cache, else built once).
    Decodes nothing on a warm cache or from the bundled meshes: fast enough for napari's main
    thread (File > Open Sample)."""
    from napari_allen.atlas.annotation import ccf_annotation_25_path
    from napari_allen.layers.grid_files import grid_file_layers

    layers = grid_file_layers(ccf_annotation_25_path(), opacity=labels_opacity)
    if outline:
        layers.append(outline_layer(cached_brain_outline()))
    return layers
