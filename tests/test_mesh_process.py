"""Structure meshes and the annotation index built in a child process (``child_process`` running
``atlas/meshes.build_structure_meshes``; issue #13: the docks' meshing never holds napari's
GIL): the same mesh as this process builds, the same errors, cancel, a killed child, the
thread fallback, and the mechanism's error transport."""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest

from child_commands import process_gone, unstartable_child
from napari_allen import child_process
from napari_allen.errors import AllenFormatError
from napari_allen.progress import Cancelled, CancelToken

NO_VOXELS = 107  # MO1: in the ontology, no voxel of it (or its descendants) at 25 µm


@pytest.fixture(scope="module")
def child_cache(tmp_path_factory):
    """A mesh cache whose annotation index a child process built (while failing on a
    structure without voxels): ``(folder, the error it raised)``."""
    from napari_allen.atlas.meshes import iter_structure_meshes

    cache = tmp_path_factory.mktemp("child-mesh-cache")
    with pytest.raises(ValueError) as info:
        list(iter_structure_meshes([NO_VOXELS], cache_dir=cache))
    return cache, info.value


def _mesh_folder(cache):
    from napari_allen.atlas.meshes import _bundled_folder

    return _bundled_folder(cache)[2]


@pytest.fixture
def child_pids(monkeypatch):
    """The pids of the child processes started meanwhile."""
    pids: list[int] = []
    real = child_process.iter_child

    def spy(*args, on_started=None, **kwargs):
        def started(pid):
            pids.append(pid)
            if on_started is not None:
                on_started(pid)

        return real(*args, on_started=started, **kwargs)

    monkeypatch.setattr(child_process, "iter_child", spy)
    return pids


def test_child_mesh_equals_the_thread_mesh(child_cache, child_pids):
    from napari_allen.atlas.meshes import iter_structure_meshes, structure_mesh

    cache, _ = child_cache
    steps = []
    ((sid, built),) = iter_structure_meshes(["VPM"], cache_dir=cache, progress=steps.append)
    assert sid == 733 and built.metadata["cached"] is False and len(child_pids) == 1
    assert any(s.message.startswith("VPM: meshed") for s in steps)  # the child's steps
    cache_file = built.metadata["cache_file"]
    assert cache_file.startswith(str(_mesh_folder(cache)))
    os.remove(cache_file)
    in_thread = structure_mesh("VPM", cache_dir=cache)  # this process, same index
    assert in_thread.metadata["cached"] is False
    np.testing.assert_allclose(built.vertices, in_thread.vertices, atol=1e-3)
    np.testing.assert_array_equal(built.faces, in_thread.faces)
    np.testing.assert_allclose(built.normals, in_thread.normals, atol=1e-5)
    assert {k: v for k, v in built.metadata.items() if k != "build_seconds"} == \
        {k: v for k, v in in_thread.metadata.items() if k != "build_seconds"}
    # Now on disk: loaded here, no child started.
    ((_, again),) = iter_structure_meshes([733], cache_dir=cache)
    assert again.metadata["cached"] is True and len(child_pids) == 1


def test_errors_are_those_of_this_process(child_cache):
    from napari_allen.atlas.meshes import iter_structure_meshes, structure_mesh

    cache, from_child = child_cache
    with pytest.raises(ValueError) as here:
        structure_mesh(NO_VOXELS, cache_dir=cache)  # the index is on disk: raised here
    assert type(from_child) is ValueError and str(from_child) == str(here.value)
    assert "MO1" in str(from_child) and "no voxels" in str(from_child)
    assert any("in the child process" in n for n in from_child.__notes__)
    with pytest.raises(KeyError, match="unknown structure acronym 'NOPE'"):
        list(iter_structure_meshes(["VPM", "NOPE"], cache_dir=cache))
    with pytest.raises(KeyError, match="unknown structure id 123456789"):
        structure_mesh(123456789, cache_dir=cache, process=True)


def test_several_structures_come_in_order_from_one_child(child_cache, child_pids):
    from napari_allen.atlas.meshes import iter_structure_meshes

    cache, _ = child_cache
    ids = [sid for sid, _ in iter_structure_meshes(["LGd", "VPL", "LGd"], cache_dir=cache)]
    assert ids == [170, 718, 170] and len(child_pids) == 1


def test_cancel_stops_the_child_and_leaves_no_partial_file(tmp_path, child_pids):
    from napari_allen.atlas.meshes import iter_structure_meshes

    token = CancelToken()

    def cancel_while_indexing(p) -> None:
        if "indexing" in p.message:
            token.cancel()

    with pytest.raises(Cancelled):
        list(iter_structure_meshes(["VPM"], cache_dir=tmp_path, progress=cancel_while_indexing,
                                   cancel=token))
    (pid,) = child_pids
    assert process_gone(pid)
    folder = _mesh_folder(tmp_path)
    assert not folder.exists() or not any(folder.iterdir())  # no index, no mesh, no .part


