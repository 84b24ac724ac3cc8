"""``redirect``: move this node to a shared PostgreSQL as the cluster's primary or as a standby."""

from __future__ import annotations

from appliance.shell.context import Context
from appliance.shell.result import Stream
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import HostList, Identifier, PortList, SchemaPrefix, Secret, Text


def preview(ctx: Context, args: Args) -> Preview:
    from appliance.redirect import plan_for  # redirect's machinery loads when redirect runs

    plan = plan_for(ctx.config, args)
    return Preview(plan.summary(), prepared=plan)


def redirect(ctx: Context, args: Args) -> Stream:
    from appliance.redirect import Plan, execute, plan_for
    from appliance.services import manager_for

    # The pre-flight's plan: what the database may have changed meanwhile (the answer to the question
    # may have taken a while) is checked again under the deployment lock.
    plan = args.prepared if isinstance(args.prepared, Plan) else plan_for(ctx.config, args)
    return Stream(execute(ctx.config, plan, clock=ctx.env.clock, services=manager_for(ctx.config)))


GROUPS: dict[str, str] = {}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("redirect",),
        "move this node to a shared PostgreSQL database, as primary or secondary",
        redirect,
        params=(
            Param("db_host", "database host, or a comma list (primary/standby pair)", HostList(), required=True),
            Param("db_port", "database port, or one per host", PortList(), default=(5432,)),
            Param("db_user", "database user", Text(metavar="<USER>", max_len=63), required=True),
            Param("db_pass", "database password; '-' reads it from standard input; asked for when left out",
                  Secret(), ask=True),
            Param("db_name", "database name (default from the configuration)", Identifier()),
            Param("db_prefix", "prefix of the appliance's schema name (default from the configuration)",
                  SchemaPrefix()),
            Param("is_primary_node", "deploy or check the schema and make this node the cluster's primary"),
            Param("is_secondary_node", "join this node to the cluster as a standby"),
            Param("upgrade_schema", "as primary, upgrade an older schema to this product's version"),
        ),
        one_of=(("is_primary_node", "is_secondary_node"),),
        changes_state=True,
        confirm=True,
        preflight=preview,
        via_agent=True,
        detail="Checks the target first without changing anything, then stops this node's services,\n"
        "deploys or verifies the schema, registers the node, stores the credentials encrypted and\n"
        "starts the services in the new role. Any failure (or Ctrl-C) puts the node back as it was.\n"
        "Example: redirect --db_host 10.0.0.5 --db_user postgres --db_port 5432 --is_primary_node --yes",
    ),
)
