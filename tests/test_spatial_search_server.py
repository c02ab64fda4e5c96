"""Spatial search through the local Allen API server (real URL forms, faults, cache)."""

from __future__ import annotations

import gzip
import json
from importlib import resources

import numpy as np
import pytest

from napari_allen.workflows.seed_search import search_seeds

EXPERIMENT = 156394513


def _client():
    from napari_allen.api.client import AllenClient

    return AllenClient(retries=3, backoff=0.01)


def _spatial_requests(server) -> list[dict]:
    return [r for r in server.requests if "target_spatial" in r["path"] + str(r["query"])]


def _seeds(n: int) -> np.ndarray:
    """``n`` seed voxels (µm) of the experiment's projection density, as the lines script
    picks them (density 0.04-0.3), spread over the projection."""
    from napari_allen.analysis.seeds import seed_points_um, select_seeds
    from napari_allen.io.nrrd import read_nrrd

    density = read_nrrd(_client().grid_nrrd(EXPERIMENT, "projection_density", 100))
    return seed_points_um(select_seeds(density, max_seeds=n))


def _metadata_injection_site(experiment: int) -> np.ndarray:
    """The injection point (µm) in the bundled real experiments.json (AllenSDK's cache)."""
    path = resources.files("allen_local_api") / "data" / "connectivity" / "experiments.json.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as fh:
        records = json.load(fh)
    (exp,) = [r for r in records if int(r["data_set_id"]) == experiment]
    return np.array([exp["injection_x"], exp["injection_y"], exp["injection_z"]], dtype=float)


def test_lines_end_at_the_injection_site(allen_api):
    client = _client()
    seeds = _seeds(12)
    allen_api.reset()  # count only the spatial queries below
    result = search_seeds(client, seeds, section_data_set=EXPERIMENT, jobs=4)
    assert result.n_failed == 0
    assert len(result.lines) == 12  # one line per seed of the experiment's own projection
    site = _metadata_injection_site(EXPERIMENT)
    for line in result.lines:
        assert line.experiment_id == EXPERIMENT
        np.testing.assert_allclose(line.injection_um, site, atol=1e-6)
        assert line.record["injection-coordinates"] == list(site)
        assert line.densities[-1] == 0 and line.intensities[-1] == 0
        # The path starts at (or next to) the seed it was asked for.
        assert np.linalg.norm(line.coords_um[0] - np.asarray(line.seed_um)) <= 100 * np.sqrt(3)
        assert line.injection_structure
    # Every seed was asked exactly once, with the experiment as section_data_set.
    requests = _spatial_requests(allen_api)
    assert len(requests) == 12
    assert all(f"section_data_set$eq{EXPERIMENT}" in r["path"] + str(r["query"])
               for r in requests)


def test_faults_on_some_seeds_do_not_lose_the_others(allen_api):
    seeds = _seeds(10)
    bad = [seeds[2], seeds[7]]
    for point in bad:
        text = ",".join(str(int(v)) for v in point)
        allen_api.faults.add("http500", path_contains=f"seed_point$eq{text}")  # every time
    # Transient faults, as many as the client's retries: absorbed, however they fall on seeds.
    allen_api.faults.add("success_false", path_contains="target_spatial", times=3)
    result = search_seeds(_client(), seeds, section_data_set=EXPERIMENT, jobs=4)
    assert sorted(f.seed_um for f in result.failures) == sorted(
        tuple(float(v) for v in p) for p in bad)
    asked_ok = {ln.seed_um for ln in result.lines}
    assert len(asked_ok) == 8
    assert not asked_ok & {tuple(float(v) for v in p) for p in bad}


def test_random_transient_faults_are_retried_per_seed(allen_api):
    from napari_allen.api.client import AllenClient

    seeds = _seeds(20)
    allen_api.reset()
    allen_api.faults.fault_rate = 0.3  # 30 % of requests fail in a retryable way
    client = AllenClient(retries=8, backoff=0.001)
    result = search_seeds(client, seeds, section_data_set=EXPERIMENT, jobs=4)
    assert result.n_failed == 0 and len(result.lines) == 20
    faulted = [r for r in _spatial_requests(allen_api) if r.get("fault")]
    assert faulted, "the fault rate really injected faults"
    assert len(_spatial_requests(allen_api)) == 20 + len(faulted)  # one retry per fault


def test_repeated_run_hits_the_cache(allen_api):
    seeds = _seeds(15)
    allen_api.reset()
    first = search_seeds(_client(), seeds, section_data_set=EXPERIMENT, jobs=4)
    n_first = len(_spatial_requests(allen_api))
    assert n_first == 15
    # A new client on the same cache folder (a new session): no new request.
    second = search_seeds(_client(), seeds, section_data_set=EXPERIMENT, jobs=4)
    assert len(_spatial_requests(allen_api)) == n_first
    assert [ln.record for ln in second.lines] == [ln.record for ln in first.lines]


