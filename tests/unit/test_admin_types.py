"""The parameter types of the administration commands, and binary output (archives on stdout)."""

from __future__ import annotations

import io

import pytest

from appliance.errors import ApplianceError, ExitStatus
from appliance.shell.render import render_binary
from appliance.shell.result import Binary
from appliance.shell.types import (
    AddressPrefix,
    BackupSource,
    DateTime,
    Duration,
    Interface,
    IpList,
    SearchWord,
    StandardStream,
    TimeZone,
)


@pytest.mark.parametrize(("kind", "good", "value"), [
    (AddressPrefix(), "192.0.2.10/24", "192.0.2.10/24"),
    (AddressPrefix(), "2001:db8::5/64", "2001:db8::5/64"),
    (AddressPrefix(), "192.0.2.1/31", "192.0.2.1/31"),
    (IpList(), "192.0.2.53,2001:db8::53", ("192.0.2.53", "2001:db8::53")),
    (Interface(), "enp0s3", "enp0s3"),
    (Interface(), "eth0.100", "eth0.100"),
    (TimeZone(), "Europe/Paris", "Europe/Paris"),
    (TimeZone(), "UTC", "UTC"),
    (TimeZone(), "America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    (DateTime(), "2026-11-22 22:05:00", "2026-11-22 22:05:00"),
    (Duration(), "90s", 90),
    (Duration(), "15m", 900),
    (Duration(), "2h", 7200),
    (Duration(), "7d", 7 * 86400),
    (SearchWord(), "lease expired", "lease expired"),
    (StandardStream(), "-", "-"),
    (BackupSource(), "-", "-"),
    (BackupSource(), "appliance-EMS-20261122T220500Z.dump", "appliance-EMS-20261122T220500Z.dump"),
])
def test_accepted(kind, good, value) -> None:  # type: ignore[no-untyped-def]
    assert kind.parse(good) == value


@pytest.mark.parametrize(("kind", "bad"), [
    (AddressPrefix(), "192.0.2.10"),
    (AddressPrefix(), "192.0.2.0/24"),
    (AddressPrefix(), "192.0.2.255/24"),
    (AddressPrefix(), "0.0.0.0/0"),
    (AddressPrefix(), "169.254.1.1/16"),
    (AddressPrefix(), "fe80::1/64"),
    (AddressPrefix(), "-192.0.2.10/24"),
    (AddressPrefix(), "192.0.2.10/33"),
    (IpList(), "192.0.2.1,192.0.2.1"),
    (IpList(), "192.0.2.1,-x"),
    (IpList(), "a,b"),
    (Interface(), "-eth0"),
    (Interface(), "eth0/x"),
    (Interface(), "x" * 16),
    (Interface(), ".."),
    (Interface(), "eth 0"),
    (TimeZone(), "../../etc/passwd"),
    (TimeZone(), "Europe/../../x"),
    (TimeZone(), "-UTC"),
    (TimeZone(), "Mars/Olympus_Mons"),
    (DateTime(), "2026-11-22T22:05:00"),
    (DateTime(), "22/11/2026 22:05"),
    (DateTime(), "2026-02-29 00:00:00"),
    (DateTime(), "2100-01-01 00:00:00"),
    (Duration(), "1y"),
    (Duration(), "0s"),
    (Duration(), "-5m"),
    (Duration(), "367d"),
    (Duration(), "5"),
    (SearchWord(), ""),
    (SearchWord(), "x" * 65),
    (StandardStream(), "/tmp/x"),
    (StandardStream(), "--"),
    (BackupSource(), "../x.dump"),
    (BackupSource(), "/var/lib/appliance/backups/x.dump"),
    (BackupSource(), "x.sql"),
    (BackupSource(), "-x.dump"),
])
def test_refused(kind, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        kind.parse(bad)


def test_time_zones_complete_without_the_posix_and_right_copies() -> None:
    zones = TimeZone().choices()
    assert "Europe/Paris" in zones and not [z for z in zones if z.startswith(("posix/", "right/"))]


def test_binary_output_goes_to_the_byte_stream() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    out.write("")
    closed = []

    def chunks():  # type: ignore[no-untyped-def]
        try:
            yield b"\x1f\x8b"
            yield b"\x00\xff"
        finally:
            closed.append(True)

    assert render_binary(Binary(chunks()), out) == ExitStatus.OK
    assert raw.getvalue() == b"\x1f\x8b\x00\xff" and closed == [True]


def test_binary_output_is_never_written_to_a_terminal() -> None:
    class Tty(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    raw = io.BytesIO()
    terminal = Tty(raw)
    with pytest.raises(ApplianceError, match="standard output is a terminal"):
        render_binary(Binary(iter([b"\x1f\x8b"])), terminal)
    terminal.flush()
    assert raw.getvalue() == b""
