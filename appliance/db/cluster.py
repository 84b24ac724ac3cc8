"""Registering a node in the cluster's database, and undoing it.

Liveness here is judged with the database's clock (``now() - last_heartbeat``), never by comparing
this node's clock with another's. A node counts as live while its last heartbeat is at most two
keepalive intervals old.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.errors import Conflict, NotConfigured

if TYPE_CHECKING:
    import psycopg

    from appliance.node import NodeIdentity


@dataclass(frozen=True)
class NodeRow:
    node_id: str
    hardware_id: str
    name: str
    priority: int
    role: str
    admin_state: str
    heartbeat_age_s: float | None  # by the database clock; None: never heard from


@dataclass(frozen=True)
class LeaseRow:
    holder: str | None
    epoch: int
    expires_at: Any


@dataclass(frozen=True)
class Registration:
    """What :func:`register` changed, so that :func:`undo_registration` can put it back."""

    previous: NodeRow | None
    previous_addresses: tuple[str, ...]
    demoted: NodeRow | None  # a dead primary this registration demoted
    lease_before: LeaseRow
    lease_after: LeaseRow
    keepalive_s: int


def _q(schema: str, text: str) -> Any:
    from psycopg import sql

    return sql.SQL(text).format(s=sql.Identifier(schema))


def keepalive_interval_s(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(_q(schema, "SELECT value FROM {s}.cluster_settings WHERE key = 'keepalive_interval_s'"))
    found = row.fetchone()
    return int(found[0]) if found else 10


def nodes(conn: psycopg.Connection[Any], schema: str, *, lock: bool = False) -> list[NodeRow]:
    rows = conn.execute(_q(schema, (
        "SELECT node_id::text, hardware_id, name, priority, role, admin_state, "
        "extract(epoch FROM now() - last_heartbeat)::float8 FROM {s}.nodes ORDER BY name"
        + (" FOR UPDATE" if lock else "")))).fetchall()
    return [NodeRow(*row) for row in rows]


def lease(conn: psycopg.Connection[Any], schema: str) -> LeaseRow:
    row = conn.execute(_q(schema, "SELECT holder::text, epoch, expires_at FROM {s}.lease WHERE id = 1")).fetchone()
    if row is None:
        raise NotConfigured(f"schema {schema} has no lease row", hint="the schema is damaged; redeploy it")
    return LeaseRow(*row)


def live_primary(conn: psycopg.Connection[Any], schema: str, *, exclude: str | None = None) -> NodeRow | None:
    """The registered primary if it was heard from within two keepalive intervals (DB clock)."""
    window = 2 * keepalive_interval_s(conn, schema)
    for node in nodes(conn, schema):
        if node.role == "primary" and node.node_id != exclude and node.heartbeat_age_s is not None \
                and node.heartbeat_age_s <= window:
            return node
    return None


def register(
    conn: psycopg.Connection[Any],
    schema: str,
    me: NodeIdentity,
    *,
    role: str,
    product_version: str,
) -> Registration:
    """Register (or re-register) this node with ``role``, inside the caller's transaction.

    A primary registration is refused while another primary is live; a dead one is demoted to
    standby. The primary also takes the lease with a new epoch. The node's addresses are the ones
    the database sees it connect from.

    :raises Conflict: another node is the live primary, or another node has this hardware id.
    """
    # Lock order lease -> nodes, the same as the HA store's takeover, so the two never deadlock.
    conn.execute(_q(schema, "SELECT 1 FROM {s}.lease WHERE id = 1 FOR UPDATE"))
    everyone = nodes(conn, schema, lock=True)
    previous = next((n for n in everyone if n.node_id == me.node_id), None)
    twin = next((n for n in everyone if n.hardware_id == me.hardware_id and n.node_id != me.node_id), None)
    if twin is not None:
        raise Conflict(
            f"node {twin.name} ({twin.node_id}) is registered with this node's hardware id {me.hardware_id}",
            hint="remove the stale registration first (it is this machine, initialised again)",
        )
    window = 2 * keepalive_interval_s(conn, schema)
    lease_before = lease(conn, schema)
    demoted = None
    if role == "primary":
        other = next((n for n in everyone if n.role == "primary" and n.node_id != me.node_id), None)
        if other is not None:
            if other.heartbeat_age_s is not None and other.heartbeat_age_s <= window:
                raise Conflict(
                    f"node {other.name} is already the live primary of this cluster "
                    f"(heard from {other.heartbeat_age_s:.0f} s ago)",
                    hint="join this node with --is_secondary_node, or stop the other primary first",
                )
            conn.execute(_q(schema, "UPDATE {s}.nodes SET role = 'standby' WHERE node_id = %s"), (other.node_id,))
            demoted = other
    addresses = tuple(r[0] for r in conn.execute(_q(schema,
        "SELECT host(address) FROM {s}.node_addresses WHERE node_id = %s ORDER BY 1"), (me.node_id,)).fetchall())
    conn.execute(
        _q(schema, (
            "INSERT INTO {s}.nodes (node_id, hardware_id, name, priority, role, product_version, last_heartbeat)"
            " VALUES (%s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (node_id) DO UPDATE SET hardware_id = EXCLUDED.hardware_id, name = EXCLUDED.name,"
            " role = EXCLUDED.role, product_version = EXCLUDED.product_version, admin_state = 'active',"
            " last_heartbeat = now(), heartbeat_seq = {s}.nodes.heartbeat_seq + 1")),
        # Priority is random at first registration and never configurable (ties: node id).
        (me.node_id, me.hardware_id, me.name, random.randint(1, 1_000_000), role, product_version),
    )
    conn.execute(_q(schema, "DELETE FROM {s}.node_addresses WHERE node_id = %s"), (me.node_id,))
    conn.execute(_q(schema, (
        "INSERT INTO {s}.node_addresses (node_id, address) SELECT %s, inet_client_addr()"
        " WHERE inet_client_addr() IS NOT NULL")), (me.node_id,))
    if role == "primary":
        if lease_before.holder != me.node_id:
            conn.execute(_q(schema, (
                "UPDATE {s}.lease SET holder = %s, epoch = epoch + 1, renewed_at = now(),"
                " expires_at = now() + make_interval(secs => %s) WHERE id = 1")), (me.node_id, window))
    elif lease_before.holder == me.node_id:
        # A node re-joining as standby must not keep the lease it held as primary.
        conn.execute(_q(schema, "UPDATE {s}.lease SET holder = NULL, epoch = epoch + 1 WHERE id = 1"))
    return Registration(previous, addresses, demoted, lease_before, lease(conn, schema), window // 2)


def undo_registration(conn: psycopg.Connection[Any], schema: str, me: NodeIdentity, done: Registration) -> None:
    """Put the registry back as it was before :func:`register` (inside the caller's transaction)."""
    if done.previous is None:
        conn.execute(_q(schema, "UPDATE {s}.lease SET holder = NULL WHERE holder = %s"), (me.node_id,))
        conn.execute(_q(schema, "DELETE FROM {s}.nodes WHERE node_id = %s"), (me.node_id,))
    else:
        p = done.previous
        conn.execute(_q(schema, "UPDATE {s}.nodes SET name = %s, role = %s, admin_state = %s WHERE node_id = %s"),
                     (p.name, p.role, p.admin_state, p.node_id))
        conn.execute(_q(schema, "DELETE FROM {s}.node_addresses WHERE node_id = %s"), (me.node_id,))
        for address in done.previous_addresses:
            conn.execute(_q(schema, "INSERT INTO {s}.node_addresses (node_id, address) VALUES (%s, %s)"),
                         (me.node_id, address))
    if done.demoted is not None:
        conn.execute(_q(schema, "UPDATE {s}.nodes SET role = 'primary' WHERE node_id = %s"),
                     (done.demoted.node_id,))
    before = done.lease_before
    # The epoch only ever grows (it is a fencing token), even when the holder is put back.
    conn.execute(_q(schema, "UPDATE {s}.lease SET holder = %s, expires_at = %s, epoch = epoch + 1 WHERE id = 1"
                    " AND holder IS DISTINCT FROM %s"), (before.holder, before.expires_at, before.holder))
