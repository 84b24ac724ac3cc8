"""The sandbox's own network (``appliance-sandbox up --netns [--vip ADDRESS/PREFIX]``, root only).

One Linux bridge in the host's namespace, and one network namespace per node plus one for a client,
each joined to the bridge by a veth pair whose inside end is ``eth0``. Addresses are the sandbox's
own: a control network ``10.213.N.0/24`` (N from the sandbox's directory, so two sandboxes do not
meet), the host's end of it on the bridge (the databases listen there), and, when the VIP lies outside
it, one more address per namespace in the VIP's network so that the client reaches the VIP on-link.

Each node's agent runs inside its namespace (``ip netns exec``), and with it everything it starts: the
health endpoint and the service port on the node's own address, and the VIP holder, which adds the
VIP to the node's ``eth0``. :func:`destroy` removes every namespace, link and address made here.
Every command is ``ip`` with an argv list.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import CommandFailed, UsageError
from appliance.net.addresses import Interface, parse_vip

IP = Path("/usr/sbin/ip")
DEVICE = "eth0"  # the node's interface inside its namespace: [vip] interface
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run([str(IP), *args], capture_output=True, text=True, timeout=10, env=ENV, check=False,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise CommandFailed(f"ip {' '.join(args)} failed: {(done.stderr.strip().splitlines() or ['?'])[0]}")
    return done.stdout


@dataclass(frozen=True)
class Network:
    tag: str  # asb + 6 hex digits: names of the bridge, the veths and the namespaces
    control: str  # the control network (CIDR)
    host: str  # the host's address on the bridge (the databases listen there)
    nodes: dict[str, tuple[str, str]]  # node -> (namespace, control address)
    client: tuple[str, str]  # (namespace, control address)
    vip: str | None  # ADDRESS/PREFIX
    extra: dict[str, str]  # namespace -> its address in the VIP's network, when that is not the control one

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def namespaces(self) -> list[str]:
        return [ns for ns, _ in self.nodes.values()] + [self.client[0]]

    def as_doc(self) -> dict[str, Any]:
        return {"tag": self.tag, "control": self.control, "host": self.host, "bridge": self.bridge,
                "nodes": {name: {"netns": ns, "address": addr} for name, (ns, addr) in self.nodes.items()},
                "client": {"netns": self.client[0], "address": self.client[1]}, "vip": self.vip,
                "vip_network_addresses": self.extra, "interface": DEVICE}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Network:
        return cls(doc["tag"], doc["control"], doc["host"],
                   {name: (n["netns"], n["address"]) for name, n in doc["nodes"].items()},
                   (doc["client"]["netns"], doc["client"]["address"]), doc.get("vip"),
                   dict(doc.get("vip_network_addresses", {})))


def plan(base: Path, names: list[str], vip_text: str | None) -> Network:
    """Names and addresses for a sandbox in ``base`` with nodes ``names`` (no change to the system)."""
    if os.geteuid() != 0:
        raise UsageError("--netns needs root (it creates network namespaces, a bridge and veth pairs)",
                         hint="run appliance-sandbox as root, or leave out --netns and --vip")
    digest = hashlib.sha256(str(base).encode()).hexdigest()
    tag = "asb" + digest[:6]
    control = ipaddress.ip_network(f"10.213.{int(digest[6:8], 16) % 250 + 1}.0/24")
    vip: Interface | None = None
    if vip_text:
        try:
            vip = parse_vip(vip_text)
        except ValueError as exc:
            raise UsageError(f"--vip {exc}") from None
        if vip.network.num_addresses < len(names) + 4:
            raise UsageError(f"--vip {vip}: its network is too small for {len(names)} nodes and a client",
                             hint="give a prefix of /28 or shorter (IPv6: /120 or shorter)")
    hosts = iter(control.hosts())
    taken = {vip.ip} if vip else set()

    def take(pool: Any) -> str:
        for address in pool:
            if address not in taken:
                taken.add(address)
                return str(address)
        raise UsageError("no free address left in the sandbox's network")

    host = take(hosts)
    nodes = {name: (f"{tag}-{name}", take(hosts)) for name in names}
    client = (f"{tag}-client", take(hosts))
    extra: dict[str, str] = {}
    if vip is not None and vip.ip not in control:
        pool = vip.network.hosts()
        for ns, _ in [*nodes.values(), client]:
            extra[ns] = f"{take(pool)}/{vip.network.prefixlen}"
    return Network(tag, str(control), host, nodes, client, str(vip) if vip else None, extra)


def exists(net: Network) -> bool:
    return ip("link", "show", net.bridge, check=False) != ""


def create(net: Network) -> None:
    """Make the bridge, the namespaces and their links (what a previous run left is removed first)."""
    destroy(net)
    prefix = ipaddress.ip_network(net.control).prefixlen
    try:
        ip("link", "add", net.bridge, "type", "bridge")
        ip("addr", "add", f"{net.host}/{prefix}", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        for index, (ns, address) in enumerate([*net.nodes.values(), net.client]):
            outside = f"{net.tag}v{index}"
            ip("netns", "add", ns)
            ip("link", "add", outside, "type", "veth", "peer", "name", DEVICE, "netns", ns)
            ip("link", "set", outside, "master", net.bridge, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{address}/{prefix}", "dev", DEVICE)
            if ns in net.extra:
                v6 = ":" in net.extra[ns]
                ip("-n", ns, "-6" if v6 else "-4", "addr", "add", net.extra[ns], "dev", DEVICE,
                   *(["nodad"] if v6 else []))
            ip("-n", ns, "link", "set", DEVICE, "up")
    except CommandFailed:
        destroy(net)
        raise


def processes_in(ns: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", ns, check=False).split() if p.isdigit()]


def destroy(net: Network) -> None:
    """Remove every namespace (killing what still runs in it: a namespace lives on while it has
    processes), its veth pair and the bridge. Missing pieces are skipped."""
    present = set(ip("netns", "list", check=False).split())
    for ns in net.namespaces():
        if ns not in present:
            continue
        for pid in processes_in(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while processes_in(ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        ip("netns", "del", ns, check=False)
    for index in range(len(net.nodes) + 1):
        ip("link", "del", f"{net.tag}v{index}", check=False)  # gone with its peer already, normally
    ip("link", "del", net.bridge, check=False)


def leftovers(net: Network) -> list[str]:
    """What of ``net`` still exists (for ``down`` and the tests): namespaces and links by name."""
    found = [ns for ns in ip("netns", "list", check=False).split() if ns.startswith(net.tag)]
    links = ip("-o", "link", "show", check=False)
    found += [line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if net.tag in line]
    return found
