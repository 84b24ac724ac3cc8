"""The I/O environment of one shell run, built once at the entry point and passed down.

By default it is the real process (stdin, stdout, stderr, ``os.environ``, the system clock);
tests build one over string buffers and a fake clock.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from appliance.clock import Clock, SystemClock


def _getpass(prompt: str) -> str:
    import getpass

    return getpass.getpass(prompt)


@dataclass
class Env:
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Clock = field(default_factory=SystemClock)
    stdin_isatty: bool = field(default_factory=lambda: _isatty(sys.stdin))
    stdout_isatty: bool = field(default_factory=lambda: _isatty(sys.stdout))
    # Reads a secret without echo from the terminal.
    getpass: Callable[[str], str] = _getpass

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
