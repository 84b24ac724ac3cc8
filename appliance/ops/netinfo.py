"""What ``system get network`` shows: interfaces, default gateways and DNS servers of the live system.

Read as the login user, changing nothing: addresses and routes from ``ip -json`` (iproute2, by
absolute path), link state and MAC from the kernel, DNS servers from systemd-resolved's view of the
upstream servers when it runs, else ``/etc/resolv.conf``. An interface is ``dhcp`` when the appliance's
own file for it says so or when its IPv4 address has a lease lifetime (DHCP), ``static`` when it has
addresses without one. A pending ``system set network`` change is shown with its deadline.
Where something cannot be read (no iproute2, a sandbox), the rest is still shown and the gap is named.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.ops.netapply import Pending, network_dir, read_pending
from appliance.ops.netconf import file_name, parse_rendered
from appliance.proc import run_tool

RESOLVED_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")
RESOLV_CONF = Path("/etc/resolv.conf")
FOREVER = 4294967295  # iproute2's "forever" lifetime
SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class InterfaceInfo:
    name: str
    state: str  # up | down | unknown...
    mac: str | None
    mode: str  # dhcp | static | none | unknown
    addresses: tuple[str, ...]  # ADDR/PREFIX


@dataclass(frozen=True)
class NetworkInfo:
    interfaces: tuple[InterfaceInfo, ...]
    gateways: tuple[tuple[str, str], ...]  # (gateway, interface)
    dns: tuple[str, ...]
    dns_source: str
    pending: Pending | None
    notes: tuple[str, ...] = field(default=())  # what could not be read, and why


def network_info(config: Config) -> NetworkInfo:
    notes: list[str] = []
    try:
        links = json.loads(run_tool(config.tools.ip, ["-json", "address", "show"], timeout_s=10) or "[]")
    except (ApplianceError, ValueError) as exc:
        notes.append(f"addresses unavailable: {_why(exc)}")
        links = [{"ifname": name} for _index, name in socket.if_nameindex()]
    gateways: list[tuple[str, str]] = []
    for family in ("-4", "-6"):
        try:
            routes = json.loads(run_tool(config.tools.ip, ["-json", family, "route", "show", "default"],
                                         timeout_s=10) or "[]")
        except (ApplianceError, ValueError) as exc:
            notes.append(f"routes unavailable: {_why(exc)}")
            break
        gateways += [(str(r["gateway"]), str(r.get("dev", "-"))) for r in routes if r.get("gateway")]
    dns, source = dns_servers()
    try:
        pending = read_pending(config)
    except ApplianceError as exc:
        notes.append(exc.message)
        pending = None
    interfaces = tuple(_interface(config, link) for link in links if link.get("ifname") != "lo")
    return NetworkInfo(interfaces, tuple(gateways), dns, source, pending, tuple(notes))


def _interface(config: Config, link: dict[str, Any]) -> InterfaceInfo:
    name = str(link["ifname"])
    addresses = [a for a in link.get("addr_info", []) if a.get("scope") != "link"]
    texts = tuple(f"{a['local']}/{a['prefixlen']}" for a in addresses)
    state = str(link.get("operstate") or _sys_read(name, "operstate") or "unknown").lower()
    mac = link.get("address") or _sys_read(name, "address")
    ours = network_dir(config) / file_name(name)  # the file `system set network` writes for it
    try:
        spec = parse_rendered(ours.read_text(encoding="utf-8"))
    except OSError:
        spec = None
    if spec is not None:
        mode = "dhcp" if spec.dhcp else "static"
    elif "addr_info" not in link:
        mode = "unknown"
    elif any(a.get("family") == "inet" and a.get("valid_life_time", FOREVER) != FOREVER for a in addresses):
        mode = "dhcp"
    else:
        mode = "static" if addresses else "none"
    return InterfaceInfo(name, state, mac, mode, texts)


def dns_servers() -> tuple[tuple[str, ...], str]:
    """The DNS servers this node asks, and where that list comes from."""
    for path, source in ((RESOLVED_UPSTREAM, "systemd-resolved"), (RESOLV_CONF, str(RESOLV_CONF))):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        servers = tuple(line.split()[1] for line in text.splitlines()
                        if line.startswith("nameserver") and len(line.split()) > 1)
        if path == RESOLV_CONF and servers == ("127.0.0.53",):
            source = "systemd-resolved stub (127.0.0.53)"
        return servers, source
    return (), "none"


def _sys_read(name: str, attribute: str) -> str | None:
    try:
        return (SYS_NET / name / attribute).read_text().strip() or None
    except OSError:
        return None


def _why(exc: Exception) -> str:
    return exc.message if isinstance(exc, ApplianceError) else f"unexpected output ({exc})"
