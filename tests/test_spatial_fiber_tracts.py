"""Fibre-tract masks: the real CCF annotation, index scaling between grids, legacy volumes."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from napari_allen.atlas.fiber_tracts import FiberTracts, fiber_tract_ids, grid_shape_at
from napari_allen.atlas.ontology import Ontology
from napari_allen.io.volume import GridVolume

FIBER_LEAF = 776  # corpus callosum, a descendant of 1009


@pytest.fixture(scope="module")
def real_tracts() -> FiberTracts:
    return FiberTracts.default()


@pytest.fixture(scope="module")
def real_labels_100(real_tracts) -> np.ndarray:
    return real_tracts.sampled_labels(100)


def test_fiber_ids_match_flat_ontology_csv():
    # Independent source: the flat 2017 structure tree (its structure_id_path strings).
    csv = resources.files("allen_local_api") / "data" / "ontology" / "structure_tree_safe_2017.csv"
    with csv.open("rb") as fh:
        tree = pd.read_csv(fh)
    expected = set(tree.loc[tree["structure_id_path"].str.contains("/1009/"), "id"].astype(int))
    assert set(fiber_tract_ids().tolist()) == expected
    assert 1009 in expected and FIBER_LEAF in expected


def test_real_mask_covers_corpus_callosum_not_cortex(real_tracts, real_labels_100):
    onto = Ontology.default()
    mask = real_tracts.mask(100)
    assert mask.shape == (132, 80, 114)
    cc = np.isin(real_labels_100, onto.descendants(onto.id_of("cc")))
    cortex = np.isin(real_labels_100, onto.descendants(onto.id_of("Isocortex")))
    assert cc.sum() > 500  # the corpus callosum is really there at 100 µm
    assert mask[cc].all()
    assert not mask[cortex].any()
    assert cortex.sum() > 50_000
    brain = real_labels_100 > 0
    # White matter is a few percent of the brain, not nothing and not everything.
    assert 0.02 < mask.sum() / brain.sum() < 0.15


def test_real_mask_agrees_with_independent_membership(real_tracts, real_labels_100):
    csv = resources.files("allen_local_api") / "data" / "ontology" / "structure_tree_safe_2017.csv"
    with csv.open("rb") as fh:
        tree = pd.read_csv(fh)
    ids = tree.loc[tree["structure_id_path"].str.contains("/1009/"), "id"].to_numpy()
    np.testing.assert_array_equal(real_tracts.mask(100), np.isin(real_labels_100, ids))


def test_real_contains_um_at_midline_corpus_callosum(real_tracts, real_labels_100):
    onto = Ontology.default()
    # Walk down the midline ML column at mid-AP: the first fibre voxel below cortex is cc.
    cc_ids = onto.descendants(onto.id_of("cc"))
    column = real_labels_100[55, :, 57]
    hits = np.flatnonzero(np.isin(column, cc_ids))
    assert hits.size, "the corpus callosum crosses the midline at AP 5.5 mm"
    point = np.array([55, hits[0], 57]) * 100.0
    assert real_tracts.contains_um(point)[0]
    assert not real_tracts.contains_um(point - [0, 1000, 0])[0]  # 1 mm above: cortex


def test_index_scaling_100_to_25_and_50():
    labels = np.zeros((528, 320, 456), dtype=np.uint32)
    labels[40, 20, 8] = FIBER_LEAF
    labels[41, 20, 8] = 385  # VISp, grey matter
    tracts = FiberTracts.from_annotation(labels, 25)
    np.testing.assert_array_equal(tracts.native_index([[10, 5, 2]], 100), [[40, 20, 8]])
    assert tracts.contains([[10, 5, 2], [10, 5, 3]], 100).tolist() == [True, False]
    assert tracts.contains([[20, 10, 4]], 50).tolist() == [True]
    # Voxel 41 is 1025 µm, nearest 100 µm voxel centre is 10 (1000 µm), sampled from 40 only.
    assert tracts.labels_at([[10, 5, 2]], 100).tolist() == [FIBER_LEAF]
    mask = tracts.mask(100)
    assert mask.shape == (132, 80, 114)
    assert np.argwhere(mask).tolist() == [[10, 5, 2]]


def test_outside_volume_is_not_fibre_and_reported():
    tracts = FiberTracts.from_annotation(np.full((8, 8, 8), FIBER_LEAF, np.uint32), 25)
    assert tracts.contains([[1, 1, 1], [2, 0, 0], [-1, 0, 0]], 100).tolist() == [
        True, False, False]
    assert tracts.in_bounds([[1, 1, 1], [2, 0, 0], [-1, 0, 0]], 100).tolist() == [
        True, False, False]


def test_legacy_fiber_volume_nonzero_is_tract():
    labels = np.zeros((12, 8, 8), dtype=np.uint32)
    labels[4, 4, 4] = 123456  # any id: the legacy volume holds only tracts
    vol = GridVolume(labels, 25, kind="fiber_annotation", source="annotationFiber.mhd")
    tracts = FiberTracts.from_volume(vol)
    assert tracts.is_legacy
    assert tracts.contains([[1, 1, 1], [1, 1, 0]], 100).tolist() == [True, False]
    grey = FiberTracts.from_volume(GridVolume(labels, 25, kind="annotation"))
    assert not grey.is_legacy and not grey.mask().any()  # 123456 is no ontology tract


def test_tract_labels_keep_ids_only_inside_tracts():
    labels = np.array([[[FIBER_LEAF, 385], [1009, 0]]], dtype=np.uint32)
    out = FiberTracts.from_annotation(labels, 25).tract_labels()
    assert out.dtype == np.uint32
    assert out.tolist() == [[[FIBER_LEAF, 0], [1009, 0]]]


def test_grid_shape_at_and_bad_input():
    assert grid_shape_at((528, 320, 456), 25, 100) == (132, 80, 114)
    assert grid_shape_at((528, 320, 456), 25, 50) == (264, 160, 228)
    assert grid_shape_at((9, 9, 9), 25, 100) == (3, 3, 3)
    with pytest.raises(ValueError, match="3-D"):
        FiberTracts(np.zeros((4, 4)), 25)
    with pytest.raises(ValueError, match="resolution"):
        FiberTracts.from_annotation(np.zeros((4, 4, 4)))


def test_dask_and_fortran_labels_give_the_same_mask():
    import dask.array as da

    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 385, FIBER_LEAF, 1009], dtype=np.uint32), (40, 24, 20))
    expected = FiberTracts.from_annotation(labels, 25).mask(100)
    fortran = FiberTracts.from_annotation(np.asfortranarray(labels), 25)
    lazy = FiberTracts.from_annotation(da.from_array(labels, chunks=(8, 8, 8)), 25)
    np.testing.assert_array_equal(fortran.mask(100), expected)
    np.testing.assert_array_equal(lazy.mask(100), expected)
    np.testing.assert_array_equal(lazy.contains([[1, 1, 1], [3, 2, 2]], 100),
                                  expected[[1, 3], [1, 2], [1, 2]])
    assert expected.shape == (10, 6, 5)
    np.testing.assert_array_equal(expected, np.isin(labels[::4, ::4, ::4], [FIBER_LEAF, 1009]))


def test_from_path_legacy_annotation_fiber_and_ccf_annotation(tmp_path):
    from napari_allen.errors import AllenFormatError
    from napari_allen.io.export import to_metaimage

    labels = np.zeros((16, 8, 8), dtype=np.uint32)
    labels[8, 4, 4] = 99999  # legacy file: any non-zero id is a tract
    labels[4, 4, 4] = FIBER_LEAF
    to_metaimage(GridVolume(labels, 25, kind="fiber_annotation"), tmp_path / "annotationFiber.mhd")
    legacy = FiberTracts.from_path(tmp_path / "annotationFiber.mhd")
    assert legacy.is_legacy and legacy.resolution == 25
    assert legacy.contains([[2, 1, 1], [1, 1, 1], [0, 0, 0]], 100).tolist() == [True, True, False]
    to_metaimage(GridVolume(labels, 25, kind="annotation"), tmp_path / "annotation.mhd")
    ccf = FiberTracts.from_path(tmp_path / "annotation.mhd")
    assert not ccf.is_legacy
    assert ccf.contains([[2, 1, 1], [1, 1, 1]], 100).tolist() == [False, True]
    to_metaimage(GridVolume(labels.astype(np.float32), 25, kind="unknown"),
                 tmp_path / "floats.mhd")
    with pytest.raises(AllenFormatError, match="floats.mhd.*integers"):
        FiberTracts.from_path(tmp_path / "floats.mhd")
