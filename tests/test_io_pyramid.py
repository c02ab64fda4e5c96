"""The chunked multiscale cache (io/pyramid.py) and the multiscale layers over it."""

from __future__ import annotations

import numpy as np
import pytest

from grid_writers import write_mhd
from napari_allen.io import pyramid, read_volumes
from napari_allen.io.pyramid import (
    CHUNK,
    build_pyramid,
    level_shapes,
    open_pyramid,
    pyramid_path,
    start_pyramid_job,
)
from napari_allen.io.volume import GridVolume
from napari_allen.progress import Cancelled, CancelToken

SHAPE = (300, 70, 135)  # odd ML size, > 256 on AP: three levels


@pytest.fixture
def labels(tmp_path):
    rng = np.random.default_rng(1)
    # Real structure ids up to 614,454,xxx: uint32 values must survive exactly.
    ids = np.array([0, 733, 385, 614454277, 1009], dtype=np.uint32)
    data = ids[rng.integers(0, len(ids), SHAPE)]
    data[0, 0, 0], data[1, 0, 0], data[0, 1, 0], data[0, 0, 1] = 733, 385, 614454277, 1009
    path = write_mhd(tmp_path, "annotation_25", data, "MET_UINT")
    (vol,) = read_volumes(path)
    return vol, data


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.random(SHAPE, dtype=np.float32)
    data[:, :, :10] = -1  # no data
    path = write_mhd(tmp_path, "projection_density_25", data, "MET_FLOAT")
    (vol,) = read_volumes(path)
    return vol, data


def test_level_shapes_and_scales(labels, tmp_path):
    vol, _ = labels
    assert level_shapes(SHAPE) == [(300, 70, 135), (150, 35, 68)]
    assert level_shapes((1320, 800, 1140))[-1] == (165, 100, 143)
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    assert pyr.scales_um == [25.0, 50.0]
    ome = __import__("zarr").open_group(str(pyr.store), mode="r").attrs["ome"]
    datasets = ome["multiscales"][0]["datasets"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in datasets]
    assert scales == [[25.0] * 3, [50.0] * 3]
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["AP", "DV", "ML"]


def test_labels_exact_values_and_orientation(labels, tmp_path):
    vol, data = labels
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    level0, level1 = pyr.levels
    assert level0.dtype == np.uint32
    np.testing.assert_array_equal(level0[...], data)
    # Orientation: the marked voxels are where they were written ([AP, DV, ML]).
    assert level0[1, 0, 0] == 385 and level0[0, 1, 0] == 614454277 and level0[0, 0, 1] == 1009
    # Coarser levels pick voxels (nearest), never blend ids.
    np.testing.assert_array_equal(level1[...], data[::2, ::2, ::2])
    assert set(np.unique(level1[...])) <= set(np.unique(data))
    # Planes along every axis.
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = 17
        np.testing.assert_array_equal(level0[tuple(index)], data[tuple(index)])


def test_image_values_exact_and_contrast_stats(image, tmp_path):
    vol, data = image
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    np.testing.assert_array_equal(pyr.levels[0][...], data)
    np.testing.assert_array_equal(pyr.levels[1][...], data[::2, ::2, ::2])
    stats = pyr.attrs["stats"]
    assert stats["min"] >= 0 and stats["max"] <= 1  # -1 (no data) is left out


@pytest.mark.parametrize("slabs", [1, 2])  # 1: resumes inside a coarse level's chunk row
def test_cancel_leaves_a_partial_store_that_resumes(labels, tmp_path, slabs):
    vol, data = labels
    target = tmp_path / "p.zarr"
    token = CancelToken()
    seen: list[int] = []

    def progress(p) -> None:
        seen.append(p.done)
        if p.done >= slabs * CHUNK:
            token.cancel()

    with pytest.raises(Cancelled):
        build_pyramid(vol, target, progress=progress, cancel=token)
    assert not target.exists() and open_pyramid(target) is None
    part = target.with_name(target.name + ".part")
    assert part.exists() and open_pyramid(part) is None  # never trusted while partial
    resumed: list[int] = []
    pyr = build_pyramid(vol, target, progress=lambda p: resumed.append(p.done))
    assert resumed[0] == min((slabs + 1) * CHUNK, SHAPE[2])  # continued after those written
    np.testing.assert_array_equal(pyr.levels[0][...], data)
    np.testing.assert_array_equal(pyr.levels[1][...], data[::2, ::2, ::2])
    assert not part.exists()


