"""The shell's side of the control socket: one connection per command, every wait bounded.

Light on purpose (it is on the start-up path of ``ha get nodes``): sockets and JSON, no database
driver, no cryptography. Every failure is one :class:`~appliance.errors.ApplianceError` line: the agent
not running (no socket, nobody listening) or not answering in time (frozen) is
:class:`~appliance.errors.AgentDown` with the hint to look at its unit.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from appliance.agentctl.protocol import (
    MAX_ANSWER,
    VERSION,
    LineReader,
    ProtocolError,
    Words,
    address,
    decode,
    encode,
    exit_status,
)
from appliance.config import Config
from appliance.errors import AgentDown, ApplianceError, ExitStatus, InternalError

HINT = "see 'systemctl status appliance-agent' (the shell reaches the database through it)"


class RemoteError(ApplianceError):
    """An error the agent reported, shown as if the command had failed here (same line, same status)."""

    def __init__(self, message: str, hint: str | None, status: int) -> None:
        super().__init__(message, hint)
        self.status = exit_status(status)


def answer_timeout(config: Config, changes_state: bool) -> float:
    """How long the shell waits for the agent's next message: ``[agent] request_timeout_s``; for a command
    that changes something, plus what its database steps may wait without a word (the deployment lock,
    one statement), so a redirect queued behind another is not taken for a frozen agent."""
    base = config.agent.request_timeout_s
    return base + config.database.lock_wait_s + config.database.statement_timeout_s if changes_state else base


class AgentClient:
    def __init__(self, config: Config, *, changes_state: bool = False) -> None:
        assert config.agent.control_socket is not None
        self.path: Path = config.agent.control_socket
        self.timeout = answer_timeout(config, changes_state)
        self._sock: socket.socket | None = None

    # --- the verbs ------------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        with self._request({"verb": "hello"}) as answers:
            return next(answers)

    def preview(self, words: Words, secrets: Mapping[str, str]) -> tuple[str | None, str | None]:
        """The command's pre-flight, run by the agent: the text to show above the question, and the token
        of the plan it keeps for :meth:`run`."""
        with self._request({"verb": "preview", "words": words, "secrets": dict(secrets)}) as answers:
            for message in answers:
                if "preview" in message:
                    return message["preview"], message.get("token")
        raise self._broken("the agent ended the answer early")

    def run(self, words: Words, secrets: Mapping[str, str], token: str | None, out: IO[str]) -> ExitStatus:
        """Run the command in the agent; write its output on ``out`` as it comes; return its status.

        Ctrl-C while it streams (a redirect) asks the agent to stop: the agent rolls back, and its lines
        saying so are still shown.
        """
        request = {"verb": "run", "words": words, "secrets": dict(secrets), "token": token}
        with self._request(request) as answers:
            cancelled = False
            while True:
                try:
                    message = next(answers)
                    if "out" in message:
                        out.write(str(message["out"]))
                    elif "line" in message:
                        out.write(str(message["line"]) + "\n")
                        out.flush()
                    elif "end" in message:
                        out.flush()
                        break
                except StopIteration:
                    raise self._broken("the agent ended the answer early") from None
                except KeyboardInterrupt:
                    if cancelled:
                        raise
                    cancelled = True
                    self._cancel()
        status = exit_status(message["end"])
        if status is ExitStatus.INTERRUPTED:
            raise KeyboardInterrupt  # reported as a Ctrl-C here is: "interrupted", 130
        return status

    # --- the connection -------------------------------------------------------------------------

    def _request(self, request: dict[str, Any]) -> _Exchange:
        sock = self._connect()
        try:
            sock.sendall(encode({"v": VERSION, **request}))
        except TimeoutError:
            sock.close()
            raise self._frozen() from None
        except OSError:
            pass  # the agent answered and closed before reading (a refused peer): its answer is read below
        self._sock = sock
        return _Exchange(self, sock)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        where, fd = address(self.path)
        try:
            sock.connect(where)
        except TimeoutError:
            sock.close()
            raise self._frozen() from None
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            what = "no socket" if isinstance(exc, FileNotFoundError) else "nobody listens on it"
            raise AgentDown(f"the agent is not running: {what} at {self.path}", hint=HINT) from None
        except PermissionError:
            sock.close()
            raise AgentDown(f"the agent's control socket {self.path} is not open to this user",
                            hint="ask the administrator to check the socket's mode (0666) and [agent] control_users")\
                from None
        except OSError as exc:
            sock.close()
            raise AgentDown(f"cannot reach the agent at {self.path}: {exc.strerror}", hint=HINT) from None
        finally:
            if fd is not None:
                import os  # only for the rare long path

                os.close(fd)
        return sock

    def _cancel(self) -> None:
        try:
            if self._sock is not None:
                self._sock.sendall(encode({"v": VERSION, "verb": "cancel"}))
        except OSError:
            pass

    def _frozen(self) -> AgentDown:
        return AgentDown(f"the agent did not answer within {self.timeout:g} s on {self.path} (busy or frozen)",
                         hint=HINT)

    def _broken(self, why: str) -> AgentDown:
        return AgentDown(f"{why} on {self.path}", hint=HINT)


class _Exchange:
    """The answers to one request: an iterator that survives a Ctrl-C (the next call reads on), as a
    context manager that closes the connection."""

    def __init__(self, client: AgentClient, sock: socket.socket) -> None:
        self.client, self.sock = client, sock
        self.reader = LineReader(MAX_ANSWER)
        self.pending: list[bytes] = []

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def __iter__(self) -> _Exchange:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise self.client._frozen() from None
            except OSError as exc:
                raise self.client._broken(f"the agent dropped the connection ({exc.strerror})") from None
            if not data:
                raise StopIteration
            try:
                self.pending = self.reader.feed(data)
            except ProtocolError as exc:
                raise InternalError(f"the agent's answer is not understood: {exc}", hint=HINT) from None
        line = self.pending.pop(0)
        try:
            message = decode(line)
        except ProtocolError as exc:
            raise InternalError(f"the agent's answer is not understood: {exc}", hint=HINT) from None
        if "error" in message:
            raise RemoteError(str(message["error"]), message.get("hint"), int(message.get("status", 1)))
        return message
