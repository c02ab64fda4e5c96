"""What keeps opening a file or sample cheap on napari's main thread (issue #13 item 2), tested
for what it does, never timed: ready atlas colormaps built once, an exact fast percentile,
conversions that wait for the GUI, no volume scans in the reader."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_allen.atlas.ontology import Ontology
from napari_allen.layers.volumes import high_percentile, labels_layer


def test_atlas_colormap_template_is_built_once_and_shared_read_only():
    from napari_allen.layers import atlas_colormap as ac

    onto = Ontology.default()
    first = labels_layer(np.zeros((2, 2, 2), dtype=np.uint32), resolution=25)[1]["colormap"]
    built = ac.template_count()
    second = labels_layer(np.zeros((3, 2, 2), dtype=np.uint32), resolution=25)[1]["colormap"]
    assert ac.template_count() == built  # the same ontology and ids: no new template
    assert first is not second  # each layer keeps its own selection on its own object
    key = (np.dtype(np.uint16), np.dtype(np.uint16))
    table = ac._TEMPLATES[onto][()]._cache_mapping[key]
    # napari's lookup table arrives ready (napari would otherwise build it value by value),
    # shared and read-only.
    assert first._cache_mapping[key] is table and second._cache_mapping[key] is table
    assert not table.flags.writeable
    # The table (built as one look-up, not napari's value-by-value loop) is exactly napari's
    # own mapping of the colour dict, for every uint16 value.
    from napari.utils.colormaps import DirectLabelColormap

    napari_own = DirectLabelColormap(color_dict=dict(first.color_dict))
    napari_table = napari_own._map_without_cache(np.arange(2 ** 16, dtype=np.uint16))
    np.testing.assert_array_equal(napari_table, table)
    assert table.dtype == napari_table.dtype
    # ... and with napari's "show selected label only" (its thumbnail maps through this).
    for cmap in (first, napari_own):
        cmap.selection, cmap.use_selection = 385, True
    values = np.array([[0, 384], [385, 386]], dtype=np.uint16)
    np.testing.assert_array_equal(first.map(values), napari_own.map(values))
    assert len(repr(first)) < 200  # napari formats every returned layer tuple's repr


def test_atlas_colormap_copies_share_colour_arrays_but_not_the_dict():
    """Each layer's copy owns its colour dict, selection, events and caches; the ~1,300
    colour arrays behind them are the template's, read-only (not copied per layer)."""
    from napari_allen.layers import atlas_colormap as ac

    onto = Ontology.default()
    first, second = ac.atlas_colormap(onto), ac.atlas_colormap(onto)
    template = ac._TEMPLATES[onto][()]
    assert first.color_dict is not second.color_dict is not template.color_dict
    assert first.color_dict.keys() == template.color_dict.keys()
    for key in (0, 1, len(first.color_dict) - 2):
        assert first.color_dict[key] is template.color_dict[key] is second.color_dict[key]
        assert not first.color_dict[key].flags.writeable
    assert first.events is not second.events
    assert first._cache_mapping is not template._cache_mapping
    first.selection, first.use_selection = 7, True
    assert (second.selection, second.use_selection) == (template.selection, False)
    first.color_dict[1] = np.array([0, 0, 0, 1], dtype=np.float32)  # one layer's own edit
    assert second.color_dict[1] is template.color_dict[1]


def test_reference_outline_is_read_once_per_cache_folder(tmp_path, monkeypatch):
    """File > Open Sample > CCF reference reads the outline's file (SHA-256 check, inflate)
    once per process and cache folder; every open still gets arrays of its own."""
    from napari_allen.atlas import meshes
    from napari_allen.layers import meshes as mesh_layers

    calls: list = []
    real = meshes.brain_outline
    monkeypatch.setattr(meshes, "brain_outline", lambda **kw: calls.append(kw) or real(**kw))
    monkeypatch.setattr(mesh_layers, "_OUTLINES", {})
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "a"))
    first, second = mesh_layers.cached_brain_outline(), mesh_layers.cached_brain_outline()
    assert len(calls) == 1
    assert first.metadata["bundled"] is True
    for a, b in ((first.vertices, second.vertices), (first.faces, second.faces)):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b) and a.flags.writeable
    (verts, faces, _), kwargs, _ = mesh_layers.outline_layer(second)
    assert verts is second.vertices and kwargs["name"] == mesh_layers.OUTLINE_NAME
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "b"))  # another cache folder
    mesh_layers.cached_brain_outline()
    assert len(calls) == 2


