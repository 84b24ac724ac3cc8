"""Shell session commands: ``help``, ``history``, ``exit`` (also ``quit`` and ``logout``)."""

from __future__ import annotations

from appliance.shell.context import Context
from appliance.shell.help import help_text
from appliance.shell.result import Result
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import Text


def show_help(ctx: Context, args: Args) -> Result:
    words: tuple[str, ...] = args["command"] or ()
    return Result(message=help_text(ctx.registry, words))


def show_history(ctx: Context, args: Args) -> Result:
    entries = ctx.history()
    width = len(str(len(entries)))
    lines = [f"{str(n).rjust(width)}  {entry}" for n, entry in enumerate(entries, 1)]
    return Result(message="\n".join(lines) if lines else "(no history)")


def log_out(ctx: Context, args: Args) -> Result:
    ctx.logout = True
    return Result()


GROUPS: dict[str, str] = {}

_EXIT_HELP = "leave the shell (log out)"

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("help",),
        "list the commands, or explain one (help system set hostname)",
        show_help,
        params=(Param("command", "command words", Text(metavar="<COMMAND>"), flag=False, many=True),),
    ),
    CommandSpec(
        ("history",),
        "list the commands typed in this shell (secret values masked)",
        show_history,
        interactive_only=True,
    ),
    CommandSpec(("exit",), _EXIT_HELP, log_out),
    CommandSpec(("quit",), _EXIT_HELP, log_out),
    CommandSpec(("logout",), _EXIT_HELP, log_out),
)
