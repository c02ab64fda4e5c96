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

from importlib import resources

from .layers.volumes import LayerDataTuple, image_layer, labels_layer


def _data(*parts: str):
    return resources.files("napari_allen").joinpath("data", *parts)


def nrp1_expression() -> list[LayerDataTuple]:
    """[Nrp1 energy Image, 200 µm grid annotation Labels], both [AP, DV, ML] at 200 µm."""
    from .atlas.annotation import grid_annotation
    from .io.gridzip import read_grid_zip

    (energy,) = read_grid_zip(_data("ish", "Nrp1_P56_coronal_74272479_200um.zip"))
    return [image_layer(energy), labels_layer(grid_annotation(), name="grid annotation (200 µm)",
                                              visible=True)]


def connectivity_158375425() -> list[LayerDataTuple]:
    """[projection density Image, injection density Image] of experiment 158375425, 100 µm."""
    from .io.nrrd import read_nrrd

    folder = ("connectivity", "158375425")
    meta = {"experiment_id": 158375425, "injection_structure": "VPM"}
    projection = read_nrrd(_data(*folder, "projection_density_100.nrrd"), metadata=dict(meta))
    injection = read_nrrd(_data(*folder, "injection_density_100.nrrd"), metadata=dict(meta))
    # A distinct colour so the injection site stands out over the projections (additive).
    return [image_layer(projection), image_layer(injection, colormap="green")]


def ccf_reference_25() -> list[LayerDataTuple]:
    """[25 µm CCFv3 annotation Labels, brain outline Surface], CCF µm [AP, DV, ML]."""
    from .layers.meshes import ccf_reference_layers

    return ccf_reference_layers()
