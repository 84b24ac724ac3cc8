"""What ``ha get nodes`` and ``ha get status`` show, read from the cluster's database and the DB hosts.

Read-only, and it shows what it knows: every configured database host is asked once (in parallel, short
timeouts: one dead host costs one connect timeout); the app nodes are read from the node the cluster
writes to (by the agent's rule, :func:`~appliance.ha.session.writer_choice`). While no node may be
written to (a database failover in progress, a split brain nothing resolves) they are read from any node
that answers, a standby included, and a note says so. A node's state comes from
:func:`~appliance.ha.status.status_of`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.config import Config
from appliance.ha.dbnodes import HostState
from appliance.ha.model import ClusterView, NodeIdentity
from appliance.ha.pgstore import PgStore
from appliance.ha.session import probe, writer_choice
from appliance.ha.status import status_of
from appliance.ha.store import StoreUnavailable
from appliance.ha.timing import report_timeouts
from appliance.node import ActiveTarget, identity, read_targets


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
    timeline: int | None = None


@dataclass(frozen=True)
class ClusterReport:
    """What is known about the cluster now; ``view`` is None when no database node could be read."""

    me: NodeIdentity
    active: ActiveTarget
    view: ClusterView | None
    hosts: list[HostState]
    alarm: str | None  # the database is split (two read-write nodes), or refused
    note: str | None  # why the app nodes are missing or may be old
    read_from: str | None  # the database node the app nodes were read from


def cluster_report(config: Config) -> ClusterReport:
    me = identity(config)
    _origin, active = read_targets(config)
    hosts = probe(active)
    app_name = f"appliance-shell:{me.name}"[:63]
    choice = writer_choice(config, active, hosts)
    read_from = choice.writer
    note = None
    if read_from is None:
        # No node may be written to: read the registry from any node that answers (the followed one's
        # replica first), as a standby has it: it may be a few seconds old.
        answering = [h for h in hosts if h.reachable and h not in choice.stale] or [h for h in hosts if h.reachable]
        read_from = answering[0] if answering else None
        if choice.alarm is None:
            note = ("the database is failing over: no read-write node answers"
                    + (f"; the app nodes are as {read_from.describe()} has them (may be seconds old)"
                       if read_from is not None else ""))
    view = None
    if read_from is not None:
        address = read_from.address
        store = PgStore(active.target, active.schema, application_name=app_name, timeouts=report_timeouts(),
                        pick_host=lambda: address, read_only=not read_from.writable)
        try:
            view = store.snapshot()
        except StoreUnavailable as exc:
            note = exc.message
        finally:
            store.close()
    elif choice.alarm is None:
        note = "no database node answers"
    return ClusterReport(me, active, view, hosts, choice.alarm, note,
                         read_from.describe() if read_from is not None and view is not None else None)


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


def db_nodes(hosts: list[HostState]) -> list[DbNodeRow]:
    """Every configured database host as probed now (role, reachability, round trip, timeline)."""
    return [
        DbNodeRow(h.host, h.port, ("primary" if h.writable else "standby") if h.reachable else "-",
                  "online" if h.reachable else "offline",
                  None if h.latency_ms is None else round(h.latency_ms, 1), h.timeline)
        for h in hosts
    ]


def vip_holder(view: ClusterView) -> str | None:
    """The node that holds the cluster's VIP: the acting primary (it adds the address only while it holds
    the lease), or None when there is no VIP or no live lease."""
    holder = view.holder()
    return holder.name if view.vip and holder is not None else None


def nodes_document(view: ClusterView | None, apps: Sequence[AppNodeRow], dbs: Sequence[DbNodeRow], *,
                   alarm: str | None = None, note: str | None = None, read_from: str | None = None) -> dict[str, Any]:
    """The JSON document of ``ha get nodes --json``, also served by the agent's ``GET /cluster``."""
    return {
        "nodes": [{"name": a.name, "this_node": a.this_node, "role": a.role, "status": a.status, "state": a.state,
                   "last_seen": a.last_seen, "priority": a.priority} for a in apps],
        "db_nodes": [{"host": d.host, "port": d.port, "role": d.role, "status": d.status,
                      "latency_ms": d.latency_ms, "timeline": d.timeline} for d in dbs],
        "epoch": view.lease.epoch if view is not None else None,
        "maintenance": view.maintenance if view is not None else None,
        "keepalive_interval_s": view.keepalive_s if view is not None else None,
        "vip": {"address": view.vip, "holder": vip_holder(view)} if view is not None and view.vip else None,
        "db_alarm": alarm,
        "note": note,
        "read_from": read_from,
    }
