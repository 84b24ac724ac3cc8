"""``execute diagnostic``: the support bundle, written under the state dir or streamed to stdout."""

from __future__ import annotations

from typing import Any

from appliance.errors import NotConfigured, UsageError
from appliance.shell.context import Context
from appliance.shell.result import Binary, Result
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import StandardStream


def run_json(ctx: Context) -> Any:
    """Runs one command of the table in-process and returns its --json document (for the bundle)."""
    from appliance.shell.render import to_json

    def run(words: tuple[str, ...]) -> Any:
        node = ctx.registry.find(words)
        if node is None or node.command is None:
            raise NotConfigured(f"this version has no `{' '.join(words)}`")
        spec = node.command
        values = {p.name: p.default for p in spec.all_params} | {"json": True}
        outcome = spec.handler(ctx, Args(values, ("json",)))
        if not isinstance(outcome, Result):
            raise NotConfigured(f"`{' '.join(words)}` does not return a document")
        return to_json(outcome)

    return run


def diagnostic(ctx: Context, args: Args) -> Result | Binary:
    from appliance.hostname import backend_for
    from appliance.ops import support

    to_stdout = args["output"] == "-"
    if to_stdout and ctx.env.stdout_isatty:
        raise UsageError("--output - writes the archive to standard output, which is a terminal here",
                         hint="ssh ems@vm 'execute diagnostic --output -' > bundle.tar.gz; "
                         "without --output it is written under the state dir")
    hostname = backend_for(ctx.config).get()
    when = ctx.env.clock.now()
    bundle = support.collect(ctx.config, ctx.env.clock, run_json(ctx), hostname)
    if to_stdout:
        return Binary(support.stream(bundle, hostname, when, ctx.config.paths.state_dir))
    path = support.save(bundle, ctx.config, hostname, when)
    size = path.stat().st_size
    missing = f" Not available: {', '.join(sorted(bundle.missing))}." if bundle.missing else ""
    return Result(message=f"Support bundle written: {path} ({size} bytes).{missing}",
                  data={"path": str(path), "size": size, "not_available": bundle.missing})


GROUPS: dict[str, str] = {}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("execute", "diagnostic"), "make a support bundle (tar.gz): versions, config, HA state, logs, checks",
        diagnostic,
        params=(Param("output", "- : stream it to standard output (for ssh ... > bundle.tar.gz)", StandardStream()),),
        detail="Holds versions, the configuration, `ha get nodes/status/events`, `system get` and\n"
        "`service get status` as JSON, database reachability, and the agent, audit, shell and system\n"
        "logs of the last support.log_hours hours. No credential, key or password: known secrets and\n"
        "anything that looks like one are masked. Without --output it is kept under\n"
        "<state_dir>/support (the newest five); its path and size are printed.\n"
        "Example: ssh ems@vm 'execute diagnostic --output -' > bundle.tar.gz",
    ),
)
