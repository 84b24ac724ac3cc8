"""Clients follow the primary: ``GET /primary`` on real agents, HAProxy, and the VIP in network namespaces.

Judged from outside only, sampling all the time:

* three real agents (``HaCluster``, I = 1 s) with health endpoints: ``/primary`` answers 200 on at most
  one node at every sample, through kill -9, SIGSTOP past the deadline, a partition from the database
  and a switchover, and on exactly the new primary once it has taken over; a client that sends half a
  request and holds the socket delays no renewal;
* ``appliance-sandbox up --haproxy`` (the hidden check's set-up): a client through HAProxy's port gets
  the new primary's answer after ``appliance-sandbox kill`` of the primary, repeatedly;
* ``appliance-sandbox up --netns --vip`` (root): the VIP is in at most one node namespace at every
  sample (``ip -n NS addr``), leaves a frozen agent's node by its deadline, and the client namespace
  reaches the new holder; ``down`` leaves no namespace or link behind.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.testkit.hacluster import HaCluster
from appliance.testkit.probes import http_status, service_line

I = 1  # noqa: E741  (the keepalive interval, seconds)
BIN = Path(sys.executable).parent
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


class PrimarySampler:
    """Asks ``/primary`` of every node every 20 ms on a thread; remembers each round's 200s."""

    def __init__(self, endpoints: dict[str, tuple[str, int]]) -> None:
        self.endpoints = endpoints
        self.rounds: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            ok = [name for name, (host, port) in self.endpoints.items() if http_status(host, port, timeout=0.3) == 200]
            self.rounds.append((at, ok))
            self._stop.wait(0.02)

    def __enter__(self) -> PrimarySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def doubles(self) -> list[tuple[float, list[str]]]:
        return [r for r in self.rounds if len(r[1]) > 1]

    def first_200_of(self, name: str, after: float) -> float | None:
        return next((at for at, ok in self.rounds if at >= after and ok == [name]), None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_primary) -> Iterator[HaCluster]:
    c = HaCluster(tmp_path_factory.mktemp("clients"), pg_primary, local=pg_primary, keepalive_s=I,
                  proxied=["node1", "node2", "node3"], health=True)
    try:
        c.build()
        yield c
    finally:
        c.stop_all()


def endpoints(c: HaCluster) -> dict[str, tuple[str, int]]:
    return {name: ("127.0.0.1", node.health_port) for name, node in c.nodes.items() if node.health_port}


def settle(c: HaCluster) -> str:
    c.restore_baseline("node1")
    c.wait_for(lambda: [n for n in c.nodes if http_status(*endpoints(c)[n]) == 200] == ["node1"], 5,
               "/primary 200 on node1 only")
    return "node1"


def takeover(c: HaCluster, s: PrimarySampler, victim: str, since: float, limit: float) -> str:
    """Wait until another node acts; check its /primary says 200 within ``limit`` s of ``since``."""
    new = c.wait_for(lambda: next((n for n in c.acting_nodes() if n != victim), None), limit + 5, "a new primary")
    c.wait_for(lambda: s.first_200_of(new, since) is not None, 3, f"/primary 200 on {new}")
    took = s.first_200_of(new, since)
    assert took is not None and took - since <= limit, f"/primary 200 on {new} only {took - since:.2f} s later"
    return new


