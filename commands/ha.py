"""``ha``: see and steer the active-passive cluster this node belongs to: its nodes and settings, the
membership life cycle (join codes, join, leave, priority, boot start), its events and notifications."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from appliance.config import Config
from appliance.errors import ExitStatus, NotConfigured, Unavailable
from appliance.shell.context import Context
from appliance.shell.result import Result, Table
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import Choice, Integer, NodeName, VipAddress

if TYPE_CHECKING:
    pass


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)

def get_nodes(ctx: Context, args: Args) -> Result:
    from appliance.ha.report import app_nodes, cluster_report, db_nodes, nodes_document, vip_holder

    report = cluster_report(ctx.config)
    view = report.view
    apps = app_nodes(view, report.me) if view is not None else []
    dbs = db_nodes(report.hosts)
    nodes = Table("nodes", ("Name", "Role", "State", "Status", "Priority", "Last Seen (UTC)"),
                  [(f"{a.name} (*)" if a.this_node else a.name, a.role, a.state, a.status, a.priority,
                    _utc(a.last_seen)) for a in apps], title="Node(s):")
    databases = Table("db_nodes", ("Host", "Port", "Role", "Status", "Latency (ms)"),
                      [(d.host, d.port, d.role, d.status, d.latency_ms) for d in dbs], title="DB Node(s):")
    lines = [f"ALARM: {report.alarm}{_ALARM_HINT}"] if report.alarm else []
    lines += [f"Note: {report.note}"] if report.note else []
    if view is not None and view.holder() is None:
        from appliance.ha.decide import no_candidate_reason

        lines.append(f"No primary: {no_candidate_reason(view)}")
    tables: tuple[Table, ...] = (nodes, databases)
    if view is not None and view.vip:
        tables += (Table("vip", ("Address", "Held By"), [(view.vip, vip_holder(view) or "-")], title="Virtual IP:"),)
    data = nodes_document(view, apps, dbs, alarm=report.alarm, note=report.note, read_from=report.read_from)
    return Result(status=ExitStatus.OK if view is not None else ExitStatus.FAILED,
                  message="\n".join(lines) or None, tables=tables, data=data)


_ALARM_HINT = (". Stop the stale node, or rejoin it to the new primary as a standby (repmgr node rejoin, or "
               "pg_rewind), then check again with 'ha get nodes'")


def get_status(ctx: Context, args: Args) -> Result:
    from appliance.ha.report import cluster_report
    from appliance.ha.status import status_of
    from appliance.ha.statusfile import read_status

    report = cluster_report(ctx.config)
    view, active, me = report.view, report.active, report.me
    if view is None:
        raise Unavailable(f"cannot read the cluster's state: {report.alarm or report.note}",
                          hint="see 'ha get nodes' for every database node and what it answered")
    node = view.node(me.node_id)
    if node is None:
        raise NotConfigured(f"this node ({me.name}) is not registered in cluster {active.cluster_id}",
                            hint="run redirect (or appliance-admin init) again")
    from appliance.ha.vip import describe_vip

    agent = read_status(ctx.config)
    holder = view.holder()
    fields = (
        ("Node", me.name),
        ("State", status_of(view, node).value),
        ("Role", "primary" if holder is not None and holder.node_id == me.node_id else "standby"),
        ("Epoch", view.lease.epoch),
        ("Lease timeline", view.lease.timeline),
        ("Priority", node.priority),
        ("Keepalive (s)", view.keepalive_s),
        ("DB check (s)", view.db_check_s),
        ("Maintenance", "on" if view.maintenance else "off"),
        ("DB target", active.target.describe() + (" (local)" if active.local else "")),
        ("DB read from", report.read_from),
        ("DB alarm", None if report.alarm is None else report.alarm + _ALARM_HINT),
        ("Note", report.note),
        ("Last heartbeat (s ago)", None if node.heartbeat_age_s is None else round(node.heartbeat_age_s, 1)),
        ("Agent", f"running (pid {agent['pid']}): {agent['reason']}" if agent else "no status (not running?)"),
        ("VIP", describe_vip(ctx.config, view.vip)),
        ("Boot start", node.boot_start),
        ("Failback", "on" if view.failback else "off"),
        *_status_extras(ctx),
    )
    return Result(fields=fields)


def _status_extras(ctx: Context) -> tuple[tuple[str, object], ...]:
    """Notification targets (never a secret) and outstanding join codes; "unknown" if they cannot be read."""
    from appliance.ha import joining, notifyctl
    from appliance.ha.model import CodeState

    try:
        channels = notifyctl.channels(ctx.config)
        codes = [c for c in joining.codes(ctx.config) if c.state in (CodeState.OUTSTANDING, CodeState.CLAIMED)]
    except Unavailable:
        return (("Notify webhook", "unknown"), ("Notify email", "unknown"), ("Join codes", "unknown"))
    return (
        ("Notify webhook", channels.webhook.target() if channels.webhook else None),
        ("Notify email", channels.email.target() if channels.email else None),
        ("Join codes", ", ".join(f"{c.code_id} by {c.issued_by} ({c.expires_in_s / 60:.0f} min left)"
                                 for c in codes) or None),
    )


# --- what a confirmed command will change (shown above the question) ---------------------------------


def change(what: str, old: object, new: object, note: str = "") -> Preview:
    """``What: old -> new (note)``, shown above the question (the result says it again)."""
    line = f"{what}: {old} -> {new}" if old != new else f"{what}: {old} (unchanged)"
    return Preview(line + (f" ({note})" if note else ""), with_question=True)


def preview_keepalive(ctx: Context, args: Args) -> Preview:
    from appliance.ha.session import cluster_snapshot

    view, _active, _me = cluster_snapshot(ctx.config)
    return change("Keepalive interval", f"{view.keepalive_s:g} s", f"{args['seconds']} s",
                           "cluster-wide: every node follows")


def preview_db_check(ctx: Context, args: Args) -> Preview:
    from appliance.ha.session import cluster_snapshot

    view, _active, _me = cluster_snapshot(ctx.config)
    return change("DB check interval", f"{view.db_check_s:g} s", f"{args['seconds']} s",
                           "cluster-wide: every node follows")


def preview_vip(ctx: Context, args: Args) -> Preview:
    from appliance.ha.session import cluster_snapshot

    view, _active, _me = cluster_snapshot(ctx.config)
    new = args.get("address")  # None: ha unset vip
    return change("Virtual IP", view.vip or "none", new or "none",
                           "held by the acting primary" if new else "the primary deletes the address")


def preview_switchover(ctx: Context, args: Args) -> Preview:
    from appliance.ha.session import cluster_snapshot
    from appliance.ha.switchover import choose

    view, _active, _me = cluster_snapshot(ctx.config)
    holder, target = choose(view, args["to"])  # refuses here what the switchover would refuse
    return change("Primary", holder.name, target.name, "planned switchover; the primary-only services "
                           "stop on the old primary first")


def preview_maintenance(ctx: Context, args: Args) -> Preview:
    from appliance.ha.session import cluster_snapshot

    view, _active, _me = cluster_snapshot(ctx.config)
    new = args["mode"] == "enable"
    return change("Maintenance", on_off(view.maintenance), on_off(new),
                           "automatic failover " + ("paused" if new else "resumed") + " cluster-wide")


def on_off(on: bool) -> str:
    return "on" if on else "off"


def _preview_state(ctx: Context, new: str, note: str) -> Preview:
    from appliance.ha.session import cluster_snapshot
    from appliance.ha.status import status_of

    view, active, me = cluster_snapshot(ctx.config)
    node = view.node(me.node_id)
    if node is None:
        raise NotConfigured(f"this node ({me.name}) is not registered in cluster {active.cluster_id}",
                            hint="run redirect (or appliance-admin init) again")
    return change(f"This node ({me.name})", status_of(view, node).value, new, note)


def preview_stop(ctx: Context, args: Args) -> Preview:
    return _preview_state(ctx, "STOP", "out of the cluster; a primary hands over first")


def preview_start(ctx: Context, args: Args) -> Preview:
    return _preview_state(ctx, "SECOND", "back in the cluster as a standby")


def known_nodes(config: Config) -> Sequence[str]:
    """The node names this node's agent last saw (its status file): what Tab offers for ``--to``."""
    from appliance.ha.statusfile import known_nodes as from_status_file

    return from_status_file(config)


