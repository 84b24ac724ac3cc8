"""What ``ha get nodes`` and ``ha get status`` show, read from the cluster's database and the DB hosts.

Read-only. DB hosts are probed in parallel with short timeouts, so one dead host costs one connect
timeout, not one per host. A node's state comes from :func:`~appliance.ha.status.status_of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.db.connect import probe
from appliance.db.errors import DbError
from appliance.ha.model import ClusterView, NodeIdentity
from appliance.ha.status import status_of
from appliance.ha.timing import report_timeouts
from appliance.node import ActiveTarget


@dataclass(frozen=True)
class AppNodeRow:
    name: str
    this_node: bool
    role: str
    status: str
    state: str
    last_seen: datetime | None
    priority: int


@dataclass(frozen=True)
class DbNodeRow:
    host: str
    port: int
    role: str
    status: str
    latency_ms: float | None


def app_nodes(view: ClusterView, me: NodeIdentity) -> list[AppNodeRow]:
    """One row per registered node; ``last_seen`` as the database recorded it (shown, never compared)."""
    holder = view.holder()
    return [
        AppNodeRow(
            name=node.name, this_node=node.node_id == me.node_id,
            role="primary" if holder is not None and holder.node_id == node.node_id else "standby",
            status="online" if view.online(node) else "offline", state=status_of(view, node).value,
            last_seen=node.last_heartbeat, priority=node.priority,
        )
        for node in view.nodes
    ]


def vip_holder(view: ClusterView) -> str | None:
    """The node that holds the cluster's VIP: the acting primary (it adds the address only while it holds
    the lease), or None when there is no VIP or no live lease."""
    holder = view.holder()
    return holder.name if view.vip and holder is not None else None


def nodes_document(view: ClusterView, apps: Sequence[AppNodeRow], dbs: Sequence[DbNodeRow]) -> dict[str, Any]:
    """The JSON document of ``ha get nodes --json``, also served by the agent's ``GET /cluster``."""
    return {
        "nodes": [{"name": a.name, "this_node": a.this_node, "role": a.role, "status": a.status, "state": a.state,
                   "last_seen": a.last_seen, "priority": a.priority} for a in apps],
        "db_nodes": [{"host": d.host, "port": d.port, "role": d.role, "status": d.status,
                      "latency_ms": d.latency_ms} for d in dbs],
        "epoch": view.lease.epoch,
        "maintenance": view.maintenance,
        "keepalive_interval_s": view.keepalive_s,
        "vip": {"address": view.vip, "holder": vip_holder(view)} if view.vip else None,
    }


def db_nodes(active: ActiveTarget) -> list[DbNodeRow]:
    """Every configured database host, probed now (role, reachability, median of three round trips)."""
    from concurrent.futures import ThreadPoolExecutor  # deferred: the thread pool machinery is not cheap

    def one(host_port: tuple[str, int]) -> DbNodeRow:
        host, port = host_port
        try:
            info = probe(active.target, host, port, application_name="appliance-shell:probe",
                         timeouts=report_timeouts(), samples=3)
        except DbError:
            return DbNodeRow(host, port, "-", "offline", None)
        return DbNodeRow(host, port, "standby" if info.is_in_recovery else "primary", "online",
                         round(info.latency_ms, 1))

    pairs = active.target.host_ports()
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return list(pool.map(one, pairs))
