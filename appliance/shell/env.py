"""The I/O environment of one shell run, built once at the entry point and passed down, and the only
ways the shell reads a line of input.

By default it is the real process (stdin, stdout, stderr, ``os.environ``, the system clock);
tests build one over string buffers and a fake clock.

Every read is bounded: :func:`read_line` never holds more than its limit of one line (a 100 MB line
is read and dropped in chunks, and only its length is kept), and the secret asked for without echo
(:func:`read_secret`) has a length bound and the prompt's idle timeout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from appliance.clock import Clock, SystemClock

_DRAIN_CHUNK = 65536  # what an over-long line is dropped in


class Line:
    """One line of input without its end. ``length`` is the whole line's; only when it is within the
    limit does ``text`` hold all of it (else the first ``limit`` characters)."""

    __slots__ = ("length", "text")  # a plain class: a dataclass costs start-up time the shell is measured on

    def __init__(self, text: str, length: int) -> None:
        self.text, self.length = text, length

    def __repr__(self) -> str:
        return f"Line({self.text!r}, {self.length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Line) and (other.text, other.length) == (self.text, self.length)

    __hash__ = None  # type: ignore[assignment]

    @property
    def too_long(self) -> bool:
        return self.length > len(self.text)


def read_line(stream: IO[str], limit: int) -> Line | None:
    """Read one line from ``stream`` keeping at most ``limit`` characters; None at the end of input."""
    first = stream.readline(limit + 1)
    if not first:
        return None
    if first.endswith("\n"):
        return Line(first[:-1], len(first) - 1)
    if len(first) <= limit:
        return Line(first, len(first))  # the last line, without a newline
    length = len(first)
    while True:
        chunk = stream.readline(_DRAIN_CHUNK)
        if not chunk:
            break
        if chunk.endswith("\n"):
            length += len(chunk) - 1
            break
        length += len(chunk)
    return Line(first[:limit], length)


def read_secret(prompt: str, timeout_s: float, limit: int) -> str | None:
    """Ask for a secret on the terminal without echo; None if nothing was entered within ``timeout_s``
    (0: no timeout). At most ``limit`` characters are kept (plus one, so the caller can tell it was more).

    Echo is turned off on the terminal itself (line editing and Ctrl-C still work) and always restored.
    """
    import select
    import termios
    import time

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    quiet = termios.tcgetattr(fd)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
    kept, seen = bytearray(), 0
    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        while b"\n" not in kept:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and (wait <= 0 or not select.select([fd], [], [], wait)[0]):
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += len(chunk)
            if len(kept) <= 4 * (limit + 1):  # a UTF-8 character is at most 4 bytes
                kept += chunk
            elif b"\n" in chunk:
                break
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
        sys.stdout.write("\n")
        sys.stdout.flush()
    text = bytes(kept).split(b"\n", 1)[0].decode("utf-8", "surrogateescape")
    return text[: limit + 1]


@dataclass
class Env:
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Clock = field(default_factory=SystemClock)
    stdin_isatty: bool = field(default_factory=lambda: _isatty(sys.stdin))
    stdout_isatty: bool = field(default_factory=lambda: _isatty(sys.stdout))
    # Reads a secret without echo from the terminal: (prompt, idle timeout in s, length bound) -> the
    # secret, or None when the timeout passed.
    getpass: Callable[[str, float, int], str | None] = read_secret

    @property
    def origin(self) -> str:
        """Where the user comes from, for audit: the SSH client address, else the terminal."""
        client = self.environ.get("SSH_CLIENT") or self.environ.get("SSH_CONNECTION")
        if client:
            return "ssh:" + client.split()[0]
        try:
            return "tty:" + os.ttyname(0)
        except OSError:
            return "local"


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
