"""``execute``: one-off actions on the network (``execute ping``)."""

from __future__ import annotations

from collections.abc import Iterator

from appliance.errors import ExitStatus
from appliance.proc import ChildLines, tool_argv
from appliance.shell.context import Context
from appliance.shell.result import Stream
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import Host, Integer

# Slack on top of ping's own worst case.
_SLACK_S = 5.0


def ping(ctx: Context, args: Args) -> Stream:
    host, count, timeout = args["host"], args["count"], args["timeout"]
    # -n: numeric output; -c/-W: our bounded values; "--": the host can never be read as an option
    # (it is validated as an address or RFC 1123 name before it gets here anyway).
    argv = tool_argv(ctx.config.tools.ping, ["-n", "-c", str(count), "-W", str(timeout), "--", host])
    # A hard cap on the whole run: one second per probe, the last reply's wait, and slack. Ctrl-C
    # sends ping SIGINT, on which it prints its summary.
    child = ChildLines(argv, deadline_s=count + timeout + _SLACK_S)
    replies = 0

    def lines() -> Iterator[str]:
        nonlocal replies
        for line in child:
            replies += " bytes from " in line
            yield line

    def status() -> ExitStatus:
        return ExitStatus.OK if replies else ExitStatus.FAILED

    return Stream(lines(), status)


GROUPS = {"execute": "run a network tool"}

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("execute", "ping"),
        "send ICMP echo requests to a host",
        ping,
        params=(
            Param("host", "IPv4/IPv6 address or host name", Host(), flag=False, required=True),
            Param("count", "number of echo requests", Integer(1, 100), default=5),
            Param("timeout", "seconds to wait for each reply", Integer(1, 30, metavar="<SECONDS>"),
                  default=2),
        ),
        detail="Lines are shown as they arrive; Ctrl-C stops and prints the summary.\n"
        "Exit status 0 if any reply came back, 1 otherwise.",
    ),
)
