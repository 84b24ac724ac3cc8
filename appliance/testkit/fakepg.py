"""A fake PostgreSQL server that asks for the password the way an attacker on the path would.

It speaks just enough of the protocol to make a client reveal what it would send: it answers an
SSLRequest (or a GSSENCRequest) with "N" (no encryption, as a downgrading attacker does), reads the
StartupMessage, then asks for the password in clear text (``cleartext``), as an MD5 hash with a
salt (``md5``), or lets the client in without asking (``trust``: an impersonator that cannot check
any password). Every byte a client sends is kept, and every PasswordMessage (``p``) separately, so a
test can check that no password arrived. Every wait is bounded; the server stops with its context.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104
MODES = ("cleartext", "md5", "trust")
IO_TIMEOUT_S = 5.0


class FakePostgres:
    """Listens on 127.0.0.1 (``port``) while used as a context manager; see the module docstring."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.received = bytearray()  # everything every client sent
        self.passwords: list[bytes] = []  # the payload of every PasswordMessage
        self.startups: list[dict[str, str]] = []  # the parameters of every StartupMessage
        self.ssl_requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=f"fakepg-{mode}", daemon=True)

    def __enter__(self) -> FakePostgres:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=IO_TIMEOUT_S)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(IO_TIMEOUT_S)
                try:
                    self._session(conn)
                except (OSError, ValueError):
                    pass  # the client gave up or hung up: that is what it should do

    def _read(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("closed")
            with self._lock:
                self.received += chunk
            data += chunk
        return data

    def _session(self, conn: socket.socket) -> None:
        while True:  # SSLRequest / GSSENCRequest, then the StartupMessage
            (length,) = struct.unpack("!I", self._read(conn, 4))
            body = self._read(conn, length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                self.ssl_requests += code == SSL_REQUEST
                conn.sendall(b"N")
                continue
            parts = body[4:].split(b"\0")
            self.startups.append({k.decode(): v.decode() for k, v in zip(parts[::2], parts[1::2], strict=False) if k})
            break
        if self.mode == "cleartext":
            conn.sendall(b"R" + struct.pack("!II", 8, 3))
        elif self.mode == "md5":
            conn.sendall(b"R" + struct.pack("!II", 12, 5) + b"salt")
        else:
            conn.sendall(b"R" + struct.pack("!II", 8, 0) + b"Z" + struct.pack("!I", 5) + b"I")
        while True:  # whatever comes next, until the client closes
            kind = self._read(conn, 1)
            (length,) = struct.unpack("!I", self._read(conn, 4))
            payload = self._read(conn, length - 4)
            if kind == b"p":
                self.passwords.append(payload)
                fields = b"SFATAL\0C28P01\0Mpassword authentication failed (fake server)\0\0"
                conn.sendall(b"E" + struct.pack("!I", 4 + len(fields)) + fields)
                return
            if kind == b"X":
                return


@contextmanager
def fake_postgres(mode: str) -> Iterator[FakePostgres]:
    with FakePostgres(mode) as server:
        yield server
