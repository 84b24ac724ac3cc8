"""Asking the privileged helper for something: the shell and the agent, as unprivileged users.

The helper is socket-activated (``appliance-privhelper.socket`` on the image, ``Accept=yes``): every
request is one connection to ``[privhelper] socket``, which systemd hands to a fresh root instance of
``privhelper serve``. The request is one line, a JSON array of strings (the verb and its arguments,
never a shell line); the answer is one line, ``STATUS TEXT``: status 0 and the helper's report, 2 and
why the request was refused (not allowed for this user, or an argument it does not accept), 1 and why
applying it failed. Every step has a time limit. Used by :mod:`appliance.hostname` (backend
``helper``) and the administration commands for what has no D-Bus API under polkit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from appliance.config import Config
from appliance.errors import CommandFailed, NotConfigured, PermissionDenied

if TYPE_CHECKING:
    import socket

MAX_REQUEST = 4096  # bytes of one request line; the helper refuses longer ones
MAX_ANSWER = 4096  # bytes of one answer line
CONNECT_TIMEOUT_S = 5.0
_UNIT_HINT = "check the helper's socket unit: systemctl status appliance-privhelper.socket"


def encode_request(args: Sequence[str]) -> bytes:
    """The wire form of a request: one JSON array of strings and a newline."""
    line = json.dumps(list(args), ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
    if len(line) > MAX_REQUEST:
        raise CommandFailed("the request to the privileged helper is too long")
    return line


def check_available(config: Config) -> None:
    """:raises NotConfigured: the helper's socket is not there (no helper on this system)."""
    import stat

    path = config.privhelper.socket
    try:
        mode = path.stat().st_mode
    except OSError:
        raise NotConfigured(f"the privileged helper is not available here ({path} does not exist)",
                            hint=f"{_UNIT_HINT}, or fix [privhelper] socket in the config") from None
    if not stat.S_ISSOCK(mode):
        raise NotConfigured(f"the privileged helper is not available here ({path} is not a socket)",
                            hint="fix [privhelper] socket in the config")


def call_helper(config: Config, args: Sequence[str], *, timeout_s: float) -> str:
    """Send one request to the helper; return its report line.

    :raises NotConfigured: there is no helper socket.
    :raises PermissionDenied: the helper refused this user.
    :raises CommandFailed: the helper refused the request or failed to apply it, or did not answer in time.
    """
    import socket  # only when the helper is asked: keeps the shell's start-up fast

    request = encode_request(args)
    check_available(config)
    path = config.privhelper.socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except PermissionError:
            raise PermissionDenied(f"cannot connect to the privileged helper at {path}: permission denied",
                                   hint=_UNIT_HINT) from None
        except OSError as exc:
            raise CommandFailed(f"cannot connect to the privileged helper at {path}: {exc.strerror or exc}",
                                hint=_UNIT_HINT) from None
        sock.settimeout(timeout_s)
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            answer = _read_answer(sock)
        except TimeoutError:
            raise CommandFailed(f"the privileged helper did not answer within {timeout_s:g} s",
                                hint="see its log: journalctl -u 'appliance-privhelper@*'") from None
        except OSError as exc:
            raise CommandFailed(f"the connection to the privileged helper failed: {exc.strerror or exc}",
                                hint=_UNIT_HINT) from None
    finally:
        sock.close()
    return parse_answer(answer)


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) <= MAX_ANSWER:
        chunk = sock.recv(MAX_ANSWER + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def parse_answer(data: bytes) -> str:
    """The report of an answer line ``STATUS TEXT``, or the error it stands for."""
    line = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    status, _, text = line.partition(" ")
    if status == "0":
        return text
    if status == "2" and text.startswith("not allowed"):
        raise PermissionDenied(f"the privileged helper refused: {text}",
                               hint="only the users in [privhelper] users of /etc/appliance/appliance.toml may ask it")
    if status == "2":
        raise CommandFailed(f"refused: {text}")
    if status == "1":
        raise CommandFailed(text)
    raise CommandFailed("the privileged helper closed the connection without an answer",
                        hint="see its log: journalctl -u 'appliance-privhelper@*'")
