"""Telling the link that an address moved: gratuitous ARP (IPv4) and unsolicited neighbour
advertisements (IPv6), built and sent here (Debian 12 has no tool that sends the IPv6 kind).

IPv4: an Ethernet broadcast ARP frame with sender = target = the address, in both forms that
``arping -U`` (request) and ``arping -A`` (reply) send; receivers update an entry they already have
from either (Linux: whatever ``arp_accept`` says), so clients stop sending to the old holder's MAC.
Sent on an AF_PACKET socket: needs CAP_NET_RAW.

IPv6 (RFC 4861 §7.2.6): a neighbour advertisement to all-nodes (ff02::1) with the Override flag and
our link-layer address, hop limit 255 (receivers drop anything else), from the address itself (added
with ``nodad``, so it is usable at once). Sent on a raw ICMPv6 socket, whose checksum the kernel
fills in: needs CAP_NET_RAW.

The frame builders are pure (tested byte by byte); :class:`Announcer` holds the sockets.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path

from appliance.net.addresses import Interface

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
ALL_NODES = "ff02::1"
ND_NEIGHBOR_ADVERT = 136
NA_OVERRIDE = 0x20000000
OPT_TARGET_LLADDR = 2


def mac_of(device: str, sys_class_net: Path = Path("/sys/class/net")) -> bytes:
    """The device's hardware address. :raises OSError: no such device. :raises ValueError: no usable MAC
    (loopback and tunnels have none: nobody on them caches one)."""
    text = (sys_class_net / device / "address").read_text().strip()
    mac = bytes.fromhex(text.replace(":", ""))
    if len(mac) != 6 or mac == b"\0" * 6:
        raise ValueError(f"{device} has no Ethernet address ({text or 'none'})")
    return mac


def garp_frame(mac: bytes, address: ipaddress.IPv4Address, *, reply: bool = False) -> bytes:
    """One gratuitous ARP as a whole Ethernet frame (request form, or reply form with ``reply``)."""
    ip = address.packed
    ethernet = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    # htype Ethernet, ptype IPv4, hlen 6, plen 4, op; sender MAC/IP; target MAC/IP (target IP = ours).
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2 if reply else 1) + mac + ip + \
        (BROADCAST if reply else b"\0" * 6) + ip
    return ethernet + arp


def na_message(mac: bytes, address: ipaddress.IPv6Address) -> bytes:
    """One unsolicited neighbour advertisement (the ICMPv6 message; checksum left to the kernel)."""
    header = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, NA_OVERRIDE)
    option = struct.pack("!BB", OPT_TARGET_LLADDR, 1) + mac
    return header + address.packed + option


class Announcer:
    """Sends the announcements of one address on one device; sockets opened on first use."""

    def __init__(self, device: str, vip: Interface) -> None:
        self.device = device
        self.vip = vip
        self._sock: socket.socket | None = None
        self._mac: bytes | None = None

    def send(self) -> None:
        """One announcement (IPv4: both ARP forms). :raises OSError: the device or privileges are missing."""
        if self._mac is None:
            self._mac = mac_of(self.device)
        if self.vip.version == 4:
            assert isinstance(self.vip.ip, ipaddress.IPv4Address)
            sock = self._socket()
            sock.send(garp_frame(self._mac, self.vip.ip))
            sock.send(garp_frame(self._mac, self.vip.ip, reply=True))
        else:
            assert isinstance(self.vip.ip, ipaddress.IPv6Address)
            index = socket.if_nametoindex(self.device)
            self._socket().sendto(na_message(self._mac, self.vip.ip), (ALL_NODES, 0, 0, index))

    def _socket(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        if self.vip.version == 4:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
            try:
                sock.bind((self.device, ETH_P_ARP))
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            try:
                index = socket.if_nametoindex(self.device)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                sock.bind((str(self.vip.ip), 0, 0, index))
            except OSError:
                sock.close()
                raise
        self._sock = sock
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