# --- handlers -------------------------------------------------------------------------------------


def set_keepalive(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    old = control.set_keepalive(ctx.config, args["seconds"])
    return Result(message=f"Keepalive interval changed from {old:g} s to {args['seconds']} s on every node "
                  "(liveness is judged by the longer of the two while the change spreads).")


def set_db_check(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    old = control.set_db_check(ctx.config, args["seconds"])
    return Result(message=f"DB check interval changed from {old:g} s to {args['seconds']} s on every node "
                  "(each node asks every database host at least once per keepalive interval anyway).")


def set_vip(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    old = control.set_vip(ctx.config, args["address"])
    note = "" if ctx.config.vip.interface else \
        " This node has no [vip] interface in its configuration: it will never hold the address."
    return Result(message=f"Virtual IP set to {args['address']} (was {old or 'none'}): the acting primary adds it "
                  f"and announces it within one keepalive interval.{note}")


def unset_vip(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    old = control.set_vip(ctx.config, None)
    return Result(message=f"Virtual IP removed (was {old}): the primary deletes the address." if old
                  else "No virtual IP was set: nothing changed.")


def switchover(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    done = control.switchover(ctx.config, args["to"], ctx.env.clock)
    return Result(message=f"Switched over from {done.source} to {done.target} in {done.seconds:.2f} s "
                  f"(epoch {done.epoch}).")


def maintenance(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    on = args["mode"] == "enable"
    control.set_maintenance(ctx.config, on)
    return Result(message="Maintenance mode on: automatic failover is paused cluster-wide." if on
                  else "Maintenance mode off: automatic failover resumed.")


def stop(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    control.set_admin_state(ctx.config, "stopped")
    return Result(message="This node is taken out of the cluster (STOP); if it was primary, it hands over.")


def start(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    control.set_admin_state(ctx.config, "active")
    return Result(message="This node is back in the cluster (SECOND).")



GROUPS = {
    "ha": "the high-availability cluster",
    "ha get": "show the cluster's nodes, this node's HA status, the events and the join codes",
    "ha set": "change a cluster-wide HA setting, or a node's priority or boot start",
    "ha set notify": "send every HA event to a webhook or by e-mail",
    "ha unset": "remove a cluster-wide HA setting",
    "ha add": "let a new node join the cluster",
    "ha revoke": "cancel a join code",
    "ha test": "try the notification channels",
}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("ha", "get", "nodes"), "list the app nodes and the database nodes of the cluster", get_nodes,
                detail="(*) marks the node you are on. State: PRIM, SECOND, ALONE, STOP or WAIT (see 'ha get\n"
                "status'). Status: online = heard from within two keepalive intervals. Last Seen: the\n"
                "last heartbeat, by the database's clock, in UTC. Latency: median of three round trips\n"
                "to each database host.", via_agent=True),
    CommandSpec(("ha", "get", "status"), "show this node's HA state, role, epoch and database target", get_status,
                via_agent=True),
    CommandSpec(
        ("ha", "set", "keepalive-interval"), "set the cluster's heartbeat interval (every node follows)",
        set_keepalive, params=(Param("seconds", "interval in seconds", Integer(1, 30, metavar="<SECONDS>"),
                                     flag=False, required=True),),
        changes_state=True, confirm=True, preflight=preview_keepalive,
        via_agent=True,
    ),
    CommandSpec(
        ("ha", "set", "db-check-interval"), "set how often every node asks every database host its role",
        set_db_check, params=(Param("seconds", "interval in seconds", Integer(1, 30, metavar="<SECONDS>"),
                                    flag=False, required=True),),
        changes_state=True, confirm=True, preflight=preview_db_check,
        detail="Each agent keeps a connection to every configured database host and asks it, at this\n"
        "interval or at the keepalive interval if that is shorter, whether it is read-write and on which\n"
        "timeline. A database failover is followed, and a second read-write node (a split brain) is seen,\n"
        "within that time. Default 10 s.",
        via_agent=True,
    ),
    CommandSpec(
        ("ha", "set", "vip"), "set the cluster's virtual IP, held by the acting primary", set_vip,
        params=(Param("address", "the address and its prefix length (IPv4 or IPv6)", VipAddress(), flag=False,
                      required=True),),
        changes_state=True, confirm=True, preflight=preview_vip,
        detail="The acting primary adds the address on the interface its configuration names ([vip]\n"
        "interface), announces it (gratuitous ARP, unsolicited neighbour advertisement) and deletes it\n"
        "when it stops acting, at the latest at its fence deadline, even if its agent is frozen.",
        via_agent=True,
    ),
    CommandSpec(("ha", "unset", "vip"), "remove the cluster's virtual IP (the primary deletes it)", unset_vip,
                changes_state=True, confirm=True, preflight=preview_vip, via_agent=True),
    CommandSpec(
        ("ha", "switchover"), "hand the primary role to another node now (planned)", switchover,
        params=(Param("to", "the node to hand over to (default: the best online standby)",
                      NodeName(known=known_nodes)),),
        changes_state=True, confirm=True, preflight=preview_switchover,
        detail="Tab after --to offers the node names this node's agent last saw.",
        via_agent=True,
    ),
    CommandSpec(
        ("ha", "maintenance"), "pause or resume automatic failover cluster-wide", maintenance,
        params=(Param("mode", "enable or disable", Choice(("enable", "disable")), flag=False, required=True),),
        changes_state=True, confirm=True, preflight=preview_maintenance,
        via_agent=True,
    ),
    CommandSpec(("ha", "stop"), "take this node out of the cluster (STOP)", stop, changes_state=True, confirm=True,
                preflight=preview_stop, via_agent=True),
    CommandSpec(("ha", "start"), "bring this node back into the cluster (SECOND)", start, changes_state=True,
                confirm=True, preflight=preview_start, via_agent=True),
)