class _ThreadRecordingClient:
    """The real client, noting which thread asked for each seed."""

    def __init__(self, client) -> None:
        self.client, self.http, self.threads = client, client.http, []

    def target_spatial_search(self, point, **kwargs):
        import threading

        self.threads.append(threading.current_thread().name)
        return self.client.target_spatial_search(point, **kwargs)


def test_cached_seeds_are_asked_on_the_calling_thread(allen_api):
    """Cached answers hold the GIL and never wait: threads only take it from napari's main
    thread. Seeds go to the pool from the first one the server had to answer."""
    import threading

    seeds = _seeds(12)
    here = threading.current_thread().name
    fresh = _ThreadRecordingClient(_client())
    first = search_seeds(fresh, seeds[:5], section_data_set=EXPERIMENT, jobs=4)
    # Nothing cached: only the first seed is asked here, the others on the pool.
    assert fresh.threads[0] == here
    assert all(name.startswith("allen-spatial") for name in fresh.threads[1:])
    allen_api.reset()
    again = _ThreadRecordingClient(_client())
    second = search_seeds(again, seeds[:5], section_data_set=EXPERIMENT, jobs=4)
    assert again.threads == [here] * 5 and not _spatial_requests(allen_api)
    assert [ln.record for ln in second.lines] == [ln.record for ln in first.lines]
    # 5 cached seeds, then 7 new ones: the cached ones here, the new ones on the pool.
    mixed = _ThreadRecordingClient(_client())
    both = search_seeds(mixed, seeds, section_data_set=EXPERIMENT, jobs=4)
    assert mixed.threads[:6] == [here] * 6  # the 6th is the first the server answers
    assert all(name.startswith("allen-spatial") for name in mixed.threads[6:])
    assert len(_spatial_requests(allen_api)) == 7 and both.n_failed == 0
    assert [ln.seed_um for ln in both.lines] == [tuple(float(v) for v in s) for s in seeds]


def test_point_search_across_experiments(allen_api):
    result = search_seeds(_client(), [[5000.0, 3500.0, 7500.0]], jobs=1)
    assert result.n_failed == 0
    assert len({ln.experiment_id for ln in result.lines}) > 1
    request = _spatial_requests(allen_api)[0]
    assert "section_data_set" not in request["path"] + str(request["query"])


def test_experiment_pipeline_and_json_round_trip(allen_api, tmp_path):
    from napari_allen._reader import get_reader
    from napari_allen.workflows.spatial_search import run_experiment_search

    search = run_experiment_search(_client(), EXPERIMENT, max_seeds=20, jobs=4)
    assert len(search.seeds) == 20 and search.seeds.attrs["in_range"] >= 20
    assert search.result.n_failed == 0 and search.lines
    assert len(search.injection_coordinates) > 0
    # Injection voxels sit around the experiment's injection point.
    site = np.asarray(search.lines[0].injection_um)
    assert np.linalg.norm(search.injection_coordinates.mean(axis=0) - site) < 1500
    out = search.save_json(tmp_path / "lines.json")
    layers = get_reader(str(out))(str(out))
    assert [t[2] for t in layers] == ["shapes", "vectors", "points"]
    assert len(layers[0][0]) == len(search.lines)
    assert len(layers[2][0]) == len(search.injection_coordinates)


def test_cli_spatial_search(allen_api, tmp_path, capsys):
    from napari_allen.cli import main

    out = tmp_path / "cli.json"
    code = main(["spatial-search", "--experiment", str(EXPERIMENT), "--max-seeds", "8",
                 "--jobs", "4", "--no-fiber-mask", "--out", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"lines", "injectionCoordinates"}
    assert len(doc["lines"]) == 8 and all(r["id"] == EXPERIMENT for r in doc["lines"])
    assert doc["napari-allen"]["fiber_tracts"] is None
    assert "8 seeds, 8 lines, 0 failed" in capsys.readouterr().err
    # stdout mode writes the same lines (from the cache: no new spatial query).
    n_before = len(_spatial_requests(allen_api))
    assert main(["spatial-search", "--max-seeds", "8", "--no-fiber-mask", "--quiet",
                 "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"] == doc["lines"]
    assert len(_spatial_requests(allen_api)) == n_before
    with pytest.raises(SystemExit):
        main(["spatial-search", "--jobs", "0", "--out", str(out)])
    assert main(["spatial-search", "--min", "0.5", "--max", "0.1", "--out", str(out)]) == 2


def test_cli_exit_code_reports_failed_seeds(allen_api, tmp_path):
    from napari_allen.cli import main

    # A non-retryable refusal on every spatial query (retried faults would only be slower).
    allen_api.faults.add("success_false", path_contains="target_spatial",
                         message="Error in query: bad syntax")
    out = tmp_path / "failed.json"
    assert main(["spatial-search", "--max-seeds", "3", "--no-fiber-mask", "--quiet",
                 "--out", str(out)]) == 3
    doc = json.loads(out.read_text())
    assert doc["lines"] == [] and len(doc["napari-allen"]["failed_seeds"]) == 3
