"""A privileged-helper socket for tests: the real wire protocol, answered in a thread of the test.

:class:`HelperSocket` listens on a Unix socket in a fresh directory (world-traversable, so a client
running as another user can reach it) and answers every connection with ``answer(argv, uid)``. It
records each request and the peer's user id as the helper sees them (``SO_PEERCRED``). Give it
:func:`real_server` to answer with the real :func:`appliance.privileged.server.serve`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from appliance.config import Config

Answer = Callable[[list[str], int], tuple[int, str]]


def done(argv: list[str], uid: int) -> tuple[int, str]:
    return 0, "done"


class HelperSocket:
    def __init__(self, answer: Answer = done, serve: Callable[[socket.socket], None] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="privhelper-test-"))
        self.dir.chmod(0o755)
        self.path = self.dir / "helper.sock"
        self.requests: list[list[str]] = []
        self.peers: list[int] = []
        self.answer = answer
        self.serve = serve
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.path.chmod(0o666)
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                self.peers.append(struct.unpack("3i", creds)[1])
                if self.serve is not None:
                    self.serve(conn)
                    continue
                data = b""
                while b"\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                argv = json.loads(data.decode())
                self.requests.append(argv)
                status, text = self.answer(argv, self.peers[-1])
                with contextlib.suppress(OSError):
                    conn.sendall(f"{status} {text}\n".encode())

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> HelperSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def real_server(config: Config, log: io.StringIO) -> Callable[[socket.socket], None]:
    """Each connection answered by the real helper's :func:`~appliance.privileged.server.serve`."""
    from appliance.privileged import server

    def serve(conn: socket.socket) -> None:
        server.serve(conn, config, log)

    return serve


def config_line(helper: HelperSocket, users: tuple[str, ...] = ("ems", "appliance-agent")) -> str:
    """The ``[privhelper]`` section pointing at ``helper``."""
    return f'[privhelper]\nsocket = "{helper.path}"\nusers = {json.dumps(list(users))}\n'


def is_root() -> bool:
    return os.geteuid() == 0
