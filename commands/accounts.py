"""``execute passwd`` and ``system get sessions``: the admin's own password, and who is logged in."""

from __future__ import annotations

from appliance.errors import CommandFailed
from appliance.shell.context import Context
from appliance.shell.result import Result, Table
from appliance.shell.spec import Args, CommandSpec


def passwd(ctx: Context, args: Args) -> Result:
    from appliance.ops.accounts import change_password

    ctx.env.stdout.flush()
    status = change_password(ctx.config, stdin_isatty=ctx.env.stdin_isatty)
    if status != 0:
        raise CommandFailed("the password was not changed (see the reason above)")
    return Result(message="Password changed.")


def get_sessions(ctx: Context, args: Args) -> Result:
    from appliance.ops.accounts import sessions

    found = sessions(ctx.env.clock)
    table = Table("sessions", ("User", "Terminal", "From", "Since", "Idle (s)", "This session"),
                  [(s.user, s.tty, s.origin, s.since, s.idle_s, "yes" if s.this_session else "") for s in found])
    return Result(tables=(table,))


GROUPS: dict[str, str] = {}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("execute", "passwd"), "change your own password (current password, then the new one twice)", passwd,
        detail="PAM asks for the current password and applies its quality rules; it changes only the\n"
        "account you logged in as. Needs a terminal (ssh -t ems@vm 'execute passwd'). Asks no\n"
        "(y/n) question: the current password is the confirmation.",
    ),
    CommandSpec(
        ("system", "get", "sessions"), "list logged-in sessions (user, origin, since, idle)", get_sessions,
        detail="Sessions with a terminal, from utmp (as `who` shows them). Commands run as\n"
        "ssh ems@vm 'COMMAND' have no terminal and are not listed.",
    ),
)