def test_layers_with_atlas_colormaps_select_independently(make_napari_viewer):
    viewer = make_napari_viewer()
    data = np.zeros((4, 5, 6), dtype=np.uint32)
    data[1:3] = 385  # VISp
    a = _add(viewer, labels_layer(data, resolution=25, name="a"))
    b = _add(viewer, labels_layer(data, resolution=25, name="b"))
    value = int(np.asarray(a.data)[1, 0, 0])
    np.testing.assert_allclose(a.get_color(value)[:3], np.array(Ontology.default().rgb(385)) / 255)
    a.show_selected_label = True
    a.selected_label = value
    assert a.colormap.use_selection and not b.colormap.use_selection
    np.testing.assert_allclose(b.get_color(value), a.get_color(value))


def _add(viewer, layer_tuple):
    data, kwargs, _ = layer_tuple
    return viewer.add_labels(data, **kwargs)


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).random(300_000, dtype=np.float32),
    np.concatenate([np.zeros(200_000, np.float32), np.random.default_rng(1).random(9_000)
                    .astype(np.float32)]),  # mostly zeros, like a projection density
    np.sort(np.random.default_rng(2).random(100_000))[::-1],  # sorted: an unlucky sample
    np.arange(70_000, dtype=np.int32),
    np.full(80_000, 3.0),
    np.random.default_rng(3).random(500),  # small: numpy's own path
])
def test_high_percentile_is_numpys(values):
    for q in (99.9, 99.5, 95.0):
        assert high_percentile(values, q) == float(np.percentile(values, q))


def test_conversion_waits_for_the_gui_until_idle():
    from napari_allen.layers.multiscale import _gui_turns

    queue: list = []
    done = threading.Event()

    def caller(fn):  # a GUI thread that is busy for a while, then answers at once
        queue.append(fn)

    def gui():
        time.sleep(0.3)
        while not done.is_set():
            while queue:
                queue.pop(0)()
            time.sleep(0.001)

    thread = threading.Thread(target=gui, daemon=True)
    thread.start()
    t0 = time.monotonic()
    _gui_turns(caller, timeout_s=5.0)
    waited = time.monotonic() - t0
    done.set()
    assert 0.3 <= waited < 5.0

    t0 = time.monotonic()  # no GUI answering: the conversion starts anyway after the timeout
    _gui_turns(lambda fn: None, timeout_s=0.2)
    assert time.monotonic() - t0 < 1.0


def test_job_runs_its_before_hook_first_and_restarts_when_its_store_is_gone(tmp_path):
    import shutil

    from napari_allen.io import read_volumes
    from napari_allen.io.pyramid import start_pyramid_job

    data = np.arange(40 * 30 * 70, dtype=np.float32).reshape((40, 30, 70))
    path = tmp_path / "projection_density_100.raw"
    path.write_bytes(data.tobytes(order="F"))
    (tmp_path / "projection_density_100.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "ElementSpacing = 100 100 100\nDimSize = 40 30 70\nElementType = MET_FLOAT\n"
        "ElementDataFile = projection_density_100.raw\n")
    mhd = tmp_path / "projection_density_100.mhd"
    order: list[str] = []

    def open_volume(**kw):
        order.append("read")
        return read_volumes(mhd, **kw)[0]

    cache = tmp_path / "cache"
    job = start_pyramid_job(mhd, open_volume, cache_root=cache,
                            before=lambda job: order.append("before"))
    assert job.done.wait(60) and job.error is None and order == ["before", "read"]
    assert start_pyramid_job(mhd, open_volume, cache_root=cache) is job  # done and on disk
    shutil.rmtree(job.target)  # the cache folder was cleared: convert again
    again = start_pyramid_job(mhd, open_volume, cache_root=cache)
    assert again is not job and again.done.wait(60) and again.error is None
    assert again.target.exists()


