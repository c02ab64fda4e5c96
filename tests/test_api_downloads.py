"""Verified downloads and batch downloads against the local Allen API server."""

from __future__ import annotations

import hashlib
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

from napari_allen.api.batch import (
    RESULT_COLUMNS,
    BatchCancelled,
    GridRequest,
    NrrdRequest,
    download_many,
)
from napari_allen.api.client import AllenClient
from napari_allen.errors import AllenApiError
from napari_allen.io.manifest import MANIFEST_NAME
from napari_allen.progress import Cancelled, CancelToken

NRP1 = 74272479
VPM_EXP = 158375425

# `client`: an AllenClient of the local server with short backoff (tests/conftest.py).


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served(server, url: str) -> str:
    parts = urlsplit(url)
    return server.checksum(parts.path + "?" + parts.query)


def leftovers(root):
    return sorted(p.name for p in root.rglob("*") if p.suffix in (".part", ".lock"))


def test_grid_zip_once_per_experiment_and_volume(client, allen_api):
    path = client.grid_zip(NRP1)
    assert sha(path) == served(allen_api, client.grid_zip_url(NRP1, ["energy"]))
    assert client.grid_zip(NRP1) == path
    assert len(allen_api.requests) == 1
    (vol,) = client.grid_volumes(NRP1)
    assert vol.shape == (67, 41, 58) and vol.kind == "energy"
    assert vol.metadata["experiment_id"] == NRP1
    assert np.nanmax(np.asarray(vol.data)) == pytest.approx(25.9, abs=0.1)  # real Nrp1 grid
    assert len(allen_api.requests) == 1


def test_nrrd_and_annotation_downloads(client, allen_api):
    path = client.grid_nrrd(VPM_EXP, "injection_density", 100)
    assert sha(path) == served(allen_api, client.grid_nrrd_url(VPM_EXP, "injection_density", 100))
    ann = client.annotation_nrrd(100)
    assert ann.name == "annotation_100.nrrd"
    assert allen_api.requests[-1]["path"].endswith("ccf_2017/annotation_100.nrrd")
    with pytest.raises(ValueError):
        client.grid_nrrd(VPM_EXP, "projection_density,data_mask")
    with pytest.raises(ValueError):
        client.annotation_nrrd(30)


@pytest.mark.parametrize("mode,options", [
    ("http500", {}), ("html200", {}), ("empty_body", {}), ("http429", {}),
    ("truncated", {}), ("truncated", {"matching_length": True}),
])
def test_download_faults_are_retried_and_never_cached(client, allen_api, mode, options):
    allen_api.faults.add(mode, path_contains="grid_data", times=2, **options)
    path = client.grid_zip(NRP1, ["energy", "density"])
    assert sha(path) == served(allen_api, client.grid_zip_url(NRP1, ["energy", "density"]))
    assert [r["fault"] for r in allen_api.requests] == [mode, mode, None]
    assert leftovers(client.store.root) == []


def test_persistent_truncation_fails_and_leaves_nothing(allen_api):
    allen_api.faults.add("truncated", path_contains="grid_data", matching_length=True)
    c = AllenClient(retries=2, backoff=0.01)
    with pytest.raises(AllenApiError, match="not a complete zip") as info:
        c.grid_zip(NRP1)
    assert "grid_data/download/74272479" in info.value.url
    target = c.store.grid_zip(c.api_host, NRP1, ["energy"])
    assert not target.exists()
    assert leftovers(c.store.root) == []


def test_missing_experiment_is_a_clear_error(client, allen_api):
    with pytest.raises(AllenApiError) as info:
        client.grid_nrrd(1, "projection_density")
    assert info.value.status == 404 and len(allen_api.requests) == 1


def test_cancel_during_a_slow_body_is_prompt(client, allen_api):
    allen_api.faults.add("slow_body", path_contains="grid_data", delay=2.0)
    token = CancelToken()
    timer = threading.Timer(0.3, token.cancel)
    started = time.monotonic()
    timer.start()
    with pytest.raises(Cancelled):
        client.grid_nrrd(VPM_EXP, "projection_density", 100, cancel=token)
    assert time.monotonic() - started < 1.5  # the stalled read was interrupted
    assert leftovers(client.store.root) == []
    assert not client.store.grid_nrrd(client.api_host, VPM_EXP, "projection_density",
                                      100).exists()
    deadline = time.monotonic() + 5
    while not allen_api.requests and time.monotonic() < deadline:
        time.sleep(0.05)  # let the server finish (and log) the stalled response


def _ish_ids(client, n):
    listing = client.ish_plane_listing("coronal")
    return [int(i) for i in listing["experiment_id"]][:n]


def test_batch_downloads_concurrently_with_progress(client, allen_api, tmp_path):
    ids = _ish_ids(client, 12)
    seen = []
    reqs = [GridRequest(i) for i in ids] + [NrrdRequest(VPM_EXP, "data_mask", 100)]
    frame = download_many(client, reqs, jobs=4, progress=seen.append)
    assert list(frame.columns) == RESULT_COLUMNS
    assert (frame["status"] == "downloaded").all()
    assert frame["experiment_id"].tolist() == ids + [VPM_EXP]
    last = seen[-1]
    assert last.done == len(reqs) and last.failed == 0
    assert last.bytes_done == frame["bytes"].sum() > 0
    for (_, row), req in zip(frame.iterrows(), reqs, strict=True):
        url, target, _ = req.plan(client)
        assert row["path"] == str(target) and sha(target) == served(allen_api, url)
    again = download_many(client, reqs, jobs=4)
    assert (again["status"] == "verified").all()


