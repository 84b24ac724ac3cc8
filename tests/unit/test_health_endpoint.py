"""The health endpoint over real loopback sockets: what each path answers, methods, limits, stuck clients.

The board is filled by hand (what the agent publishes each tick and what its fence grants); the clock
of the answers is injected, so "the deadline has passed" needs no sleeping.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator

import pytest

from appliance.ha.board import BoardFence, Published
from appliance.ha.dbnodes import HostState
from appliance.ha.health import HealthRoutes
from appliance.ha.metrics import Metrics
from appliance.ha.model import ClusterView, Lease, NodeState
from appliance.net.httpd import HttpServer

NOW = 1000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class NullFence:
    def grant(self, until_monotonic: float, epoch: int, timeline: int | None = None) -> None:
        pass

    def revoke(self) -> None:
        pass


def view(vip: str | None = None) -> ClusterView:
    nodes = (NodeState("id-1", "node1", 300, "primary", "active", 0.2, 10),
             NodeState("id-2", "node2", 200, "standby", "active", 0.3, 11))
    return ClusterView(nodes, Lease("id-1", 7, 1.5, None), 1.0, False, vip=vip)


def record(node_id: str = "id-1", *, acting: bool = True, state: str = "PRIM", ticked_at: float = NOW,
           db_up: bool = True) -> Published:
    hosts = (HostState("127.0.0.1", 5432, db_up, db_up, 1, latency_ms=0.8),)
    return Published(node_id, "node1" if node_id == "id-1" else "node2", state, acting, 7 if acting else None, 1.0,
                     view("192.0.2.10/24") if db_up else None, hosts, ticked_at, 1)


@pytest.fixture
def endpoint() -> Iterator[tuple[HttpServer, Metrics, Clock, BoardFence]]:
    clock = Clock()
    metrics = Metrics()
    routes = HealthRoutes(metrics, ("127.0.0.0/8",), monotonic=clock)
    server = HttpServer("127.0.0.1", 0, routes.handle, max_connections=8, request_timeout_s=0.5).start()
    try:
        yield server, metrics, clock, BoardFence(NullFence(), metrics.board)
    finally:
        server.close()


def ask(server: HttpServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*server.address, timeout=2)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Closed without an answer: end of file, or a reset (the server closed with our bytes unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_primary_is_200_only_inside_the_fence_deadline(endpoint) -> None:
    server, metrics, clock, fence = endpoint
    metrics.board.publish(record())
    assert ask(server, "/primary")[0] == 503  # acting, but no fence granted (yet)
    fence.grant(NOW + 1.5, 7)
    status, headers, body = ask(server, "/primary")
    assert status == 200 and json.loads(body) == {"node": "node1", "role": "primary", "epoch": 7,
                                                   "fence_remaining_s": 1.5}
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    clock.now = NOW + 1.5  # the agent did nothing since: the deadline alone turns it off
    assert ask(server, "/primary")[0] == 503
    clock.now = NOW
    fence.revoke()  # a step-down answers 503 before the next tick publishes anything
    assert ask(server, "/primary")[0] == 503


def test_a_standby_is_never_primary_even_with_a_stale_fence(endpoint) -> None:
    server, metrics, clock, fence = endpoint
    metrics.board.publish(record("id-2", acting=False, state="SECOND"))
    fence.grant(NOW + 1.0, 6)
    assert ask(server, "/primary")[0] == 503


def test_head_and_options_answer_the_status_without_a_body(endpoint) -> None:
    server, metrics, clock, fence = endpoint
    metrics.board.publish(record())
    fence.grant(NOW + 1.0, 7)
    for method in ("HEAD", "OPTIONS"):
        status, headers, body = ask(server, "/primary", method)
        assert (status, body) == (200, b"") and "GET, HEAD, OPTIONS" in headers["allow"]
    fence.revoke()
    assert ask(server, "/primary", "OPTIONS")[:3:2] == (503, b"")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused(endpoint, method: str) -> None:
    server, *_ = endpoint
    assert ask(server, "/primary", method)[0] == 405


def test_unknown_paths_and_garbage(endpoint) -> None:
    server, *_ = endpoint
    assert ask(server, "/primary/x")[0] == 404
    assert ask(server, "/nope")[0] == 404
    assert ask(server, "/primary?x=1")[0] == 503  # the query is not part of the path
    with socket.create_connection(server.address, timeout=2) as sock:
        sock.sendall(b"HELLO\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")


def test_standby_health_and_cluster(endpoint) -> None:
    server, metrics, clock, fence = endpoint
    assert ask(server, "/health")[0] == 503  # nothing published: the loop has not run yet
    metrics.board.publish(record("id-2", acting=False, state="SECOND"))
    status, _, body = ask(server, "/standby")
    assert status == 200 and json.loads(body)["standby"] is True
    status, _, body = ask(server, "/health")
    assert status == 200 and json.loads(body)["db_reachable"] is True
    status, _, body = ask(server, "/cluster")
    doc = json.loads(body)
    assert status == 200 and set(doc) == {"nodes", "db_nodes", "epoch", "maintenance", "keepalive_interval_s", "vip",
                                          "db_alarm", "note", "read_from"}
    assert [(n["name"], n["this_node"], n["role"]) for n in doc["nodes"]] == [
        ("node1", False, "primary"), ("node2", True, "standby")]
    assert doc["db_nodes"] == [{"host": "127.0.0.1", "port": 5432, "role": "primary", "status": "online",
                                "latency_ms": 0.8, "timeline": 1}]
    assert doc["vip"] == {"address": "192.0.2.10/24", "holder": "node1"}
    clock.now = NOW + 2.5  # no tick for longer than 2·I: no longer a standby that could take over
    assert ask(server, "/standby")[0] == 503
    clock.now = NOW + 60  # nor a running loop
    assert ask(server, "/health")[0] == 503


def test_health_says_when_the_database_is_unreachable(endpoint) -> None:
    server, metrics, *_ = endpoint
    metrics.board.publish(record("id-2", acting=False, state="WAIT", db_up=False))
    status, _, body = ask(server, "/health")
    assert status == 200 and json.loads(body)["db_reachable"] is False
    assert ask(server, "/standby")[0] == 503
    assert ask(server, "/cluster")[0] == 503


def test_metrics_agree_with_primary(endpoint) -> None:
    server, metrics, clock, fence = endpoint
    metrics.board.publish(record())
    fence.grant(NOW + 1.25, 7)
    metrics.board.observe_renewal(0.004, True)
    status, headers, body = ask(server, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    # The scrape reads the real monotonic clock: the fake deadline above is far in the past for it.
    assert "appliance_ha_is_primary 0.0" in text
    for line in ('appliance_ha_state{state="PRIM"} 1.0', 'appliance_ha_state{state="SECOND"} 0.0',
                 "appliance_ha_failovers_total 1.0", "appliance_ha_keepalive_seconds 1.0",
                 'appliance_db_up{host="127.0.0.1",port="5432"} 1.0',
                 'appliance_db_latency_seconds{host="127.0.0.1",port="5432"} 0.0008',
                 'appliance_ha_lease_renew_seconds_bucket{le="0.005"} 1.0',
                 "appliance_ha_lease_renew_seconds_count 1.0",
                 "appliance_ha_epoch 7.0"):
        assert line in text, line
    fence.grant(time.monotonic() + 1.25, 8)
    text = ask(server, "/metrics")[2].decode()
    assert "appliance_ha_is_primary 1.0" in text and "appliance_ha_epoch 8.0" in text


def test_details_only_for_the_configured_networks() -> None:
    metrics = Metrics()
    metrics.board.publish(record(ticked_at=time.monotonic()))
    routes = HealthRoutes(metrics, ("10.0.0.0/8",))
    server = HttpServer("127.0.0.1", 0, routes.handle).start()
    try:
        assert ask(server, "/cluster")[0] == 403
        assert ask(server, "/metrics")[0] == 403
        assert ask(server, "/health")[0] == 200  # role and liveness stay public
    finally:
        server.close()


def test_a_stuck_client_delays_nobody_and_is_dropped(endpoint) -> None:
    server, metrics, clock, fence = endpoint
    metrics.board.publish(record())
    stuck = []
    for _ in range(5):
        sock = socket.create_connection(server.address, timeout=3)
        sock.sendall(b"GET /prim")  # half a request, then silence
        stuck.append(sock)
    started = time.monotonic()
    assert ask(server, "/health")[0] == 200
    assert time.monotonic() - started < 0.2
    for sock in stuck:  # request_timeout_s = 0.5: each is disconnected, without an answer
        assert closed_by_server(sock)
        sock.close()
    assert time.monotonic() - started < 2.0


def test_past_the_connection_cap_the_oldest_is_dropped(endpoint) -> None:
    server, metrics, *_ = endpoint
    metrics.board.publish(record())
    stuck = [socket.create_connection(server.address, timeout=3) for _ in range(20)]  # cap: 8
    try:
        for sock in stuck:
            sock.sendall(b"GET / HTTP/1.1\r\n")
        assert ask(server, "/health")[0] == 200  # a real check still gets through at once
        assert closed_by_server(stuck[0])  # the oldest were evicted
    finally:
        for sock in stuck:
            sock.close()


def test_an_oversized_head_is_refused(endpoint) -> None:
    server, *_ = endpoint
    with socket.create_connection(server.address, timeout=2) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nX: " + b"a" * 10000)
        assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
