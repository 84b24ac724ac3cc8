"""``service get status`` and ``service restart``: the appliance's own services, and only those."""

from __future__ import annotations

import re

from appliance.shell.context import Context
from appliance.shell.result import Result, Table
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import Choice, ParamType


def get_status(ctx: Context, args: Args) -> Result:
    from appliance.ops.sysinfo import service_status

    found = service_status(ctx.config, ctx.env.clock)
    table = Table("services", ("Name", "Unit", "Runs on", "State", "Since", "PID"),
                  [(s.name, s.unit, s.runs_on, s.state, s.since, s.pid) for s in found])
    return Result(tables=(table,))


def preview_restart(ctx: Context, args: Args) -> Preview:
    from appliance.ops.sysinfo import restart_unit

    unit = restart_unit(ctx.config, args["name"])
    effects = {
        "agent": "The HA agent restarts: a primary hands its role over first (ha switchover), then rejoins.",
        "database": "The local PostgreSQL restarts: a node running on it loses its database for a moment.",
        "ssh": "sshd restarts: sessions already open stay; new logins wait a moment.",
    }
    text = effects.get(args["name"], f"{unit} restarts if it runs (a primary-only service runs on the primary only).")
    return Preview(text, unit)


def restart(ctx: Context, args: Args) -> Result:
    from appliance.services import restart_unit

    report = restart_unit(ctx.config, args.prepared)
    return Result(message=f"Service restarted: {report}.")


class ServiceName(Choice):
    """A service of the appliance: Tab offers the fixed ones; a configured unit's name is accepted too
    and checked against the configuration before anything runs."""

    @property
    def metavar(self) -> str:  # type: ignore[override]
        return "<SERVICE>"

    def parse(self, text: str) -> str:
        if text not in self.values and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9@._-]{0,63}", text):
            raise ValueError("must be a service name shown by `service get status`")
        return text


SERVICE: ParamType = ServiceName(("agent", "database", "ssh"))

GROUPS = {
    "service": "the appliance's services",
    "service get": "show the services' state",
}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(("service", "get", "status"), "show the appliance's services, their state and since when",
                get_status,
                detail="The HA agent, the primary-only and every-node services, the local PostgreSQL and sshd."),
    CommandSpec(
        ("service", "restart"), "restart one of the appliance's services", restart,
        params=(Param("name", "agent, database, ssh, or a service listed by `service get status`", SERVICE,
                      flag=False, required=True),),
        changes_state=True, confirm=True, preflight=preview_restart,
        detail="Only the services of the configuration ([services]); a primary-only service is restarted\n"
        "only where it runs. Needs the systemd services backend (the appliance image).",
    ),
)
