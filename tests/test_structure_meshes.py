"""Structure meshes: the .obj parser/writer, marching-cubes meshes of the bundled 25 µm
annotation (placed in CCF µm, inside the brain), the disk cache, Surface layers, focus points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_allen.errors import AllenApiError, AllenFormatError
from napari_allen.io.obj_mesh import Mesh, format_obj, parse_obj, read_obj, write_obj

TETRA = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], float)
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.fixture(scope="module")
def mesh_cache(tmp_path_factory):
    """One cache folder for the module: the annotation index and meshes are built once."""
    return tmp_path_factory.mktemp("mesh-cache")


@pytest.fixture
def shared_cache(mesh_cache, monkeypatch):
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(mesh_cache))
    return mesh_cache


@pytest.fixture(scope="module")
def brain():
    from napari_allen.atlas.annotation import ccf_annotation_25

    return ccf_annotation_25()


def _inside_brain_fraction(vertices: np.ndarray, brain, tolerance_voxels: int = 2) -> float:
    """Fraction of vertices within ``tolerance_voxels`` of a labelled (brain) voxel."""
    from scipy import ndimage

    idx = np.round(vertices / brain.resolution).astype(int)
    lo = np.maximum(idx.min(axis=0) - 3, 0)
    hi = np.minimum(idx.max(axis=0) + 4, brain.shape)
    crop = np.asarray(brain.data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]) != 0
    near = ndimage.binary_dilation(crop, iterations=tolerance_voxels)
    local = np.clip(idx - lo, 0, np.array(crop.shape) - 1)
    return float(near[local[:, 0], local[:, 1], local[:, 2]].mean())


# --- .obj ---------------------------------------------------------------------------------
def test_obj_round_trip_in_allen_layout(tmp_path):
    mesh = Mesh(TETRA, TETRA_FACES)
    text = format_obj(mesh, comment="test").decode()
    assert text.startswith("# test\nv 0.000 0.000 0.000\n")
    assert "\nvn " in text and "\nf 1//1 3//3 2//2\n" in text
    path = write_obj(tmp_path / "997.obj", mesh)
    back = read_obj(path)
    np.testing.assert_allclose(back.vertices, TETRA)
    np.testing.assert_array_equal(back.faces, TETRA_FACES)
    np.testing.assert_allclose(back.normals, mesh.normals, atol=1e-4)
    # Outward unit normals for a consistently wound closed surface.
    assert np.allclose(np.linalg.norm(back.normals, axis=1), 1, atol=1e-4)


def test_obj_parser_accepts_plain_and_textured_faces():
    mesh = parse_obj("v 0 0 0\nv 1 0 0 1.0\nv 0 1 0\nvt 0 0\ng part\nf 1/1 2/1 3/1\nf 3 2 1\n")
    assert mesh.n_vertices == 3 and mesh.n_faces == 2


@pytest.mark.parametrize("text, problem", [
    ("", "no 'v' vertex lines"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3 1\n", "only triangles"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "face index out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -1 -2 -3\n", "face index out of range"),
    ("v 0 0 zero\nf 1 1 1\n", "non-numeric"),
    ("v 0 0\n", "vertex needs x y z"),
    ("<html>404</html>\n", "unknown record"),
])
def test_obj_parser_names_the_problem(text, problem):
    with pytest.raises(AllenFormatError, match=problem) as info:
        parse_obj(text, "structure_meshes/733.obj")
    assert "structure_meshes/733.obj" in str(info.value)


def test_read_obj_missing_file(tmp_path):
    with pytest.raises(AllenFormatError, match="cannot read mesh file"):
        read_obj(tmp_path / "nope.obj")


# --- meshes from the annotation -----------------------------------------------------------
@pytest.fixture
def no_bundled_meshes(tmp_path, monkeypatch):
    """Meshes are built, not taken from the copies shipped with the package."""
    from napari_allen.atlas import meshes

    empty = tmp_path / "no-bundled-meshes"
    empty.mkdir()
    monkeypatch.setattr(meshes, "bundled_meshes_dir", lambda: empty)
    return empty


def test_outline_mesh_covers_the_brain_and_is_cached(shared_cache, brain, no_bundled_meshes):
    from napari_allen.atlas.meshes import brain_outline

    mesh = brain_outline()
    assert mesh.metadata["cached"] is False
    assert 5_000 < mesh.n_faces <= 40_000
    lo, hi = mesh.bounds()
    # The CCFv3 brain spans about 0.2-13.2 mm AP, 0.2-7.9 mm DV, 0.4-11.0 mm ML.
    extent = np.array(brain.shape) * brain.resolution
    assert np.all(lo >= -50) and np.all(hi <= extent + 50)
    assert np.all(hi - lo > 0.85 * np.array([13_000, 7_000, 10_000]))
    # Left-right symmetric about the midline (5,700 µm), as the annotation is.
    assert abs((lo[2] + hi[2]) / 2 - 5_700) < 150
    assert _inside_brain_fraction(mesh.vertices, brain) > 0.99
    again = brain_outline()
    assert again.metadata["cached"] is True
    np.testing.assert_array_equal(again.faces, mesh.faces)


def _nearest_um(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(b).query(a)[0]


def test_bundled_outline_is_what_the_code_builds(shared_cache, brain, no_bundled_meshes,
                                                 monkeypatch, tmp_path):
    """The outline shipped in ``data/meshes`` (tools/build_bundled_meshes.py) must be the mesh
    the current code builds from the bundled annotation: same file name (mesh version and
    parameters), same size, the same surface to well under a voxel."""
    from napari_allen.atlas import meshes

    built = meshes.brain_outline()  # from the module's cache (built by the test above) or now
    monkeypatch.undo()  # the shipped copies again
    fresh = tmp_path / "fresh-cache"
    shipped = meshes.brain_outline(cache_dir=fresh)
    assert shipped.metadata.get("bundled") is True, "no bundled outline for this mesh version"
    assert Path(shipped.metadata["cache_file"]).name == Path(built.metadata["cache_file"]).name
    assert abs(shipped.n_faces - built.n_faces) <= 0.01 * built.n_faces
    for a, b in ((shipped.vertices, built.vertices), (built.vertices, shipped.vertices)):
        assert np.percentile(_nearest_um(a, b), 99) < 0.2 * brain.resolution
    assert not fresh.exists() or not any(fresh.rglob("*.npz"))  # read in place, no copy


def test_damaged_bundled_outline_is_ignored_and_built(tmp_path, monkeypatch, caplog):
    import shutil

    from napari_allen.atlas import meshes

    shipped = tmp_path / "shipped"
    shutil.copytree(meshes.bundled_meshes_dir(), shipped)
    (npz,) = shipped.rglob("*.npz")
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    monkeypatch.setattr(meshes, "bundled_meshes_dir", lambda: shipped)
    with caplog.at_level("WARNING", logger="napari_allen.atlas.meshes"):
        mesh = meshes.brain_outline(cache_dir=tmp_path / "cache")
    assert not mesh.metadata.get("bundled") and mesh.metadata["cached"] is False
    assert "does not match" in caplog.text and str(npz) in caplog.text
    assert 5_000 < mesh.n_faces <= 40_000


def test_vpm_mesh_sits_in_the_thalamus(shared_cache, brain):
    from napari_allen.atlas.annotation import structure_id_at
    from napari_allen.atlas.meshes import structure_mesh
    from napari_allen.atlas.ontology import Ontology

    onto = Ontology.default()
    mesh = structure_mesh("VPM")
    assert mesh.metadata["structure_id"] == 733 and mesh.n_faces > 500
    assert _inside_brain_fraction(mesh.vertices, brain) == 1.0
    # Vertices hug VPM: nearly all lie within two voxels of a VPM voxel.
    ids = structure_id_at(brain, mesh.vertices)
    thalamus = onto.membership(onto.id_of("TH"), ids)
    assert thalamus.mean() > 0.6
    # Both hemispheres: VPM is bilateral, mirrored about the midline.
    ml = mesh.vertices[:, 2]
    assert (ml < 5_700).mean() > 0.4 and (ml > 5_700).mean() > 0.4


def test_parent_mesh_includes_descendants(shared_cache):
    from napari_allen.atlas.meshes import structure_mesh

    parent = structure_mesh("SSp")  # no voxels of its own: only its sub-areas are labelled
    child = structure_mesh("SSp-bfd")
    (plo, phi), (clo, chi) = parent.bounds(), child.bounds()
    # SSp is meshed at 50 µm (large), SSp-bfd at 25 µm: bounds agree within a voxel.
    assert np.all(plo <= clo + 50) and np.all(phi >= chi - 50)
    assert np.prod(phi - plo) > 2 * np.prod(chi - clo)


def test_structure_without_voxels_is_an_error(shared_cache):
    from napari_allen.atlas.meshes import structure_mesh

    with pytest.raises(KeyError):
        structure_mesh(123456789)


# --- layers ---------------------------------------------------------------------------------
def test_structure_mesh_layer_has_the_atlas_colour(shared_cache):
    from napari_allen.atlas.meshes import structure_mesh
    from napari_allen.layers.meshes import structure_mesh_layer

    (verts, faces, values), kwargs, kind = structure_mesh_layer(structure_mesh("CP"), "CP")
    assert kind == "surface" and kwargs["name"] == "CP mesh"
    # CP is 98D6F9 in the ontology.
    np.testing.assert_allclose(kwargs["colormap"].colors[-1][:3],
                               np.array([0x98, 0xD6, 0xF9]) / 255, atol=1e-6)
    assert kwargs["axis_labels"] == ("AP", "DV", "ML") and kwargs["metadata"]["acronym"] == "CP"
    assert len(values) == len(verts) and faces.max() < len(verts)


def test_reference_sample_is_annotation_and_outline(tmp_path, monkeypatch):
    """File > Open Sample > CCF reference runs on napari's main thread: on a first run (fresh
    cache) it decodes nothing and meshes nothing there; its annotation is the reader's layer of
    the same file (multiscale, converted in the background) and the outline the bundled one."""
    import time

    from napari_allen import _reader
    from napari_allen._sample_data import ccf_reference_25
    from napari_allen.atlas import annotation, meshes
    from napari_allen.io.pyramid import conversions_running

    def forbidden(*args, **kwargs):
        raise AssertionError("decoded or meshed on the calling thread")

    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path))
    monkeypatch.setattr(annotation, "_ccf_annotation_25", forbidden)
    monkeypatch.setattr(meshes, "mesh_from_mask", forbidden)
    try:
        (labels, lkw, ltype), (surface, skw, stype) = ccf_reference_25()
        path = annotation.ccf_annotation_25_path()
        ((rlabels, rkw, rtype),) = _reader.get_reader(str(path))(str(path))
    finally:
        deadline = time.monotonic() + 120
        while conversions_running() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert (ltype, stype) == ("labels", "surface") and rtype == "labels"
    assert lkw["multiscale"] and tuple(lkw["scale"]) == (25, 25, 25)
    assert labels[0].shape == (528, 320, 456) and len(labels) == len(rlabels)
    assert {k: v for k, v in lkw.items() if k not in ("opacity", "colormap", "features",
                                                      "metadata")} == \
        {k: v for k, v in rkw.items() if k not in ("opacity", "colormap", "features",
                                                   "metadata")}
    assert lkw["opacity"] == 0.5 and lkw["metadata"]["structure_ids"] is not None
    assert set(lkw["features"].columns) >= {"index", "acronym", "name"}
    assert skw["name"] == "brain outline (CCFv3)" and len(surface[0]) > 1000
    assert skw["metadata"]["bundled"] is True


# --- focus ----------------------------------------------------------------------------------
def test_focus_point_prefers_injection_metadata_then_peak():
    from napari_allen.layers.focus import focus_point_um

    data = np.zeros((10, 8, 6))
    data[7, 2, 4] = 5.0
    data[1, 1, 1] = np.nan
    kwargs = {"scale": (100, 100, 100), "metadata": {}}
    np.testing.assert_allclose(focus_point_um((data, kwargs, "image")), [700, 200, 400])
    kwargs["metadata"] = {"experiment": {"injection_x": 6500, "injection_y": 4000,
                                         "injection_z": 7650}}
    np.testing.assert_allclose(focus_point_um((data, kwargs, "image")), [6500, 4000, 7650])
    kwargs["metadata"]["injection_centroid_um"] = [6600.0, 4100.0, 7700.0]
    np.testing.assert_allclose(focus_point_um((data, kwargs, "image")), [6600, 4100, 7700])
    assert focus_point_um((np.full((3, 3, 3), np.nan), {}, "image")) is None
    pts = np.array([[0, 0, 0], [200, 400, 600]], float)
    np.testing.assert_allclose(focus_point_um((pts, {}, "points")), [100, 200, 300])


def test_structure_mesh_command_writes_allen_obj(shared_cache, tmp_path, capsys):
    from napari_allen.cli import main

    assert main(["structure-mesh", "VPM", "--out", str(tmp_path)]) == 0
    mesh = read_obj(tmp_path / "733.obj")
    assert mesh.n_faces > 500 and 6000 < mesh.vertices[:, 0].mean() < 7500
    assert "VPM" in capsys.readouterr().out
    assert main(["structure-mesh", "NOPE", "--out", str(tmp_path)]) == 2


def test_allen_mesh_download_through_the_client(shared_cache, client, tmp_path):
    """Allen's structure_meshes/<id>.obj URL form, downloaded once and parsed."""
    assert client.structure_mesh_url(733).endswith(
        "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/"
        "structure_meshes/733.obj")
    path = client.download_structure_mesh(733)
    assert path == client.structure_mesh_path(733) and path.is_file()
    mesh = client.structure_mesh(733)
    assert mesh.n_faces > 100 and mesh.metadata["source"] == client.structure_mesh_url(733)
    # Served from the same annotation, it overlays the computed VPM mesh (CCF µm, AP DV ML).
    from napari_allen.atlas.meshes import structure_mesh

    local = structure_mesh(733)
    np.testing.assert_allclose(mesh.bounds(), local.bounds(), atol=120)
    with pytest.raises(AllenApiError, match="404"):
        client.download_structure_mesh(99999999)


