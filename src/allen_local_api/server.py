"""The local Allen API server: a threaded HTTP/1.1 server on loopback with a request log,
latency and fault injection, started in a background thread.

    with LocalAllenServer(port=0) as server:        # a free port
        requests.get(server.url + "/api/v2/data/query.json?q=model::Structure")
        server.faults.add("http500", path_contains="grid_data", times=2)
        server.checksum("/grid_data/download/74272479")  # sha256 of the fault-free bytes

Responses are computed by :class:`allen_local_api.app.App` from the shared catalog and
grid store; this module only moves bytes (and breaks them on purpose).

Hardening (it is a test double, but it listens on a port): idle connections cost no thread and
are closed after ``idle_timeout`` seconds, at most ``max_threads`` requests run at once
(:mod:`._serving`); a header value with CR, LF, NUL or a double quote is never sent (the
request gets a 400 instead of an injected header); no ``Access-Control-Allow-Origin`` header,
so web pages cannot read it; the request log keeps the last ``log_size`` requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from . import faults as faults_mod
from . import formats
from ._serving import OneRequestHandler, PooledHTTPServer
from .app import App, Response
from .catalog import catalog
from .faults import Fault, FaultPlan
from .grids import grid_store

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
_APP: App | None = None
_APP_LOCK = threading.Lock()


def shared_app() -> App:
    """One router (and its tables/caches) per process, shared by all servers."""
    global _APP
    with _APP_LOCK:
        if _APP is None:
            cat = catalog()
            _APP = App(cat, grid_store(cat))
        return _APP


#: Characters never allowed in a header value (response splitting, broken quoting).
_UNSAFE_HEADER_CHARS = frozenset('\r\n\x00"')


class UnsafeHeaderError(ValueError):
    """A response header value would carry CR/LF/NUL or a quote (header injection)."""


def check_header_value(name: str, value: str) -> str:
    """``value`` if it is safe in a header line, else :class:`UnsafeHeaderError`. Quotes are
    refused too: our values are either plain tokens or sit inside ``filename="..."``."""
    if name.lower() == "content-disposition":
        # The only legitimate quotes: exactly the pair around filename.
        head, sep, rest = value.partition('filename="')
        if sep and rest.endswith('"'):
            check_header_value("filename", rest[:-1])
            return value
    bad = _UNSAFE_HEADER_CHARS.intersection(value)
    if bad:
        raise UnsafeHeaderError(f"header {name} value {value[:60]!r} contains "
                                f"{' '.join(repr(c) for c in sorted(bad))}")
    return value


class RequestLog(list):
    """A list of request entries that keeps only the last ~``maxlen`` (older ones are dropped
    in blocks of 10%, so appending stays amortised O(1); at most ``1.1 * maxlen`` are kept)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = max(1, int(maxlen))

    def append(self, entry) -> None:
        super().append(entry)
        if len(self) > self.maxlen + self.maxlen // 10:
            del self[: len(self) - self.maxlen]


