"""Seed voxels for spatial search and injection coordinates."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from napari_allen.analysis.seeds import (
    injection_coordinates,
    seed_points_um,
    select_seeds,
    snap_to_voxel,
)
from napari_allen.atlas.fiber_tracts import FiberTracts
from napari_allen.io.volume import GridVolume


def _grid() -> np.ndarray:
    d = np.zeros((6, 5, 4), dtype=np.float32)
    d[1, 1, 1] = 0.04   # lower bound: kept
    d[1, 2, 1] = 0.3    # upper bound: kept
    d[2, 2, 2] = 0.2
    d[3, 1, 0] = 0.1
    d[4, 4, 3] = 0.5    # too dense
    d[5, 0, 0] = 0.039  # too faint
    d[0, 0, 0] = -1     # no data
    d[0, 0, 1] = np.nan
    return d


def test_range_is_inclusive_and_no_data_excluded():
    seeds = select_seeds(_grid(), 100)
    assert seeds[["ap", "dv", "ml"]].to_numpy().tolist() == [
        [1, 1, 1], [1, 2, 1], [2, 2, 2], [3, 1, 0]]  # C order, like np.argwhere in the script
    np.testing.assert_allclose(seed_points_um(seeds), seeds[["ap", "dv", "ml"]] * 100.0)
    np.testing.assert_allclose(seeds["density"], [0.04, 0.3, 0.2, 0.1], rtol=1e-6)
    assert seeds.attrs["in_range"] == 4 and seeds.attrs["capped"] == 0
    # A range reaching below zero still never selects the -1 "no data" voxels.
    assert len(select_seeds(_grid(), 100, density_range=(-2, 2))) == 6 * 5 * 4 - 2


def test_fibre_tract_voxels_are_skipped_with_index_scaling():
    ann = np.zeros((24, 20, 16), dtype=np.uint32)
    ann[8, 8, 8] = 776   # corpus callosum at 25 µm = 100 µm voxel (2, 2, 2)
    ann[4, 4, 4] = 385   # VISp under (1, 1, 1): grey matter, kept
    seeds = select_seeds(_grid(), 100, fiber_tracts=FiberTracts.from_annotation(ann, 25))
    assert [2, 2, 2] not in seeds[["ap", "dv", "ml"]].to_numpy().tolist()
    assert len(seeds) == 3 and seeds.attrs["in_fiber_tracts"] == 1


def test_seeds_outside_the_tract_volume_are_skipped():
    small = FiberTracts.from_annotation(np.zeros((8, 8, 8), np.uint32), 25)  # 2x2x2 at 100 µm
    seeds = select_seeds(_grid(), 100, fiber_tracts=small)
    assert seeds[["ap", "dv", "ml"]].to_numpy().tolist() == [[1, 1, 1]]
    assert seeds.attrs["outside_tracts_volume"] == 3


def test_cap_modes_are_deterministic():
    d = np.zeros((50, 2, 2), np.float32)
    d[:, 0, 0] = np.linspace(0.05, 0.25, 50)
    spread = select_seeds(d, 100, max_seeds=5)
    assert spread["ap"].tolist() == [0, 12, 24, 37, 49]  # covers the whole extent
    assert spread.attrs["capped"] == 45
    assert select_seeds(d, 100, max_seeds=5, sample="first")["ap"].tolist() == [0, 1, 2, 3, 4]
    densest = select_seeds(d, 100, max_seeds=3, sample="densest")
    assert densest["ap"].tolist() == [49, 48, 47]
    assert select_seeds(d, 100, max_seeds=5).equals(spread)
    assert len(select_seeds(d, 100, max_seeds=0)) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="min <= max"):
        select_seeds(_grid(), 100, density_range=(0.3, 0.04))
    with pytest.raises(ValueError, match="sample"):
        select_seeds(_grid(), 100, sample="random")
    with pytest.raises(ValueError, match="resolution"):
        select_seeds(_grid())
    with pytest.raises(ValueError, match="3-D"):
        select_seeds(np.zeros((3, 3)), 100)


def _real(name: str) -> GridVolume:
    from napari_allen.io.nrrd import read_nrrd

    path = resources.files("napari_allen") / "data" / "connectivity" / "158375425" / name
    return read_nrrd(path)


def test_real_projection_seeds_avoid_fibre_tracts():
    density = _real("projection_density_100.nrrd")
    tracts = FiberTracts.default()
    seeds = select_seeds(density, fiber_tracts=tracts)
    values = np.asarray(density.data)[tuple(seeds[["ap", "dv", "ml"]].to_numpy().T)]
    assert ((values >= 0.04) & (values <= 0.3)).all()
    assert not tracts.mask(100)[tuple(seeds[["ap", "dv", "ml"]].to_numpy().T)].any()
    a = seeds.attrs
    assert a["in_fiber_tracts"] > 0
    assert len(seeds) == a["in_range"] - a["in_fiber_tracts"] - a["outside_tracts_volume"]


def test_real_injection_coordinates_near_metadata_site():
    coords = injection_coordinates(_real("injection_density_100.nrrd"))
    assert coords.shape[1] == 3 and 20 < len(coords) < 500
    assert np.all(coords % 100 == 0)  # voxel centres of the 100 µm grid
    # Experiment 158375425's metadata injection point (µm); the site is within a millimetre.
    distance = np.linalg.norm(coords.mean(axis=0) - [7070, 4360, 7650])
    assert distance < 1000


def test_injection_threshold_and_snap():
    inj = np.zeros((4, 4, 4), np.float32)
    inj[1, 2, 3] = 0.9
    inj[2, 2, 2] = 0.5  # not above the threshold
    assert injection_coordinates(inj, 100).tolist() == [[100.0, 200.0, 300.0]]
    assert injection_coordinates(inj, 100, threshold=0.4).shape == (2, 3)
    assert snap_to_voxel([1040, 260, 5649], 100).tolist() == [1000, 300, 5600]
    assert snap_to_voxel([-200, 0, 0], 100, shape=(132, 80, 114)) is None
    assert snap_to_voxel([np.nan, 0, 0], 100) is None
