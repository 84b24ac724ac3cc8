"""``execute backup`` and ``execute restore``: the appliance's database schema, dumped and put back."""

from __future__ import annotations

from collections.abc import Iterator

from appliance.errors import ConfirmationRefused, UsageError
from appliance.shell.context import Context
from appliance.shell.result import Binary, Result, Stream
from appliance.shell.spec import Args, CommandSpec, Param, Preview
from appliance.shell.types import BackupSource, StandardStream


def backup(ctx: Context, args: Args) -> Result | Binary:
    from appliance.hostname import backend_for
    from appliance.node import read_targets
    from appliance.ops import backup as core

    if args["output"] == "-" and ctx.env.stdout_isatty:
        raise UsageError("--output - writes the dump to standard output, which is a terminal here",
                         hint="ssh ems@vm 'execute backup --output -' > appliance.dump; "
                         "without --output it is kept under the state dir")
    _origin, active = read_targets(ctx.config)
    active = core.database_of(ctx.config, active)
    if args["output"] == "-":
        return Binary(core.stream_verified(ctx.config, active))
    name = f"appliance-{backend_for(ctx.config).get()}-{ctx.env.clock.now().strftime('%Y%m%dT%H%M%SZ')}"
    saved = core.save(ctx.config, active, name)
    return Result(message=f"Backup written and verified: {saved.path} ({saved.size} bytes, sha256 {saved.sha256}).",
                  data={"path": str(saved.path), "size": saved.size, "sha256": saved.sha256,
                        "database": active.target.describe(), "schema": active.schema})


def preview_restore(ctx: Context, args: Args) -> Preview:
    from appliance.ops import backup as core
    from appliance.ops import restore as core_restore

    source_name = args["input"]
    if source_name == "-":
        if ctx.env.stdin_isatty:
            raise UsageError("--input - reads the dump from standard input, which is a terminal here",
                             hint="ssh ems@vm 'execute restore --input - --yes' < appliance.dump")
        if not args["yes"]:
            # The question could not be asked (standard input holds the dump): refuse before reading it.
            raise ConfirmationRefused("'execute restore --input -' needs --yes: standard input holds the dump, "
                                      "so there is no way to ask", hint="add --yes")
        stdin = getattr(ctx.env.stdin, "buffer", None)
        if stdin is None:
            raise UsageError("standard input cannot be read as bytes here")
        source = core_restore.spool_stdin(ctx.config, stdin)
        label = "standard input"
    else:
        source = core.open_backup(ctx.config, source_name)
        label = source_name
    try:
        plan = core_restore.prepare(ctx.config, source, label)
    except BaseException:
        source.close()
        raise
    return Preview(plan.text(), plan)


def restore(ctx: Context, args: Args) -> Stream:
    from appliance.hostname import backend_for
    from appliance.ops import restore as core_restore

    plan = args.prepared

    def lines() -> Iterator[str]:
        try:
            yield from core_restore.apply(ctx.config, plan, ctx.env.clock, backend_for(ctx.config).get())
        finally:
            plan.source.close()

    return Stream(lines())


GROUPS: dict[str, str] = {}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("execute", "backup"), "dump the appliance's database schema (verified), to a file or stdout", backup,
        params=(Param("output", "- : stream it to standard output (for ssh ... > appliance.dump)", StandardStream()),),
        detail="A consistent pg_dump (custom format) of the appliance's schema on the database this node\n"
        "uses: the cluster's identity, nodes, lease and settings. No credential is in it (no role,\n"
        "no password; the node's credential files and key stay on the node). Verified by a full read.\n"
        "Without --output it is kept as <state_dir>/backups/appliance-HOST-TIME.dump with a .sha256.\n"
        "Example: ssh ems@vm 'execute backup --output -' > appliance.dump",
    ),
    CommandSpec(
        ("execute", "restore"), "put a backup's settings back (standalone node or acting primary)", restore,
        params=(Param("input", "- : read the dump from standard input; or a backup's file name under the state dir",
                      BackupSource(), required=True),),
        changes_state=True, confirm=True, preflight=preview_restore,
        detail="Checked before anything is replaced: the dump is read in full, must be the appliance's,\n"
        "not of a newer schema, with valid settings; what it replaces is shown before the question.\n"
        "Replaces the cluster and system settings; keeps this cluster's identity, nodes and lease.\n"
        "Saves the current state first, then replaces in one transaction (rolled back on failure).\n"
        "Example: ssh ems@vm 'execute restore --input - --yes' < appliance.dump",
    ),
)
