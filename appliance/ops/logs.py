"""``execute log show``: the agent's, the audit, the system's and the shell's log, bounded.

Where each log is read from:

* ``agent``: the systemd journal of ``services.agent_unit``, or ``logs.agent_file`` where the agent is
  not a systemd unit (a sandbox).
* ``audit``: the shell's audit trail: the journal (identifier ``appliance-shell``) when audit goes to
  syslog, else the JSON-lines file (``paths.audit_log``), shown one record per line.
* ``system``: the whole journal (kernel, sshd, PostgreSQL, ...); there is none without systemd.
* ``shell``: the shell's diagnostic log (``paths.log_file``: internal errors, secrets already masked).

The journal is read with ``journalctl`` by absolute path and a fixed set of options built here (the
search text is escaped, never a pattern; the start time is computed here), so nothing the admin types
becomes an option. Files are read from their end, at most :data:`MAX_SCAN_BYTES`. ``--follow`` keeps
reading until Ctrl-C or ``logs.follow_max_s``. Every line is printed with control characters escaped
and passwords in ``key=value`` form masked (secrets are masked where logs are written already; this is
the second line of defence).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import NotConfigured
from appliance.ops.redact import redact_patterns
from appliance.proc import CHILD_ENV, ChildLines, tool_argv
from appliance.safetext import safe
from appliance.shell.audit import AuditRecord

SOURCES = ("agent", "audit", "system", "shell")
MAX_SCAN_BYTES = 64 * 1024 * 1024
FOLLOW_POLL_S = 0.25
# journald runs (a booted systemd): its socket exists. A /var/log/journal left on a machine that does
# not run systemd (a container, a sandbox) holds nothing current.
JOURNAL_MARKERS = (Path("/run/systemd/journal/socket"),)
SYSLOG_SOCKET = Path("/dev/log")
AUDIT_IDENTIFIER = "appliance-shell"
_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})")


@dataclass(frozen=True)
class LogQuery:
    source: str
    lines: int
    since_s: int | None = None
    grep: str | None = None
    follow: bool = False


@dataclass(frozen=True)
class Origin:
    """Where a log is read: the journal (with the options that select it) or a file."""

    journal: tuple[str, ...] | None = None
    file: Path | None = None
    audit_json: bool = False

    def describe(self) -> str:
        if self.file is not None:
            return str(self.file)
        return " ".join(("journal", *(self.journal or ())))


def journal_available() -> bool:
    return any(marker.exists() for marker in JOURNAL_MARKERS)


def origin_of(config: Config, source: str, *, journal: bool | None = None) -> Origin:
    """Where ``source`` is read on this node. :raises NotConfigured: it has no such log."""
    journal = journal_available() if journal is None else journal
    if source == "agent":
        if config.logs.agent_file is not None:
            return Origin(file=config.logs.agent_file)
        if journal:
            return Origin(journal=(f"--unit={config.services.agent_unit}",))
        raise NotConfigured("this node has no systemd journal, and logs.agent_file is not set",
                            hint="set logs.agent_file to the agent's log file in the configuration")
    if source == "audit":
        target = config.audit.target
        if target == "auto":
            target = "syslog" if SYSLOG_SOCKET.exists() else "file"
        if target == "syslog":
            return Origin(journal=(f"--identifier={AUDIT_IDENTIFIER}",))
        return Origin(file=config.paths.audit, audit_json=True)
    if source == "system":
        if not journal:
            raise NotConfigured("this node has no systemd journal: there is no system log to show",
                                hint="the audit and shell logs are files here: execute log show audit")
        return Origin(journal=())
    if source == "shell":
        return Origin(file=config.paths.log)
    raise NotConfigured(f"no log named {source!r}")


def journal_args(origin: Origin, query: LogQuery, clock: Clock) -> list[str]:
    """journalctl's options, all built here: no pager, no colour, bounded, the search text escaped."""
    assert origin.journal is not None
    args = ["--no-pager", "--quiet", "--output=short-iso", f"--lines={query.lines}", *origin.journal]
    if query.since_s is not None:
        args.append(f"--since=@{int(clock.now().timestamp()) - query.since_s}")
    if query.grep is not None:
        args += [f"--grep={re.escape(query.grep)}", "--case-sensitive=false"]
    if query.follow:
        args.append("--follow")
    return args


def _clean(line: str) -> str:
    return safe(redact_patterns(line))


def read_journal(config: Config, origin: Origin, query: LogQuery, clock: Clock, notes: bool = True) -> Iterator[str]:
    argv = tool_argv(config.tools.journalctl, journal_args(origin, query, clock))
    env = {**CHILD_ENV, "SYSTEMD_COLORS": "0", "SYSTEMD_URLIFY": "0", "SYSTEMD_PAGER": ""}
    deadline = config.logs.follow_max_s if query.follow else 60.0
    child = ChildLines(argv, deadline_s=deadline, env=env)
    count = 0
    for line in child:
        count += 1
        yield _clean(line)
    if not notes:
        return
    if child.interrupted and query.follow:
        yield "(stopped following)"
    if count == 0 and not query.follow and child.returncode == 0:
        yield "(no entries" + (" that match)" if query.grep or query.since_s else ")")
    if child.timed_out and query.follow:
        yield f"(stopped following after {config.logs.follow_max_s} s)"
    elif child.returncode not in (0, None) and not query.follow:
        yield f"(journalctl exited with status {child.returncode})"


