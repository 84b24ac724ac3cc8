"""``system get time``, ``system set ntp|timezone``, ``execute date``: the node's clock and its sources."""

from __future__ import annotations

from appliance.errors import Conflict, UsageError
from appliance.shell.context import Context
from appliance.shell.result import Result
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import DateTime, HostList, TimeZone

HELPER_TIMEOUT_S = 60


def _yes_no(value: bool | None) -> str:
    return "unknown (no systemd here)" if value is None else ("yes" if value else "no")


def get_time(ctx: Context, args: Args) -> Result:
    from appliance.ops.timeinfo import time_info

    t = time_info(ctx.config, ctx.env.clock)
    local = t.local.strftime("%Y-%m-%d %H:%M:%S %Z")
    utc = t.utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    fields = (
        ("Local time", local), ("UTC time", utc), ("Time zone", t.timezone),
        ("NTP synchronisation", "unknown (no systemd here)" if t.ntp is None else ("on" if t.ntp else "off")),
        ("Synchronised", _yes_no(t.synchronized)), ("NTP servers", t.servers or None),
        ("Server in use", t.server_in_use),
    )
    data = {"local_time": t.local.isoformat(), "utc_time": t.utc.isoformat(), "timezone": t.timezone,
            "ntp": t.ntp, "synchronized": t.synchronized, "ntp_servers": list(t.servers),
            "server_in_use": t.server_in_use, "source": t.source}
    return Result(fields=fields, data=data)


# --- what a confirmed command will change (shown above the question) ----------------------------------


def preview_ntp(ctx: Context, args: Args) -> Preview:
    from appliance.ops.timeinfo import time_info

    if bool(args["servers"]) == bool(args["disable"]):  # refused before the question, not after it
        raise UsageError("give --servers HOST[,HOST...] or --disable", hint="system set ntp --servers 0.pool.ntp.org")
    t = time_info(ctx.config, ctx.env.clock)
    old = "unknown" if t.ntp is None else (f"on ({', '.join(t.servers) or 'default servers'})" if t.ntp else "off")
    new = "off" if args["disable"] else f"on ({', '.join(args['servers'] or ())})"
    return Preview(f"NTP: {old} -> {new}", with_question=True)


def preview_timezone(ctx: Context, args: Args) -> Preview:
    from appliance.ops.timeinfo import time_info

    old = time_info(ctx.config, ctx.env.clock).timezone
    return Preview(f"Time zone: {old} -> {args['zone']}", with_question=True)


def preview_date(ctx: Context, args: Args) -> Preview:
    from appliance.ops.timeinfo import time_info

    now = time_info(ctx.config, ctx.env.clock).local.strftime("%Y-%m-%d %H:%M:%S %Z")
    return Preview(f"Clock: {now} -> {args['set']}", with_question=True)


def set_ntp(ctx: Context, args: Args) -> Result:
    from appliance.privileged.client import call_helper

    servers, disable = args["servers"], args["disable"]
    if bool(servers) == bool(disable):
        raise UsageError("give --servers HOST[,HOST...] or --disable", hint="system set ntp --servers 0.pool.ntp.org")
    if disable:
        from appliance.ops.timeset import TimeSettings

        # timedated under polkit: no root helper for what has a D-Bus API.
        report = TimeSettings(ctx.config).ntp_off()
        return Result(message=f"{report}; the clock keeps running on its own (set it with execute date --set).")
    if len(set(servers)) != len(servers):
        raise UsageError("an NTP server is listed twice")
    report = call_helper(ctx.config, ["set-ntp", *servers], timeout_s=HELPER_TIMEOUT_S)
    return Result(message=f"{report}. `system get time` shows when the clock is synchronised.",
                  data={"ntp_servers": list(servers)})


def set_timezone(ctx: Context, args: Args) -> Result:
    from appliance.ops.timeset import TimeSettings, check_zone

    try:  # the parameter type checked it already; checked again right before use
        zone = check_zone(ctx.config, args["zone"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = TimeSettings(ctx.config).set_timezone(zone)
    return Result(message=f"Time zone changed: {report}. Logs keep their own time stamps; the HA timing does "
                  "not depend on it.")


def set_date(ctx: Context, args: Args) -> Result:
    from appliance.ops.timeinfo import time_info
    from appliance.ops.timeset import TimeSettings, check_time

    if time_info(ctx.config, ctx.env.clock).ntp:
        raise Conflict("NTP synchronisation is on: the clock follows the NTP servers",
                       hint="turn it off first: system set ntp --disable --yes")
    try:
        when = check_time(args["set"].replace(" ", "T"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = TimeSettings(ctx.config).set_time(when)
    return Result(message=f"Clock set: {report}.")


GROUPS: dict[str, str] = {}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("system", "get", "time"), "show local and UTC time, time zone, NTP servers and sync state", get_time),
    CommandSpec(
        ("system", "set", "ntp"), "set the NTP servers (systemd-timesyncd), or turn NTP off", set_ntp,
        params=(Param("servers", "NTP servers, comma-separated (at most 5)", HostList(max_items=5)),
                Param("disable", "turn NTP synchronisation off (to set the clock by hand)")),
        changes_state=True, confirm=True, preflight=preview_ntp,
        detail="--servers writes timesyncd's configuration and turns synchronisation on; --disable turns\n"
        "it off. Example: system set ntp --servers 0.pool.ntp.org,1.pool.ntp.org",
    ),
    CommandSpec(
        ("system", "set", "timezone"), "set the time zone (a zone of the tz database; Tab completes)", set_timezone,
        params=(Param("zone", "the time zone, for example Europe/Paris or UTC", TimeZone(), flag=False,
                      required=True),),
        changes_state=True, confirm=True, preflight=preview_timezone,
    ),
    CommandSpec(
        ("execute", "date"), "set the clock by hand (only while NTP is off)", set_date,
        params=(Param("set", "the local date and time", DateTime(), required=True),),
        changes_state=True, confirm=True, preflight=preview_date,
        detail='Refused while NTP synchronisation is on (system set ntp --disable). Example:\n'
        'execute date --set "2026-11-22 22:05:00"',
    ),
)