def test_partial_store_of_another_source_is_not_resumed(labels, image, tmp_path):
    vol, data = labels
    other, _ = image
    target = tmp_path / "p.zarr"
    token = CancelToken()

    def progress(p) -> None:
        token.cancel()

    with pytest.raises(Cancelled):
        build_pyramid(other, target, progress=progress, cancel=token)
    done: list[int] = []
    pyr = build_pyramid(vol, target, progress=lambda p: done.append(p.done))
    assert done[0] == CHUNK  # started over
    np.testing.assert_array_equal(pyr.levels[0][...], data)


def test_incomplete_store_is_rejected(labels, tmp_path):
    import zarr

    vol, _ = labels
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    group = zarr.open_group(str(pyr.store), mode="r+")
    attrs = dict(group.attrs["napari_allen"])
    attrs["complete"] = False
    group.attrs["napari_allen"] = attrs
    assert open_pyramid(pyr.store) is None


def test_background_job_and_multiscale_labels(labels):
    from napari_allen.layers.multiscale import MULTISCALE_VOXELS, pyramid_layer

    vol, data = labels
    job = start_pyramid_job(vol.source, lambda **kw: read_volumes(vol.source, **kw)[0])
    assert job.done.wait(60) and job.error is None
    assert job.target == pyramid_path(vol.source)
    layer_data, kwargs, layer_type = pyramid_layer(job.target)
    assert layer_type == "labels" and kwargs["multiscale"] and len(layer_data) == 2
    assert kwargs["scale"] == (25.0, 25.0, 25.0)
    compact = np.asarray(layer_data[0][0, 0])  # an AP/DV line, compact uint16 values
    ids = kwargs["metadata"]["structure_ids"]
    expected = data[0, 0]
    got = np.where(compact == 0, 0, np.asarray(ids)[np.maximum(compact.astype(int) - 1, 0)])
    np.testing.assert_array_equal(got, expected)
    row = kwargs["features"].iloc[int(layer_data[0][0, 0, 0])]
    assert row["acronym"] == "VPM"
    assert int(np.prod(SHAPE)) < MULTISCALE_VOXELS  # small grids keep the plain reader path


def test_reader_returns_multiscale_for_large_grids_at_once(tmp_path, monkeypatch):
    """A grid above the threshold opens at once (converting in the background) and reads
    exact values once converted."""
    from napari_allen import _reader
    from napari_allen.io import pyramid
    from napari_allen.layers import multiscale

    monkeypatch.setattr(multiscale, "MULTISCALE_VOXELS", 1000)
    data = np.arange(np.prod((40, 30, 70)), dtype=np.float32).reshape((40, 30, 70))
    path = write_mhd(tmp_path, "projection_density_100", data, "MET_FLOAT", res=100)
    (layer,) = _reader.get_reader(str(path))(str(path))
    levels, kwargs, layer_type = layer
    assert layer_type == "image" and kwargs["multiscale"]
    assert levels[0].shape == (40, 30, 70) and kwargs["scale"] == (100.0,) * 3
    job = pyramid._JOBS[pyramid.pyramid_path(path).stem]
    assert job.done.wait(60) and job.error is None
    np.testing.assert_array_equal(np.asarray(levels[0][:, 5, :]), data[:, 5, :])
    (again,) = _reader.get_reader(str(path))(str(path))
    assert again[1]["contrast_limits"][1] > 0 and again[1]["multiscale"]


def test_volume_without_source_file(tmp_path):
    data = np.arange(2 * 3 * 40, dtype=np.int16).reshape((2, 3, 40))
    pyr = build_pyramid(GridVolume(data=data, resolution=10.0), tmp_path / "p.zarr")
    np.testing.assert_array_equal(pyr.levels[0][...], data)


