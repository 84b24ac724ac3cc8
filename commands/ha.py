"""``ha``: see and steer the active-passive cluster this node belongs to: its nodes and settings, the
membership life cycle (join codes, join, leave, priority, boot start), its events and notifications."""

from __future__ import annotations

import re

from appliance.errors import ExitStatus, NotConfigured, Unavailable, UsageError
from appliance.shell.context import Context
from appliance.shell.result import Result, Stream, Table
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import Choice, Integer, ParamType, Secret, Text, VipAddress

EVENT_KINDS = ("takeover", "step_down", "switchover", "maintenance", "node_stop", "node_start", "join", "leave",
               "setting", "db_failover", "db_split_brain", "redirect")  # appliance.ha.events.KINDS, pinned by a test


class NodeName(Text):
    """A node of the cluster, by name (Tab completes the names this node's agent last saw). Plain classes
    here, not dataclasses: every shell start builds these declarations."""

    completion = "node"


class Duration(ParamType):
    """A span of time: a number and a unit (s, m, h, d), or several (1h30m)."""

    metavar = "<DURATION>"

    def parse(self, text: str) -> float:
        parts = re.findall(r"(\d{1,6})([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError("must be a duration such as 90s, 10m, 2h, 7d or 1h30m")
        return float(sum(int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts))


class Url(ParamType):
    metavar = "<URL>"

    def parse(self, text: str) -> str:
        from appliance.ha.notify import check_url

        return check_url(text)


class Addresses(ParamType):
    metavar = "<ADDR[,ADDR...]>"

    def parse(self, text: str) -> tuple[str, ...]:
        from appliance.ha.notify import check_addresses

        return check_addresses(text)


class Address(ParamType):
    metavar = "<ADDR>"

    def parse(self, text: str) -> str:
        from appliance.ha.notify import check_address

        return check_address(text)


class SmtpServer(ParamType):
    metavar = "<HOST[:PORT]>"

    def parse(self, text: str) -> tuple[str, int]:
        from appliance.ha.notify import check_smtp

        return check_smtp(text)


class CodeId(ParamType):
    metavar = "<ID>"

    def parse(self, text: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{10}", text):
            raise ValueError("must be a join code id: 10 hexadecimal digits (see 'ha get join-codes')")
        return text


def get_nodes(ctx: Context, args: Args) -> Result:
    from appliance.ha.report import app_nodes, cluster_report, db_nodes, nodes_document, vip_holder

    report = cluster_report(ctx.config)
    view = report.view
    apps = app_nodes(view, report.me) if view is not None else []
    dbs = db_nodes(report.hosts)
    nodes = Table("nodes", ("Name", "Role", "Status", "Priority", "Last Seen"),
                  [(f"{a.name} (*)" if a.this_node else a.name, a.role, a.status, a.priority, a.last_seen)
                   for a in apps], title="Node(s):")
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


# --- membership -----------------------------------------------------------------------------------------


def add_node(ctx: Context, args: Args) -> Result:
    from appliance.ha import joining

    issued = joining.issue(ctx.config, args["expires"], ctx.env.clock)
    text = (f"Join code (valid until {issued.expires:%Y-%m-%d %H:%M:%S %Z}, once; id {issued.code_id}):\n"
            f"{issued.code}\n\nOn the new node: ha join --code <the code above> "
            f"(it reaches this node's join service at {issued.endpoint}).")
    return Result(message=text, data={"code": issued.code, "expires": issued.expires.isoformat(),
                                      "id": issued.code_id})


def get_join_codes(ctx: Context, args: Args) -> Result:
    from appliance.ha import joining
    from appliance.ha.model import CodeState

    live = (CodeState.OUTSTANDING, CodeState.CLAIMED)
    rows = [(c.code_id, c.issued_by, c.issued_at, f"{c.expires_in_s / 60:.0f} min" if c.state in live else "-",
             c.state.value, c.used_by or c.claimed_by) for c in joining.codes(ctx.config)]
    return Result(tables=(Table("join_codes", ("ID", "Issued By", "Issued", "Expires In", "State", "Node"), rows,
                                title="Join code(s):"),))


def revoke_join_code(ctx: Context, args: Args) -> Result:
    from appliance.ha import joining

    joining.revoke(ctx.config, args["id"])
    return Result(message=f"Join code {args['id']} revoked: it can no longer be used.")


def join_preview(ctx: Context, args: Args) -> Preview:
    from appliance.ha.joining import join_plan  # the join code's service and redirect's pre-flight

    plan = join_plan(ctx.config, args["code"])
    return Preview(plan.summary(), prepared=plan)


def join(ctx: Context, args: Args) -> Stream:
    from appliance.ha.joining import join_plan
    from appliance.redirect import Plan, execute
    from appliance.services import manager_for

    plan = args.prepared if isinstance(args.prepared, Plan) else join_plan(ctx.config, args["code"])
    return Stream(execute(ctx.config, plan, clock=ctx.env.clock, services=manager_for(ctx.config)))


def leave_preview(ctx: Context, args: Args) -> Preview:
    from appliance.leave import plan_leave

    plan = plan_leave(ctx.config)
    return Preview(plan.summary(), prepared=plan)


def leave(ctx: Context, args: Args) -> Stream:
    from appliance.leave import LeavePlan, execute_leave, plan_leave
    from appliance.services import manager_for

    plan = args.prepared if isinstance(args.prepared, LeavePlan) else plan_leave(ctx.config)
    return Stream(execute_leave(ctx.config, plan, clock=ctx.env.clock, services=manager_for(ctx.config)))


def priority_preview(ctx: Context, args: Args) -> Preview | None:
    from appliance.ha import control

    text = control.preview_priority(ctx.config, args["priority"], args["node"])
    return Preview(text) if text else None


def set_priority(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    done = control.set_priority(ctx.config, args["priority"], args["node"])
    what = "never primary" if args["priority"] == 0 else "preferred over lower priorities when the lease is free"
    return Result(message=f"Priority of {done.node} changed from {done.old} to {args['priority']} ({what}).")


def set_failback(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    on = args["mode"] == "on"
    control.set_failback(ctx.config, on)
    return Result(message="Failback on: a node of higher priority that comes back online takes the primary role "
                  "over (a planned handover)." if on else "Failback off: a healthy primary keeps its role.")


def set_boot_start(ctx: Context, args: Args) -> Result:
    from appliance.ha import control

    done = control.set_boot_start(ctx.config, args["mode"], args["node"])
    what = {"enabled": "starts as a standby", "disabled": "stays out of the cluster (STOP) until 'ha start'",
            "keep": "keeps the state it had before"}[args["mode"]]
    return Result(message=f"Boot start of {done.node} changed from {done.old} to {args['mode']}: after a reboot "
                  f"(an agent start) it {what}.")


# --- events and notifications ----------------------------------------------------------------------------


def get_events(ctx: Context, args: Args) -> Result:
    from appliance.ha import control
    from appliance.ha.events import summary

    found = control.events(ctx.config, since_s=args["since"], limit=args["limit"], kind=args["kind"])
    rows = [(e.time, e.node, e.kind, e.epoch, summary(e.kind, e.details, e.duration_s),
             ", ".join(f"{k} {v}" for k, v in sorted(e.deliveries.items())) or None) for e in found]
    return Result(tables=(Table("events", ("Time", "Node", "Kind", "Epoch", "Details", "Notified"), rows,
                                title="Event(s):"),),
                  data={"events": [dict(e.document(), deliveries=dict(e.deliveries)) for e in found]})


def secret_preview(ctx: Context, args: Args) -> Preview | None:
    """``--secret``: read the webhook's signing secret before the question, without echo (or one line of
    standard input without a terminal): it never appears on the command line."""
    if not args["secret"]:
        return None
    env = ctx.env
    if env.stdin_isatty:
        value = env.getpass("webhook secret (not shown): ")
    else:
        line = env.stdin.readline()
        value = line[:-1] if line.endswith("\n") else line
    if not value or len(value) > 1024:
        raise UsageError("--secret: no secret was entered (1-1024 characters)",
                         hint="type it when asked, or write it on standard input")
    return Preview(None, prepared=value)


def set_notify_webhook(ctx: Context, args: Args) -> Result:
    from appliance.ha import notifyctl

    secret = args.prepared if isinstance(args.prepared, str) else None
    if args["secret"] and secret is None:
        raise UsageError("--secret: no secret was read")
    old = notifyctl.set_webhook(ctx.config, args["url"], secret)
    return Result(message=f"Webhook set to {args['url']}" + (" (signed: X-Appliance-Signature)" if secret else "")
                  + (f", replacing {old.url}" if old else "") + ". Every HA event is POSTed to it; try it with "
                  "'ha test notify'.")


def set_notify_email(ctx: Context, args: Args) -> Result:
    from appliance.ha import notifyctl
    from appliance.ha.notify import EmailConfig

    if bool(args["smtp_user"]) != bool(args["smtp_pass"]):
        raise UsageError("--smtp_user and --smtp_pass go together", hint="--smtp_user U --smtp_pass - (standard input)")
    host, port = args["smtp"]
    conf = EmailConfig(args["to"], host, port, bool(args["starttls"]), args["from"] or "", args["smtp_user"] or None)
    notifyctl.set_email(ctx.config, conf, args["smtp_pass"] or None)
    return Result(message=f"E-mail notifications set: {conf.target()}. Try it with 'ha test notify'.")


def unset_notify(ctx: Context, args: Args) -> Result:
    from appliance.ha import notifyctl
    from appliance.ha.notify import Channel

    channel = Channel(args["channel"])
    was = notifyctl.unset(ctx.config, channel)
    return Result(message=f"{channel.value} notifications removed." if was
                  else f"No {channel.value} notifications were set: nothing changed.")


def test_notify(ctx: Context, args: Args) -> Result:
    from appliance.ha import notifyctl

    results = notifyctl.test(ctx.config, ctx.env.clock)
    if not results:
        raise NotConfigured("no notification channel is set",
                            hint="ha set notify webhook URL, or ha set notify email --to ADDR --smtp HOST")
    failed = [r for r in results if not r.ok]
    return Result(status=ExitStatus.FAILED if failed else ExitStatus.OK,
                  tables=(Table("channels", ("Channel", "Target", "Result"),
                                [(r.channel, r.target, r.message) for r in results], title="Test notification:"),))


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
                detail="(*) marks the node you are on. Status: online = heard from within two keepalive\n"
                "intervals. Latency: median of three round trips to each database host.", via_agent=True),
    CommandSpec(("ha", "get", "status"), "show this node's HA state, role, epoch and database target", get_status,
                via_agent=True),
    CommandSpec(
        ("ha", "set", "keepalive-interval"), "set the cluster's heartbeat interval (every node follows)",
        set_keepalive, params=(Param("seconds", "interval in seconds", Integer(1, 30, metavar="<SECONDS>"),
                                     flag=False, required=True),),
        changes_state=True, confirm=True, via_agent=True,
    ),
    CommandSpec(
        ("ha", "set", "db-check-interval"), "set how often every node asks every database host its role",
        set_db_check, params=(Param("seconds", "interval in seconds", Integer(1, 30, metavar="<SECONDS>"),
                                    flag=False, required=True),),
        changes_state=True, confirm=True, via_agent=True,
        detail="Each agent keeps a connection to every configured database host and asks it, at this\n"
        "interval or at the keepalive interval if that is shorter, whether it is read-write and on which\n"
        "timeline. A database failover is followed, and a second read-write node (a split brain) is seen,\n"
        "within that time. Default 10 s.",
    ),
    CommandSpec(
        ("ha", "set", "vip"), "set the cluster's virtual IP, held by the acting primary", set_vip,
        params=(Param("address", "the address and its prefix length (IPv4 or IPv6)", VipAddress(), flag=False,
                      required=True),),
        changes_state=True, confirm=True, via_agent=True,
        detail="The acting primary adds the address on the interface its configuration names ([vip]\n"
        "interface), announces it (gratuitous ARP, unsolicited neighbour advertisement) and deletes it\n"
        "when it stops acting, at the latest at its fence deadline, even if its agent is frozen.",
    ),
    CommandSpec(("ha", "unset", "vip"), "remove the cluster's virtual IP (the primary deletes it)", unset_vip,
                changes_state=True, confirm=True, via_agent=True),
    CommandSpec(
        ("ha", "switchover"), "hand the primary role to another node now (planned)", switchover,
        params=(Param("to", "the node to hand over to (default: the best online standby)",
                      NodeName(metavar="<NODE>", max_len=63)),),
        changes_state=True, confirm=True, via_agent=True,
    ),
    CommandSpec(
        ("ha", "maintenance"), "pause or resume automatic failover cluster-wide", maintenance,
        params=(Param("mode", "enable or disable", Choice(("enable", "disable")), flag=False, required=True),),
        changes_state=True, confirm=True, via_agent=True,
    ),
    CommandSpec(("ha", "stop"), "take this node out of the cluster (STOP)", stop, changes_state=True, confirm=True,
                via_agent=True),
    CommandSpec(("ha", "start"), "bring this node back into the cluster (SECOND)", start, changes_state=True,
                confirm=True, via_agent=True),
    CommandSpec(
        ("ha", "add", "node"), "print a one-time join code for a new node (ha join --code on it)", add_node,
        params=(Param("expires", "minutes the code stays valid (default 30, at most 24 h)",
                      Integer(1, 1440, metavar="<MINUTES>"), default=30),
                Param("json", 'print {"code": ..., "expires": ...} (for scripts)')), via_agent=True,
        # No question: scripts chain it (code=$(ssh ems@node1 'ha add node --json')). It changes no setting
        # and no node; the code grants nothing until it is used, expires by itself and can be revoked.
        detail="The code names this node's join service (a TLS listener of its agent, open only while codes\n"
        "are outstanding) and pins its certificate. The new node fetches the cluster's credentials with it,\n"
        "once: nobody types the database password. Example:\n"
        "  code=$(ssh ems@node1 'ha add node --json' | jq -r .code); ssh ems@node3 \"ha join --code $code --yes\"",
    ),
    CommandSpec(
        ("ha", "join"), "make this standalone node a standby of a cluster, with a join code", join,
        params=(Param("code", "the join code 'ha add node' printed ('-' reads it from standard input)",
                      Secret(metavar="<CODE>", max_len=600), required=True),),
        changes_state=True, confirm=True, preflight=join_preview, via_agent=True,
        detail="Fetches the cluster's credentials from the issuing node's join service, then does what\n"
        "'redirect --is_secondary_node' does (the same checks first, the same rollback on any failure).",
    ),
    CommandSpec(("ha", "get", "join-codes"), "list the join codes (never their secret)", get_join_codes,
                via_agent=True),
    CommandSpec(("ha", "revoke", "join-code"), "cancel a join code that was not used yet", revoke_join_code,
                params=(Param("id", "the code's id (ha get join-codes)", CodeId(), flag=False, required=True),),
                changes_state=True, confirm=True, via_agent=True),
    CommandSpec(
        ("ha", "leave"), "take this node out of the cluster, back to its own local database", leave,
        changes_state=True, confirm=True, preflight=leave_preview, via_agent=True,
        detail="The node runs standalone on its local database again (its data there untouched) and is\n"
        "removed from the cluster. The acting primary hands its role over first; any failure rolls back.",
    ),
    CommandSpec(
        ("ha", "set", "priority"), "set a node's priority (0: never primary; higher: preferred)", set_priority,
        params=(Param("priority", "0-1000000", Integer(0, 1_000_000, metavar="<N>"), flag=False, required=True),
                Param("node", "the node (default: this one)", NodeName(metavar="<NODE>", max_len=63))),
        changes_state=True, confirm=True, preflight=priority_preview, via_agent=True,
        detail="When the lease is free the online node of highest priority takes it. A primary of priority 0\n"
        "hands its role over. A preferred node coming back does not take over a healthy primary unless\n"
        "'ha set failback on'.",
    ),
    CommandSpec(("ha", "set", "failback"), "let a preferred node coming back take the primary role over",
                set_failback, params=(Param("mode", "on or off (default off)", Choice(("on", "off")), flag=False,
                                            required=True),), changes_state=True, confirm=True,
                via_agent=True),
    CommandSpec(
        ("ha", "set", "boot-start"), "what a node does after a reboot: standby, stay STOP, or keep its state",
        set_boot_start,
        params=(Param("mode", "enabled, disabled or keep", Choice(("enabled", "disabled", "keep")), flag=False,
                      required=True),
                Param("node", "the node (default: this one)", NodeName(metavar="<NODE>", max_len=63))),
        changes_state=True, confirm=True, via_agent=True,
        detail="Applied by the node's agent when it starts, before it decides anything: enabled = take part\n"
        "as a standby (default), disabled = stay out of the cluster (STOP) until 'ha start', keep = as before.",
    ),
    CommandSpec(
        ("ha", "get", "events"), "list the cluster's HA events (takeovers, switchovers, settings...)", get_events,
        params=(Param("since", "only this recent (90s, 10m, 2h, 7d)", Duration()),
                Param("limit", "at most this many, the newest (default 50)", Integer(1, 10000), default=50),
                Param("kind", "only this kind", Choice(EVENT_KINDS))), via_agent=True,
    ),
    CommandSpec(
        ("ha", "set", "notify", "webhook"), "POST every HA event as JSON to a URL", set_notify_webhook,
        params=(Param("url", "https:// (plain http:// only to a loopback address)", Url(), flag=False,
                      required=True),
                Param("secret", "sign the requests (HMAC-SHA256): asked for without echo, or read from standard "
                      "input")),
        changes_state=True, confirm=True, preflight=secret_preview,
    ),
    CommandSpec(
        ("ha", "set", "notify", "email"), "send every HA event by e-mail", set_notify_email,
        params=(Param("to", "recipients, comma-separated", Addresses(), required=True),
                Param("smtp", "the SMTP server (port 25 by default; 465: TLS)", SmtpServer(), required=True),
                Param("starttls", "use STARTTLS (certificate verified)"),
                Param("from", "the sender address", Address()),
                Param("smtp_user", "log in as this user", Text(metavar="<USER>", max_len=128)),
                Param("smtp_pass", "its password; '-' reads it from standard input", Secret())),
        changes_state=True, confirm=True, via_agent=True,
    ),
    CommandSpec(("ha", "unset", "notify"), "stop sending HA events to a webhook or by e-mail", unset_notify,
                params=(Param("channel", "webhook or email", Choice(("webhook", "email")), flag=False,
                              required=True),), changes_state=True, confirm=True, via_agent=True),
    CommandSpec(("ha", "test", "notify"), "send a test notification on every channel now and report each",
                test_notify, via_agent=True),
)
