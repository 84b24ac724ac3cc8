"""Setting time, NTP servers and the time zone, as root (the privileged helper's side).

* NTP servers: a systemd-timesyncd drop-in (``<root>/etc/systemd/timesyncd.conf.d/50-appliance.conf``,
  ``[Time] NTP=...``), then synchronisation switched on and timesyncd restarted to use them; if it does
  not run afterwards (a container: its clock is the host's) the admin is told.
* The time zone: ``timedatectl set-timezone``, after checking the zone is a compiled zone file
  of the tz database under ``<root>/usr/share/zoneinfo`` (a name cannot point elsewhere).
* The clock: ``timedatectl set-time``, only while NTP synchronisation is off (systemd refuses it
  otherwise; the check here gives the admin a clear reason first).

Every value is checked again here with the shell's rules; programs run by absolute path with argv
lists (:mod:`appliance.proc`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from appliance.config import Config
from appliance.errors import ApplianceError, CommandFailed, Conflict
from appliance.fsutil import write_atomic
from appliance.names import check_hostname
from appliance.proc import run_tool

MAX_NTP_SERVERS = 5
TIMESYNCD_UNIT = "systemd-timesyncd.service"
TOOL_TIMEOUT_S = 30.0
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")

Runner = Callable[[Path, Sequence[str]], str]


def _run(tool: Path, args: Sequence[str]) -> str:
    return run_tool(tool, args, timeout_s=TOOL_TIMEOUT_S)


def ntp_dropin(config: Config) -> Path:
    return config.system.root / "etc" / "systemd" / "timesyncd.conf.d" / "50-appliance.conf"


def zoneinfo_dir(config: Config) -> Path:
    return config.system.root / "usr" / "share" / "zoneinfo"


def check_servers(servers: Sequence[str]) -> tuple[str, ...]:
    """NTP servers: host names or IP addresses, 1-5, no duplicates. :raises ValueError:"""
    if not 1 <= len(servers) <= MAX_NTP_SERVERS:
        raise ValueError(f"give 1-{MAX_NTP_SERVERS} NTP servers")
    found = []
    for server in servers:
        try:
            found.append(str(ipaddress.ip_address(server)))
        except ValueError:
            found.append(check_hostname(server).lower())
    if len(set(found)) != len(found):
        raise ValueError("an NTP server is listed twice")
    return tuple(found)


def check_zone(config: Config, zone: str) -> str:
    """A zone of the tz database installed on this node. :raises ValueError:"""
    if not _ZONE.fullmatch(zone) or len(zone) > 64 or zone.startswith(("posix/", "right/")):
        raise ValueError(f"invalid time zone name {zone[:40]!r}")
    path = zoneinfo_dir(config) / zone
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError:
        magic = b""
    inside = path.resolve().is_relative_to(zoneinfo_dir(config).resolve())  # a link may not lead out
    if magic != b"TZif" or not inside:
        raise ValueError(f"{zone} is not a time zone of the tz database")
    return zone


def check_time(text: str) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (one word on the helper's command line) -> ``YYYY-MM-DD HH:MM:SS``."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", text):
        raise ValueError("the time must be YYYY-MM-DDTHH:MM:SS")
    when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
    if not 2000 <= when.year <= 2099:
        raise ValueError("the year must be 2000-2099")
    return when.strftime("%Y-%m-%d %H:%M:%S")


class TimeSettings:
    def __init__(self, config: Config, run: Runner = _run) -> None:
        self.config = config
        self.tools = config.tools
        self.run = run

    def set_ntp(self, servers: tuple[str, ...]) -> str:
        text = ("# Written by the appliance (system set ntp); replaced by the next change.\n"
                f"[Time]\nNTP={' '.join(servers)}\n")
        dropin = ntp_dropin(self.config)
        write_atomic(dropin, text, mode=0o644)
        try:
            self.run(self.tools.timedatectl, ["set-ntp", "true"])
        except ApplianceError as exc:
            # A container, for one: systemd-timesyncd does not run there (the host keeps the time).
            raise CommandFailed(f"the NTP servers are written ({dropin}), but synchronisation could not be "
                                f"switched on: {exc.message}") from None
        self.run(self.tools.systemctl, ["restart", "--", TIMESYNCD_UNIT])
        # A unit whose condition fails is "restarted" without error and does not run: ask.
        state = self.run(self.tools.systemctl, ["show", "--property=ActiveState", "--value", "--", TIMESYNCD_UNIT])
        if state.strip() != "active":
            raise CommandFailed(f"the NTP servers are written ({dropin}), but systemd-timesyncd is not running "
                                f"({state.strip() or 'unknown'}; it does not run in a container, whose clock is "
                                "the host's)")
        return f"NTP servers set to {', '.join(servers)}; synchronisation on"

    def ntp_off(self) -> str:
        self.run(self.tools.timedatectl, ["--no-ask-password", "set-ntp", "false"])
        return "NTP synchronisation off"

    def set_timezone(self, zone: str) -> str:
        self.run(self.tools.timedatectl, ["--no-ask-password", "set-timezone", "--", zone])
        return f"time zone set to {zone}"

    def ntp_on(self) -> bool:
        return self.run(self.tools.timedatectl, ["show", "--property=NTP", "--value"]).strip() == "yes"

    def set_time(self, when: str) -> str:
        if self.ntp_on():
            raise Conflict("NTP synchronisation is on: the clock follows the NTP servers",
                           hint="turn it off first: system set ntp --disable")
        self.run(self.tools.timedatectl, ["--no-ask-password", "set-time", "--", when])
        return f"clock set to {when} (local time)"
