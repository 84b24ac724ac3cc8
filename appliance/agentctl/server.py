"""The agent's side of the control socket: who may ask (SO_PEERCRED), and serving the answers.

One thread accepts. For each connection it reads the peer's credentials from the kernel
(``SO_PEERCRED``: pid, uid, gid, which the peer cannot forge) and checks the uid against ``[agent]
control_users`` (resolved with ``pwd`` at each connection, so a user created later counts), the agent's
own user and root. A refused peer gets one error line and is logged by uid and name; nothing it sent is
logged. An allowed connection is handed to a worker thread (at most ``MAX_WORKERS`` at once; past that
the peer is told the agent is busy), so a redirect that runs for a minute does not hold up ``ha get
nodes``. None of this runs on the HA loop's thread: the tick never waits for a client.

Every read has a timeout (a request must arrive whole within ``[agent] request_timeout_s``) and a size
limit; a line that is too long, not JSON or not a request is answered with an error and the
connection closed. The socket file is mode 0666: who may use it is decided here, not by its mode.
"""

from __future__ import annotations

import logging
import os
import pwd
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.agentctl.protocol import (
    MAX_REQUEST,
    LineReader,
    ProtocolError,
    address,
    check_request,
    decode,
    encode,
)
from appliance.agentctl.runner import Runner, error_answer
from appliance.config import AgentConfig
from appliance.errors import ExitStatus, FatalError

logger = logging.getLogger("appliance.agent.control")

MAX_WORKERS = 4
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def allowed_uids(users: tuple[str, ...]) -> frozenset[int]:
    """The uids of ``users`` that exist, plus root and the agent's own user."""
    found = {0, os.geteuid()}
    for name in users:
        try:
            found.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            continue
    return frozenset(found)


def peer_of(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel recorded it at connect()."""
    pid, uid, gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "?"


class ControlServer:
    def __init__(self, conf: Callable[[], AgentConfig], runner: Runner) -> None:
        self.conf = conf
        self.runner = runner
        first = conf()
        assert first.control_socket is not None
        self.path: Path = first.control_socket
        self._workers = threading.BoundedSemaphore(MAX_WORKERS)
        self._closing = threading.Event()
        self._sock = self._bind(self.path)
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)

    def start(self) -> None:
        self._thread.start()
        logger.info("control socket %s open to %s (and root, this user)", self.path,
                    ", ".join(self.conf().control_users) or "nobody else")

    def close(self) -> None:
        self._closing.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=2.0)
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass

    @staticmethod
    def _bind(path: Path) -> socket.socket:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None:
            if not stat.S_ISSOCK(mode):
                raise FatalError(f"control socket {path}: something else is there (not a socket)",
                                 hint="remove it, or set [agent] control_socket to another path")
            os.unlink(path)  # a previous agent's (one agent per node: systemd or the sandbox makes sure)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        where, fd = address(path)
        try:
            sock.bind(where)
            os.chmod(path, 0o666)  # anyone may connect; SO_PEERCRED decides who is answered
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise FatalError(f"cannot open the control socket {path}: {exc.strerror}",
                             hint="check that its directory exists and belongs to the agent's user") from None
        finally:
            if fd is not None:
                os.close(fd)
        return sock

    # --- accepting ------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(0.1)  # EMFILE and the like: do not spin
                continue
            try:
                self._admit(conn)
            except Exception:  # a bug must not end the thread: the shell would lose the agent
                logger.exception("control socket: unexpected error admitting a connection")
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        conf = self.conf()
        conn.settimeout(conf.request_timeout_s)
        pid, uid, _gid = peer_of(conn)
        if uid not in allowed_uids(conf.control_users):
            name = user_name(uid)
            logger.warning("control socket: refused %s (uid %d, pid %d): not in [agent] control_users",
                           name, uid, pid)
            self._answer_and_close(conn, {"error": f"user {name} (uid {uid}) may not use the agent's control "
                                          "socket", "hint": "log in as the appliance's admin user (ems)",
                                          "status": int(ExitStatus.FAILED)})
            return
        if not self._workers.acquire(blocking=False):
            self._answer_and_close(conn, {"error": f"the agent is busy with {MAX_WORKERS} other requests",
                                          "hint": "retry in a moment", "status": int(ExitStatus.AGENT_DOWN)})
            return
        worker = threading.Thread(target=self._work, args=(conn, pid, uid), name="control-request", daemon=True)
        worker.start()

    @staticmethod
    def _answer_and_close(conn: socket.socket, message: dict[str, Any]) -> None:
        try:
            conn.sendall(encode(message))
        except OSError:
            pass
        conn.close()

    # --- one request ----------------------------------------------------------------------------

    def _work(self, conn: socket.socket, pid: int, uid: int) -> None:
        try:
            self._handle(conn, pid, uid)
        except OSError as exc:
            logger.info("control socket: uid %d (pid %d) went away: %s", uid, pid, exc.strerror or exc)
        finally:
            conn.close()
            self._workers.release()

    def _read_request(self, conn: socket.socket, reader: LineReader) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.conf().request_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            conn.settimeout(remaining)
            data = conn.recv(65536)
            if not data:
                return None
            lines = reader.feed(data)
            if lines:
                return decode(lines[0])

    def _handle(self, conn: socket.socket, pid: int, uid: int) -> None:
        reader = LineReader(MAX_REQUEST)
        try:
            message = self._read_request(conn, reader)
            if message is None:
                return
            verb, words, secrets, token = check_request(message)
        except TimeoutError:
            logger.info("control socket: uid %d (pid %d) sent no whole request in time", uid, pid)
            self._answer_and_close(conn, {"error": "no whole request in time", "status": int(ExitStatus.USAGE)})
            return
        except ProtocolError as exc:
            logger.info("control socket: uid %d (pid %d): %s", uid, pid, exc)
            self._answer_and_close(conn, {"error": f"bad request: {exc}", "status": int(ExitStatus.USAGE)})
            return
        what = self.runner.command_name(words)
        started = time.monotonic()
        status: int | str = "error"
        conn.settimeout(self.conf().request_timeout_s)
        try:
            if verb == "hello":
                conn.sendall(encode({"agent": __version__, "pid": os.getpid()}))
                return
            if verb == "preview":
                text, kept = self.runner.preview(uid, words, secrets)
                conn.sendall(encode({"preview": text, "token": kept}))
                status = "preview"
                return
            if verb == "cancel":
                raise ProtocolError("cancel outside a run")
            gone = False
            for answer in self.runner.run(uid, words, secrets, token, lambda: _cancelled(conn)):
                if "end" in answer:
                    status = answer["end"]
                if gone:
                    continue
                try:
                    conn.sendall(encode(answer))
                except OSError:
                    # The shell went away (Ctrl-C twice, a dropped SSH session): the command is told at its
                    # next line and runs to its end (a redirect's rollback), unheard but complete.
                    gone = True
        except OSError:
            raise
        except Exception as exc:  # answered as one line; a bug is logged with its traceback
            answer = error_answer(exc, secrets, what)
            status = answer["status"]
            conn.sendall(encode(answer))
        finally:
            if verb != "hello":
                logger.info("control socket: %s (uid %d, pid %d) %s '%s' -> %s in %d ms", user_name(uid), uid, pid,
                            verb, what, status, (time.monotonic() - started) * 1000)


def _cancelled(conn: socket.socket) -> bool:
    """The client asked to stop (a cancel message) or went away (end of file), without waiting."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        data = conn.recv(4096, socket.MSG_PEEK)
        return not data or b"cancel" in data
    except OSError:
        return True