def test_auto_source_falls_back_to_the_computed_mesh(shared_cache, monkeypatch):
    """Against an unreachable file server, ``auto`` computes the mesh and says why."""
    from napari_allen.api.client import AllenClient
    from napari_allen.workflows.structure_meshes import get_structure_mesh

    with AllenClient(retries=0) as unreachable:  # the closed port of conftest
        mesh = get_structure_mesh("VPM", client=unreachable, source="auto")
        assert "Allen mesh unavailable" in mesh.metadata["fallback"]
        with pytest.raises(AllenApiError):
            get_structure_mesh("VPM", client=unreachable, source="allen")


def test_index_bounding_boxes_span_slabs(tmp_path):
    """The annotation index finds bounding boxes slab by slab (32 AP planes: GIL released in
    between); they equal one pass over the whole volume, structures crossing slabs included."""
    from scipy import ndimage

    from napari_allen.atlas.meshes import annotation_index
    from napari_allen.io.volume import GridVolume

    rng = np.random.default_rng(1)
    ids = np.array([0, 7, 1009, 672, 614454277], dtype=np.uint32)
    data = ids[rng.integers(0, len(ids), size=(75, 9, 11))]
    data[:, :, :3] = 0
    data[40:70, 2:4, 5] = 5  # one structure in two slabs only
    vol = GridVolume(data=data, resolution=25.0, kind="annotation", metadata={}, source="")
    index = annotation_index(vol, cache_dir=tmp_path)
    np.testing.assert_array_equal(index.ids, np.unique(data[data > 0]))
    whole = ndimage.find_objects(np.asarray(index.labels), max_label=len(index.ids))
    expected = [[[s.start for s in sl], [s.stop for s in sl]] for sl in whole]
    np.testing.assert_array_equal(index.bboxes, expected)
    assert index.bbox_of(np.array([5])) == (slice(40, 70), slice(2, 4), slice(5, 6))


