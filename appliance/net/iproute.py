"""The kernel's addresses through iproute2's ``ip``: add or refresh with a lifetime, delete, look up.

Argv lists and the absolute path from ``[tools] ip`` (:mod:`appliance.proc`); nothing goes through a
shell. The caller needs CAP_NET_ADMIN to change addresses (reading needs nothing).

A lifetime (``valid_lft``/``preferred_lft``, whole seconds) makes the kernel delete the address by
itself when it is not refreshed: the backstop for a holder that is killed with SIGKILL. IPv6 addresses
are added with ``nodad``: usable at once, and never left "dadfailed" by a short layer-2 split.
"""

from __future__ import annotations

import json
from pathlib import Path

from appliance.errors import CommandFailed
from appliance.net.addresses import Interface, family
from appliance.proc import run_tool

TIMEOUT_S = 2.0
_ABSENT = ("Cannot assign requested address", "No such process")  # what `ip addr del` says when not there


def replace(ip: Path, vip: Interface, device: str, lifetime_s: int) -> None:
    """Add ``vip`` on ``device``, or refresh its lifetime if it is there. :raises CommandFailed:"""
    args = [family(vip), "addr", "replace", str(vip), "dev", device,
            "valid_lft", str(lifetime_s), "preferred_lft", str(lifetime_s)]
    if vip.version == 6:
        args.append("nodad")
    run_tool(ip, args, timeout_s=TIMEOUT_S)


def delete(ip: Path, vip: Interface, device: str) -> bool:
    """Delete ``vip`` from ``device``; False if it was not there. :raises CommandFailed: any other failure."""
    try:
        run_tool(ip, [family(vip), "addr", "del", str(vip), "dev", device], timeout_s=TIMEOUT_S)
    except CommandFailed as exc:
        if any(text in exc.message for text in _ABSENT):
            return False
        raise
    return True


def present(ip: Path, vip: Interface, device: str, netns: str | None = None) -> bool:
    """Whether ``device`` (in network namespace ``netns``, if given) has ``vip``. :raises CommandFailed:"""
    args = (["-n", netns] if netns else []) + ["-j", family(vip), "addr", "show", "dev", device]
    return vip.ip in {addr for addr, _ in addresses(run_tool(ip, args, timeout_s=TIMEOUT_S))}


def addresses(ip_json: str) -> list[tuple[object, int | None]]:
    """(address, remaining valid lifetime in s or None if forever) from ``ip -j addr show`` output."""
    import ipaddress

    found: list[tuple[object, int | None]] = []
    for link in json.loads(ip_json or "[]"):
        for info in link.get("addr_info", []):
            try:
                address = ipaddress.ip_address(info["local"])
            except (KeyError, ValueError):
                continue
            lifetime = info.get("valid_life_time")
            forever = lifetime is None or lifetime >= 0xFFFFFFFF
            found.append((address, None if forever else int(lifetime)))
    return found
