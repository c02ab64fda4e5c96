"""Sample data: real bundled files, correctly oriented and aligned (checked on real data)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen._sample_data import connectivity_158375425, nrp1_expression
from napari_allen.atlas.annotation import division_map
from napari_allen.atlas.ontology import Ontology
from napari_allen.layers.volumes import structure_ids_of

MAJOR_DIVISIONS = ["Isocortex", "OLF", "HPF", "CTXsp", "STR", "PAL", "TH", "HY", "MB", "P",
                   "MY", "CB"]


@pytest.fixture(scope="module")
def nrp1():
    (energy, ekw, etype), (labels, lkw, ltype) = nrp1_expression()
    assert (etype, ltype) == ("image", "labels")
    energy = np.where(np.isnan(energy), -1, energy)  # back to Allen's raw values
    ids = structure_ids_of(labels, lkw["metadata"])
    return energy, ekw, ids, lkw


def _division_means(energy, ids):
    onto = Ontology.default()
    divisions = division_map(ids, MAJOR_DIVISIONS)
    return {name: float(energy[(divisions == onto.id_of(name)) & (energy != -1)].mean())
            for name in MAJOR_DIVISIONS}


def test_nrp1_highest_in_hippocampal_formation(nrp1):
    energy, _, ids, _ = nrp1
    means = _division_means(energy, ids)
    others = [v for k, v in means.items() if k != "HPF"]
    assert max(means, key=means.get) == "HPF"
    assert means["HPF"] > 4 * max(others)  # 3.49 vs 0.63 (TH)


def test_orientation_check_can_fail(nrp1):
    """Negative control: with the annotation mirrored along AP, HPF is no longer highest."""
    energy, _, ids, _ = nrp1
    means = _division_means(energy, np.flip(ids, axis=0))
    assert max(means, key=means.get) != "HPF"


def test_no_data_voxels_lie_outside_the_labelled_brain(nrp1):
    energy, _, ids, _ = nrp1
    missing = energy == -1
    assert int(missing.sum()) == 54_982
    assert int((missing & (ids > 0)).sum()) == 2_124  # 3.9 %: the grids line up
    assert int((missing & (np.flip(ids, axis=0) > 0)).sum()) > 4 * 2_124


def test_nrp1_layers_share_the_grid(nrp1):
    _, ekw, ids, lkw = nrp1
    assert ekw["scale"] == lkw["scale"] == (200.0, 200.0, 200.0)
    assert ekw["axis_labels"] == lkw["axis_labels"] == ("AP", "DV", "ML")
    assert ids.shape == (67, 41, 58)
    # Olfactory bulb (anterior, AP ~ 1.1 mm) near index 0, cerebellum posterior.
    onto = Ontology.default()
    ob, cb = onto.id_of("OLF"), onto.id_of("CB")
    div = division_map(ids, ["OLF", "CB"])
    ap_ob = np.nonzero(div == ob)[0].mean()
    ap_cb = np.nonzero(div == cb)[0].mean()
    assert ap_ob < ap_cb


def test_connectivity_sample():
    (pd, pkw, ptype), (inj, ikw, itype) = connectivity_158375425()
    assert (ptype, itype) == ("image", "image")
    assert pd.shape == inj.shape == (132, 80, 114)
    assert pkw["scale"] == ikw["scale"] == (100.0, 100.0, 100.0)
    assert pkw["metadata"]["experiment_id"] == ikw["metadata"]["experiment_id"] == 158375425
    assert pkw["metadata"]["kind"] == "projection_density"
    assert ikw["metadata"]["kind"] == "injection_density"
    assert pkw["name"] != ikw["name"]
    # The injection lies in the right hemisphere (ML > 5,700 µm by Allen's convention).
    ml = np.nonzero(inj > 0.5)[2].mean() * 100
    assert ml > 5700


def test_hover_status_shows_structure_acronym_and_name():
    """In a (Qt-free) ViewerModel the Labels status line names the structure under the cursor."""
    from napari.components import ViewerModel
    from napari.layers import Layer

    labels_tuple = nrp1_expression()[1]
    viewer = ViewerModel()
    layer = viewer.add_layer(Layer.create(*labels_tuple))
    onto = Ontology.default()
    ids = structure_ids_of(labels_tuple[0], labels_tuple[1]["metadata"])
    voxel = np.argwhere(ids == onto.id_of("CA1sp"))[0]
    position = tuple(float(v) for v in voxel * 200)
    viewer.dims.set_point(0, position[0])
    status = layer.get_status(position, world=True)["value"]
    assert "acronym: CA1sp" in status and onto.name(onto.id_of("CA1sp")) in status
