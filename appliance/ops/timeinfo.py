"""What ``system get time`` shows: the clock, the time zone, the NTP servers and whether it is in sync.

Read as the login user, changing nothing. Where systemd runs, ``timedatectl show`` and, while
timesyncd runs, ``show-timesync`` (D-Bus, no privilege needed) give the zone, the NTP switch, the sync
state and the server in use; elsewhere (a sandbox) the zone comes from ``/etc/localtime`` and the servers from
timesyncd's configuration files, and the sync state is "unknown", said so.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.proc import run_tool

LOCALTIME = Path("/etc/localtime")


@dataclass(frozen=True)
class TimeInfo:
    utc: datetime
    local: datetime
    timezone: str
    ntp: bool | None  # synchronisation switched on; None: unknown
    synchronized: bool | None
    servers: tuple[str, ...]  # configured
    server_in_use: str | None
    source: str  # "timedatectl" or "files"


def _show(config: Config, verb: str, props: tuple[str, ...]) -> dict[str, str]:
    out = run_tool(config.tools.timedatectl, [verb, *(f"--property={p}" for p in props)], timeout_s=5)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _yes(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


def time_info(config: Config, clock: Clock) -> TimeInfo:
    utc = clock.now().astimezone(UTC)
    try:
        props = _show(config, "show", ("Timezone", "NTP", "NTPSynchronized"))
    except ApplianceError:
        props = {}
    if props:
        sync: dict[str, str] = {}
        if props.get("NTP") == "yes":  # timesyncd answers only while it runs (else the bus call hangs)
            try:
                sync = _show(config, "show-timesync", ("SystemNTPServers", "LinkNTPServers", "ServerName"))
            except ApplianceError:
                pass
        servers = tuple((sync.get("SystemNTPServers", "") + " " + sync.get("LinkNTPServers", "")).split())
        zone = props.get("Timezone") or zone_from_files()
        return TimeInfo(utc, _local(utc, zone), zone, _yes(props.get("NTP")), _yes(props.get("NTPSynchronized")),
                        servers or configured_servers(config), sync.get("ServerName") or None, "timedatectl")
    zone = zone_from_files()
    return TimeInfo(utc, _local(utc, zone), zone, None, None, configured_servers(config), None, "files")


def zone_from_files() -> str:
    try:
        target = str(LOCALTIME.resolve())
    except OSError:
        return "UTC"
    return target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else "UTC"


def _local(utc: datetime, zone: str) -> datetime:
    try:
        return utc.astimezone(zoneinfo.ZoneInfo(zone))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return utc


def configured_servers(config: Config) -> tuple[str, ...]:
    """NTP= of timesyncd's files (the appliance's drop-in last wins), as systemd would combine them."""
    base = config.system.root / "etc" / "systemd"
    files = [base / "timesyncd.conf", *sorted((base / "timesyncd.conf.d").glob("*.conf"))]
    servers: tuple[str, ...] = ()
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("NTP="):
                servers = tuple(line[4:].split())
    return servers

