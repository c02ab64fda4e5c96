"""The grid zip's ``injection`` is injection_fraction (an inference, docs/allen-api-notes.md §14):
the local server and the client agree, and the spatial search's default injection coordinates
are the lines script's (``argwhere(injection > 0.5) * spacing`` on the zip it downloads)."""

from __future__ import annotations

import urllib.request
import zipfile

import numpy as np

from allen_local_api.grids import CONNECTIVITY_ZIP_VOLUMES
from napari_allen.analysis.seeds import injection_coordinates
from napari_allen.io.nrrd import read_nrrd
from napari_allen.workflows.connectivity import GRID_ZIP_MEMBERS
from napari_allen.workflows.spatial_search import (
    DEFAULT_INJECTION_IMAGE,
    DEFAULT_INJECTION_THRESHOLD,
)

EXPERIMENT = 158375425  # real injection_fraction/injection_density files are bundled


def _zip_injection(url: str, experiment: int) -> tuple[np.ndarray, list[float]]:
    """The zip's injection volume read as the lines script reads it (float32, DimSize,
    Fortran order, ElementSpacing)."""
    with urllib.request.urlopen(f"{url}/grid_data/download/{experiment}?include=injection",
                                timeout=60) as response:
        body = response.read()
    import io

    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        header = zf.read("injection.mhd").decode("ascii")
        raw = zf.read("injection.raw")
    meta = dict(line.split(" = ") for line in header.splitlines() if line)
    dims = [int(v) for v in meta["DimSize"].split()]
    spacing = [float(v) for v in meta["ElementSpacing"].split()]
    return np.frombuffer(raw, dtype="<f4").reshape(dims, order="F"), spacing


def test_server_and_client_map_the_zip_injection_to_injection_fraction():
    assert CONNECTIVITY_ZIP_VOLUMES["injection"] == "injection_fraction"
    assert GRID_ZIP_MEMBERS["injection_fraction"] == "injection"
    assert DEFAULT_INJECTION_IMAGE == "injection_fraction"
    assert DEFAULT_INJECTION_THRESHOLD == 0.5


def test_zip_injection_holds_the_injection_fraction_volume(allen_api, client):
    zipped, spacing = _zip_injection(allen_api.url, EXPERIMENT)
    fraction = np.asarray(read_nrrd(client.grid_nrrd(EXPERIMENT, "injection_fraction", 100))
                          .data, dtype=np.float32)
    density = np.asarray(read_nrrd(client.grid_nrrd(EXPERIMENT, "injection_density", 100))
                         .data, dtype=np.float32)
    assert spacing == [100.0, 100.0, 100.0]
    assert np.array_equal(zipped, fraction)
    assert not np.array_equal(zipped, density)


def test_default_injection_coordinates_are_the_lines_scripts(allen_api, client):
    zipped, spacing = _zip_injection(allen_api.url, EXPERIMENT)
    script = (np.argwhere(zipped > 0.5) * np.array(spacing)).tolist()
    ours = injection_coordinates(
        read_nrrd(client.grid_nrrd(EXPERIMENT, DEFAULT_INJECTION_IMAGE, 100)),
        threshold=DEFAULT_INJECTION_THRESHOLD)
    assert len(script) > 0
    assert np.asarray(ours).tolist() == script
    # The other reading would give another site: the decision matters.
    density = read_nrrd(client.grid_nrrd(EXPERIMENT, "injection_density", 100))
    other = injection_coordinates(density, threshold=0.5)
    assert len(other) != len(script)
