"""The agent's HTTP endpoint for load balancers and monitoring (``[health] listen``): what each path answers.

Every answer is computed at the moment of the request from the :class:`~appliance.ha.board.Board`,
never from a remembered flag:

``/primary``  200 only while this node acts as primary AND its fence deadline (the one the fence file
              carries, on the monotonic clock) is ahead; else 503. A primary blocked on a dead database
              answers 503 from its deadline on, half an interval before anyone else can take over; a
              frozen one does not answer at all (the check times out). Point the load balancer here.
``/standby``  200 while this node is an online standby that could take over (its loop runs, it reads
              the cluster, it is in the cluster and heard from); else 503.
``/health``   200 while the agent's loop runs (a tick ended recently: :func:`~appliance.ha.timing.loop_stale_s`);
              the body says whether the database is reachable. 503 otherwise.
``/cluster``  the document of ``ha get nodes --json``, from the last snapshot and the last probes of the
              database hosts (503 before the first successful snapshot).
``/metrics``  Prometheus text format (:mod:`appliance.ha.metrics`).

``/cluster`` and ``/metrics`` name nodes and database hosts: only clients in ``[health] detail_networks``
get them (403). Bodies are small JSON documents; nothing here is ever a secret. The server itself
(threads, timeouts, limits) is :mod:`appliance.net.httpd`.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from appliance.config import HealthConfig
from appliance.configcheck import split_listen
from appliance.ha.board import Board, Published
from appliance.ha.metrics import CONTENT_TYPE, Metrics
from appliance.ha.model import NodeIdentity
from appliance.ha.report import app_nodes, db_nodes, nodes_document
from appliance.ha.timing import loop_stale_s, online_window_s
from appliance.net.httpd import HttpServer, Response

Clock = Callable[[], float]


def _plain(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)  # as `ha get nodes --json` writes it


def _json(status: int, doc: dict[str, Any]) -> Response:
    return Response(status, (json.dumps(doc, default=_plain) + "\n").encode())


class HealthRoutes:
    """``handle(method, path, peer)`` for :class:`~appliance.net.httpd.HttpServer`."""

    def __init__(self, metrics: Metrics, detail_networks: tuple[str, ...], monotonic: Clock = time.monotonic) -> None:
        self.metrics = metrics
        self.board: Board = metrics.board
        self.detail = tuple(ipaddress.ip_network(n) for n in detail_networks)
        self.monotonic = monotonic
        self.routes: dict[str, Callable[[], Response]] = {
            "/primary": self.primary, "/standby": self.standby, "/health": self.health,
            "/cluster": self.cluster, "/metrics": self.render_metrics,
        }

    def handle(self, method: str, path: str, peer: str) -> Response:
        route = self.routes.get(path)
        if route is None:
            return _json(404, {"error": "not found", "paths": sorted(self.routes)})
        if path in ("/cluster", "/metrics") and not self._detail_allowed(peer):
            return _json(403, {"error": "not allowed from this address (see [health] detail_networks)"})
        return route()

    def _detail_allowed(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.detail)

    def _record(self) -> Published | None:
        return self.board.published

    def primary(self) -> Response:
        record, now = self._record(), self.monotonic()
        trusted = self.board.trusted(now)
        name = record.name if record else None
        if record is not None and record.acting and trusted is not None:
            remaining, epoch = trusted
            return _json(200, {"node": name, "role": "primary", "epoch": epoch,
                               "fence_remaining_s": round(remaining, 3)})
        return _json(503, {"node": name, "role": "standby" if record and not record.acting else "unknown",
                           "state": record.state if record else None})

    def standby(self) -> Response:
        record, now = self._record(), self.monotonic()
        ok = False
        if record is not None and record.view is not None and not record.acting and self.board.trusted(now) is None:
            me = record.view.node(record.node_id)
            fresh = now - record.ticked_at <= online_window_s(record.keepalive_s)
            ok = fresh and me is not None and me.admin_state == "active" and record.view.online(me) \
                and record.state == "SECOND"
        return _json(200 if ok else 503, {"node": record.name if record else None, "standby": ok,
                                          "state": record.state if record else None,
                                          "maintenance": record.view.maintenance if record and record.view else None})

    def health(self) -> Response:
        record, now = self._record(), self.monotonic()
        if record is None:
            return _json(503, {"loop": "starting", "db_reachable": None})
        age = now - record.ticked_at
        running = age <= loop_stale_s(record.keepalive_s)
        return _json(200 if running else 503, {
            "node": record.name, "loop": "running" if running else "stuck", "loop_age_s": round(age, 3),
            "db_reachable": record.view is not None, "state": record.state,
            "keepalive_interval_s": record.keepalive_s,
        })

    def cluster(self) -> Response:
        record = self._record()
        if record is None or record.view is None:
            return _json(503, {"error": "the cluster's state is not known yet (database unreachable?)"})
        apps = app_nodes(record.view, NodeIdentity(record.node_id, "", record.name))
        doc = nodes_document(record.view, apps, db_nodes(list(record.db_hosts)))
        return _json(200, doc)

    def render_metrics(self) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)


def start_endpoint(config: HealthConfig, metrics: Metrics) -> HttpServer:
    """Bind ``[health] listen`` and serve from a thread. :raises OSError: the address cannot be bound."""
    host, port = split_listen(config.listen)
    routes = HealthRoutes(metrics, config.detail_networks)
    return HttpServer(host, port, routes.handle, max_connections=config.max_connections,
                      request_timeout_s=config.request_timeout_s).start()
