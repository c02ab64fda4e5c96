"""io/planes.py: pread-based slicing equals memmap slicing, for every index form napari uses."""

from __future__ import annotations

import numpy as np
import pytest

from napari_allen.io import planes
from napari_allen.io.planes import PlaneReader, plane_reader_for


@pytest.fixture(params=["mmap+madvise", "pread"])
def grid(tmp_path, request, monkeypatch):
    if request.param == "pread":  # the Windows path (no madvise)
        monkeypatch.setattr(planes, "_CAN_RELEASE", False)
    shape = (7, 5, 6)
    values = np.arange(np.prod(shape), dtype=">f4")
    path = tmp_path / "g.raw"
    path.write_bytes(b"HEAD" + values.tobytes())
    mm = np.memmap(path, dtype=">f4", mode="r", offset=4, shape=shape, order="F")
    return mm, PlaneReader(path, 4, shape, ">f4")


@pytest.mark.parametrize("index", [
    (3,), (slice(None), slice(None), 2), (slice(1, 5), 2, slice(0, 6, 2)),
    (slice(None), 4), (6, 4, 5), (slice(2, 2),), (slice(None, None, -1), 0, 1),
    (slice(None), slice(None), slice(3, 3)),
])
def test_same_values_as_memmap(grid, index):
    mm, reader = grid
    expected = np.asarray(mm[index])
    got = reader[index]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_fancy_indexing(grid):
    mm, reader = grid
    if reader._array is None:  # pread path
        with pytest.raises(IndexError, match="ints and slices"):
            reader[[0, 1]]
    else:
        np.testing.assert_array_equal(reader[[0, 1]], mm[[0, 1]])


def test_only_whole_file_memmaps(grid):
    mm, _ = grid
    assert isinstance(plane_reader_for(mm), PlaneReader)
    assert plane_reader_for(mm[1:]) is None  # a view: offsets no longer simple
    assert plane_reader_for(np.zeros((2, 2, 2))) is None


def test_short_file_is_an_error(tmp_path):
    path = tmp_path / "short.raw"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(OSError, match="file ended"):
        PlaneReader(path, 0, (4, 4, 4), "<f4")


def test_slices_do_not_stay_resident(tmp_path):
    """After an AP slice through a 50 µm grid (38 MB) the process does not hold its pages."""
    import psutil

    if not planes._CAN_RELEASE:
        pytest.skip("madvise unavailable on this platform")
    shape = (264, 160, 228)
    path = tmp_path / "big.raw"
    np.ones(int(np.prod(shape)), dtype="<f4").tofile(path)
    reader = PlaneReader(path, 0, shape, "<f4")
    before = psutil.Process().memory_info().rss
    plane = reader[100]
    assert plane.shape == (160, 228) and (plane == 1).all()
    assert psutil.Process().memory_info().rss - before < 10 * 1024 * 1024
