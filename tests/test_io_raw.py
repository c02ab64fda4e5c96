"""Bare .raw grids: the grid is inferred from size and name, or a clear error says why not."""

from __future__ import annotations

import zipfile
from importlib import resources

import numpy as np
import pytest

from napari_allen.errors import AllenFormatError
from napari_allen.io import read_volumes
from napari_allen.io.raw import infer_raw_grid, read_raw

DATA = resources.files("napari_allen") / "data"


def _sparse(path, n_bytes):
    with open(path, "wb") as fh:
        fh.truncate(n_bytes)
    return path


@pytest.mark.parametrize(
    ("shape", "res"),
    [((67, 41, 58), 200), ((132, 80, 114), 100), ((133, 81, 115), 100),
     ((264, 160, 228), 50), ((528, 320, 456), 25), ((1320, 800, 1140), 10)],
)
def test_grid_inferred_from_size(tmp_path, shape, res):
    raw = _sparse(tmp_path / "energy.raw", int(np.prod(shape)) * 4)
    header, kind, assumed = infer_raw_grid(raw)
    assert header.dim_size == shape
    assert header.resolution == res
    assert header.dtype == np.dtype("<f4")
    assert kind == "energy" and not assumed


def test_annotation_name_means_uint32(tmp_path):
    raw = _sparse(tmp_path / "gridAnnotation.raw", 67 * 41 * 58 * 4)
    header, kind, _ = infer_raw_grid(raw)
    assert kind == "annotation" and header.dtype == np.dtype("<u4")
    fiber = _sparse(tmp_path / "annotationFiber.raw", 528 * 320 * 456 * 4)
    header, kind, _ = infer_raw_grid(fiber)
    assert kind == "fiber_annotation" and header.resolution == 25


def test_legacy_uint16_grid_annotation(tmp_path):
    raw = tmp_path / "gridAnnotation.raw"
    np.arange(67 * 41 * 58, dtype="<u2").tofile(raw)
    vol = read_raw(raw)
    assert vol.dtype == np.uint16 and vol.data[2, 0, 0] == 2


def test_unnamed_raw_assumed_float32(tmp_path):
    """The seed notebook renames energy.raw to <experiment id>.raw."""
    with zipfile.ZipFile(DATA / "ish" / "Nrp1_P56_coronal_74272479_200um.zip") as zf:
        (tmp_path / "74272479.raw").write_bytes(zf.read("energy.raw"))
    (vol,) = read_volumes(tmp_path / "74272479.raw")
    assert vol.kind == "unknown"
    assert vol.metadata["element_type_assumed"] is True
    assert vol.metadata["experiment_id"] == 74272479
    assert vol.metadata["gene"] == "Nrp1"  # from the bundled ABI gene table
    assert int((np.asarray(vol.data) == -1).sum()) == 54_982


def test_real_bare_energy_raw(tmp_path):
    with zipfile.ZipFile(DATA / "ish" / "Nrp1_P56_coronal_74272479_200um.zip") as zf:
        (tmp_path / "energy.raw").write_bytes(zf.read("energy.raw"))
    (vol,) = read_volumes(tmp_path / "energy.raw")
    assert vol.metadata["format"] == "raw"
    assert vol.shape == (67, 41, 58) and vol.kind == "energy"
    assert float(np.asarray(vol.data).max()) == pytest.approx(25.9, abs=0.01)


@pytest.mark.parametrize("n_bytes", [637_304 - 4, 637_304 + 4, 1234, 0])
def test_size_matching_no_grid(tmp_path, n_bytes):
    raw = _sparse(tmp_path / "energy.raw", n_bytes)
    with pytest.raises(AllenFormatError, match="cannot infer the grid") as err:
        read_raw(raw)
    message = str(err.value)
    assert str(raw) in message
    assert f"{n_bytes:,} bytes" in message
    assert "200 µm 67x41x58 = 637,304 B" in message  # tells the user what would work


def test_oversized_10um(tmp_path):
    raw = _sparse(tmp_path / "density.raw", 1320 * 800 * 1140 * 4 + 4096)
    with pytest.raises(AllenFormatError, match="truncated, or give it its .mhd"):
        read_raw(raw)


def test_large_bare_raw_is_lazy(tmp_path):
    raw = _sparse(tmp_path / "projection_density.raw", 528 * 320 * 456 * 4)
    vol = read_raw(raw)
    assert isinstance(vol.data, np.memmap)
    assert vol.kind == "projection_density" and vol.resolution == 25
