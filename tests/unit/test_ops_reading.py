"""Reading the node as the login user: sessions from utmp, secrets masked in text that leaves the node,
time zone and NTP servers from files, interfaces and the appliance's own network files, COPY fields."""

from __future__ import annotations

import os
import re
import socket
import struct
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from appliance.clock import FakeClock
from appliance.config import Config, SystemConfig
from appliance.db.schema import TABLES, migrations
from appliance.masking import MASK
from appliance.ops.accounts import _UTMP, USER_PROCESS, sessions
from appliance.ops.backup import decode_copy_field
from appliance.ops.netconf import NetworkSpec
from appliance.ops.netinfo import network_info
from appliance.ops.redact import Redactor, redact_patterns
from appliance.ops.restore import KEPT, RESTORED
from appliance.ops.timeinfo import configured_servers

NOW = datetime(2026, 11, 22, 22, 0, 0, tzinfo=UTC)


def utmp_record(kind: int, pid: int, line: str, user: str, host: str, when: datetime) -> bytes:
    return _UTMP.pack(kind, pid, line.encode(), b"", user.encode(), host.encode(), 0, 0, 0,
                      int(when.timestamp()), 0, b"", b"")


def test_sessions_from_utmp(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "pts").mkdir(parents=True)
    (dev / "pts" / "0").write_text("")
    idle_since = NOW.timestamp() - 125
    os.utime(dev / "pts" / "0", (idle_since, idle_since))
    utmp = tmp_path / "utmp"
    utmp.write_bytes(
        utmp_record(2, 0, "~", "reboot", "6.1.0", NOW)  # BOOT_TIME: not a session
        + utmp_record(USER_PROCESS, os.getpid(), "pts/0", "ems", "192.0.2.9", NOW)
        + utmp_record(USER_PROCESS, 2**22 + 7, "pts/1", "gone", "192.0.2.8", NOW)  # its process is gone
        + utmp_record(USER_PROCESS, os.getpid(), "ttyS0", "ems", "", NOW)
    )
    found = sessions(FakeClock(NOW), utmp=utmp, dev=dev, own_tty="pts/0")
    assert [(s.user, s.tty, s.origin, s.idle_s, s.this_session) for s in found] == [
        ("ems", "pts/0", "192.0.2.9", 125, True), ("ems", "ttyS0", "console", None, False)]
    assert found[0].since == NOW
    assert sessions(FakeClock(NOW), utmp=tmp_path / "none") == []
    assert struct.calcsize(_UTMP.format) == 384


@pytest.mark.parametrize(("text", "hidden"), [
    ("host=db password=s3cr3t user=x", "s3cr3t"),
    ('{"password": "s3cr3t", "user": "x"}', "s3cr3t"),
    ("db_pass: 's3 cr3t'", "s3 cr3t"),
    ("postgresql://appliance:s3cr3t@db:5432/x", "s3cr3t"),
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAB3Nza\n-----END OPENSSH PRIVATE KEY-----", "AAAAB3Nza"),
])
def test_what_looks_like_a_secret_is_masked(text: str, hidden: str) -> None:
    masked = redact_patterns(text)
    assert hidden not in masked and MASK in masked


def test_known_secrets_are_masked_in_every_form() -> None:
    secret = "p'a ss=w\"ö\\rd-%"
    redact = Redactor([secret, "abc"])  # too short to mask safely: ordinary words would go
    text = f"a {secret} b {secret.replace(chr(39), chr(39) * 2)} c x%27a%20ss%3Dw d abc"
    text += " " + quote(secret, safe="")
    out = redact(text)
    assert secret not in out and quote(secret, safe="") not in out and "abc" in out


def test_ntp_servers_of_timesyncd_files_the_drop_in_last(tmp_path: Path) -> None:
    base = tmp_path / "etc" / "systemd"
    (base / "timesyncd.conf.d").mkdir(parents=True)
    (base / "timesyncd.conf").write_text("[Time]\n#NTP=\nNTP=a.example\n")
    (base / "timesyncd.conf.d" / "50-appliance.conf").write_text("[Time]\nNTP=b.example 192.0.2.1\n")
    config = replace(Config(), system=SystemConfig(root=tmp_path))
    assert configured_servers(config) == ("b.example", "192.0.2.1")


def test_an_interface_with_the_appliances_file_shows_its_mode(tmp_path: Path) -> None:
    interface = next((name for _index, name in sorted(socket.if_nameindex(), key=lambda x: x[1]) if name != "lo"), None)
    if interface is None:
        pytest.skip("no interface but lo")
    config = replace(Config(), system=SystemConfig(root=tmp_path))
    net_dir = tmp_path / "etc" / "systemd" / "network"
    net_dir.mkdir(parents=True)
    (net_dir / f"10-appliance-{interface}.network").write_text(NetworkSpec(interface, True).render())
    info = network_info(config)
    [found] = [i for i in info.interfaces if i.name == interface]
    assert found.mode == "dhcp" and found.mac
    assert "lo" not in [i.name for i in info.interfaces]
    assert info.pending is None and info.notes == ()


def test_network_info_without_iproute2_still_lists_interfaces(tmp_path: Path) -> None:
    config = replace(Config(), tools=replace(Config().tools, ip=tmp_path / "no-ip"))
    info = network_info(config)
    assert any("addresses unavailable" in note for note in info.notes)
    assert all(i.mode == "unknown" for i in info.interfaces)


@pytest.mark.parametrize(("raw", "value"), [
    ("\\N", None), ("plain", "plain"), ("a\\tb\\nc\\\\d", "a\tb\nc\\d"), ("\\101\\x42", "AB"), ("", ""),
])
def test_copy_text_fields(raw: str, value: str | None) -> None:
    assert decode_copy_field(raw) == value


def test_every_table_of_the_schema_is_either_kept_or_restored_by_a_restore() -> None:
    assert sorted(KEPT + RESTORED) == sorted(TABLES), "a new table: decide whether a restore keeps or replaces it"


def test_the_table_list_names_every_table_the_migrations_create() -> None:
    created = {match.group(1) for migration in migrations()
               for match in re.finditer(r"CREATE TABLE (\w+)", migration.sql)}
    assert sorted(created) == sorted(TABLES)
