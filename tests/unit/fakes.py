"""A small registry of fake commands for parser, help and dispatcher tests."""

from __future__ import annotations

from appliance.shell.result import Result, Table
from appliance.shell.spec import Args, CommandSpec, Param, Registry
from appliance.shell.types import Choice, HostList, Integer, PortList, Secret


def echo(ctx, args: Args) -> Result:
    return Result(message=repr(sorted(args.given)), data={k: args[k] for k in args})


def nodes(ctx, args: Args) -> Result:
    return Result(tables=(Table("nodes", ("Name", "Role"), (("EMS-1 (*)", "primary"), ("EMS-2", "standby")),
                                title="Node(s):"),))


SPECS = (
    CommandSpec(("ha", "get", "nodes"), "list nodes", nodes),
    CommandSpec(("ha", "set", "mode"), "set mode", echo,
                params=(Param("mode", "the mode", Choice(("auto", "manual")), flag=False, required=True),),
                changes_state=True, confirm=True),
    CommandSpec(
        ("redirect",), "move to a remote DB", echo,
        params=(
            Param("db_host", "hosts", HostList(), required=True),
            Param("db_port", "ports", PortList(), default=(5432,)),
            Param("db_pass", "password", Secret(), ask=True),
            Param("retries", "retries", Integer(0, 5), default=1),
            Param("is_primary_node", "primary"),
            Param("is_secondary_node", "secondary"),
        ),
        one_of=(("is_primary_node", "is_secondary_node"),),
        changes_state=True, confirm=True,
    ),
)


def registry() -> Registry:
    return Registry(SPECS, group_help={"ha": "high availability", "ha get": "show HA state"})
