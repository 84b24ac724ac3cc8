"""``execute log show``: the agent's, the audit, the system's or the shell's log, bounded."""

from __future__ import annotations

from appliance.errors import UsageError
from appliance.shell.context import Context
from appliance.shell.result import Result, Stream
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import Choice, Duration, Integer, SearchWord

SOURCES = ("agent", "audit", "system", "shell")


def show(ctx: Context, args: Args) -> Result | Stream:
    from appliance.ops import logs

    limit = ctx.config.logs.max_lines
    if args["lines"] > limit:
        raise UsageError(f"--lines must be at most {limit} (logs.max_lines)")
    if args["follow"] and args["json"]:
        raise UsageError("--follow prints lines as they come; it does not go with --json")
    query = logs.LogQuery(args["log"], args["lines"], args["since"], args["grep"], args["follow"])
    origin, lines = logs.show(ctx.config, query, ctx.env.clock, notes=not args["json"])
    if args["json"]:
        return Result(data={"log": query.source, "origin": origin.describe(), "lines": list(lines)})
    return Stream(lines)


GROUPS = {"execute log": "read the node's logs"}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("execute", "log", "show"), "show the last lines of a log (agent, audit, system, shell)", show,
        params=(
            Param("log", "which log", Choice(SOURCES), flag=False, required=True),
            Param("lines", "how many of the last lines", Integer(1, 100000), default=50),
            Param("since", "only what was logged in the last DURATION (30s, 15m, 2h, 7d)", Duration()),
            Param("grep", "only lines containing this text (ignoring case; no pattern syntax)", SearchWord()),
            Param("follow", "keep printing new lines until Ctrl-C"),
        ),
        detail="agent: the HA agent; audit: every command line typed in this shell (secrets masked);\n"
        "system: the whole system journal; shell: the shell's internal errors. From the systemd\n"
        "journal where there is one, else from the files of [paths]/[logs]. At most logs.max_lines\n"
        "lines; --follow stops after logs.follow_max_s. Example: execute log show agent --since 1h --grep lease",
    ),
)
