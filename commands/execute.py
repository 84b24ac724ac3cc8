"""``execute``: network checks from this node: ``ping``, ``traceroute``, ``nslookup``, ``tcp-check``."""

from __future__ import annotations

from collections.abc import Iterator

from appliance.errors import CommandFailed, ExitStatus
from appliance.proc import ChildLines, tool_argv
from appliance.shell.context import Context
from appliance.shell.result import Result, Stream, Table
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import PORT, Host, Integer, IpAddress

# Slack on top of ping's own worst case.
_SLACK_S = 5.0


def ping(ctx: Context, args: Args) -> Stream:
    host, count, timeout = args["host"], args["count"], args["timeout"]
    # -n: numeric output; -c/-W: our bounded values; "--": the host can never be read as an option
    # (it is validated as an address or RFC 1123 name before it gets here anyway).
    argv = tool_argv(ctx.config.tools.ping, ["-n", "-c", str(count), "-W", str(timeout), "--", host])
    # A hard cap on the whole run: one second per probe, the last reply's wait, and slack. Ctrl-C
    # sends ping SIGINT, on which it prints its summary.
    child = ChildLines(argv, deadline_s=count + timeout + _SLACK_S, errors_apart=True)
    replies = 0

    def lines() -> Iterator[str]:
        nonlocal replies
        for line in child:
            replies += " bytes from " in line
            yield line
        # ping's own complaints, without its program path ("/usr/bin/ping: x: Name or service ...").
        complaints = [_without_program(text, argv[0]) for text in child.errors]
        if child.returncode not in (0, 1) and complaints and not child.interrupted:
            raise CommandFailed(f"ping failed: {complaints[0]}")
        yield from complaints

    def status() -> ExitStatus:
        if child.interrupted:
            return ExitStatus.INTERRUPTED  # stopped with Ctrl-C: 130, whatever ping itself says
        return ExitStatus.OK if replies else ExitStatus.FAILED

    return Stream(lines(), status)


def _without_program(line: str, program: str) -> str:
    for prefix in (program + ": ", "ping: "):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return line


def traceroute(ctx: Context, args: Args) -> Stream:
    from appliance.ops.netdiag import traceroute_args, traceroute_deadline_s

    hops = args["max_hops"]
    child = ChildLines(tool_argv(ctx.config.tools.traceroute, traceroute_args(args["host"], hops)),
                       deadline_s=traceroute_deadline_s(hops))

    def status() -> ExitStatus:
        if child.interrupted:
            return ExitStatus.INTERRUPTED  # Ctrl-C: 130, as the README's table says
        return ExitStatus.OK if child.returncode == 0 and not child.timed_out else ExitStatus.FAILED

    def lines() -> Iterator[str]:
        yield from child
        if child.timed_out:
            yield f"(stopped: no end after {traceroute_deadline_s(hops):g} s)"

    return Stream(lines(), status)


def nslookup(ctx: Context, args: Args) -> Result:
    from appliance.ops.netdiag import lookup

    found = lookup(args["name"], args["server"], args["timeout"])
    table = Table("answers", ("Name", "Type", "Value"), [(a.name, a.kind, a.value) for a in found.answers])
    return Result(message=f"Server: {found.server} ({found.seconds * 1000:.0f} ms)", tables=(table,))


def tcp_check(ctx: Context, args: Args) -> Result:
    from appliance.ops.netdiag import tcp_check as check

    results = check(args["host"], args["port"], args["timeout"])
    table = Table("results", ("Address", "Port", "Result", "Time (ms)"),
                  [(r.address, r.port, r.result, r.ms) for r in results])
    opened = any(r.result == "open" for r in results)
    return Result(status=ExitStatus.OK if opened else ExitStatus.FAILED, tables=(table,))


GROUPS = {"execute": "run a one-off action: network checks, power, logs, backup"}

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
        "Exit status 0 if any reply came back, 1 otherwise, 130 when stopped with Ctrl-C.",
    ),
    CommandSpec(
        ("execute", "traceroute"), "show the route packets take to a host", traceroute,
        params=(
            Param("host", "IPv4/IPv6 address or host name", Host(), flag=False, required=True),
            Param("max_hops", "most routers to go through", Integer(1, 30, metavar="<N>"), default=30),
        ),
        detail="UDP probes, numeric output (no name lookups per hop), three probes per hop, 2 s each.\n"
        "Lines are shown as they arrive; Ctrl-C stops. Exit status 0 when traceroute completed.",
    ),
    CommandSpec(
        ("execute", "nslookup"), "look a name up (or an address, reversed) in DNS", nslookup,
        params=(
            Param("name", "host name, or an address for its PTR name", Host(metavar="<NAME>"), flag=False,
                  required=True),
            Param("server", "ask this DNS server (default: the system resolver, /etc/hosts first)", IpAddress()),
            Param("timeout", "seconds to wait for the answer", Integer(1, 30, metavar="<SECONDS>"), default=5),
        ),
        detail="Without --server: the answer the node's own services get (/etc/hosts, then the DNS\n"
        "servers of `system get network`). With --server: A and AAAA records from that server only.\n"
        "Exit status 1 if the name does not exist or has no address.",
    ),
    CommandSpec(
        ("execute", "tcp-check"), "check that a TCP port answers from here (is the DB port open?)", tcp_check,
        params=(
            Param("host", "IPv4/IPv6 address or host name", Host(), flag=False, required=True),
            Param("port", "TCP port", PORT, flag=False, required=True),
            Param("timeout", "seconds for the whole check", Integer(1, 30, metavar="<SECONDS>"), default=3),
        ),
        detail="Opens a TCP connection (no data sent) to each address of the host, at most four.\n"
        "Exit status 0 if one accepted. Example: execute tcp-check 172.19.201.160 5432",
    ),
)
