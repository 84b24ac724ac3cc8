"""``ha``: see and steer the active-passive cluster this node belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.errors import CommandFailed, Conflict, NotConfigured
from appliance.shell.context import Context
from appliance.shell.result import Result, Table
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import Choice, Integer, Text

if TYPE_CHECKING:
    from appliance.ha.model import ClusterView
    from appliance.node import ActiveTarget, NodeIdentity


def _snapshot(ctx: Context) -> tuple[ClusterView, ActiveTarget, NodeIdentity]:
    """One consistent read of the cluster, over a connection opened and closed for it."""
    from appliance.ha.report import open_store

    store, active, me = open_store(ctx.config)
    try:
        return store.snapshot(), active, me
    finally:
        store.close()


def get_nodes(ctx: Context, args: Args) -> Result:
    from appliance.ha.report import app_nodes, db_nodes

    view, active, me = _snapshot(ctx)
    apps = app_nodes(active, view, me)
    dbs = db_nodes(active)
    nodes = Table("nodes", ("Name", "Role", "Status", "Last Seen"),
                  [(f"{a.name} (*)" if a.this_node else a.name, a.role, a.status, a.last_seen) for a in apps],
                  title="Node(s):")
    databases = Table("db_nodes", ("Host", "Port", "Role", "Status", "Latency (ms)"),
                      [(d.host, d.port, d.role, d.status, d.latency_ms) for d in dbs], title="DB Node(s):")
    data = {
        "nodes": [{"name": a.name, "this_node": a.this_node, "role": a.role, "status": a.status, "state": a.state,
                   "last_seen": a.last_seen, "priority": a.priority} for a in apps],
        "db_nodes": [{"host": d.host, "port": d.port, "role": d.role, "status": d.status,
                      "latency_ms": d.latency_ms} for d in dbs],
        "epoch": view.lease.epoch,
        "maintenance": view.maintenance,
        "keepalive_interval_s": view.keepalive_s,
    }
    return Result(tables=(nodes, databases), data=data)


def get_status(ctx: Context, args: Args) -> Result:
    from appliance.ha.decide import status_of
    from appliance.ha.report import agent_status

    view, active, me = _snapshot(ctx)
    node = view.node(me.node_id)
    if node is None:
        raise NotConfigured(f"this node ({me.name}) is not registered in cluster {active.cluster_id}",
                            hint="run redirect (or appliance-admin init) again")
    agent = agent_status(ctx.config)
    holder = view.lease.holder == me.node_id and not view.lease.expired
    fields = (
        ("Node", me.name),
        ("State", status_of(view, node).value),
        ("Role", "primary" if holder else "standby"),
        ("Epoch", view.lease.epoch),
        ("Priority", node.priority),
        ("Keepalive (s)", view.keepalive_s),
        ("Maintenance", "on" if view.maintenance else "off"),
        ("DB target", active.target.describe() + (" (local)" if active.local else "")),
        ("Last heartbeat (s ago)", None if node.heartbeat_age_s is None else round(node.heartbeat_age_s, 1)),
        ("Agent", f"running (pid {agent['pid']}): {agent['reason']}" if agent else "no status (not running?)"),
    )
    return Result(fields=fields)


def set_keepalive(ctx: Context, args: Args) -> Result:
    from appliance.ha.report import open_store

    store, _active, _me = open_store(ctx.config)
    try:
        old = store.snapshot().keepalive_s
        store.set_setting("keepalive_interval_s", str(args["seconds"]))
    finally:
        store.close()
    return Result(message=f"Keepalive interval changed from {old:g} s to {args['seconds']} s on every node "
                  "(liveness is judged by the longer of the two while the change spreads).")


def switchover(ctx: Context, args: Args) -> Result:
    from appliance.ha.report import open_store

    clock = ctx.env.clock
    store, _active, _me = open_store(ctx.config)
    try:
        view = store.snapshot()
        lease = view.lease
        holder = view.node(lease.holder) if lease.holder and not lease.expired else None
        if holder is None:
            raise Conflict("there is no primary to switch over from", hint="see 'ha get nodes'")
        if args["to"]:
            target = next((n for n in view.nodes if n.name == args["to"]), None)
            if target is None:
                raise NotConfigured(f"no node named {args['to']} in this cluster", hint="see 'ha get nodes'")
            if target.node_id == holder.node_id:
                raise Conflict(f"{target.name} is already the primary")
        else:
            target = next((n for n in view.candidates() if n.node_id != holder.node_id), None)
            if target is None:
                raise Conflict("no standby is online to take over", hint="see 'ha get nodes'")
        if target.admin_state != "active":
            raise Conflict(f"{target.name} is taken out of the cluster (STOP)", hint=f"run 'ha start' on {target.name}")
        if not view.online(target):
            raise Conflict(f"{target.name} is offline", hint="choose an online standby (see 'ha get nodes')")
        started = clock.monotonic()
        store.request_handover(target.node_id)
        deadline = started + 3 * view.keepalive_s + 2
        while clock.monotonic() < deadline:
            now = store.snapshot().lease
            if now.holder == target.node_id and not now.expired:
                took = clock.monotonic() - started
                return Result(message=f"Switched over from {holder.name} to {target.name} in {took:.2f} s "
                              f"(epoch {now.epoch}).")
            clock.sleep(0.05)
        store.request_handover(None)
        raise CommandFailed(f"the switchover to {target.name} did not complete within {deadline - started:.0f} s; "
                            "the request was withdrawn", hint="check both nodes' agents with 'ha get status'")
    finally:
        store.close()


def maintenance(ctx: Context, args: Args) -> Result:
    from appliance.ha.report import open_store

    on = args["mode"] == "enable"
    store, _active, _me = open_store(ctx.config)
    try:
        store.set_setting("maintenance", "on" if on else "off")
    finally:
        store.close()
    return Result(message="Maintenance mode on: automatic failover is paused cluster-wide." if on
                  else "Maintenance mode off: automatic failover resumed.")


def _admin_state(ctx: Context, state: str) -> None:
    from appliance.ha.report import open_store

    store, _active, me = open_store(ctx.config)
    try:
        store.set_admin_state(me.node_id, state)
    finally:
        store.close()


def stop(ctx: Context, args: Args) -> Result:
    _admin_state(ctx, "stopped")
    return Result(message="This node is taken out of the cluster (STOP); if it was primary, it hands over.")


def start(ctx: Context, args: Args) -> Result:
    _admin_state(ctx, "active")
    return Result(message="This node is back in the cluster (SECOND).")


GROUPS = {
    "ha": "the high-availability cluster",
    "ha get": "show the cluster's nodes or this node's HA status",
    "ha set": "change a cluster-wide HA setting",
}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("ha", "get", "nodes"), "list the app nodes and the database nodes of the cluster", get_nodes,
                detail="(*) marks the node you are on. Status: online = heard from within two keepalive\n"
                "intervals. Latency: median of three round trips to each database host."),
    CommandSpec(("ha", "get", "status"), "show this node's HA state, role, epoch and database target", get_status),
    CommandSpec(
        ("ha", "set", "keepalive-interval"), "set the cluster's heartbeat interval (every node follows)",
        set_keepalive, params=(Param("seconds", "interval in seconds", Integer(1, 30, metavar="<SECONDS>"),
                                     flag=False, required=True),),
        changes_state=True, confirm=True,
    ),
    CommandSpec(
        ("ha", "switchover"), "hand the primary role to another node now (planned)", switchover,
        params=(Param("to", "the node to hand over to (default: the best online standby)",
                      Text(metavar="<NODE>", max_len=63)),),
        changes_state=True, confirm=True,
    ),
    CommandSpec(
        ("ha", "maintenance"), "pause or resume automatic failover cluster-wide", maintenance,
        params=(Param("mode", "enable or disable", Choice(("enable", "disable")), flag=False, required=True),),
        changes_state=True, confirm=True,
    ),
    CommandSpec(("ha", "stop"), "take this node out of the cluster (STOP)", stop, changes_state=True, confirm=True),
    CommandSpec(("ha", "start"), "bring this node back into the cluster (SECOND)", start, changes_state=True,
                confirm=True),
)