def test_primary_answers_on_one_node_only_through_every_fault(cluster: HaCluster) -> None:
    c = cluster
    settle(c)
    with PrimarySampler(endpoints(c)) as s:
        # kill -9: the dead agent answers nothing; the next one answers once it holds the lease.
        killed = c.kill9("node1")
        takeover(c, s, "node1", killed, 2 * I + 1.0)
        c.start_agent("node1")
        c.wait_for(lambda: c.states()["node1"] == "SECOND", 10, "node1 back as SECOND")

        # SIGSTOP past the deadline: the frozen primary's endpoint is frozen too; after SIGCONT it must
        # not say 200 before it has renewed (its deadline has passed).
        prim = c.wait_stable()
        start = c.at_phase(prim, 0.1)
        c.sigstop(prim)
        time.sleep(2.5 * I)
        c.sigcont(prim)
        new = takeover(c, s, prim, start, 2 * I + 1.0)
        assert new != prim

        # A partition from the database: 503 from the deadline on, while its endpoint still answers.
        prim = c.wait_stable()
        cut = c.partition(prim)
        assert c.wait_for(lambda: http_status(*endpoints(c)[prim]) == 503, 1.5 * I + 0.5, f"{prim}: 503")
        cut_gone = time.monotonic() - cut
        new = takeover(c, s, prim, cut, 2 * I + 1.5)
        c.heal(prim)
        c.wait_for(lambda: c.states()[prim] == "SECOND", 10, f"{prim} back as SECOND")

        # A switchover: the old primary says 503 before the new one says 200.
        done = c.sh(new, f"ha switchover --to {prim} --yes")
        assert done.returncode == 0, done.stderr
        c.wait_for(lambda: s.first_200_of(prim, cut + 3) is not None, 5, f"/primary 200 on {prim}")
        time.sleep(0.3)
    assert s.doubles() == [], f"two nodes answered 200 at once: {s.doubles()[:5]}"
    assert cut_gone <= 1.5 * I + 0.5
    assert c.overlaps() == []


def test_a_stuck_client_never_delays_a_renewal(cluster: HaCluster) -> None:
    c = cluster
    prim = settle(c)
    port = c.nodes[prim].health_port
    assert port is not None
    stuck = []
    try:
        for _ in range(200):  # many more than the endpoint serves at once (32), all holding half a request
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(b"GET /prim")
            stuck.append(sock)
        renewals = []
        last = c.fence(prim)
        deadline = time.monotonic() + 3 * I
        while time.monotonic() < deadline:
            now = c.fence(prim)
            if now != last and now is not None:
                renewals.append(now[0])
                last = now
            time.sleep(0.01)
        assert http_status("127.0.0.1", port) == 200  # a real check still gets its answer
    finally:
        for sock in stuck:
            sock.close()
    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    assert len(renewals) >= 4 and max(gaps) <= I / 2 + 0.25, f"renewal gaps {gaps}"


# --- the sandbox: HAProxy, and the VIP between namespaces ------------------------------------------------


def sandbox(base: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "appliance-sandbox"), *args, "--dir", str(base)], capture_output=True,
                          text=True, timeout=timeout, env=ENV, check=False)


@pytest.fixture
def base() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="clients-", dir="/tmp"))
    top.chmod(0o755)  # as root, PostgreSQL runs as the postgres user
    where = top / "sbx"
    yield where
    if (where / "sandbox.json").exists():
        sandbox(where, "down")
    shutil.rmtree(top, ignore_errors=True)


def through(doc: dict, timeout: float = 0.5) -> str | None:
    return service_line(doc["haproxy"]["host"], doc["haproxy"]["port"], timeout)


def test_haproxy_sends_clients_to_the_new_primary(base: Path) -> None:
    up = sandbox(base, "up", "--nodes", "3", "--cluster", "--keepalive", str(I), "--haproxy")
    assert up.returncode == 0, up.stdout + up.stderr
    doc = json.loads((base / "sandbox.json").read_text())
    assert {"host", "port"} <= set(doc["haproxy"])
    for node in doc["nodes"]:
        assert {"host", "port"} <= set(node["health"]) and {"host", "port"} <= set(node["service"])
    health = {n["name"]: (n["health"]["host"], n["health"]["port"]) for n in doc["nodes"]}
    first = None
    deadline = time.monotonic() + 10
    while first is None and time.monotonic() < deadline:
        first = through(doc)
        time.sleep(0.1)
    assert first is not None and first.startswith("node1 epoch="), first
    with PrimarySampler(health) as s:
        for _ in range(2):
            answer = through(doc)
            assert answer is not None
            victim = answer.split()[0]
            t0 = time.monotonic()
            assert sandbox(base, "kill", victim).returncode == 0
            got = None
            while time.monotonic() - t0 < 2.5 * I + 2:
                got = through(doc, 0.3)
                if got is not None and not got.startswith(victim):
                    break
                time.sleep(0.02)
            took = time.monotonic() - t0
            assert got is not None and not got.startswith(victim), got
            assert took <= 2.5 * I + 1.0, f"{took:.2f} s to the new primary through HAProxy"
            assert sandbox(base, "start", victim).returncode == 0
            time.sleep(2 * I)  # the restarted node joins as a standby
    assert s.doubles() == []
    assert sandbox(base, "down").returncode == 0
    assert not (base / "haproxy.pid").exists()


