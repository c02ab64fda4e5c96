"""Lines JSON (the Allen script's shape) and the lines layers, without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_allen.errors import AllenFormatError
from napari_allen.io.lines_json import (
    LAYER_META_KEY,
    LineRecord,
    looks_like_lines_json,
    read_lines_json,
    write_lines_json,
    write_lines_json_from_layer,
)
from napari_allen.layers.lines import experiment_colors, lines_layers, read_lines_json_layers

INJECTION = [4300.0, 2690.0, 7050.0]


def record(exp: int, seed, density: float = 0.14, abbrev: str = "MOs ") -> dict:
    """A target-spatial record in the served shape (hyphenated keys, path ends at injection)."""
    mid = (np.asarray(seed, float) + INJECTION) / 2
    return {
        "id": exp, "structure-id": 993, "structure-abbrev": abbrev,
        "structure-name": "Secondary motor area",
        "injection-structures": [{"id": 993, "abbreviation": "MOs"}],
        "injection-coordinates": INJECTION, "density": density,
        "path": [
            {"coord": [float(c) for c in seed], "density": density, "intensity": 850.2},
            {"coord": mid.tolist(), "density": density / 2, "intensity": 400.0},
            {"coord": INJECTION, "density": 0, "intensity": 0},
        ],
    }


RECORDS = [record(156394513, [7400, 3300, 3300]), record(100141219, [7000, 3000, 3000], 0.2),
           record(156394513, [7600, 3300, 3300], 0.05)]


def test_line_record_parses_served_record():
    line = LineRecord.from_record(RECORDS[0])
    assert line.experiment_id == 156394513
    assert line.injection_structure == "MOs"  # Allen's trailing space removed
    assert line.seed_um == (7400.0, 3300.0, 3300.0)
    np.testing.assert_array_equal(line.injection_um, INJECTION)
    assert line.target_density == pytest.approx(0.14)
    assert line.coords_um.shape == (3, 3) and line.densities[-1] == 0
    with pytest.raises(AllenFormatError, match="path"):
        LineRecord.from_record({"id": 1, "path": []}, where="seed 1,2,3")


def test_kept_lines_leave_gc_tracking_and_save_as_served(tmp_path):
    """A parsed line's path points (kept as long as its layer) end up untracked by the garbage
    collector, so napari's full collections do not walk them; the saved JSON is byte for
    byte what the served records give, integer coordinates included."""
    import gc

    served = json.loads(json.dumps(RECORDS))  # as parsed from a response: lists everywhere
    served[0]["path"][-1]["coord"] = [4300, 2690, 7050]
    lines = [LineRecord.from_record(r) for r in served]
    gc.collect()
    points = [p for ln in lines for p in ln.record["path"]]
    assert not any(gc.is_tracked(p) or gc.is_tracked(p["coord"]) for p in points)
    assert all(gc.is_tracked(p) for r in served for p in r["path"])  # the parse as it was
    write_lines_json(tmp_path / "kept.json", [ln.record for ln in lines], [INJECTION])
    write_lines_json(tmp_path / "served.json", served, [INJECTION])
    assert (tmp_path / "kept.json").read_bytes() == (tmp_path / "served.json").read_bytes()
    assert [ln.record for ln in lines] == [
        {**r, "path": [{**p, "coord": tuple(p["coord"])} for p in r["path"]]} for r in served]


def test_json_round_trip_keeps_script_shape(tmp_path):
    target = tmp_path / "data.json"
    write_lines_json(target, RECORDS, [[4300, 2600, 7000], [4400, 2700, 7100]],
                     metadata={"experiment": 156394513})
    doc = json.loads(target.read_text())
    assert list(doc)[:2] == ["lines", "injectionCoordinates"]
    assert doc["lines"][0]["path"][-1] == {"coord": INJECTION, "density": 0, "intensity": 0}
    back = read_lines_json(target)
    assert back.lines == json.loads(json.dumps(RECORDS))
    assert back.injection_coordinates.tolist() == [[4300, 2600, 7000], [4400, 2700, 7100]]
    assert back.metadata == {"experiment": 156394513}
    assert looks_like_lines_json(target)


def test_sniff_rejects_other_json_and_reader_errors_name_the_file(tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"success": true, "msg": []}')
    assert not looks_like_lines_json(other)
    assert not looks_like_lines_json(tmp_path / "missing.json")
    wrong_ext = tmp_path / "data.txt"
    wrong_ext.write_text('{"lines": []}')
    assert not looks_like_lines_json(wrong_ext)
    bad = tmp_path / "bad.json"
    bad.write_text('{"lines": [{"id": 1, "path": [{"coord": [1, 2]}]}]}')
    assert looks_like_lines_json(bad)
    with pytest.raises(AllenFormatError, match=r"bad\.json.*coord"):
        read_lines_json(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"lines": [')
    with pytest.raises(AllenFormatError, match="broken.json: not valid JSON"):
        read_lines_json(broken)
    with pytest.raises(AllenFormatError, match="not a spatial-search lines file"):
        read_lines_json(other)


def test_lines_layers_shapes_vectors_points():
    layers = lines_layers(RECORDS, [[4300, 2600, 7000]], name="exp")
    (paths, skw, stype), (vecs, vkw, vtype), (pts, pkw, ptype) = layers
    assert (stype, vtype, ptype) == ("shapes", "vectors", "points")
    assert skw["shape_type"] == "path" and len(paths) == 3
    assert skw["units"] == ("um", "um", "um") and skw["scale"] == (1.0, 1.0, 1.0)
    feats = skw["features"]
    assert feats["experiment"].tolist() == [156394513, 100141219, 156394513]
    assert feats["injection_structure"].tolist() == ["MOs"] * 3
    assert feats["target_density"].tolist() == pytest.approx([0.14, 0.2, 0.05])
    colors = skw["edge_color"]
    np.testing.assert_array_equal(colors[0], colors[2])  # same experiment, same colour
    assert not np.array_equal(colors[0], colors[1])
    # Vectors: each 3-point path gives 2 segments that add up to the path.
    assert vecs.shape == (6, 2, 3)
    np.testing.assert_allclose(vecs[0, 0] + vecs[0, 1] + vecs[1, 1], INJECTION)
    assert vkw.get("projection_mode") == "all" or vkw.get("out_of_slice_display") is True
    assert pts.tolist() == [[4300, 2600, 7000]]
    assert skw["metadata"][LAYER_META_KEY]["records"][1]["id"] == 100141219
    assert experiment_colors([5, 3]) == experiment_colors([3, 5, 5])


def test_layers_can_be_created_by_napari():
    from napari.layers import Layer

    for data, kwargs, layer_type in lines_layers(RECORDS, [[4300, 2600, 7000]]):
        layer = Layer.create(data, kwargs, layer_type)
        assert layer.ndim == 3
    shapes = Layer.create(*lines_layers(RECORDS)[0])
    assert shapes.features["experiment"].tolist()[1] == 100141219


def test_writer_from_layer_round_trips_through_reader(tmp_path):
    from napari.layers import Layer

    shapes = Layer.create(*lines_layers(RECORDS, [[4300, 2600, 7000]])[0])
    shapes.selected_data = {1}
    shapes.remove_selected()  # the user deleted a line
    meta = shapes._get_state()
    out = tmp_path / "saved.json"
    assert write_lines_json_from_layer(out, shapes.data, meta) == [str(out)]
    doc = read_lines_json(out)
    assert [r["id"] for r in doc.lines] == [156394513, 156394513]
    assert doc.lines[1]["density"] == 0.05 and doc.lines[1]["path"][0]["intensity"] == 850.2
    assert doc.injection_coordinates.tolist() == [[4300, 2600, 7000]]
    layers = read_lines_json_layers(out)
    assert [t[2] for t in layers] == ["shapes", "vectors", "points"]
    np.testing.assert_allclose(layers[0][0][1], np.asarray(shapes.data[1]))
    assert write_lines_json_from_layer(tmp_path / "empty.json", [], meta) == []


def test_plugin_reader_opens_lines_json(tmp_path):
    from napari_allen._reader import get_reader

    target = tmp_path / "lines.json"
    write_lines_json(target, RECORDS[:1], [[4300, 2600, 7000]])
    reader = get_reader(str(target))
    assert reader is not None
    layers = reader(str(target))
    assert [t[2] for t in layers] == ["shapes", "vectors", "points"]
    assert layers[0][1]["features"]["experiment"].tolist() == [156394513]
    other = tmp_path / "other.json"
    other.write_text('{"success": true}')
    assert get_reader(str(other)) is None


def test_fiber_tract_layer_is_atlas_coloured_labels():
    from napari.layers import Layer

    from napari_allen.atlas.fiber_tracts import FiberTracts
    from napari_allen.atlas.ontology import Ontology
    from napari_allen.layers.lines import fiber_tract_layer
    from napari_allen.layers.volumes import structure_ids_of

    ann = np.zeros((12, 8, 8), dtype=np.uint32)
    ann[4, 4, 4] = 776  # corpus callosum -> 100 µm voxel (1, 1, 1)
    ann[8, 4, 4] = 385  # VISp (grey matter) -> dropped
    data, kwargs, layer_type = fiber_tract_layer(FiberTracts.from_annotation(ann, 25), 100)
    assert layer_type == "labels" and data.shape == (3, 2, 2)
    assert np.argwhere(data).tolist() == [[1, 1, 1]]
    # labels_layer stores compact values; they map back to the structure ids.
    assert structure_ids_of(data, kwargs["metadata"])[1, 1, 1] == 776
    assert tuple(kwargs["scale"]) == (100.0, 100.0, 100.0)
    layer = Layer.create(data, kwargs, layer_type)
    value = data[1, 1, 1]
    np.testing.assert_allclose(layer.colormap.map(np.array([value]))[0][:3],
                               np.array(Ontology.default().rgb(776)) / 255, atol=1e-3)
    assert layer.features.set_index("index").loc[value, "acronym"] == "cc"


def test_plugin_writer_then_reader(tmp_path):
    from napari.layers import Layer

    from napari_allen._reader import get_reader
    from napari_allen._writer import write_spatial_search_json

    layer = Layer.create(*lines_layers(RECORDS, [[4300, 2600, 7000]])[0])
    out = tmp_path / "via_writer.json"
    assert write_spatial_search_json(str(out), layer.data, layer._get_state()) == [str(out)]
    shapes = get_reader(str(out))(str(out))[0]
    assert shapes[1]["features"]["experiment"].tolist() == [156394513, 100141219, 156394513]
    for a, b in zip(shapes[0], layer.data, strict=True):
        np.testing.assert_allclose(a, b)


def test_drawn_shapes_without_an_experiment_round_trip(tmp_path):
    """A path drawn in napari (no service record, no experiment id) is written and read back
    (as NO_EXPERIMENT) instead of producing a file the reader rejects."""
    from napari.layers import Shapes

    from napari_allen.io.lines_json import NO_EXPERIMENT

    data, kwargs, _ = lines_layers(RECORDS[:1], [INJECTION])[0]
    shapes = Shapes(data, **{k: v for k, v in kwargs.items() if k != "units"})
    shapes.add_paths([np.array([[7000.0, 3000, 3000], [6000, 2800, 5000]])])
    shapes.features.loc[1, ["record_index", "experiment"]] = -1  # no record, no experiment
    out = tmp_path / "drawn.json"
    assert write_lines_json_from_layer(out, shapes.data, shapes._get_state()) == [str(out)]
    doc = read_lines_json(out)
    assert doc.lines[0]["id"] == 156394513 and "id" not in doc.lines[1]
    layers = read_lines_json_layers(out)
    assert layers[0][1]["features"]["experiment"].tolist() == [156394513, NO_EXPERIMENT]
    np.testing.assert_allclose(layers[0][0][1], np.asarray(shapes.data[1]))