def test_levels_slice_lazily_like_napari(image, tmp_path, monkeypatch):
    """napari cuts the displayed dims of a whole level first, then picks the plane: only the
    plane may be read, and values stay exact (-1 -> NaN for display)."""
    from napari_allen.layers.multiscale import PyramidLevel, pyramid_layer

    vol, data = image
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    levels, kwargs, layer_type = pyramid_layer(pyr.store)
    reads: list[tuple] = []
    original = PyramidLevel.read
    monkeypatch.setattr(PyramidLevel, "read",
                        lambda self, index: reads.append(index) or original(self, index))
    tile = levels[0][:, 5:40, 20:130]
    assert tile.shape == (SHAPE[0], 35, 110) and not reads
    plane = np.asarray(tile[17])
    expected = data[17, 5:40, 20:130].astype(np.float32)
    expected[expected == -1] = np.nan
    np.testing.assert_array_equal(plane, expected)
    assert reads == [(17, slice(5, 40, 1), slice(20, 130, 1))]
    assert np.asarray(levels[1][..., 3]).shape == (150, 35)


INDICES = [
    (Ellipsis,), (0,), (-1,), (slice(None), 7), (Ellipsis, 50),
    (slice(3, 290, 3), slice(None, None, -2), -1), (slice(10, 20), slice(60, 70), slice(120, 130)),
    (slice(None, None, -1), 0, slice(5, 100, 7)), (slice(5, 5), 3), (np.int64(64), slice(63, 65)),
    (slice(-70, None), slice(None, -3), slice(129, 200)),
]


def test_levels_read_without_zarr_equal_zarrs_reading(labels, tmp_path):
    """Complete stores are read by the package's own chunk reader (no zarr import on napari's
    main thread): the same values as zarr reads, for every kind of basic index."""
    import zarr

    from napari_allen.io.pyramid_chunks import ChunkedLevel

    vol, data = labels
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    opened = pyramid._OPENED.pop(str(pyr.store))  # open from disk again
    pyr = open_pyramid(opened[1].store)
    group = zarr.open_group(str(pyr.store), mode="r")
    for k, level in enumerate(pyr.levels):
        assert isinstance(level, ChunkedLevel) and level.dtype == np.dtype(np.uint32)
        full = np.asarray(group[str(k)][...])
        np.testing.assert_array_equal(full, data[::2 ** k, ::2 ** k, ::2 ** k])
        for index in INDICES:
            np.testing.assert_array_equal(level[index], full[index], err_msg=str(index))
    with pytest.raises(IndexError):
        pyr.levels[0][SHAPE[0]]


def test_stores_of_another_layout_are_read_with_zarr(image, tmp_path):
    import zarr

    from napari_allen.io.pyramid_chunks import ChunkedLevel

    vol, data = image
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    group = zarr.open_group(str(pyr.store), mode="r+")
    values = np.asarray(group["0"][...])
    del group["0"]  # level 0 rewritten by zarr itself, with its default codecs
    group.create_array("0", data=values, chunks=(32, 32, 32))
    pyramid._OPENED.clear()
    reopened = open_pyramid(pyr.store)
    assert not isinstance(reopened.levels[0], ChunkedLevel)
    np.testing.assert_array_equal(np.asarray(reopened.levels[0][5]), data[5])