def test_reader_of_a_large_grid_reads_no_voxel_on_the_calling_thread(tmp_path, monkeypatch):
    """Opening a compressed 10/25 µm grid reads only its header where napari calls the reader
    (the main thread); the payload is decoded by the background conversion, in a converter
    process: this process reads no voxel of it at all."""
    import nrrd

    from napari_allen import _reader
    from napari_allen import io as nio
    from napari_allen.io import pyramid
    from napari_allen.layers import multiscale

    monkeypatch.setattr(multiscale, "MULTISCALE_VOXELS", 1000)
    monkeypatch.setenv("NAPARI_ALLEN_CACHE", str(tmp_path / "cache"))
    data = np.zeros((40, 30, 70), dtype=np.uint32)
    data[10:20] = 385
    path = tmp_path / "annotation_25.nrrd"
    nrrd.write(str(path), data, {"encoding": "gzip", "space directions": np.diag([25.0] * 3),
                                 "space": "left-posterior-superior"})
    threads: list[str] = []
    original = nio.read_volumes

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(nio, "read_volumes", spy)
    (layer,) = _reader.get_reader(str(path))(str(path))
    assert layer[2] == "labels" and layer[1]["multiscale"]
    job = pyramid._JOBS[pyramid.pyramid_path(path).stem]
    assert job.done.wait(60) and job.error is None
    assert job.mode == "process" and threads == []
    level0 = layer[0][0]
    value = int(np.asarray(level0[15, 0, 0]))
    assert layer[1]["features"].iloc[value]["acronym"] == "VISp"


def test_samples_decode_their_bundled_files_once(monkeypatch):
    from napari_allen import _sample_data
    from napari_allen.io import gridzip

    calls: list[str] = []
    original = gridzip.read_grid_zip

    def spy(path, **kw):
        calls.append(str(path))
        return original(path, **kw)

    monkeypatch.setattr(gridzip, "read_grid_zip", spy)
    _sample_data._nrp1_layers.cache_clear()
    first = _sample_data.nrp1_expression()
    second = _sample_data.nrp1_expression()
    assert len([c for c in calls if "Nrp1" in c]) == 1
    # Each open still gets its own arrays (napari layers may be edited in place).
    for (a, _, _), (b, _, _) in zip(first, second, strict=True):
        assert a is not b and not np.shares_memory(a, b) and a.flags.writeable
        np.testing.assert_array_equal(a, b)
    assert first[0][1]["metadata"] is not second[0][1]["metadata"]
    assert first[1][1]["features"] is not second[1][1]["features"]
    assert first[1][1]["colormap"] is not second[1][1]["colormap"]
    assert first[0][1]["contrast_limits"] == second[0][1]["contrast_limits"]


def test_conversion_progress_reaches_napari_a_few_times_a_second(tmp_path):
    """Each change of napari's activity bar repaints the window: steps are coalesced to at
    most one per ``UPDATE_EVERY_S``, and the last one is still shown."""
    from napari_allen.io.pyramid import PyramidJob
    from napari_allen.layers import activity

    job = PyramidJob(key="test-throttle", target=tmp_path / "x.zarr")
    posted: list = []
    activity.show_job_progress(job, posted.append, "x")
    for step in range(1, 60):  # 59 steps within a few ms
        job.fraction = step / 100
        for fn in job.progress_callbacks:
            fn(job)
    assert len(posted) <= 3  # open the bar, the first step, nothing more yet
    time.sleep(activity.UPDATE_EVERY_S + 0.3)
    assert len(posted) <= 4  # the latest step, once the interval is over
    for fn in posted:
        fn()
    bar = next(b for b in __import__("napari").utils.progress._all_instances
               if b.desc.startswith("x"))
    assert bar.n == 59
    bar.close()


def test_layers_of_one_store_share_recent_slices(tmp_path):
    """Opening a converted grid again shows the planes already read without decoding their
    chunks again; a layer shown another way (other labels) does not share them."""
    from napari_allen.io.pyramid import build_pyramid
    from napari_allen.io.volume import GridVolume
    from napari_allen.layers.multiscale import pyramid_layer

    data = np.zeros((300, 20, 30), dtype=np.uint32)
    data[:, 5:] = 385
    pyr = build_pyramid(GridVolume(data=data, resolution=25.0, kind="annotation"),
                        tmp_path / "p.zarr")
    first = pyramid_layer(pyr.store)[0][0]
    plane = np.asarray(first[150])

    class Counting:
        def __init__(self, array):
            self.array, self.reads = array, 0

        def __getitem__(self, index):
            self.reads += 1
            return self.array[index]

    again = pyramid_layer(pyr.store)[0][0]
    again._array = Counting(again._source())
    np.testing.assert_array_equal(np.asarray(again[150]), plane)
    assert again._array.reads == 0
    np.asarray(again[151])  # another plane is read
    assert again._array.reads == 1
    other = Ontology.from_graph_response([{"id": 385, "acronym": "VISp", "name": "V",
                                           "children": []}])
    own = pyramid_layer(pyr.store, ontology=other)[0][0]
    own._array = Counting(own._source())
    np.asarray(own[150])
    assert own._array.reads == 1


