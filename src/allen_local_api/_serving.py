"""An HTTP/1.1 server whose idle connections cost no thread.

``http.server.ThreadingHTTPServer`` gives every connection a thread for its whole life, so
~10,000 idle keep-alive sockets stop it accepting. Here one selector thread watches the
listening socket and every idle connection; a connection goes to a bounded worker pool only
when a request's bytes arrive, for one request, and then back to the selector. Connections
idle longer than ``idle_timeout`` seconds are closed; when the process runs out of file
descriptors the oldest idle connections are closed first so new clients still get in.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import socketserver
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class _Conn:
    """A client connection and its (persistent) request handler."""

    __slots__ = ("sock", "address", "handler", "last")

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock, self.address, self.handler, self.last = sock, address, None, time.monotonic()


class PooledHTTPServer(socketserver.TCPServer):
    """A TCP server for :class:`OneRequestHandler` subclasses (see the module docstring)."""

    allow_reuse_address = True
    request_queue_size = 128  # batch downloads open many connections at once

    def __init__(self, address, handler_class, *, max_threads: int = 64,
                 idle_timeout: float = 30.0) -> None:
        super().__init__(address, handler_class)
        self.max_threads = int(max_threads)
        self.idle_timeout = float(idle_timeout)
        self._pool = ThreadPoolExecutor(self.max_threads, thread_name_prefix="local-allen-api")
        self._selector = selectors.DefaultSelector()
        self._idle: OrderedDict[socket.socket, _Conn] = OrderedDict()  # oldest first
        self._returned: deque[_Conn] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._busy = 0
        self._lock = threading.Lock()

    # --- the selector loop ------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stop.clear()
        self._stopped.clear()
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(min(poll_interval, self.idle_timeout / 2)):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._dispatch(key.data)
                self._close_idle(time.monotonic() - self.idle_timeout)
        finally:
            for sock in (self.socket, self._wake_r):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        for conn in list(self._idle.values()):
            self._close(conn)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            self._wake_r.close()
            self._wake_w.close()
        self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):  # a burst of connections, then back to the other sockets
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._idle:
                    # Out of file descriptors: the oldest idle connections make room.
                    for conn in list(self._idle.values())[: max(1, len(self._idle) // 10)]:
                        self._close(conn)
                    continue
                log.debug("accept failed: %s", exc)
                return
            sock.setblocking(True)
            conn = _Conn(sock, address)
            self._watch(conn)

    def _watch(self, conn: _Conn) -> None:
        conn.last = time.monotonic()
        self._idle[conn.sock] = conn
        try:
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        except (ValueError, OSError):
            self._close(conn)

    def _dispatch(self, conn: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        self._idle.pop(conn.sock, None)
        with self._lock:
            self._busy += 1
        try:
            self._pool.submit(self._work, conn)
        except RuntimeError:  # pool shut down
            self._close(conn)

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while self._returned:
            self._watch(self._returned.popleft())

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _close_idle(self, before: float) -> None:
        while self._idle:
            conn = next(iter(self._idle.values()))
            if conn.last > before:
                return
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._idle.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        if conn.handler is not None:
            with contextlib.suppress(Exception):
                conn.handler.finish()
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            conn.sock.close()

    # --- a worker: one request (more if already buffered) -----------------------------
    def _work(self, conn: _Conn) -> None:
        keep = False
        try:
            if conn.handler is None:
                conn.sock.settimeout(self.idle_timeout)
                conn.handler = self.RequestHandlerClass(conn.sock, conn.address, self)
            handler = conn.handler
            while True:
                handler.handle_one_request()
                if handler.close_connection:
                    break
                if not self._has_pending(conn, handler, self.idle_timeout):
                    keep = True
                    break
        except OSError:
            keep = False
        except Exception:  # noqa: BLE001 - a handler bug must not kill the worker
            log.exception("local Allen API connection failed")
            keep = False
        finally:
            with self._lock:
                self._busy -= 1
        if keep and not self._stop.is_set():
            self._returned.append(conn)
            self._wake()
        else:
            self._close(conn)

    @staticmethod
    def _has_pending(conn: _Conn, handler, timeout: float) -> bool:
        """Are bytes of a next request already buffered or waiting (pipelining)? Never
        blocks: the socket is non-blocking while we look."""
        try:
            conn.sock.setblocking(False)
            try:
                return bool(handler.rfile.peek(1))
            except (BlockingIOError, InterruptedError):
                return False
            finally:
                conn.sock.settimeout(timeout)
        except OSError:
            return False

    @property
    def busy_threads(self) -> int:
        """Workers serving a request right now (at most ``max_threads``)."""
        return self._busy

    @property
    def idle_connections(self) -> int:
        return len(self._idle)


class OneRequestHandler:
    """Mix-in for ``BaseHTTPRequestHandler`` subclasses served by :class:`PooledHTTPServer`:
    construction only sets up the streams; the server calls ``handle_one_request``."""

    def __init__(self, request, client_address, server) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        self.close_connection = False
