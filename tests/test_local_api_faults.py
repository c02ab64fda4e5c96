"""Every fault mode of the local server, seen through plain ``requests``."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile

import pytest
import requests

GRID = "/grid_data/download/74272479"
QUERY = "/api/v2/data/Structure/query.json?criteria=[graph_id$eq1]&num_rows=100"
SERVICE = ("/api/v2/data/query.json?criteria=service::mouse_connectivity_injection_structure"
           "[injection_structures$eq733][primary_structure_only$eqtrue]")


def get(server, target: str, **kw) -> requests.Response:
    kw.setdefault("timeout", 30)
    return requests.get(server.url + target, **kw)


def test_http500_n_times_then_success(allen_api):
    allen_api.faults.add("http500", path_contains="grid_data", times=2)
    statuses = [get(allen_api, GRID).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert [r["status"] for r in allen_api.requests] == [500, 500, 200]
    assert [r["fault"] for r in allen_api.requests] == ["http500", "http500", None]
    assert get(allen_api, QUERY).status_code == 200  # other paths unaffected


def test_http429(allen_api):
    allen_api.faults.add("http429", times=1)
    response = get(allen_api, QUERY)
    assert response.status_code == 429 and response.headers["Retry-After"] == "0"
    assert get(allen_api, QUERY).json()["success"] is True


def test_success_false_informatics_service_failed(allen_api):
    allen_api.faults.add("success_false", path_contains="injection_structure", times=1)
    failed = get(allen_api, SERVICE)
    assert failed.status_code == 200
    assert failed.json()["success"] is False
    assert failed.json()["msg"] == ("Error in query: service::mouse_connectivity_injection_"
                                    "structure, Informatics service request failed")
    ok = get(allen_api, SERVICE).json()
    assert ok["success"] is True and ok["msg"][0]["structure-abbrev"] == "VPM"


def test_success_false_never_hits_file_downloads(allen_api):
    allen_api.faults.add("success_false")
    assert get(allen_api, GRID).content[:2] == b"PK"


def test_html200_site_unavailable(allen_api):
    allen_api.faults.add("html200", times=1)
    response = get(allen_api, QUERY)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "site unavailable" in response.text.lower()


def test_empty_body(allen_api):
    allen_api.faults.add("empty_body", times=1)
    response = get(allen_api, QUERY)
    assert response.status_code == 200 and response.content == b""


def test_truncated_with_full_content_length_breaks_the_transfer(allen_api):
    allen_api.faults.add("truncated", path_contains="grid_data", times=1)
    with pytest.raises(requests.RequestException):
        get(allen_api, GRID)
    assert get(allen_api, GRID).status_code == 200  # the next try is whole


def test_truncated_with_matching_length_is_a_short_valid_response(allen_api):
    allen_api.faults.add("truncated", path_contains="grid_data", times=1, matching_length=True,
                         fraction=0.9)
    response = get(allen_api, GRID)
    full = get(allen_api, GRID).content
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) == int(len(full) * 0.9)
    assert full.startswith(response.content)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(response.content))


def test_slow_headers_time_out(allen_api):
    allen_api.faults.add("slow_headers", times=1, delay=1.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(allen_api, QUERY, timeout=(5, 0.3))


def test_slow_body_stalls_mid_transfer(allen_api):
    allen_api.faults.add("slow_body", path_contains="grid_data", times=2, delay=1.0)
    with pytest.raises(requests.RequestException):
        response = get(allen_api, GRID, stream=True, timeout=(5, 0.3))
        b"".join(response.iter_content(65536))
    started = time.monotonic()
    patient = get(allen_api, GRID, timeout=(5, 10))
    assert time.monotonic() - started >= 0.9
    assert hashlib.sha256(patient.content).hexdigest() == allen_api.checksum(GRID)


def test_short_pages_overstate_total_rows(allen_api):
    allen_api.faults.add("short_pages", path_contains="model::Structure", extra=100)
    base = "/api/v2/data/query.json?q=model::Structure,rma::options[num_rows$eq1000]"
    first = get(allen_api, base + "[start_row$eq0]").json()
    assert first["total_rows"] == 1427 and first["num_rows"] == 1000
    second = get(allen_api, base + "[start_row$eq1000]").json()
    assert second["num_rows"] == 327
    empty = get(allen_api, base + "[start_row$eq1327]").json()
    assert empty["success"] is True and empty["num_rows"] == 0 and empty["msg"] == []
    assert empty["total_rows"] == 1427


def test_probability_rules_are_seeded(allen_api):
    def run() -> list[int]:
        allen_api.reset()
        allen_api.faults.add("http500", path_contains="Structure", probability=0.5)
        return [get(allen_api, "/api/v2/data/Structure/385.json").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second  # same seed, same sequence
    assert 5 < first.count(500) < 25


def test_global_fault_rate_and_latency(allen_api):
    allen_api.fault_rate = 0.5
    outcomes = []
    for _ in range(30):
        try:
            r = get(allen_api, QUERY, timeout=(5, 5))
            outcomes.append(r.status_code == 200 and r.content[:1] == b"{"
                            and r.json()["success"] is True)
        except (requests.RequestException, ValueError):
            outcomes.append(False)
    assert 3 < outcomes.count(False) < 27
    assert {r["fault"] for r in allen_api.requests} - {None} <= {
        "http500", "http429", "success_false", "html200", "empty_body", "truncated"}
    allen_api.reset()
    assert allen_api.fault_rate == 0.0
    allen_api.latency_ms = 150
    started = time.monotonic()
    assert get(allen_api, QUERY).status_code == 200
    assert time.monotonic() - started >= 0.15


def test_checksum_ignores_active_faults(allen_api):
    expected = allen_api.checksum(GRID)
    allen_api.faults.add("truncated", matching_length=True)
    assert allen_api.checksum(GRID) == expected
    assert hashlib.sha256(get(allen_api, GRID).content).hexdigest() != expected


def test_unknown_mode_is_rejected(allen_api):
    with pytest.raises(ValueError, match="unknown fault mode"):
        allen_api.faults.add("explode")
