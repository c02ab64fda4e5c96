"""Sample data (File > Open Sample > napari-allen), real Allen files bundled with the package.

- ``nrp1``: Nrp1 ISH expression energy (SectionDataSet 74272479, coronal, 200 µm) and the 200 µm
  grid annotation it is aligned with (Labels coloured by the ontology).
- ``ccf_reference_25``: the CCFv3 2017 annotation at 25 µm (Labels in atlas colours, acronym
  and name on hover) and the brain outline (a smooth Surface from marching cubes, cached on
  disk after the first open). Works offline.
- ``connectivity_158375425``: projection density and injection density (100 µm) of connectivity
  experiment 158375425 (wild type, injection in VPM).

Data: Allen Mouse Brain Atlas / Allen Mouse Brain Connectivity Atlas, © Allen Institute for
Brain Science, available from brain-map.org (Lein et al. 2007; Oh et al. 2014).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from importlib import resources

import numpy as np

from .io.volume import GridVolume
from .layers.volumes import LayerDataTuple, image_layer, labels_layer

_LOCK = threading.Lock()  # one builder per sample, once


def _data(*parts: str):
    return resources.files("napari_allen").joinpath("data", *parts)


def _bundled(*parts: str, **metadata) -> list[GridVolume]:
    """The grids of a bundled file, ``metadata`` added to each grid's. Read by the layer
    builders below, which run once per process (package data never change, and opening a
    sample runs on napari's main thread); every open gets copies of their layers."""
    from .io.gridzip import read_grid_zip
    from .io.nrrd import read_nrrd

    path = _data(*parts)
    vols = read_grid_zip(path) if parts[-1].endswith(".zip") else [read_nrrd(path)]
    return [dataclasses.replace(vol, metadata={**vol.metadata, **metadata}) for vol in vols]


def _fresh(layers: tuple[LayerDataTuple, ...]) -> list[LayerDataTuple]:
    """New copies of cached layer tuples: napari may edit a layer's data (painting labels),
    metadata, features and colormap (its selected label) in place."""
    out = []
    for data, kwargs, layer_type in layers:
        fresh = {}
        for key, value in kwargs.items():
            if key == "colormap" and not isinstance(value, str):
                from .layers.atlas_colormap import fresh_copy

                value = fresh_copy(value)
            elif hasattr(value, "copy") and not isinstance(value, (str, tuple)):
                value = value.copy()  # metadata dicts, features tables
            fresh[key] = value
        out.append((np.array(data), fresh, layer_type))
    return out


@functools.cache
def _nrp1_layers() -> tuple[LayerDataTuple, ...]:
    from .atlas.annotation import grid_annotation

    (energy,) = _bundled("ish", "Nrp1_P56_coronal_74272479_200um.zip")
    return (image_layer(energy),
            labels_layer(grid_annotation(), name="grid annotation (200 µm)", visible=True))


def nrp1_expression() -> list[LayerDataTuple]:
    """[Nrp1 energy Image, 200 µm grid annotation Labels], both [AP, DV, ML] at 200 µm.
    Built once per process (conversion, contrast limits, labels); each open gets copies."""
    with _LOCK:
        layers = _nrp1_layers()
    return _fresh(layers)


@functools.cache
def _connectivity_layers() -> tuple[LayerDataTuple, ...]:
    folder = ("connectivity", "158375425")
    meta = {"experiment_id": 158375425, "injection_structure": "VPM"}
    (projection,) = _bundled(*folder, "projection_density_100.nrrd", **meta)
    (injection,) = _bundled(*folder, "injection_density_100.nrrd", **meta)
    # A distinct colour so the injection site stands out over the projections (additive).
    return (image_layer(projection), image_layer(injection, colormap="green"))


def connectivity_158375425() -> list[LayerDataTuple]:
    """[projection density Image, injection density Image] of experiment 158375425, 100 µm.
    Built once per process; each open gets copies."""
    with _LOCK:
        layers = _connectivity_layers()
    return _fresh(layers)


def ccf_reference_25() -> list[LayerDataTuple]:
    """[25 µm CCFv3 annotation Labels, brain outline Surface], CCF µm [AP, DV, ML]."""
    from .layers.meshes import ccf_reference_layers

    return ccf_reference_layers()
