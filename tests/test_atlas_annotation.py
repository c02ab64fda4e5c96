"""Bundled annotation volumes and structure look-ups at voxels / µm points."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen.atlas.annotation import (
    ccf_annotation_25,
    division_map,
    grid_annotation,
    structure_at,
    structure_id_at,
    structure_id_at_voxel,
)
from napari_allen.atlas.ontology import Ontology


def test_grid_annotation_is_cached_uint32():
    vol = grid_annotation()
    assert vol is grid_annotation()
    assert vol.kind == "annotation" and vol.dtype == np.uint32
    assert vol.shape == (67, 41, 58) and vol.resolution == 200.0
    ids = np.unique(vol.data)
    onto = Ontology.default()
    assert all(int(i) in onto for i in ids[1:])  # all 2017-ontology ids


def test_injection_centroid_is_in_vpm():
    """allen-data README: 158375425's injection centroid (7111, 3977, 7620) µm lies in VPM."""
    assert structure_at((7111, 3977, 7620))["acronym"] == "VPM"
    vol = ccf_annotation_25()
    assert vol is ccf_annotation_25() and isinstance(vol.data, np.memmap)
    assert structure_id_at(vol, (7111, 3977, 7620)) == 733


def test_midline_and_hemispheres_symmetric():
    """The CCF is left/right symmetric about ML 5,700 µm: mirrored points share structures."""
    vol = ccf_annotation_25()
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(2000, 11000, 200), rng.uniform(1000, 6000, 200),
                           rng.uniform(500, 5500, 200)])
    mirrored = pts.copy()
    mirrored[:, 2] = 2 * 5687.5 - pts[:, 2]  # index i mirrors 455 - i at 25 µm
    left, right = structure_id_at(vol, pts), structure_id_at(vol, mirrored)
    assert (left == right).mean() > 0.9


def test_outside_points_and_voxels():
    vol = grid_annotation()
    assert structure_id_at_voxel(vol, (0, 0, 0)) == 0
    assert structure_id_at_voxel(vol, (-1, 5, 5)) == 0
    assert structure_id_at_voxel(vol, (67, 5, 5)) == 0
    out = structure_id_at(vol, [[-500, 0, 0], [1e6, 0, 0]])
    assert list(out) == [0, 0]
    assert structure_at((0, 0, 0), resolution=200) == {"id": 0, "acronym": "",
                                                        "name": "outside the brain"}
    with pytest.raises(ValueError, match="no bundled annotation at 50"):
        structure_at((0, 0, 0), resolution=50)


def test_grid_and_ccf_agree_on_major_divisions():
    """The 200 µm grid annotation and the 25 µm CCF mostly agree at grid voxel centres."""
    grid = grid_annotation()
    ccf = ccf_annotation_25()
    idx = np.argwhere(np.asarray(grid.data) > 0)[::40]
    um = idx * 200.0
    inside = um[:, 0] < 13200  # the 200 µm grid spans 13.4 mm AP, CCFv3 13.2 mm
    divisions = ["Isocortex", "HPF", "STR", "TH", "HY", "MB", "P", "MY", "CB", "OLF"]
    a = division_map(np.asarray(grid.data)[tuple(idx[inside].T)], divisions)
    b = division_map(structure_id_at(ccf, um[inside]), divisions)
    labelled = (a > 0) & (b > 0)
    assert labelled.sum() > 500
    assert (a[labelled] == b[labelled]).mean() > 0.8


def test_division_map():
    onto = Ontology.default()
    ids = np.array([[onto.id_of("CA1sp"), onto.id_of("VPM")], [0, 999999]])
    out = division_map(ids, ["HPF", "TH"])
    assert out.tolist() == [[onto.id_of("HPF"), onto.id_of("TH")], [0, 0]]
