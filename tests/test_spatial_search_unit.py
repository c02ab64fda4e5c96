"""search_seeds' own logic (dedupe, cap, order, per-seed failures, cancel) with an in-process
stand-in for the client; the HTTP path is covered against the local server in
test_spatial_search_server.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_allen.errors import AllenApiError
from napari_allen.progress import Cancelled, CancelToken
from napari_allen.workflows.seed_search import search_seeds, unique_seeds

INJECTION = [4300.0, 2690.0, 7050.0]


class FakeClient:
    """Answers like the service: one record per seed, path seed -> injection."""

    def __init__(self, fail_on=(), delay=0.0):
        self.calls: list[tuple] = []
        self.fail_on = {tuple(p) for p in fail_on}
        self.delay = delay
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def target_spatial_search(self, seed_point_um, *, section_data_set=None, cancel=None,
                              **filters):
        key = tuple(seed_point_um)
        with self.lock:
            self.calls.append((key, section_data_set, filters))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            if key in self.fail_on:
                raise AllenApiError("http://local/query.json", "Informatics service request "
                                    "failed", status=500)
            return [{"id": section_data_set or 1, "structure-abbrev": "MOs", "density": 0.1,
                     "path": [{"coord": list(map(float, key)), "density": 0.1, "intensity": 5},
                              {"coord": INJECTION, "density": 0, "intensity": 0}]}]
        finally:
            with self.lock:
                self.active -= 1


def seeds(n: int) -> np.ndarray:
    return np.array([[100.0 * i, 200.0, 300.0] for i in range(n)])


def test_unique_seeds_rounds_and_keeps_first_order():
    pts = [[100.2, 200, 300], [0, 0, 0], [99.8, 200, 300], [0, 0, 0.4]]
    assert unique_seeds(pts).tolist() == [[100, 200, 300], [0, 0, 0]]
    with pytest.raises(ValueError, match="NaN"):
        unique_seeds([[np.nan, 0, 0]])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        unique_seeds([[1, 2]])


def test_dedupe_cap_and_seed_order_with_concurrency():
    client = FakeClient(delay=0.02)
    pts = np.concatenate([seeds(30), seeds(30)])  # every seed twice
    progress = []
    result = search_seeds(client, pts, section_data_set=156394513, jobs=6, max_seeds=25,
                          progress=progress.append, transgenic_lines=["0"])
    assert (result.n_requested, result.n_unique, result.n_queried) == (60, 30, 25)
    assert len(client.calls) == 25  # each unique seed asked once, cap respected
    assert {c[1] for c in client.calls} == {156394513}
    assert client.calls[0][2] == {"transgenic_lines": ["0"]}
    assert client.max_active > 1  # really concurrent
    assert client.max_active <= 6
    assert [ln.seed_um[0] for ln in result.lines] == [100.0 * i for i in range(25)]
    assert all(ln.experiment_id == 156394513 for ln in result.lines)
    assert progress[-1].done == 25 and progress[-1].total == 25


def test_failures_are_recorded_per_seed_and_others_kept():
    bad = [(500, 200, 300), (1200, 200, 300)]
    client = FakeClient(fail_on=bad)
    got = []
    result = search_seeds(client, seeds(20), jobs=4, on_lines=got.extend)
    assert result.n_failed == 2
    assert [f.seed_um for f in result.failures] == [(500.0, 200.0, 300.0),
                                                    (1200.0, 200.0, 300.0)]
    assert "Informatics service request failed" in result.failures[0].error
    assert len(result.lines) == 18 and len(got) == 18
    assert result.failures_frame()["seed_ap_um"].tolist() == [500.0, 1200.0]
    frame = result.to_frame()
    assert len(frame) == 18 and 500.0 not in frame["seed_ap_um"].tolist()


def test_cancel_stops_quickly_and_leaves_seeds_unasked():
    client = FakeClient(delay=0.05)
    token = CancelToken()

    def progress(p):
        if p.done >= 3:
            token.cancel()

    start = time.perf_counter()
    with pytest.raises(Cancelled):
        search_seeds(client, seeds(500), jobs=4, progress=progress, cancel=token)
    assert time.perf_counter() - start < 2.0
    time.sleep(0.1)
    assert len(client.calls) < 30  # the bounded queue never submitted the rest


def test_empty_and_bad_arguments():
    client = FakeClient()
    assert search_seeds(client, np.empty((0, 3))).lines == []
    assert client.calls == []
    with pytest.raises(ValueError, match="jobs"):
        search_seeds(client, seeds(2), jobs=0)
