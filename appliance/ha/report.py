"""What ``ha get nodes`` and ``ha get status`` show, read from the cluster's database and the DB hosts.

Read-only. DB hosts are probed in parallel with short timeouts, so one dead host costs one connect
timeout, not one per host.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from appliance.config import Config
from appliance.ha.decide import status_of
from appliance.ha.model import ClusterView
from appliance.node import ActiveTarget, NodeIdentity, identity, read_targets

if TYPE_CHECKING:
    from appliance.db.connect import Timeouts
    from appliance.ha.pgstore import PgStore



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


def timeouts() -> Timeouts:
    from appliance.db.connect import Timeouts

    return Timeouts(connect_timeout=3.0, statement_timeout=5.0, lock_timeout=2.0, tcp_user_timeout=5.0)


def open_store(config: Config) -> tuple[PgStore, ActiveTarget, NodeIdentity]:
    from appliance.ha.pgstore import PgStore

    me = identity(config)
    _origin, active = read_targets(config)
    store = PgStore(active.target, active.schema, application_name=f"appliance-shell:{me.name}"[:63],
                    timeouts=timeouts())
    return store, active, me


def app_nodes(active: ActiveTarget, view: ClusterView, me: NodeIdentity) -> list[AppNodeRow]:
    seen = last_heartbeats(active)
    rows = []
    for node in view.nodes:
        holder = view.lease.holder == node.node_id and not view.lease.expired
        rows.append(AppNodeRow(
            name=node.name, this_node=node.node_id == me.node_id, role="primary" if holder else "standby",
            status="online" if view.online(node) else "offline", state=status_of(view, node).value,
            last_seen=seen.get(node.node_id), priority=node.priority,
        ))
    return rows


def last_heartbeats(active: ActiveTarget) -> dict[str, datetime]:
    """Heartbeat times as the database recorded them (shown to people; never compared)."""
    from psycopg import sql

    from appliance.db.connect import connect

    with connect(active.target, application_name="appliance-shell:report", timeouts=timeouts(),
                 autocommit=True) as conn:
        rows = conn.execute(sql.SQL("SELECT node_id::text, last_heartbeat FROM {}.nodes")
                            .format(sql.Identifier(active.schema))).fetchall()
    return {str(r[0]): r[1] for r in rows if r[1] is not None}


def db_nodes(active: ActiveTarget) -> list[DbNodeRow]:
    from appliance.db.connect import DbError, probe

    def one(host_port: tuple[str, int]) -> DbNodeRow:
        host, port = host_port
        try:
            info = probe(active.target, host, port, application_name="appliance-shell:probe", timeouts=timeouts(),
                         samples=3)
        except DbError:
            return DbNodeRow(host, port, "-", "offline", None)
        return DbNodeRow(host, port, "standby" if info.is_in_recovery else "primary", "online",
                         round(info.latency_ms, 1))

    pairs = active.target.host_ports()
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return list(pool.map(one, pairs))


def agent_status(config: Config) -> dict[str, Any] | None:
    from appliance.ha.agent import status_path

    try:
        doc = json.loads(status_path(config).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
