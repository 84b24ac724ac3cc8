"""Audit: one record for every command line accepted or refused, secrets masked.

Records go to syslog/journald (``/dev/log``, facility authpriv) when it exists, else append to a
JSON-lines file in the state dir (mode 0600). A record is written after the command finishes so it
carries the exit status and duration; a command that never returns (the process is killed) is
still in the journal through the agent's and sshd's own records.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from appliance.config import Config
from appliance.masking import printable

SYSLOG_SOCKET = Path("/dev/log")


@dataclass(frozen=True)
class AuditRecord:
    time: str
    user: str
    origin: str
    mode: str  # interactive | command | batch
    line: str  # masked and escaped
    status: int
    duration_ms: int
    accepted: bool  # False: refused before running (usage error, forbidden input)

    def as_text(self) -> str:
        verdict = "accepted" if self.accepted else "refused"
        return (
            f"user={self.user} origin={self.origin} mode={self.mode} {verdict} status={self.status} "
            f"duration_ms={self.duration_ms} line={json.dumps(self.line)}"
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
        record = AuditRecord(**{**asdict(record), "line": printable(record.line)})
        try:
            if self.target == "syslog":
                import syslog

                syslog.openlog("appliance-shell", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
                syslog.syslog(syslog.LOG_INFO, record.as_text())
            else:
                self._append(json.dumps(asdict(record), sort_keys=True) + "\n")
        except OSError as exc:
            if not self._warned:
                self._warned = True
                self._warn.write(f"warning: cannot write the audit record to {self.path}: {exc.strerror}\n")

    def _append(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode("utf-8"))  # one write: records from parallel sessions never interleave
        finally:
            os.close(fd)