def test_batch_failures_are_reported_per_row(client, allen_api):
    reqs = [GridRequest(NRP1), NrrdRequest(1, "data_mask", 100), GridRequest(NRP1, ("bogus",))]
    frame = download_many(client, reqs, jobs=2)
    assert frame["status"].tolist() == ["downloaded", "failed", "failed"]
    assert "404" in frame.loc[1, "error"] and "bogus" in frame.loc[2, "error"]


def test_batch_cancel_then_resume(client, allen_api, tmp_path):
    ids = _ish_ids(client, 16)
    out = tmp_path / "out"
    reqs = [GridRequest(i, dest=out / f"{i}.zip") for i in ids]
    allen_api.latency_ms = 50
    token = CancelToken()

    def progress(p):
        if p.done >= 4:
            token.cancel()

    with pytest.raises(BatchCancelled) as info:
        download_many(client, reqs, jobs=2, progress=progress, cancel=token)
    first = info.value.results
    done = set(first.loc[first["status"] == "downloaded", "experiment_id"])
    assert 4 <= len(done) < len(ids)
    assert set(first["status"]) <= {"downloaded", "cancelled"}
    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST_NAME] + [f"{i}.zip" for i in done])
    allen_api.latency_ms = 0
    second = download_many(client, reqs, jobs=4)
    status = dict(zip(second["experiment_id"], second["status"], strict=True))
    assert {i for i, s in status.items() if s == "verified"} == done
    assert {i for i, s in status.items() if s == "downloaded"} == set(ids) - done
    for req in reqs:
        url, target, _ = req.plan(client)
        assert sha(target) == served(allen_api, url)


def test_batch_with_random_faults_is_still_exact(allen_api, tmp_path):
    c = AllenClient(backoff=0.01, retries=8)
    ids = _ish_ids(c, 20)
    allen_api.fault_rate = 0.3
    frame = download_many(c, [GridRequest(i) for i in ids], jobs=4)
    allen_api.fault_rate = 0.0
    assert (frame["status"] == "downloaded").all(), frame["error"].tolist()
    assert sum(1 for r in allen_api.requests if r["fault"]) > 0
    for i in ids:
        assert sha(c.store.grid_zip(c.api_host, i, ["energy"])) == \
            served(allen_api, c.grid_zip_url(i, ["energy"]))
    assert leftovers(c.store.root) == []


def test_concurrent_requests_for_one_file_download_it_once(client, allen_api):
    paths: list = []
    threads = [threading.Thread(target=lambda: paths.append(client.grid_zip(NRP1)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and len(paths) == 4
    assert len(allen_api.requests) == 1


KILLED_DOWNLOAD = """
import sys
from napari_allen.api.client import AllenClient
AllenClient(sys.argv[1], sys.argv[2]).grid_nrrd(158375425, "projection_density", 100)
"""


def test_killed_process_leaves_nothing_trusted_and_the_next_run_resumes(allen_api, tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "shared-cache"
    allen_api.faults.add("slow_body", path_contains="download_file", times=1, delay=2.0)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DOWNLOAD, allen_api.url, str(cache)])
    c = AllenClient(allen_api.url, cache, backoff=0.01)
    target = c.store.grid_nrrd(c.api_host, VPM_EXP, "projection_density", 100)
    part = target.with_name(target.name + ".part")
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL mid-body: no clean-up code runs
    proc.wait()
    assert part.exists() and not target.exists()
    partial = part.stat().st_size
    seen = []
    path = c.grid_nrrd(VPM_EXP, "projection_density", 100, progress=seen.append)
    url = c.grid_nrrd_url(VPM_EXP, "projection_density", 100)
    assert path == target and sha(path) == served(allen_api, url)
    assert seen[-1].bytes_done == path.stat().st_size - partial  # resumed, not restarted
    assert leftovers(cache) == []
    while len(allen_api.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the stalled response of the killed process is logged last


def test_partial_file_longer_than_the_server_file_is_discarded(client, allen_api):
    target = client.store.grid_zip(client.api_host, NRP1, ["energy"])
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(b"x" * 5_000_000)
    path = client.grid_zip(NRP1)
    assert sha(path) == served(allen_api, client.grid_zip_url(NRP1, ["energy"]))
    assert [r["status"] for r in allen_api.requests] == [416, 200]


def test_downloads_record_provenance_and_synthetic_data_is_named_so(client, allen_api):
    """Each cached file has a manifest entry with its URL; data the server generated (flagged
    by its header) stays marked synthetic in the volume's metadata and layer name, real not."""
    from napari_allen.io.manifest import recorded_entry

    (real,) = client.grid_volumes(74272479)  # the bundled real Nrp1 grid
    synthetic_id = int(client.search_ish(["Gad1"], plane="coronal")["experiment_id"].iloc[0])
    (generated,) = client.grid_volumes(synthetic_id)
    assert "synthetic" not in real.metadata and "[synthetic]" not in real.name
    assert real.metadata["source_url"].endswith("/grid_data/download/74272479?include=energy")
    assert generated.metadata["synthetic"] is True
    assert generated.name == f"Gad1 energy [synthetic] (exp {synthetic_id})"
    assert recorded_entry(client.grid_zip(synthetic_id, ("energy",))).synthetic

    nrrd = client.grid_nrrd(158375425, "projection_density", 100)
    from napari_allen.io.nrrd import read_nrrd

    assert "synthetic" not in read_nrrd(nrrd).metadata  # real 158375425 file
