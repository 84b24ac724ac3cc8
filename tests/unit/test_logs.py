"""``execute log show``: where each log is read, the journal's fixed options, files read from their end,
filters, following, and no secret in what is shown."""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.clock import FakeClock, SystemClock
from appliance.config import AuditConfig, Config, LogsConfig, PathsConfig
from appliance.errors import NotConfigured
from appliance.ops import logs
from appliance.ops.logs import LogQuery, Origin, journal_args, origin_of, tail_file
from appliance.shell.context import Context
from appliance.shell.dispatch import Dispatcher
from appliance.shell.env import Env
from commands import build_registry

NOW = datetime(2026, 11, 22, 22, 0, 0, tzinfo=UTC)


def config(tmp: Path, **logs_kw: object) -> Config:
    return replace(Config(), paths=PathsConfig(state_dir=tmp / "state"), audit=AuditConfig(target="file"),
                   logs=LogsConfig(**logs_kw))  # type: ignore[arg-type]


def test_origins(tmp_path: Path) -> None:
    c = config(tmp_path)
    assert origin_of(c, "agent", journal=True).journal == ("--unit=appliance-agent.service",)
    assert origin_of(c, "audit", journal=True) == Origin(file=c.paths.audit, audit_json=True)
    assert origin_of(replace(c, audit=AuditConfig(target="syslog")), "audit", journal=True).journal == (
        "--identifier=appliance-shell",)
    assert origin_of(c, "system", journal=True).journal == ()
    assert origin_of(c, "shell", journal=False).file == c.paths.log
    with_file = config(tmp_path, agent_file=tmp_path / "agent.log")
    assert origin_of(with_file, "agent", journal=True).file == tmp_path / "agent.log"
    with pytest.raises(NotConfigured, match="no systemd journal"):
        origin_of(c, "system", journal=False)
    with pytest.raises(NotConfigured, match=r"logs\.agent_file"):
        origin_of(c, "agent", journal=False)


def test_journal_options_are_ours_and_the_search_text_is_not_a_pattern() -> None:
    clock = FakeClock(NOW)
    args = journal_args(Origin(journal=("--unit=appliance-agent.service",)),
                        LogQuery("agent", 20, since_s=3600, grep="a.b* (c) --x", follow=True), clock)
    assert args == ["--no-pager", "--quiet", "--output=short-iso", "--lines=20", "--unit=appliance-agent.service",
                    f"--since=@{int(NOW.timestamp()) - 3600}", "--grep=a\\.b\\*\\ \\(c\\)\\ \\-\\-x",
                    "--case-sensitive=false", "--follow"]


def lines_file(path: Path, start: datetime, count: int) -> None:
    with path.open("w") as handle:
        for i in range(count):
            stamp = (start + timedelta(minutes=i)).astimezone().strftime("%Y-%m-%d %H:%M:%S,000")
            handle.write(f"{stamp} INFO line {i} {'lease' if i % 10 == 0 else 'tick'}\n")
            if i == 5:
                handle.write("Traceback (most recent call last):\n  a continuation line\n")


def test_files_are_read_from_the_end_with_since_and_grep(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    lines_file(path, NOW - timedelta(minutes=100), 100)
    clock = FakeClock(NOW)
    last, _size = tail_file(path, LogQuery("agent", 3), clock)
    assert [line.split(" INFO ")[1] for line in last] == ["line 97 tick", "line 98 tick", "line 99 tick"]
    recent, _ = tail_file(path, LogQuery("agent", 1000, since_s=30 * 60), clock)
    assert len(recent) == 30 and recent[0].endswith("line 70 lease")
    found, _ = tail_file(path, LogQuery("agent", 1000, grep="LEASE"), clock)
    assert [line.split(" INFO ")[1] for line in found][-2:] == ["line 80 lease", "line 90 lease"]
    early, _ = tail_file(path, LogQuery("agent", 1000, since_s=96 * 60), clock)
    assert "  a continuation line" in early  # a traceback line goes with the record above it
    assert tail_file(tmp_path / "absent.log", LogQuery("agent", 5), clock) == ([], 0)


def test_audit_records_are_shown_as_text(tmp_path: Path) -> None:
    c = config(tmp_path)
    c.paths.state_dir.mkdir()
    record = {"time": NOW.isoformat(), "user": "ems", "origin": "ssh:192.0.2.9", "mode": "command",
              "line": "system get hostname", "status": 0, "duration_ms": 3, "accepted": True}
    c.paths.audit.write_text(json.dumps(record) + "\n")
    _origin, lines = logs.show(c, LogQuery("audit", 5), FakeClock(NOW))
    assert list(lines) == [f"{NOW.isoformat()} user=ems origin=ssh:192.0.2.9 mode=command accepted event=end "
                           'outcome=finished status=0 duration_ms=3 line="system get hostname"']


def test_control_characters_and_passwords_in_a_log_are_not_shown_raw(tmp_path: Path) -> None:
    c = config(tmp_path)
    c.paths.state_dir.mkdir()
    c.paths.log.write_text("2026-11-22 21:59:00,000 ERROR \x1b]0;owned\x07 connect password=hunter22 failed\n")
    _origin, lines = logs.show(c, LogQuery("shell", 5), FakeClock(NOW))
    [line] = list(lines)
    assert "\x1b" not in line and "\\x1b" in line
    assert "hunter22" not in line and "password=********" in line


def test_follow_prints_new_lines_follows_a_rotation_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_text("2026-11-22 21:00:00,000 INFO old\n")
    c = config(tmp_path, agent_file=path, follow_max_s=30)
    _origin, lines = logs.show(c, LogQuery("agent", 5, follow=True), SystemClock())
    assert next(lines).endswith("INFO old")

    def write_more() -> None:
        time.sleep(0.3)
        with path.open("a") as handle:
            handle.write("2026-11-22 21:00:01,000 INFO new one\n")
        time.sleep(0.5)
        path.rename(tmp_path / "agent.log.1")
        path.write_text("2026-11-22 21:00:02,000 INFO after rotation\n")

    writer = threading.Thread(target=write_more)
    writer.start()
    assert next(lines).endswith("INFO new one")
    assert next(lines).endswith("INFO after rotation")
    writer.join()
    assert lines.throw(KeyboardInterrupt()) == "(stopped following)"  # what the renderer does with a Ctrl-C
    assert list(lines) == []


def test_follow_stops_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_text("")
    clock = FakeClock(NOW)
    c = config(tmp_path, agent_file=path, follow_max_s=10)
    _origin, lines = logs.show(c, LogQuery("agent", 5, follow=True), clock)
    assert list(lines) == ["(stopped following after 10 s)"]


def test_a_password_typed_on_a_command_line_is_not_in_the_audit_log_shown(tmp_path: Path) -> None:
    secret = "Pw-never-shown-9f2"
    c = config(tmp_path)
    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(), environ={"USER": "ems"},
              clock=SystemClock(), stdin_isatty=False, stdout_isatty=False)
    shell = Dispatcher(Context(c, env, build_registry()), "command")
    shell.run_line(f"redirect --db_host 192.0.2.1 --db_user u --db_pass {secret} --is_primary_node --yes")
    shell.run_line(f"redirect --db_host 192.0.2.1 --db_user u --db-pass={secret}x --is_primary_nod --yes")
    assert shell.run_line("execute log show audit --lines 10") == 0
    assert shell.run_line("execute log show audit --grep redirect --json") == 0
    shown = env.stdout.getvalue()
    assert "redirect --db_host 192.0.2.1" in shown and "--db_pass ********" in shown
    assert secret not in shown and secret not in c.paths.audit.read_text()