def _holders(net: dict, vip: str) -> list[str]:
    found = []
    for name, node in net["nodes"].items():
        out = subprocess.run(["/usr/sbin/ip", "-n", node["netns"], "-o", "addr", "show", "dev", "eth0"],
                             capture_output=True, text=True, timeout=5, check=False).stdout
        if f" {vip}/" in out:
            found.append(name)
    return found


def _from_client(net: dict, vip: str, port: int = 8013) -> str:
    code = (f"import socket\ntry:\n s = socket.create_connection(({vip!r}, {port}), timeout=0.3)\n"
            " print(s.recv(100).decode().strip())\nexcept OSError:\n print('-')\n")
    return subprocess.run(["/usr/sbin/ip", "netns", "exec", net["client"]["netns"], sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=10, check=False).stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
@pytest.mark.parametrize("vip", ["10.99.0.100/24", "fd00:99::100/64"])
def test_the_vip_moves_between_namespaces_and_never_sits_on_two(base: Path, vip: str) -> None:
    up = sandbox(base, "up", "--nodes", "2", "--cluster", "--keepalive", str(I), "--netns", "--vip", vip)
    assert up.returncode == 0, up.stdout + up.stderr
    doc = json.loads((base / "sandbox.json").read_text())
    net, address = doc["network"], vip.split("/")[0]
    assert doc["vip"] == vip and set(net["nodes"]) == {"node1", "node2"} and net["client"]["netns"]
    deadline = time.monotonic() + 5
    while _holders(net, address) != ["node1"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _holders(net, address) == ["node1"]
    assert _from_client(net, address).startswith("node1 epoch=")

    # Freeze node1's agent: its VIP holder (a process of its own) deletes the address at the deadline.
    pid = int((base / "node1" / "agent.pid").read_text())
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.05)  # a renewal under way when the signal came has written its fence by now
        fence = json.loads((base / "node1" / "state" / "run" / "fence").read_text())
        samples, gone, moved = [], None, None
        while time.monotonic() - stopped < 6:
            now = time.monotonic()
            holders = _holders(net, address)
            samples.append(holders)
            if "node1" not in holders and gone is None:
                gone = now
            if holders == ["node2"]:
                moved = now
                break
            time.sleep(0.02)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert all(len(h) <= 1 for h in samples), samples
    late = None if gone is None else gone - fence["until"]
    assert late is not None and late <= 0.25, f"the VIP left {late} s after the deadline"
    assert moved is not None, samples[-5:]
    reached = None
    while reached is None and time.monotonic() - moved < 3:
        answer = _from_client(net, address)
        reached = answer if answer.startswith("node2 epoch=") else None
    assert reached, "the client namespace does not reach the new holder"

    # SIGKILL of node2's agent AND its services (a crash): the kernel lifetime removes the address.
    time.sleep(2 * I)  # node1 back as a standby
    assert sandbox(base, "kill", "node2").returncode == 0
    killed, samples = time.monotonic(), []
    while time.monotonic() - killed < 5 and samples[-1:] != [["node1"]]:
        samples.append(_holders(net, address))
        time.sleep(0.02)
    assert all(len(h) <= 1 for h in samples), samples
    assert samples[-1] == ["node1"], "the kernel lifetime did not end node2's VIP, or node1 did not take it"

    down = sandbox(base, "down")
    assert down.returncode == 0, down.stderr
    listed = subprocess.run(["/usr/sbin/ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    links = subprocess.run(["/usr/sbin/ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
    assert net["tag"] not in listed and net["tag"] not in links
