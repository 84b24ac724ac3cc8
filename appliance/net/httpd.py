"""A tiny, hardened HTTP/1.x server for health checks: one thread, one selector, bounded everything.

Why not :mod:`http.server`: it has no read timeout by default, and a thread per connection grows
without bound (CPython calls it "not recommended for production"); a fixed pool starves after a
handful of idle sockets (Patroni's REST API, 5 threads, no read timeout). Here:

* one thread multiplexes every connection, so a client that sends half a request and holds the
  socket costs one slot, never a thread, and never the caller's loop;
* a client must send its whole request head within ``request_timeout_s`` (and read the answer
  within the same time again), else it is disconnected;
* at most ``max_connections`` at once; a new one beyond that evicts the oldest (a check that is
  answered in a millisecond is never the oldest: the evicted one is the stuck one);
* request heads are capped (8 KiB), bodies are never read, every answer closes the connection.

The server knows no routes: ``handle(method, path, peer)`` returns a :class:`Response`. Only ``GET``,
``HEAD`` and ``OPTIONS`` reach it (``405`` otherwise); ``HEAD`` and ``OPTIONS`` get the status line
and headers of the ``GET`` without the body.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("appliance.health")

MAX_HEAD = 8192
METHODS = ("GET", "HEAD", "OPTIONS")
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"


Handler = Callable[[str, str, str], Response]  # (method, path without query, peer address) -> answer


@dataclass
class _Conn:
    sock: socket.socket
    peer: str
    opened: float
    deadline: float
    inbuf: bytearray = field(default_factory=bytearray)
    out: bytes | None = None  # set once the answer is ready: the connection only writes from then on


def _answer(status: int, body: bytes, content_type: str, *, with_body: bool, head_only: bool = False) -> bytes:
    """The whole answer. A HEAD answer announces the length of the GET's body (``head_only``); any other
    answer without a body says 0, as it must."""
    length = len(body) if with_body or head_only else 0
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\nAllow: GET, HEAD, OPTIONS\r\n\r\n")
    return head.encode("ascii") + (body if with_body else b"")


def parse_request_line(head: bytes) -> tuple[str, str] | None:
    """(method, path without the query) of a request head, or None when it is not HTTP/1.x."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1].startswith(b"/"):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return method, target.split("?", 1)[0]


class HttpServer:
    """Serve ``handler`` on ``(host, port)`` from a daemon thread (:meth:`start`) until :meth:`close`."""

    def __init__(self, host: str, port: int, handler: Handler, *, max_connections: int = 32,
                 request_timeout_s: float = 2.0) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(128)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = False
        self._conns: dict[int, _Conn] = {}
        self._thread = threading.Thread(target=self._serve, name="health-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # --- the loop (server thread only) -----------------------------------------------------------------

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            self._sel = sel
            sel.register(self._listener, selectors.EVENT_READ, "listen")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._stop:
                now = time.monotonic()
                nearest = min((c.deadline for c in self._conns.values()), default=now + 1.0)
                try:
                    events = sel.select(max(0.0, min(1.0, nearest - now)))
                except OSError as exc:  # never let the endpoint's thread die silently
                    logger.error("health endpoint: select failed: %s", exc)
                    time.sleep(0.1)
                    continue
                for key, mask in events:
                    try:
                        if key.data == "listen":
                            self._accept()
                        elif key.data == "wake":
                            self._wake_r.recv(64)
                        elif mask & selectors.EVENT_WRITE:
                            self._write(key.fd)
                        else:
                            self._read(key.fd)
                    except Exception:  # a bug in one request must not end the endpoint
                        logger.exception("health endpoint: unexpected error")
                        self._drop(key.fd)
                self._expire(time.monotonic())

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: leave it in the backlog, try again later
                logger.warning("health endpoint: cannot accept: %s", exc.strerror)
                return
            if len(self._conns) >= self.max_connections:
                oldest = min(self._conns.values(), key=lambda c: c.opened)
                self._drop(oldest.sock.fileno())
            sock.setblocking(False)
            now = time.monotonic()
            host = str(peer[0])
            if host.startswith("::ffff:") and "." in host:
                host = host[7:]  # an IPv4 client of a dual-stack socket
            conn = _Conn(sock, host, now, now + self.request_timeout_s)
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, "conn")

    def _read(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            chunk = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(fd)
            return
        conn.inbuf += chunk
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) > MAX_HEAD:
                self._reply(conn, _answer(431, b"", "text/plain", with_body=True))
            return
        self._reply(conn, self._respond(bytes(conn.inbuf[:end]), conn.peer))

    def _respond(self, head: bytes, peer: str) -> bytes:
        request = parse_request_line(head)
        if request is None:
            return _answer(400, b'{"error": "bad request"}\n', "application/json", with_body=True)
        method, path = request
        if method not in METHODS:
            return _answer(405, b'{"error": "method not allowed"}\n', "application/json", with_body=True)
        try:
            response = self.handler(method, path, peer)
        except Exception:
            logger.exception("health endpoint: %s %s failed", method, path[:100])
            response = Response(500, b'{"error": "internal error (see the agent log)"}\n')
        return _answer(response.status, response.body, response.content_type, with_body=method == "GET",
                       head_only=method == "HEAD")

    def _reply(self, conn: _Conn, data: bytes) -> None:
        conn.out = data
        conn.deadline = time.monotonic() + self.request_timeout_s
        self._sel.modify(conn.sock, selectors.EVENT_WRITE, "conn")
        self._write(conn.sock.fileno())

    def _write(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None or conn.out is None:
            return
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._drop(fd)

    def _expire(self, now: float) -> None:
        for fd, conn in list(self._conns.items()):
            if now >= conn.deadline:
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        conn = self._conns.pop(fd, None)
        if conn is None:
            return
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
