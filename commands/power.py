"""``execute reboot`` and ``execute shutdown``: HA-aware (the primary hands its role over first)."""

from __future__ import annotations

from appliance.shell.context import Context
from appliance.shell.result import Stream
from appliance.shell.spec import Args, CommandSpec, Preflight, Preview


def _preview(action: str) -> Preflight:
    def preview(ctx: Context, args: Args) -> Preview:
        from appliance.ops.power import current_plan

        plan = current_plan(ctx.config, action)
        return Preview(plan.text, plan)

    return preview


def _run(ctx: Context, args: Args) -> Stream:
    from appliance.ops.power import execute

    return Stream(execute(ctx.config, args.prepared, ctx.env.clock))


_DETAIL = ("If this node is the acting primary and a standby is online, the primary role is handed\n"
           "over first (a switchover, reported with its duration); if that fails, the node stays up.\n"
           "The question says which will happen. The node goes down a few seconds after the answer.")

GROUPS: dict[str, str] = {}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("execute", "reboot"), "restart this node (the primary hands over first)", _run,
                changes_state=True, confirm=True, preflight=_preview("reboot"), via_agent=True,
                detail=_DETAIL),
    CommandSpec(("execute", "shutdown"), "power this node off (the primary hands over first)", _run,
                changes_state=True, confirm=True, preflight=_preview("poweroff"), via_agent=True,
                detail=_DETAIL),
)