class _Handler(OneRequestHandler, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients' connection pools work
    # Headers and body go out in separate writes; with Nagle's algorithm on, a kept-alive
    # connection waits ~40-50 ms for the delayed ACK of the first (65 ms -> 11 ms a request).
    disable_nagle_algorithm = True
    server_version = "napari-allen-local-api/1.0"
    owner: LocalAllenServer  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        log.debug("%s - %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:  # noqa: N802 (stdlib name)
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self._serve(head=False)

    # ------------------------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        owner = self.owner
        started = time.monotonic()
        target = self.path
        entry: dict[str, Any] = {"method": self.command, "path": target.split("?", 1)[0],
                                 "query": target.split("?", 1)[1] if "?" in target else "",
                                 "target": target, "status": None, "time": time.time(),
                                 "fault": None, "duration": None}
        # Logged before anything is sent (the status is filled in before the status line goes
        # out), so a client that has its response always finds the request in the log.
        self._entry = entry
        owner._log(entry)
        try:
            fault = owner.faults.pick(target, is_query=_looks_like_query(target))
            entry["fault"] = fault.mode if fault else None
            if owner.latency_ms > 0:
                time.sleep(owner.latency_ms / 1000.0)
            extra = 0
            if fault and fault.mode == "short_pages":
                extra = int(fault.options.get("extra", 200))
            response = owner.app.handle(target, extra_total=extra)
            if fault and fault.mode == "success_false" and not response.is_query:
                fault = None
            self._send(response, fault, head)
        except (BrokenPipeError, ConnectionResetError):
            entry["status"] = entry["status"] or "disconnected"
        except UnsafeHeaderError as exc:
            # Nothing of the unsafe response went out (headers are checked before sending).
            log.warning("local Allen API refused %s: %s", target, exc)
            entry["status"] = 400
            body = f"bad request: {exc}".encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(b"" if head else body)
        except Exception as exc:  # a server bug must not kill the connection thread silently
            log.exception("local Allen API server failed on %s", target)
            entry["status"] = 500
            try:
                body = f"internal error: {exc}".encode()
                self.send_response(500)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass
        finally:
            entry["duration"] = time.monotonic() - started

    def _headers(self, status: int, content_type: str, length: int,
                 extra: dict[str, str] | None = None) -> None:
        extra = {k: check_header_value(k, str(v)) for k, v in (extra or {}).items()}
        check_header_value("Content-Type", content_type)
        self._entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, response: Response, fault: Fault | None, head: bool) -> int:
        mode = fault.mode if fault else None
        opts = fault.options if fault else {}
        if mode == "http500":
            body = b"<html><body><h1>500 Internal Server Error</h1></body></html>\n"
            self._headers(500, "text/html; charset=utf-8", len(body))
            self.wfile.write(b"" if head else body)
            return 500
        if mode == "http429":
            body = b"Too Many Requests\n"
            self._headers(429, "text/plain; charset=utf-8", len(body), {"Retry-After": "0"})
            self.wfile.write(b"" if head else body)
            return 429
        if mode == "success_false":
            body = formats.json_error(opts.get("message") or faults_mod.SERVICE_FAILED)
            self._headers(200, "application/json; charset=utf-8", len(body))
            self.wfile.write(b"" if head else body)
            return 200
        if mode == "html200":
            body = faults_mod.SITE_UNAVAILABLE
            self._headers(200, "text/html; charset=utf-8", len(body))
            self.wfile.write(b"" if head else body)
            return 200
        if mode == "empty_body":
            self._headers(200, response.content_type, 0, response.headers)
            return 200
        if mode == "slow_headers":
            time.sleep(float(opts.get("delay", 3.0)))
        status, body, headers = response.status, response.body, dict(response.headers)
        if response.binary and status == 200:
            headers["Accept-Ranges"] = "bytes"
            status, body, headers = self._apply_range(body, headers)
        if mode == "truncated":
            cut = int(len(body) * float(opts.get("fraction", 0.5)))
            if opts.get("matching_length"):
                self._headers(status, response.content_type, cut, headers)
                self.wfile.write(b"" if head else body[:cut])
                return status
            self._headers(status, response.content_type, len(body), headers)
            if not head:
                self.wfile.write(body[:cut])
                self.wfile.flush()
            self.close_connection = True
            # Close now: the client sees fewer bytes than Content-Length announced.
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return status
        self._headers(status, response.content_type, len(body), headers)
        if head:
            return status
        if mode == "slow_body":
            first = body[: min(CHUNK, max(len(body) // 4, 1))]
            self.wfile.write(first)
            self.wfile.flush()
            time.sleep(float(opts.get("delay", 3.0)))
            self.wfile.write(body[len(first):])
            return status
        view = memoryview(body)
        for offset in range(0, len(body), 1 << 20):
            self.wfile.write(view[offset:offset + (1 << 20)])
        return status

    def _apply_range(self, body: bytes, headers: dict[str, str]
                     ) -> tuple[int, bytes, dict[str, str]]:
        """Single ``bytes=start-[end]`` ranges (resume support); anything else -> full body."""
        spec = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", spec.strip()) if spec else None
        if not m:
            return 200, body, headers
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else len(body) - 1
        if start >= len(body) or end < start:
            headers["Content-Range"] = f"bytes */{len(body)}"
            return 416, b"", headers
        end = min(end, len(body) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
        return 206, body[start:end + 1], headers


def _looks_like_query(target: str) -> bool:
    path = target.split("?", 1)[0]
    return path.startswith(("/api/v2/data/", "/api/v2/tree_search/"))


class LocalAllenServer:
    """A local Allen API on ``host:port`` (port 0 = a free port), run in a daemon thread.

    ``latency_ms`` (added before every response) and ``fault_rate`` (probability of a random
    retryable fault per request) can be changed while it runs; ``faults`` holds per-rule faults;
    ``requests`` logs every request (method, path, query, status, time, fault, duration).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, data_dir: str | None = None,
                 latency_ms: float = 0, fault_rate: float = 0.0, seed: int = 0, *,
                 idle_timeout: float = 30.0, max_threads: int = 64,
                 log_size: int = 100_000) -> None:
        if data_dir is not None:
            raise ValueError("data_dir is not supported: the server serves the data bundled in "
                             "allen_local_api/data and napari_allen/data")
        self.host = host
        self.port = port
        self.latency_ms = float(latency_ms)
        self._initial = (float(latency_ms), float(fault_rate))
        self.faults = FaultPlan(fault_rate, seed)
        self.idle_timeout = float(idle_timeout)
        self.max_threads = int(max_threads)
        self.requests: RequestLog = RequestLog(maxlen=int(log_size))
        self._log_lock = threading.Lock()
        self._httpd: PooledHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.app = shared_app()

    # -- runtime knobs ------------------------------------------------------------------
    @property
    def fault_rate(self) -> float:
        return self.faults.fault_rate

    @fault_rate.setter
    def fault_rate(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], not {value}")
        self.faults.fault_rate = float(value)

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() first")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> LocalAllenServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = PooledHTTPServer((self.host, self.port), handler,
                                       max_threads=self.max_threads,
                                       idle_timeout=self.idle_timeout)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"local-allen-api:{self._httpd.server_address[1]}",
                                        daemon=True)
        self._thread.start()
        # Build the cheap tables now, off the request path (the CCF grids stay lazy: they cost
        # seconds of CPU and only connectivity requests need them).
        threading.Thread(target=self._warm_quietly, name="local-allen-api-warm",
                         daemon=True).start()
        return self

    def _warm_quietly(self) -> None:
        try:
            self.warm(ccf=False)
        except Exception:  # a failure here will surface, with context, on the request path
            log.debug("warming the local Allen API tables failed", exc_info=True)

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> LocalAllenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run in the foreground (the CLI); returns on KeyboardInterrupt after stopping."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # -- test helpers -------------------------------------------------------------------
    def reset(self) -> None:
        """No fault rules, the constructor's latency and fault rate, an empty request log."""
        self.faults.clear()
        self.latency_ms, self.faults.fault_rate = self._initial
        with self._log_lock:
            self.requests.clear()

    def _log(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self.requests.append(entry)

    def checksum(self, path_and_query: str) -> str:
        """sha256 (hex) of the exact bytes a fault-free GET of ``path_and_query`` returns."""
        if not path_and_query.startswith("/"):
            path_and_query = "/" + path_and_query.split("://", 1)[-1].split("/", 1)[-1]
        return hashlib.sha256(self.app.handle(path_and_query).body).hexdigest()

    def warm(self, ccf: bool = True) -> None:
        """Build the catalog tables and annotation grids now (otherwise on first use);
        ``ccf`` also builds the 50/100 µm CCF annotation (a few seconds of CPU)."""
        cat = self.app.catalog
        _ = (cat.structures, cat.section_data_sets, cat.connectivity_experiments,
             cat.projection_info, self.app.store.grid_annotation)
        if ccf:
            self.app.store.ccf_annotation(100)