def test_an_index_being_built_elsewhere_is_waited_for_not_built_twice(tmp_path, monkeypatch):
    """Two mesh children (two docks, two windows) asking for the same index: the second waits
    on the cache folder's lock while the first builds, then reads what the first wrote."""
    import threading

    from napari_allen.atlas import meshes
    from napari_allen.io.atomic import file_lock
    from napari_allen.io.volume import GridVolume

    data = np.zeros((20, 6, 7), dtype=np.uint32)
    data[5:9, 2:4, 1:5] = 733
    vol = GridVolume(data=data, resolution=25.0, kind="annotation", metadata={}, source="")
    folder = meshes._cache_folder(meshes.annotation_key(vol), 25.0, tmp_path)
    folder.mkdir(parents=True)
    builds: list[int] = []
    real_build = meshes._build_index
    monkeypatch.setattr(meshes, "_build_index",
                        lambda *a: builds.append(1) or real_build(*a))
    done: list = []
    with file_lock(meshes._index_lock(folder)):  # "another process" is building
        worker = threading.Thread(target=lambda: done.append(
            meshes.annotation_index(vol, cache_dir=tmp_path)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not done and builds == []  # waiting, not building
        real_build(vol, folder, None, None)  # what the other process writes
    worker.join(30)
    assert builds == [] and done and done[0].bbox_of(np.array([733])) == (
        slice(5, 9), slice(2, 4), slice(1, 5))
