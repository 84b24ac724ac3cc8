"""The control socket's wire format: one JSON object per line over AF_UNIX SOCK_STREAM, both ways.

A client sends one request and reads messages until the last one (``end``, ``error`` or ``preview``):

* request: ``{"v": 1, "verb": "hello" | "preview" | "run", "words": [...], "secrets": {...}, "token": ...}``;
  ``words`` are the command line's words as the shell split them (``[text, quoted]``), ``secrets`` the
  values of its secret parameters that the shell asked for or read (a password never travels in ``words``
  unless typed there).
  While a ``run`` streams, the client may send ``{"verb": "cancel"}`` (Ctrl-C).
* answers: ``{"out": TEXT}`` (a rendered result), ``{"line": TEXT}`` (a progress line), then
  ``{"end": STATUS}``; or ``{"preview": TEXT | null, "token": ...}``; or ``{"error": MESSAGE, "hint": ...,
  "status": STATUS}``.

Sizes are bounded on both sides (a request is small; an answer may hold a long event list) and every
read has a timeout. Pure functions, plus the socket address rule: ``sun_path`` holds 107 bytes, so a
longer path is reached through its directory's descriptor (``/proc/self/fd/N/NAME``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from appliance.errors import ExitStatus

VERSION = 1
VERBS = ("hello", "preview", "run", "cancel")
MAX_REQUEST = 64 * 1024  # bytes of one request line: words and a password, never more
MAX_ANSWER = 16 * 1024 * 1024  # bytes of one answer line: ``ha get events --limit 10000`` fits
_SUN_PATH = 107


class ProtocolError(Exception):
    """A message that is not one of ours: too long, not JSON, not an object, an unknown verb."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("not a JSON line") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


Words = list[tuple[str, bool]]  # (text, quoted): a quoted word is never a command word or a flag


def exit_status(value: Any) -> ExitStatus:
    """A status from the wire as one of ours (an unknown one is a failure)."""
    try:
        return ExitStatus(value)
    except ValueError:
        return ExitStatus.FAILED


def check_request(message: dict[str, Any]) -> tuple[str, Words, dict[str, str], str | None]:
    """``(verb, words, secrets, token)`` of a request. :raises ProtocolError: anything else."""
    if message.get("v") != VERSION:
        raise ProtocolError(f"protocol version {message.get('v')!r} (this agent speaks {VERSION})")
    verb = message.get("verb")
    if verb not in VERBS:
        raise ProtocolError(f"unknown verb {verb!r}")
    words = message.get("words", [])
    secrets = message.get("secrets", {})
    token = message.get("token")
    if not (isinstance(words, list) and len(words) <= 64 and all(
            isinstance(w, list) and len(w) == 2 and isinstance(w[0], str) and isinstance(w[1], bool) for w in words)):
        raise ProtocolError("words must be a list of at most 64 [text, quoted] pairs")
    if not (isinstance(secrets, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in secrets.items())):
        raise ProtocolError("secrets must map names to strings")
    if token is not None and not (isinstance(token, str) and len(token) <= 64):
        raise ProtocolError("token must be a short string")
    return verb, [(w[0], w[1]) for w in words], secrets, token


class LineReader:
    """Splits what a socket gives into lines, refusing one longer than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if any(len(line) > self.limit for line in lines) or len(self.buffer) > self.limit:
            raise ProtocolError(f"a message longer than {self.limit} bytes")
        return lines


def address(path: Path) -> tuple[str, int | None]:
    """The address to bind or connect to for ``path``, and a directory descriptor to close afterwards
    (for a path too long for ``sun_path``)."""
    text = str(path)
    if len(text.encode()) <= _SUN_PATH:
        return text, None
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{path.name}", fd
