"""The rule a host address with its prefix must meet (a virtual IP, an interface's static address), shared
by the shell's types, the cluster setting, the VIP holder and the network files.

An address is written ``ADDRESS/PREFIX`` (IPv4 or IPv6): the prefix says which on-link network it belongs to
(the kernel adds the route with it). Refused: a missing prefix, the network's own or broadcast address
(IPv4, prefixes up to /30), and addresses no client could use as a service address (unspecified,
loopback, multicast, link-local).
"""

from __future__ import annotations

import ipaddress

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def parse_host_address(text: str) -> Interface:
    """``text`` as an interface address. :raises ValueError: with a short reason."""
    if "/" not in text:
        raise ValueError("must be ADDRESS/PREFIX (for example 192.0.2.10/24 or 2001:db8::10/64)")
    try:
        vip = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address with a prefix length, ADDRESS/PREFIX") from None
    address = vip.ip
    if address.is_unspecified or address.is_loopback or address.is_multicast or address.is_link_local:
        raise ValueError("must be a unicast address clients can reach (not unspecified, loopback, multicast "
                         "or link-local)")
    if vip.version == 4 and vip.network.prefixlen <= 30 and address in (vip.network.network_address,
                                                                          vip.network.broadcast_address):
        raise ValueError(f"is the network or broadcast address of {vip.network}")
    return vip


parse_vip = parse_host_address  # a VIP is a host address like any other; the name says what it is for


def family(vip: Interface) -> str:
    """``"-4"`` or ``"-6"``: the ``ip`` option for the address family."""
    return "-4" if vip.version == 4 else "-6"
