"""The local server is a test double, but it listens on a port: header injection, CORS, idle
connections and its request log (issue #9 item 10). Real sockets, real HTTP."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from allen_local_api.server import LocalAllenServer, UnsafeHeaderError, check_header_value

CSV = "/api/v2/data/query.csv?q=model::Gene,rma::criteria,[acronym$eq'Nrp1']"


@pytest.mark.parametrize("name", ["a\r\nX-Injected: 1", "a\nX-Injected: 1", 'a".csv',
                                  "a\x00b", "../../etc/passwd"])
def test_filename_that_would_inject_headers_is_refused(allen_api, name):
    resp = requests.get(allen_api.url + CSV, params={"filename": name}, timeout=5)
    assert resp.status_code == 400
    assert "X-Injected" not in resp.headers
    assert "Content-Disposition" not in resp.headers
    ok = requests.get(allen_api.url + CSV, params={"filename": "genes.csv"}, timeout=5)
    assert ok.status_code == 200
    assert ok.headers["Content-Disposition"] == 'attachment; filename="genes.csv"'


def test_header_values_are_checked_before_sending():
    assert check_header_value("X-A", "plain") == "plain"
    assert check_header_value("Content-Disposition", 'attachment; filename="a.zip"')
    for name, value in [("X-A", "a\r\nB: c"), ("X-A", 'a"b'),
                        ("Content-Disposition", 'attachment; filename="a"b.zip"'),
                        ("Content-Disposition", 'attachment; filename="a\nb"')]:
        with pytest.raises(UnsafeHeaderError):
            check_header_value(name, value)


def test_no_blanket_cors_header(allen_api):
    for path in ("/api/v2/data/query.json?q=model::Gene,rma::options[num_rows$eq1]",
                 "/grid_data/download/74272479?include=energy", CSV):
        resp = requests.get(allen_api.url + path, timeout=10)
        assert resp.status_code == 200
        assert not any(h.lower().startswith("access-control") for h in resp.headers)


def _idle_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
    return socks


def test_idle_connections_cost_no_thread_and_time_out():
    n_idle = 300
    with LocalAllenServer(idle_timeout=3.0, max_threads=4) as server:
        port = int(server.url.rsplit(":", 1)[1])
        threads_before = threading.active_count()
        socks = _idle_sockets(port, n_idle)
        try:
            deadline = time.monotonic() + 2.0
            while server._httpd.idle_connections < n_idle and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server._httpd.idle_connections == n_idle  # all accepted, all watched
            assert threading.active_count() <= threads_before + 4
            start = time.monotonic()
            resp = requests.get(server.url + "/", timeout=5)
            assert resp.status_code == 200
            assert time.monotonic() - start < 2.0  # still accepting and serving
            time.sleep(4.0)
            # The server closed them: a read sees EOF instead of blocking.
            closed = 0
            for s in socks[:20]:
                s.settimeout(1.0)
                try:
                    closed += s.recv(1) == b""
                except (ConnectionResetError, TimeoutError):
                    closed += 1
            assert closed == 20
            assert server._httpd.idle_connections < 5
        finally:
            for s in socks:
                s.close()


def test_slow_request_lines_do_not_starve_other_clients():
    with LocalAllenServer(idle_timeout=0.5, max_threads=2) as server:
        port = int(server.url.rsplit(":", 1)[1])
        slow = _idle_sockets(port, 6)
        try:
            for s in slow:
                s.sendall(b"GET /api/v2/data/query.json?q=model::Gene HTTP/1.1\r\n")  # unfinished
            start = time.monotonic()
            resp = requests.get(server.url + "/", timeout=10)
            assert resp.status_code == 200
            assert time.monotonic() - start < 5.0
        finally:
            for s in slow:
                s.close()


def test_keep_alive_serves_several_requests_per_connection():
    with LocalAllenServer(idle_timeout=5, max_threads=2) as server, requests.Session() as sess:
        for _ in range(5):
            assert sess.get(server.url + "/", timeout=5).status_code == 200
        assert len(server.requests) == 5
        deadline = time.monotonic() + 2.0  # the worker hands the connection back async
        while server._httpd.idle_connections != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server._httpd.idle_connections == 1  # one kept-alive connection, no thread


def test_request_log_is_bounded():
    with LocalAllenServer(log_size=5) as server, requests.Session() as sess:
        for _ in range(20):
            sess.get(server.url + "/", timeout=5)
        assert len(server.requests) == 5
        assert [r["status"] for r in server.requests[-2:]] == [200, 200]
