"""The ``ha`` commands of the membership life cycle (join codes, ``ha join``, ``ha leave``, priority,
failback, boot start) and of the event history and its notifications (webhook, e-mail).

The same family as :mod:`commands.ha` (whose group help covers these words), in its own module to keep
each module to one concern: the HA state and its requests there, who is in the cluster and who hears
about it here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from appliance.errors import ExitStatus, NotConfigured, UsageError
from appliance.shell.context import Context
from appliance.shell.result import Result, Stream, Table
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import Choice, Integer, NodeName, ParamType, Secret, Text
from commands.ha import change, known_nodes, on_off

if TYPE_CHECKING:
    from appliance.ha.notify import EmailConfig

EVENT_KINDS = ("takeover", "step_down", "switchover", "maintenance", "node_stop", "node_start", "join", "leave",
               "setting", "db_failover", "db_split_brain", "redirect")  # appliance.ha.events.KINDS, pinned by a test


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


def preview_failback(ctx: Context, args: Args) -> Preview:
    from appliance.ha.session import cluster_snapshot

    view, _active, _me = cluster_snapshot(ctx.config)
    return change("Failback", on_off(view.failback), args["mode"], "cluster-wide")


def preview_boot_start(ctx: Context, args: Args) -> Preview:
    from appliance.ha.control import named_node
    from appliance.ha.session import cluster_snapshot

    view, _active, me = cluster_snapshot(ctx.config)
    node = named_node(view, args["node"], me)  # the same lookup (and refusal) as the change itself
    return change(f"Boot start of {node.name}", node.boot_start, args["mode"])


def preview_revoke(ctx: Context, args: Args) -> Preview:
    from appliance.ha import joining

    known = {c.code_id: c for c in joining.codes(ctx.config)}
    code = known.get(args["id"])
    if code is None:
        raise NotConfigured(f"no join code {args['id']} in this cluster", hint="see 'ha get join-codes'")
    return change(f"Join code {code.code_id} (by {code.issued_by})", code.state.value, "revoked")


def preview_notify_email(ctx: Context, args: Args) -> Preview:
    from appliance.ha import notifyctl

    old = notifyctl.channels(ctx.config).email
    new = _email_config(args)
    return change("E-mail notifications", old.target() if old else "none", new.target())


def _email_config(args: Args) -> EmailConfig:
    from appliance.ha.notify import EmailConfig

    host, port = args["smtp"]
    return EmailConfig(args["to"], host, port, bool(args["starttls"]), args["from"] or "", args["smtp_user"] or None)


def preview_unset_notify(ctx: Context, args: Args) -> Preview:
    from appliance.ha import notifyctl

    channels = notifyctl.channels(ctx.config)
    old = channels.webhook if args["channel"] == "webhook" else channels.email
    return change(f"{args['channel'].capitalize()} notifications", old.target() if old else "none", "none")


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


def webhook_preview(ctx: Context, args: Args) -> Preview:
    from appliance.ha import notifyctl

    old = notifyctl.channels(ctx.config).webhook
    return change("Webhook", old.target() if old else "none", args["url"] + (" (signed)" if args["secret"] else ""))


def set_notify_webhook(ctx: Context, args: Args) -> Result:
    from appliance.ha import notifyctl

    secret = args["secret"] if isinstance(args["secret"], str) else None  # read by the shell (reads_secret)
    old = notifyctl.set_webhook(ctx.config, args["url"], secret)
    return Result(message=f"Webhook set to {args['url']}" + (" (signed: X-Appliance-Signature)" if secret else "")
                  + (f", replacing {old.url}" if old else "") + ". Every HA event is POSTed to it; try it with "
                  "'ha test notify'.")


def set_notify_email(ctx: Context, args: Args) -> Result:
    from appliance.ha import notifyctl

    if bool(args["smtp_user"]) != bool(args["smtp_pass"]):
        raise UsageError("--smtp_user and --smtp_pass go together", hint="--smtp_user U --smtp_pass - (standard input)")
    conf = _email_config(args)
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

GROUPS: dict[str, str] = {}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("ha", "add", "node"), "print a one-time join code for a new node (ha join --code on it)", add_node,
        params=(Param("expires", "minutes the code stays valid (default 30, at most 24 h)",
                      Integer(1, 1440, metavar="<MINUTES>"), default=30),
                Param("json", 'print {"code": ..., "expires": ...} (for scripts)')),
        # No question: scripts chain it (code=$(ssh ems@node1 'ha add node --json')). It changes no setting
        # and no node; the code grants nothing until it is used, expires by itself and can be revoked.
        detail="The code names this node's join service (a TLS listener of its agent, open only while codes\n"
        "are outstanding) and pins its certificate. The new node fetches the cluster's credentials with it,\n"
        "once: nobody types the database password. Example:\n"
        "  code=$(ssh ems@node1 'ha add node --json' | jq -r .code); ssh ems@node3 \"ha join --code $code --yes\"",
        via_agent=True,
    ),
    CommandSpec(
        ("ha", "join"), "make this standalone node a standby of a cluster, with a join code", join,
        params=(Param("code", "the join code 'ha add node' printed ('-' reads it from standard input)",
                      Secret(metavar="<CODE>", max_len=600), required=True),),
        changes_state=True, confirm=True, preflight=join_preview,
        detail="Fetches the cluster's credentials from the issuing node's join service, then does what\n"
        "'redirect --is_secondary_node' does (the same checks first, the same rollback on any failure).",
        via_agent=True,
    ),
    CommandSpec(("ha", "get", "join-codes"), "list the join codes (never their secret)", get_join_codes,
                via_agent=True),
    CommandSpec(("ha", "revoke", "join-code"), "cancel a join code that was not used yet", revoke_join_code,
                params=(Param("id", "the code's id (ha get join-codes)", CodeId(), flag=False, required=True),),
                changes_state=True, confirm=True, preflight=preview_revoke, via_agent=True),
    CommandSpec(
        ("ha", "leave"), "take this node out of the cluster, back to its own local database", leave,
        changes_state=True, confirm=True, preflight=leave_preview,
        detail="The node runs standalone on its local database again (its data there untouched) and is\n"
        "removed from the cluster. The acting primary hands its role over first; any failure rolls back.",
        via_agent=True,
    ),
    CommandSpec(
        ("ha", "set", "priority"), "set a node's priority (0: never primary; higher: preferred)", set_priority,
        params=(Param("priority", "0-1000000", Integer(0, 1_000_000, metavar="<N>"), flag=False, required=True),
                Param("node", "the node (default: this one)", NodeName(known=known_nodes))),
        changes_state=True, confirm=True, preflight=priority_preview,
        detail="When the lease is free the online node of highest priority takes it. A primary of priority 0\n"
        "hands its role over. A preferred node coming back does not take over a healthy primary unless\n"
        "'ha set failback on'.",
        via_agent=True,
    ),
    CommandSpec(("ha", "set", "failback"), "let a preferred node coming back take the primary role over",
                set_failback, params=(Param("mode", "on or off (default off)", Choice(("on", "off")), flag=False,
                                            required=True),), changes_state=True, confirm=True,
                preflight=preview_failback, via_agent=True),
    CommandSpec(
        ("ha", "set", "boot-start"), "what a node does after a reboot: standby, stay STOP, or keep its state",
        set_boot_start,
        params=(Param("mode", "enabled, disabled or keep", Choice(("enabled", "disabled", "keep")), flag=False,
                      required=True),
                Param("node", "the node (default: this one)", NodeName(known=known_nodes))),
        changes_state=True, confirm=True, preflight=preview_boot_start,
        detail="Applied by the node's agent when it starts, before it decides anything: enabled = take part\n"
        "as a standby (default), disabled = stay out of the cluster (STOP) until 'ha start', keep = as before.",
        via_agent=True,
    ),
    CommandSpec(
        ("ha", "get", "events"), "list the cluster's HA events (takeovers, switchovers, settings...)", get_events,
        params=(Param("since", "only this recent (90s, 10m, 2h, 7d)", Duration()),
                Param("limit", "at most this many, the newest (default 50)", Integer(1, 10000), default=50),
                Param("kind", "only this kind", Choice(EVENT_KINDS))),
                via_agent=True,
    ),
    CommandSpec(
        ("ha", "set", "notify", "webhook"), "POST every HA event as JSON to a URL", set_notify_webhook,
        params=(Param("url", "https:// (plain http:// only to a loopback address)", Url(), flag=False,
                      required=True),
                Param("secret", "sign the requests (HMAC-SHA256): asked for without echo, or read from standard "
                      "input", reads_secret=True)),
        changes_state=True, confirm=True, preflight=webhook_preview, via_agent=True,
    ),
    CommandSpec(
        ("ha", "set", "notify", "email"), "send every HA event by e-mail", set_notify_email,
        params=(Param("to", "recipients, comma-separated", Addresses(), required=True),
                Param("smtp", "the SMTP server (port 25 by default; 465: TLS)", SmtpServer(), required=True),
                Param("starttls", "use STARTTLS (certificate verified)"),
                Param("from", "the sender address", Address()),
                Param("smtp_user", "log in as this user", Text(metavar="<USER>", max_len=128)),
                Param("smtp_pass", "its password; '-' reads it from standard input", Secret())),
        changes_state=True, confirm=True, preflight=preview_notify_email,
        via_agent=True,
    ),
    CommandSpec(("ha", "unset", "notify"), "stop sending HA events to a webhook or by e-mail", unset_notify,
                params=(Param("channel", "webhook or email", Choice(("webhook", "email")), flag=False,
                              required=True),), changes_state=True, confirm=True,
                preflight=preview_unset_notify, via_agent=True),
    CommandSpec(("ha", "test", "notify"), "send a test notification on every channel now and report each",
                test_notify, via_agent=True),
)
