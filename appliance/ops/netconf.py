"""One interface's network configuration as the admin gives it, checked, and as systemd-networkd reads it.

:class:`NetworkSpec` is shared by both sides of ``system set network``: the shell builds it from the
typed command line (and shows it before the question), the privileged helper rebuilds it from its
argv and checks every field again before it renders the file. The file is rendered from the checked
values only, one ``Key=value`` per line, so no value can add a line or a section of its own.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# What `network-apply` takes after the verb: IF, dhcp|ADDR/PREFIX, GW|none, DNS[,DNS...]|none, SECONDS.
ARGC = 5
NONE = "none"
MAX_DNS = 3
FILE_PREFIX = "10-appliance-"  # sorts before the image's 20-wired.network: the first match wins
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}")


def file_name(interface: str) -> str:
    """The one file ``system set network`` writes for ``interface`` (checked by the caller)."""
    return f"{FILE_PREFIX}{interface}.network"


def check_interface(name: str) -> str:
    """A Linux interface name that is not the loopback. :raises ValueError: with a short reason."""
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid interface name {name[:20]!r}")
    if name == "lo":
        raise ValueError("the loopback interface is not configured by the appliance")
    return name


@dataclass(frozen=True)
class NetworkSpec:
    """DHCP, or a static address (with an optional gateway), plus optional DNS servers, for one interface."""

    interface: str
    dhcp: bool
    address: str | None = None  # "192.0.2.10/24"
    gateway: str | None = None
    dns: tuple[str, ...] = ()

    def check(self) -> NetworkSpec:
        """This spec if every field is valid and they agree. :raises ValueError: with a short reason."""
        check_interface(self.interface)
        if self.dhcp:
            if self.address is not None or self.gateway is not None:
                raise ValueError("DHCP takes no address or gateway")
        else:
            if self.address is None:
                raise ValueError("a static configuration needs an address (ADDR/PREFIX)")
            iface = _interface(self.address)
            if self.gateway is not None:
                gateway = _address(self.gateway, "gateway")
                if gateway.version != iface.version:
                    raise ValueError(f"the gateway {gateway} is not of the address's IP version")
                if gateway == iface.ip:
                    raise ValueError("the gateway is the interface's own address")
                if gateway not in iface.network:
                    raise ValueError(f"the gateway {gateway} is not in {iface.network}, the address's network "
                                     "(it must be reachable on the link)")
        if len(self.dns) > MAX_DNS:
            raise ValueError(f"at most {MAX_DNS} DNS servers")
        servers = [_address(server, "DNS server") for server in self.dns]
        if len(set(servers)) != len(servers):
            raise ValueError("a DNS server is listed twice")
        return self

    # --- the helper's argv and back ---------------------------------------------------------------

    def helper_args(self, confirm_s: int) -> list[str]:
        return [self.interface, "dhcp" if self.dhcp else str(self.address), self.gateway or NONE,
                ",".join(self.dns) or NONE, str(confirm_s)]

    @classmethod
    def from_helper_args(cls, args: tuple[str, ...]) -> tuple[NetworkSpec, int]:
        """:raises ValueError: the arguments are not what :meth:`helper_args` writes, or not valid."""
        if len(args) != ARGC:
            raise ValueError("network-apply takes IF dhcp|ADDR/PREFIX GATEWAY|none DNS[,DNS...]|none SECONDS")
        interface, mode, gateway, dns, seconds = args
        if not seconds.isdigit() or not 10 <= int(seconds) <= 3600:
            raise ValueError("the confirmation deadline must be 10-3600 seconds")
        spec = cls(
            interface=interface, dhcp=mode == "dhcp", address=None if mode == "dhcp" else mode,
            gateway=None if gateway == NONE else gateway, dns=() if dns == NONE else tuple(dns.split(",")),
        )
        return spec.check(), int(seconds)

    # --- rendering --------------------------------------------------------------------------------

    def render(self) -> str:
        """The systemd-networkd file (``systemd.network(5)``) for this spec, which must be checked."""
        self.check()
        lines = [
            "# Written by the appliance (system set network); replaced by the next change.",
            "[Match]",
            f"Name={self.interface}",
            "",
            "[Network]",
        ]
        if self.dhcp:
            lines.append("DHCP=yes")
        else:
            lines.append(f"Address={self.address}")
            if self.gateway:
                lines.append(f"Gateway={self.gateway}")
        lines += [f"DNS={server}" for server in self.dns]
        if self.dhcp and self.dns:
            # The servers given win over the ones DHCP offers.
            lines += ["", "[DHCPv4]", "UseDNS=no", "", "[DHCPv6]", "UseDNS=no"]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        how = "DHCP" if self.dhcp else f"static {self.address}" + (
            f", gateway {self.gateway}" if self.gateway else ", no gateway")
        dns = ", ".join(self.dns) if self.dns else ("from DHCP" if self.dhcp else "none")
        return f"{self.interface}: {how}; DNS servers: {dns}"

    def as_dict(self) -> dict[str, object]:
        return {"interface": self.interface, "dhcp": self.dhcp, "address": self.address, "gateway": self.gateway,
                "dns": list(self.dns)}


def parse_rendered(text: str) -> NetworkSpec | None:
    """The spec a file written by :meth:`NetworkSpec.render` holds; None if it is not one of ours."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    try:
        name = values["Name"][0]
        spec = NetworkSpec(
            interface=name, dhcp=values.get("DHCP", ["no"])[0] == "yes", address=values.get("Address", [None])[0],
            gateway=values.get("Gateway", [None])[0], dns=tuple(values.get("DNS", [])),
        )
        return spec.check()
    except (KeyError, IndexError, ValueError):
        return None


def _address(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"the {what} {text[:45]!r} is not an IP address") from None


def _interface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in text:
        raise ValueError("the address needs a prefix length (ADDR/PREFIX)")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"the address {text[:50]!r} is not ADDR/PREFIX") from None
    ip, net = iface.ip, iface.network
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        raise ValueError(f"{ip} is not a unicast address")
    if ip.version == 4 and net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
        raise ValueError(f"{ip} is the network or broadcast address of {net}")
    return iface