def test_damaged_chunk_is_named_never_trusted_and_its_store_rebuilt(image, tmp_path):
    """A chunk the codec refuses (or of the wrong size) raises an error naming it; the store
    is set aside, so no reader of it (this level, other levels, a later open) trusts it again,
    and the next build replaces it and removes what was set aside."""
    from napari_allen.errors import AllenFormatError

    vol, data = image
    store = tmp_path / "pyramids" / "p.zarr"
    store.parent.mkdir()
    pyr = build_pyramid(vol, store)
    level0, level1 = pyr.levels
    np.testing.assert_array_equal(level0[3], data[3])
    chunk = store / "0" / "c" / "1" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    chunk.write_bytes(bytes(raw[: len(raw) // 3]))  # truncated
    with pytest.raises(AllenFormatError, match="damaged multiscale cache chunk") as info:
        level0[70]  # AP 70 lies in chunk row 1
    assert str(chunk) in str(info.value) and "rebuilt at the next open" in str(info.value)
    assert not store.exists() and list(store.parent.glob("p.zarr.damaged-*"))
    with pytest.raises(AllenFormatError):
        level0[3]  # even chunks that were fine: the store is not read any more
    with pytest.raises(AllenFormatError, match="is gone"):
        level1[3]  # another level of the same store, opened before
    assert open_pyramid(store) is None
    again = build_pyramid(vol, store)
    np.testing.assert_array_equal(again.levels[0][70], data[70])
    assert not list(store.parent.glob("p.zarr.damaged-*"))


def test_bit_flip_blosc_still_decodes_is_caught_by_the_chunk_checksum(image, tmp_path):
    """One flipped bit inside a chunk's payload still decodes (Blosc has no checksum of its
    own) into wrong voxels; the chunk's CRC-32C catches it and the store is never trusted."""
    import numcodecs

    from napari_allen.errors import AllenFormatError

    vol, data = image
    store = tmp_path / "p.zarr"
    pyr = build_pyramid(vol, store)
    chunk = store / "0" / "c" / "0" / "0" / "0"
    stored = bytearray(chunk.read_bytes())
    stored[len(stored) // 2] ^= 0x10
    wrong = np.frombuffer(numcodecs.Blosc().decode(bytes(stored[:-4])), dtype="<f4")
    assert wrong.size == CHUNK ** 3  # Blosc alone would show this chunk
    chunk.write_bytes(bytes(stored))
    with pytest.raises(AllenFormatError, match="CRC-32C checksum does not match") as info:
        pyr.levels[0][3]
    assert str(chunk) in str(info.value) and not store.exists()
    assert open_pyramid(store) is None


def test_a_lost_chunk_file_is_damage_not_empty_space(image, tmp_path):
    """The store lists the chunks written: a listed chunk whose file went reads as damage,
    where zarr's rule (missing = fill value) would show zeros; unlisted chunks are the fill
    value without a file being opened."""
    from napari_allen.errors import AllenFormatError
    from napari_allen.io.pyramid_chunks import chunks_written

    vol, data = image
    store = tmp_path / "p.zarr"
    pyr = build_pyramid(vol, store)
    level0 = pyr.levels[0]
    np.testing.assert_array_equal(level0.present, chunks_written(store / "0", SHAPE))
    assert level0.present.sum() == len(list((store / "0" / "c").rglob("*/*/*")))
    (store / "0" / "c" / "2" / "0" / "1").unlink()
    np.testing.assert_array_equal(level0[10], data[10])  # other chunks still read
    with pytest.raises(AllenFormatError, match="written, now missing"):
        level0[130]  # AP 130: chunk row 2
    assert open_pyramid(store) is None


def test_a_malformed_chunk_map_is_not_trusted(image, tmp_path):
    import zarr

    vol, _ = image
    pyr = build_pyramid(vol, tmp_path / "p.zarr")
    group = zarr.open_group(str(pyr.store), mode="r+")
    attrs = dict(group.attrs["napari_allen"])
    attrs["chunk_maps"][0]["shape"] = [1, 1, 1]
    group.attrs["napari_allen"] = attrs
    pyramid._OPENED.clear()
    assert open_pyramid(pyr.store) is None


def test_chunks_decode_on_the_calling_thread_and_leave_numcodecs_as_it_was(tmp_path,
                                                                           monkeypatch):
    """napari slices on its main thread, where numcodecs would hand each chunk to blosc's
    thread pool (about twice as slow per plane on two cores): chunks are decoded with
    numcodecs' thread switch off, and the switch is restored after each chunk."""
    from numcodecs import blosc

    from napari_allen.io.pyramid import build_pyramid, open_pyramid
    from napari_allen.io.volume import GridVolume

    data = np.arange(70 * 20 * 30, dtype=np.uint32).reshape((70, 20, 30))
    pyr = build_pyramid(GridVolume(data=data, resolution=25.0), tmp_path / "p.zarr")
    seen: list = []
    real = blosc.decompress
    monkeypatch.setattr(blosc, "decompress",
                        lambda *a, **k: seen.append(blosc.use_threads) or real(*a, **k))
    monkeypatch.setattr(blosc, "use_threads", True)
    level = open_pyramid(pyr.store).levels[0]
    np.testing.assert_array_equal(np.asarray(level[66]), data[66])
    assert seen and set(seen) == {False}
    assert blosc.use_threads is True
