"""Transport and download store against a tiny scripted HTTP server started in the test.

The scripted server answers each request with the next planned response, so the tests can
produce exact byte-level failures (closed connections, lying Content-Length, hostile zip
members, Range requests) that the tests of the local Allen server do not need to cover.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_allen.api.cache import download_file, verify_grid_zip, verify_nrrd
from napari_allen.api.client import AllenClient
from napari_allen.api.http import HttpTransport
from napari_allen.errors import AllenApiError, AllenFormatError
from napari_allen.io.manifest import MANIFEST_NAME
from napari_allen.progress import Cancelled, CancelToken

OK_ENVELOPE = {"success": True, "id": 0, "start_row": 0, "num_rows": 1, "total_rows": 1,
               "msg": [{"id": 1}]}


class Scripted(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan: list = []
        self.default = None
        self.log: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_action(self):
        with self.lock:
            return self.plan.pop(0) if self.plan else self.default


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        server: Scripted = self.server  # type: ignore[assignment]
        server.log.append({"path": self.path, "range": self.headers.get("Range")})
        action = server.next_action()
        if callable(action):
            action(self)
            return
        status, body, ctype = action
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def send(status=200, body=b"", ctype="application/json"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return status, body, ctype


def truncated(body: bytes, keep: int, declare_length: bool):
    """Send ``keep`` bytes of ``body`` and close (with or without the full Content-Length)."""

    def action(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        if declare_length:
            h.send_header("Content-Length", str(len(body)))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        h.wfile.write(body[:keep])
        h.wfile.flush()
        h.close_connection = True

    return action


def ranged(body: bytes):
    """Serve ``body`` honouring ``Range: bytes=N-``."""

    def action(h: _Handler) -> None:
        rng = h.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        part = body[start:]
        h.send_response(206 if rng else 200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(len(part)))
        if rng:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        h.end_headers()
        h.wfile.write(part)

    return action


def slow_body(body: bytes, delay: float):
    def action(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for i in range(0, len(body), 4096):
                h.wfile.write(body[i:i + 4096])
                h.wfile.flush()
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass

    return action


@pytest.fixture
def scripted():
    server = Scripted()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def grid_zip_bytes(members=None) -> bytes:
    raw = np.arange(67 * 41 * 58, dtype="<f4").tobytes()
    mhd = (b"ObjectType = Image\nNDims = 3\nDimSize = 67 41 58\nElementType = MET_FLOAT\n"
           b"ElementSpacing = 200 200 200\nElementDataFile = energy.raw\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in (members or [("energy.mhd", mhd), ("energy.raw", raw)]):
            zf.writestr(name, data)
    return buf.getvalue()


def nrrd_bytes(shape=(4, 3, 2)) -> bytes:
    data = np.ones(shape, dtype="<f4").tobytes(order="F")
    header = (f"NRRD0004\ntype: float\ndimension: 3\nsizes: {' '.join(map(str, shape))}\n"
              "endian: little\nencoding: gzip\n\n").encode()
    return header + gzip.compress(data)


def transport(tmp_path, **kw) -> HttpTransport:
    kw.setdefault("retries", 3)
    kw.setdefault("backoff", 0.01)
    return HttpTransport(tmp_path / "meta.sqlite", **kw)


# --- metadata requests -------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [
    send(500, b"Internal Server Error", "text/plain"),
    send(503, b""),
    send(429, b"slow down", "text/plain"),
    send(200, {"success": False, "msg": "Error in query: service::mouse_connectivity_injection_"
                                        "structure, Informatics service request failed"}),
    send(200, b"<html><body>The site unavailable, back soon</body></html>", "text/html"),
    send(200, b""),
    send(200, b'{"success": true, "msg": [{"id": 1}'),
])
def test_transient_failures_are_retried_and_never_cached(tmp_path, scripted, failure):
    scripted.plan = [failure, failure]
    scripted.default = send(200, OK_ENVELOPE)
    http = transport(tmp_path)
    url = scripted.url + "/api/v2/data/query.json?q=model::Gene"
    assert http.get_json(url)["msg"] == [{"id": 1}]
    assert len(scripted.log) == 3
    assert http.get_json(url)["msg"] == [{"id": 1}]  # the good answer came from the cache
    assert len(scripted.log) == 3


@pytest.mark.parametrize("status", [200, 500])
def test_syntax_errors_fail_at_once_with_url_and_message(tmp_path, scripted, status):
    scripted.default = send(status, {"success": False, "msg": "Error in query: bad syntax"})
    http = transport(tmp_path)
    url = scripted.url + "/api/v2/data/query.json?q=model::Nope"
    with pytest.raises(AllenApiError) as info:
        http.get_json(url)
    assert len(scripted.log) == 1
    assert info.value.url == url and "bad syntax" in str(info.value)
    assert not info.value.retryable


def test_not_found_is_not_retried(tmp_path, scripted):
    scripted.default = send(404, b"no such page", "text/plain")
    with pytest.raises(AllenApiError, match="HTTP 404"):
        transport(tmp_path).get_json(scripted.url + "/api/v2/nothing.json")
    assert len(scripted.log) == 1


def test_gives_up_after_the_retry_budget(tmp_path, scripted):
    scripted.default = send(502, b"bad gateway", "text/plain")
    with pytest.raises(AllenApiError, match="gave up after 4 attempts") as info:
        transport(tmp_path).get_json(scripted.url + "/x.json")
    assert len(scripted.log) == 4 and info.value.retryable and info.value.status == 502


def test_connection_refused_and_slow_headers(tmp_path, scripted):
    http = transport(tmp_path, retries=1, timeout=(1, 0.3))
    with pytest.raises(AllenApiError, match="connection refused"):
        http.get_json("http://127.0.0.1:9/api/v2/data/query.json")

    def sleepy(h):
        time.sleep(1.0)
        h.send_response(200)
        h.end_headers()

    scripted.plan = [sleepy]
    scripted.default = send(200, OK_ENVELOPE)
    assert http.get_json(scripted.url + "/y.json")["success"] is True
    assert len(scripted.log) == 2


def test_offline_answers_from_cache_only(tmp_path, scripted):
    scripted.default = send(200, OK_ENVELOPE)
    url = scripted.url + "/api/v2/data/query.json?q=model::Gene"
    transport(tmp_path).get_json(url)
    offline = transport(tmp_path, offline=True)
    assert offline.get_json(url)["msg"] == [{"id": 1}]
    with pytest.raises(AllenApiError, match="offline"):
        offline.get_json(url + ",rma::criteria,[id$eq2]")
    assert len(scripted.log) == 1


def test_csv_cut_mid_row_is_retried(tmp_path, scripted):
    good = b'experiment_id,gene,gene_name\n1,Nan,"N-acetylneuraminic acid synthase"\n2,Nrp1,x\n'
    scripted.plan = [truncated(good, 60, declare_length=False)]
    scripted.default = send(200, good, "text/csv")
    text = transport(tmp_path).get_csv(scripted.url + "/api/v2/data/SectionDataSet/query.csv")
    assert text == good.decode()
    assert len(scripted.log) == 2


# --- downloads ---------------------------------------------------------------------------------
@pytest.mark.parametrize("declare_length", [True, False])
def test_truncated_zip_is_never_kept(tmp_path, scripted, declare_length):
    body = grid_zip_bytes()
    scripted.plan = [truncated(body, len(body) // 2, declare_length)] * 2
    scripted.default = send(200, body, "application/zip")
    dest = tmp_path / "store" / "energy_200um.zip"
    path, moved, *_ = download_file(transport(tmp_path), scripted.url + "/grid_data/download/1",
                                dest, lambda p, s: verify_grid_zip(p, ["energy"], s))
    assert path.read_bytes() == body and moved >= len(body)
    assert len(scripted.log) == 3
    assert sorted(dest.parent.iterdir()) == [dest.parent / MANIFEST_NAME, dest]  # file + entry


def test_truncated_everytime_fails_and_leaves_nothing(tmp_path, scripted):
    body = grid_zip_bytes()
    scripted.default = truncated(body, 1000, declare_length=False)
    dest = tmp_path / "store" / "x.zip"
    with pytest.raises(AllenApiError, match="not a complete zip"):
        download_file(transport(tmp_path, retries=2), scripted.url + "/grid_data/download/1",
                      dest, lambda p, s: verify_grid_zip(p, ["energy"], s))
    assert [p for p in dest.parent.iterdir() if p.name != MANIFEST_NAME] == []


@pytest.mark.parametrize("member", ["../evil.raw", "/etc/evil", "a/../../evil", "C:\\evil"])
def test_zip_members_escaping_the_folder_are_refused(tmp_path, scripted, member):
    body = grid_zip_bytes([(member, b"x")] + [
        ("energy.mhd", b"DimSize = 1 1 1\nElementType = MET_FLOAT\n"),
        ("energy.raw", b"\0\0\0\0")])
    scripted.default = send(200, body, "application/zip")
    dest = tmp_path / "store" / "x.zip"
    with pytest.raises(AllenFormatError, match="outside the archive"):
        download_file(transport(tmp_path), scripted.url + "/grid_data/download/1", dest,
                      lambda p, s: verify_grid_zip(p, ["energy"], s))
    assert len(scripted.log) == 1  # not a transient problem: no retry
    assert [p for p in dest.parent.iterdir() if p.name != MANIFEST_NAME] == []
    assert not (tmp_path / "evil.raw").exists()


def test_zip_without_the_requested_volume_or_with_wrong_sizes(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(grid_zip_bytes())
    verify_grid_zip(path, ["energy"], "src")
    with pytest.raises(AllenFormatError, match="no density.mhd"):
        verify_grid_zip(path, ["density"], "src")
    header = b"DimSize = 67 41 58\nElementType = MET_FLOAT\nElementDataFile = energy.raw\n"
    path.write_bytes(grid_zip_bytes([("energy.mhd", header), ("energy.raw", b"12")]))
    with pytest.raises(AllenFormatError, match="promises 637304"):
        verify_grid_zip(path, ["energy"], "src")


def test_partial_file_is_resumed_with_range(tmp_path, scripted):
    body = grid_zip_bytes()
    dest = tmp_path / "store" / "energy_200um.zip"
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(body[:5000])  # left by a killed process
    scripted.default = ranged(body)
    path, moved, *_ = download_file(transport(tmp_path), scripted.url + "/grid_data/download/1",
                                dest, lambda p, s: verify_grid_zip(p, ["energy"], s))
    assert scripted.log[0]["range"] == "bytes=5000-"
    assert moved == len(body) - 5000 and path.read_bytes() == body
    assert sorted(dest.parent.iterdir()) == [dest.parent / MANIFEST_NAME, dest]  # file + entry


def test_corrupt_partial_file_is_discarded_not_trusted(tmp_path, scripted):
    body = grid_zip_bytes()
    dest = tmp_path / "store" / "energy_200um.zip"
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(b"garbage" * 100)
    scripted.default = ranged(body)
    path, *_ = download_file(transport(tmp_path), scripted.url + "/g", dest,
                            lambda p, s: verify_grid_zip(p, ["energy"], s))
    assert path.read_bytes() == body
    assert [e["range"] for e in scripted.log] == ["bytes=700-", None]


def test_cancel_mid_download_removes_the_partial_file(tmp_path, scripted):
    body = grid_zip_bytes()
    scripted.default = slow_body(body, 0.01)
    dest = tmp_path / "store" / "x.zip"
    token = CancelToken()
    seen = []

    def on_bytes(n):
        seen.append(n)
        if len(seen) == 1:
            token.cancel()

    started = time.monotonic()
    with pytest.raises(Cancelled):
        download_file(transport(tmp_path), scripted.url + "/g", dest,
                      lambda p, s: verify_grid_zip(p, ["energy"], s), on_bytes=on_bytes,
                      cancel=token)
    assert time.monotonic() - started < 3
    assert [p for p in dest.parent.iterdir() if p.name != MANIFEST_NAME] == []


def test_error_page_instead_of_a_file(tmp_path, scripted):
    scripted.plan = [send(200, b"<html>site unavailable</html>", "text/html")]
    scripted.default = send(200, {"success": False, "msg": "Data set 5 not found"})
    dest = tmp_path / "s" / "x.zip"
    with pytest.raises(AllenApiError, match="not found"):
        download_file(transport(tmp_path), scripted.url + "/g", dest,
                      lambda p, s: verify_grid_zip(p, ["energy"], s))
    assert len(scripted.log) == 2 and not dest.exists()


def test_nrrd_verification(tmp_path):
    good = nrrd_bytes()
    path = tmp_path / "a.nrrd"
    path.write_bytes(good)
    verify_nrrd(path, "src")
    from napari_allen.api.http import TransientError

    for bad in (good[:-10], good[:40], b"PK\3\4" + good):
        path.write_bytes(bad)
        with pytest.raises(TransientError):
            verify_nrrd(path, "src")
    path.write_bytes(good.replace(b"sizes: 4 3 2", b"sizes: 4 3 3"))
    with pytest.raises(TransientError, match="inflates to 96 bytes, expected 144"):
        verify_nrrd(path, "src")


def test_client_offline_download_needs_the_file_store(tmp_path, scripted):
    scripted.default = send(200, grid_zip_bytes(), "application/zip")
    online = AllenClient(scripted.url, tmp_path / "cache", backoff=0.01)
    path = online.grid_zip(74272479)
    assert path.exists() and "74272479" in str(path)
    offline = AllenClient(scripted.url, tmp_path / "cache", offline=True)
    assert offline.grid_zip(74272479) == path
    with pytest.raises(AllenApiError, match="offline"):
        offline.grid_zip(74272480)
    assert len(scripted.log) == 1
    assert isinstance(Path(path), Path)


def test_other_request_errors_become_allen_errors(tmp_path):
    with pytest.raises(AllenApiError, match="InvalidURL|MissingSchema|InvalidSchema"):
        transport(tmp_path).get_json("http://[::1/api")