def test_a_killed_child_is_reported_and_its_files_removed(tmp_path, child_pids):
    from napari_allen.atlas.meshes import iter_structure_meshes

    folder = _mesh_folder(tmp_path)
    killed: list[int] = []

    def kill_while_indexing(p) -> None:
        if "indexing" in p.message and not killed:
            (pid,) = child_pids
            folder.mkdir(parents=True, exist_ok=True)  # as if killed while writing a file
            (folder / f".index_labels.npy.{pid}.x1y2.part").write_bytes(b"half")
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with pytest.raises(child_process.ChildFailed) as info:
        list(iter_structure_meshes(["VPM"], cache_dir=tmp_path, progress=kill_while_indexing))
    message = str(info.value)
    assert "meshing VPM" in message and "SIGKILL" in message and str(killed[0]) in message
    assert not any(folder.iterdir())


@unstartable_child
def test_without_a_child_the_mesh_is_built_in_a_thread(command, child_cache, monkeypatch,
                                                       caplog):
    from napari_allen.atlas.meshes import MeshParams, iter_structure_meshes

    cache, _ = child_cache
    params = MeshParams(sigma=1.5)  # a mesh not built by the other tests
    monkeypatch.setattr(child_process, "child_command", lambda: command)
    with caplog.at_level(logging.WARNING, logger="napari_allen.atlas.meshes"):
        ((_, mesh),) = iter_structure_meshes(["VPL"], cache_dir=cache, params=params)
    assert "in a thread" in caplog.text and "VPL" in caplog.text
    assert mesh.metadata["cached"] is False and mesh.n_faces > 500
    os.remove(mesh.metadata["cache_file"])
    monkeypatch.undo()
    ((_, from_child),) = iter_structure_meshes(["VPL"], cache_dir=cache, params=params)
    np.testing.assert_array_equal(from_child.faces, mesh.faces)
    os.remove(from_child.metadata["cache_file"])  # the next case builds it again


def test_mask_index_is_built_by_a_child_then_memory_mapped(tmp_path, child_pids):
    from napari_allen.atlas import meshes

    index = meshes.bundled_annotation_index(cache_dir=tmp_path)
    assert len(child_pids) == 1 and isinstance(index.labels, np.memmap)
    assert index.folder == _mesh_folder(tmp_path) and index.resolution == 25
    found = meshes.structure_mask(index, 733, meshes.Ontology.default())
    assert found is not None and found[0].sum() > 1000
    assert meshes.bundled_annotation_index(cache_dir=tmp_path) is index


# --- the mechanism ---------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [
    ValueError("structure MO1 (107) has no voxels in the 25 µm annotation"),
    KeyError("unknown structure id 5"),
    FileNotFoundError(2, "No such file or directory", "/no/such/file"),
    Cancelled("cancelled by the user"),
    AllenFormatError("/data/annotation_25.nrrd", "corrupt gzip stream"),
])
def test_child_errors_keep_their_type_and_message(exc):
    line = child_process._described(exc)
    back = child_process.rebuilt_error(line, "meshing VPM")
    assert type(back) is type(exc) and str(back) == str(exc)
    if isinstance(exc, AllenFormatError):
        assert (back.path, back.problem) == (exc.path, exc.problem)


def test_other_child_errors_name_the_work():
    class Odd(Exception):
        pass

    back = child_process.rebuilt_error(child_process._described(Odd("strange")), "meshing VPM")
    assert isinstance(back, child_process.ChildFailed)
    assert str(back) == "meshing VPM failed: Odd: strange"


def test_a_child_runs_only_functions_of_the_package():
    with pytest.raises(ValueError, match="function of this package"):
        child_process.run_in_child("os:system", {"command": "true"}, what="x")


def test_the_docks_mesh_task_meshes_in_one_child(child_cache, child_pids, monkeypatch):
    """The Connectivity/Spatial docks' one-click task: every structure's Surface layer from
    one child process, injection first, the bar counting structures."""
    from napari_allen.widgets._meshes import mesh_task

    cache, _ = child_cache
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(cache))
    layers, steps = [], []
    task = mesh_task(lambda cancel: {"injection": [718], "targets": [593, 170]})
    shown = task(progress=steps.append, cancel=CancelToken(),
                 emit=lambda layer, wait: layers.append(layer))
    assert shown == ["VPL", "VISp1", "LGd"] and len(child_pids) == 1
    assert [layer.name for layer in layers] == ["VPL mesh", "VISp1 mesh", "LGd mesh"]
    assert layers[0].metadata["role"] == "injection" and layers[0].opacity > layers[1].opacity
    assert {s.total for s in steps} == {3} and steps[-1].done == 3
