"""Audit: a record for every command line accepted or refused, secrets masked.

Records go to syslog/journald (``/dev/log``, facility authpriv) when it exists, else append to a
JSON-lines file in the state dir (mode 0600). Every line gets an ``end`` record written after the
command finishes, carrying its exit status, duration and outcome (finished, failed, interrupted,
refused); a command that changes the node also gets a ``start`` record just before its handler runs,
so a change cut short by a SIGKILL still left a trace. A hang-up (SIGHUP) or SIGTERM interrupts a
command the way Ctrl-C does, so its ``end`` record is written too (outcome ``interrupted``).

The line is masked before it gets here and escaped here (:func:`appliance.safetext.safe`). An
over-long line is never masked whole: its record holds a masked prefix and its ``length``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

from appliance.config import Config
from appliance.safetext import safe

SYSLOG_SOCKET = Path("/dev/log")


class AuditRecord:
    """One audit record. A plain class, not a dataclass: the shell builds this module on every start,
    and its start-up time is measured (a dataclass of this size costs ~0.4 ms to create)."""

    __slots__ = ("accepted", "duration_ms", "event", "length", "line", "mode", "origin", "outcome", "status",
                 "time", "user")

    def __init__(
        self, *, time: str, user: str, origin: str, mode: str, line: str, status: int | None, duration_ms: int,
        accepted: bool, event: str = "end", outcome: str = "finished", length: int | None = None,
    ) -> None:
        self.time, self.user, self.origin = time, user, origin
        self.mode = mode  # interactive | command | batch
        self.line = line  # masked and escaped; for an over-long line, a masked prefix (see ``length``)
        self.status = status  # None in a start record
        self.duration_ms = duration_ms
        self.accepted = accepted  # False: refused before running (usage error, forbidden input)
        self.event = event  # start | end
        self.outcome = outcome  # started | finished | failed | interrupted | refused
        self.length = length  # the whole line's length, when ``line`` holds only a prefix

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def as_text(self) -> str:
        verdict = "accepted" if self.accepted else "refused"
        length = "" if self.length is None else f" length={self.length}"
        return (
            f"user={self.user} origin={self.origin} mode={self.mode} {verdict} event={self.event} "
            f"outcome={self.outcome} status={self.status} duration_ms={self.duration_ms}{length} "
            f"line={json.dumps(self.line)}"
        )


class AuditLog:
    def __init__(self, config: Config, warn: IO[str]) -> None:
        target = config.audit.target
        if target == "auto":
            target = "syslog" if SYSLOG_SOCKET.exists() else "file"
        self.target = target
        self.path = config.paths.audit
        self._warn = warn
        self._warned = False

    def write(self, record: AuditRecord) -> None:
        record.line = safe(record.line)
        try:
            if self.target == "syslog":
                import syslog

                syslog.openlog("appliance-shell", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
                syslog.syslog(syslog.LOG_INFO, record.as_text())
            else:
                self._append(json.dumps(record.as_dict(), sort_keys=True) + "\n")
        except OSError as exc:
            if not self._warned:
                self._warned = True
                self._warn.write(safe(f"warning: cannot write the audit record to {self.path}: {exc.strerror}") + "\n")

    def _append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))  # one write: records from parallel sessions never interleave
        finally:
            os.close(fd)