#: Modules no reader or sample path needs to build its layers on napari's main thread: pandas
#: (~0.15-0.7 s) serves only the labels' hover table (napari's Labels imports it anyway), zarr
#: (~0.8 s) only the conversion (a child process; opening a converted store reads its chunks
#: without zarr), scipy/skimage only meshing and analysis, requests/Qt no reader at all.
_HEAVY = ("pandas", "zarr", "scipy", "skimage", "sklearn", "requests", "qtpy", "PyQt5",
          "numba", "fast_simplification", "tifffile", "trimesh")


def _heavy_imports(steps: str, tmp_path) -> list[str]:
    """The heavy modules (:data:`_HEAVY`) a fresh interpreter has imported after ``steps``
    (Python statements, with ``sample`` = the sample module, ``read(path)`` = the reader and
    ``data(*parts)`` = a bundled file); it waits for background conversions to finish."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from napari_allen import _sample_data as sample\n"
        "from napari_allen._reader import get_reader\n"
        "def read(p):\n"
        "    p = str(p)\n"
        "    return get_reader(p)(p)\n"
        "data = sample._data\n"
        f"{steps}\n"
        f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules))\n"
        "from napari_allen.io.pyramid import conversions_running\n"
        "import time\n"
        "while conversions_running():\n"
        "    time.sleep(0.1)\n"
    )
    env = {**os.environ, "NAPARI_ALLEN_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300, env=env)
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list


def test_opening_images_imports_no_heavy_module(tmp_path):
    """An image sample or image grid file (NRRD, zip) imports none of :data:`_HEAVY`."""
    steps = ("sample.connectivity_158375425()\n"
             "read(data('connectivity', '158375425', 'projection_density_100.nrrd'))\n"
             "read(data('ish', 'Nrp1_P56_coronal_74272479_200um.zip'))")
    assert _heavy_imports(steps, tmp_path) == []


def test_opening_labels_imports_only_pandas(tmp_path):
    """Samples and files with an atlas Labels layer (the Nrp1 sample's grid annotation, the
    25 µm annotation file, the CCF reference sample with its outline) import pandas for the
    hover table (as any napari Labels layer does) and nothing else heavy."""
    steps = ("sample.nrp1_expression()\n"
             "read(data('annotation', 'annotation_25.nrrd'))\n"
             "sample.ccf_reference_25()")
    assert _heavy_imports(steps, tmp_path) == ["pandas"]


def test_a_store_opened_before_is_not_opened_again(tmp_path, monkeypatch):
    """Opening a converted grid again reuses the opened store (no metadata read again); a
    rewritten or removed store is not reused. Opening imports no zarr."""
    import os
    import shutil
    import subprocess
    import sys

    import zarr

    from napari_allen.io import pyramid
    from napari_allen.io.pyramid import build_pyramid, open_pyramid
    from napari_allen.io.volume import GridVolume

    data = np.arange(300 * 20 * 30, dtype=np.float32).reshape((300, 20, 30))
    pyr = build_pyramid(GridVolume(data=data, resolution=25.0), tmp_path / "p.zarr")
    opened = open_pyramid(pyr.store)
    calls: list = []
    real = pyramid._open_levels
    monkeypatch.setattr(pyramid, "_open_levels",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    assert open_pyramid(pyr.store) is opened and calls == []
    group = zarr.open_group(str(pyr.store), mode="r+")
    attrs = dict(group.attrs["napari_allen"])
    attrs["complete"] = False  # zarr.json rewritten: read (and rejected) again
    group.attrs["napari_allen"] = attrs
    assert open_pyramid(pyr.store) is None
    attrs["complete"] = True
    group.attrs["napari_allen"] = attrs
    again = open_pyramid(pyr.store)
    assert again is not None and again is not opened and len(calls) == 1
    code = ("import sys; from napari_allen.io.pyramid import open_pyramid; "
            f"p = open_pyramid({str(pyr.store)!r}); p.levels[0][5]; "
            "sys.exit(0 if p and 'zarr' not in sys.modules else 1)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
                          ).returncode == 0
    shutil.rmtree(pyr.store)
    assert open_pyramid(pyr.store) is None