# --- files -----------------------------------------------------------------------------------------


def _stamp(line: str, audit_json: bool) -> datetime | None:
    if audit_json:
        try:
            return datetime.fromisoformat(json.loads(line)["time"])
        except (ValueError, KeyError, TypeError):
            return None
    match = _STAMP.match(line)
    if not match:
        return None
    try:
        # The agent and the shell log local time without a zone (logging's asctime).
        return datetime.fromisoformat(match.group(1).replace("T", " ")).astimezone()
    except ValueError:
        return None


def _format(line: str, audit_json: bool) -> str:
    if not audit_json:
        return line
    try:
        doc = json.loads(line)
        return f"{doc['time']} {AuditRecord(**doc).as_text()}"
    except (ValueError, KeyError, TypeError):
        return line


class _Filter:
    def __init__(self, query: LogQuery, clock: Clock, audit_json: bool) -> None:
        self.since = clock.now() - timedelta(seconds=query.since_s) if query.since_s is not None else None
        self.word = query.grep.casefold() if query.grep else None
        self.audit_json = audit_json
        self.last_stamp: datetime | None = None

    def keep(self, line: str) -> bool:
        if self.since is not None:
            stamp = _stamp(line, self.audit_json)
            # A line without a time stamp (a traceback's) belongs to the record above it.
            self.last_stamp = stamp or self.last_stamp
            if self.last_stamp is None or self.last_stamp.astimezone(UTC) < self.since:
                return False
        return self.word is None or self.word in _format(line, self.audit_json).casefold()


def tail_file(path: Path, query: LogQuery, clock: Clock, audit_json: bool = False) -> tuple[list[str], int]:
    """The last ``query.lines`` lines of ``path`` that pass the filters, and the file's size when read.

    Read from the end in blocks, at most :data:`MAX_SCAN_BYTES`.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise NotConfigured(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        start = max(0, size - MAX_SCAN_BYTES)
        block = 1024 * 1024
        position, data = size, b""
        while position > start:
            step = min(block, position - start)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            if data.count(b"\n") > query.lines * 4 and query.grep is None and query.since_s is None:
                break
    text = data.decode("utf-8", errors="replace").splitlines()
    if position > 0 and text:
        text = text[1:]  # the first line may be cut
    filt = _Filter(query, clock, audit_json)
    kept = [_format(line, audit_json) for line in text if filt.keep(line)]
    return kept[-query.lines:], size


def read_file(config: Config, origin: Origin, query: LogQuery, clock: Clock, notes: bool = True) -> Iterator[str]:
    assert origin.file is not None
    lines, size = tail_file(origin.file, query, clock, origin.audit_json)
    if not lines and not query.follow and notes:
        yield f"(nothing in {origin.file}" + (" that matches)" if query.grep or query.since_s else ")")
    for line in lines:
        yield _clean(line)
    if query.follow:
        yield from _follow(origin.file, size, query, clock, config.logs.follow_max_s, origin.audit_json)


def _follow(path: Path, offset: int, query: LogQuery, clock: Clock, max_s: int, audit_json: bool) -> Iterator[str]:
    """New lines of ``path`` as they are written, until Ctrl-C or ``max_s``; follows a rotation."""
    filt = _Filter(LogQuery(query.source, query.lines, None, query.grep), clock, audit_json)
    deadline = clock.monotonic() + max_s
    pending = b""
    inode = _inode(path)
    try:
        while clock.monotonic() < deadline:
            try:
                with path.open("rb") as handle:
                    st = os.fstat(handle.fileno())
                    if st.st_ino != inode or st.st_size < offset:  # rotated or truncated: from the start
                        inode, offset, pending = st.st_ino, 0, b""
                    handle.seek(offset)
                    chunk = handle.read(1024 * 1024)
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                line = raw.decode("utf-8", errors="replace")
                if filt.keep(line):
                    yield _clean(_format(line, audit_json))
            if not chunk:
                clock.sleep(FOLLOW_POLL_S)
        yield f"(stopped following after {max_s} s)"
    except KeyboardInterrupt:
        yield "(stopped following)"  # also ends the line the terminal echoed ^C on


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def show(config: Config, query: LogQuery, clock: Clock, *, notes: bool = True) -> tuple[Origin, Iterator[str]]:
    """Where ``query.source`` is read, and its lines (a generator: nothing runs until iterated).

    :param notes: add lines in parentheses saying that nothing matched, or why following stopped.
    """
    origin = origin_of(config, query.source)
    if origin.file is not None:
        return origin, read_file(config, origin, query, clock, notes)
    return origin, read_journal(config, origin, query, clock, notes)
