"""``execute``: one-off actions on the network (``execute ping``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from appliance.errors import CommandFailed, ExitStatus
from appliance.interrupts import sigint_handled
from appliance.proc import CHILD_ENV, tool_argv
from appliance.shell.context import Context
from appliance.shell.result import Stream
from appliance.shell.spec import Args, CommandSpec, Param
from appliance.shell.types import Host, Integer

if TYPE_CHECKING:
    import subprocess

# Grace for ping to print its summary after SIGINT, and slack on top of its own worst case.
_SUMMARY_WAIT_S = 3.0
_SLACK_S = 5.0
_MAX_LINE = 4096  # a line (or the error text) read from ping is cut there


def ping(ctx: Context, args: Args) -> Stream:
    import subprocess  # imported here: the module table loads on every start, ping rarely runs

    host, count, timeout = args["host"], args["count"], args["timeout"]
    # -n: numeric output; -c/-W: our bounded values; "--": the host can never be read as an option
    # (it is validated as an address or RFC 1123 name before it gets here anyway).
    argv = tool_argv(ctx.config.tools.ping, ["-n", "-c", str(count), "-W", str(timeout), "--", host])
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=CHILD_ENV, text=True, errors="replace", close_fds=True,
    )
    replies = 0
    stopped = False  # Ctrl-C asked ping to stop: the command was interrupted, whatever ping says

    def lines() -> Iterator[str]:
        nonlocal replies, stopped
        assert proc.stdout is not None and proc.stderr is not None
        # A hard cap on the whole run: one second per probe, the last reply's wait, and slack.
        with _deadline(count + timeout + _SLACK_S, proc), _ctrl_c_stops(proc) as asked:
            try:
                while line := proc.stdout.readline(_MAX_LINE):
                    replies += " bytes from " in line
                    yield line.rstrip("\n")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=_SUMMARY_WAIT_S)
                stopped = asked()
                # ping's own complaints, without its program path ("/usr/bin/ping: x: Name or service...").
                complaints = [_without_program(text, argv[0]) for text in proc.stderr.read(_MAX_LINE).splitlines()]
                proc.stdout.close()
                proc.stderr.close()
        if proc.returncode not in (0, 1) and complaints and not stopped:
            raise CommandFailed(f"ping failed: {complaints[0]}")
        yield from complaints

    def status() -> ExitStatus:
        if stopped:
            return ExitStatus.INTERRUPTED
        return ExitStatus.OK if replies else ExitStatus.FAILED

    return Stream(lines(), status)


def _without_program(line: str, program: str) -> str:
    for prefix in (program + ": ", "ping: "):
        if line.startswith(prefix):
            return line[len(prefix) :]
    return line


@contextmanager
def _deadline(seconds: float, proc: subprocess.Popen[str]) -> Iterator[None]:
    import threading

    timer = threading.Timer(seconds, proc.kill)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@contextmanager
def _ctrl_c_stops(proc: subprocess.Popen[str]) -> Iterator[Callable[[], bool]]:
    """While the child runs, Ctrl-C asks it to stop (SIGINT) instead of interrupting the shell.

    The child then prints its summary, which the user asked for by pressing Ctrl-C, and its output
    is read to the end. On a terminal it got the same SIGINT already; from -c or SSH it may not have.
    If it does not stop within a few seconds it is killed. Yields a function telling whether Ctrl-C
    was pressed (the command then ends with the interrupted status, 130).
    """
    import signal
    import threading

    stopper = threading.Timer(_SUMMARY_WAIT_S, proc.kill)
    stopper.daemon = True
    pressed = threading.Event()

    def forward(signum: int, frame: object) -> None:
        pressed.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            if not stopper.is_alive():
                stopper.start()

    try:
        with sigint_handled(forward):
            yield pressed.is_set
    finally:
        stopper.cancel()


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
        "Exit status 0 if any reply came back, 1 otherwise, 130 when stopped with Ctrl-C.",
    ),
)
