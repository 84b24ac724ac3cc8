"""``execute``: one-off actions on the network (``execute ping``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from appliance.errors import ExitStatus
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


def ping(ctx: Context, args: Args) -> Stream:
    import subprocess  # imported here: the module table loads on every start, ping rarely runs
    import threading

    host, count, timeout = args["host"], args["count"], args["timeout"]
    # -n: numeric output; -c/-W: our bounded values; "--": the host can never be read as an option
    # (it is validated as an address or RFC 1123 name before it gets here anyway).
    argv = tool_argv(ctx.config.tools.ping, ["-n", "-c", str(count), "-W", str(timeout), "--", host])
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=CHILD_ENV, text=True, errors="replace", close_fds=True,
    )
    replies = 0

    def lines() -> Iterator[str]:
        nonlocal replies
        # A hard cap on the whole run: one second per probe, the last reply's wait, and slack.
        cap = threading.Timer(count + timeout + _SLACK_S, proc.kill)
        cap.daemon = True
        cap.start()
        try:
            for line in _lines_of(proc):
                replies += " bytes from " in line
                yield line
        finally:
            cap.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=_SUMMARY_WAIT_S)

    def status() -> ExitStatus:
        return ExitStatus.OK if replies else ExitStatus.FAILED

    return Stream(lines(), status)


def _lines_of(proc: subprocess.Popen[str]) -> Iterator[str]:
    """The child's output lines; Ctrl-C makes the child stop and print its summary, which is kept.

    The pipe is read on a helper thread: a KeyboardInterrupt that lands inside a text-mode read
    can drop the chunk being read (here: ping's summary), while one landing in a queue wait loses
    nothing.
    """
    import queue
    import signal
    import threading

    out: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                out.put(line.rstrip("\n"))
        out.put(None)

    threading.Thread(target=pump, daemon=True, name="child-output").start()
    interrupted = False
    while True:
        try:
            line = out.get(timeout=_SUMMARY_WAIT_S) if interrupted else out.get()
        except queue.Empty:
            proc.kill()  # it did not stop on SIGINT in time
            return
        except KeyboardInterrupt:
            if interrupted:
                raise  # a second Ctrl-C: stop now
            interrupted = True
            # On a terminal the child got the same SIGINT; from -c or SSH it may not have. Either way
            # it stops and prints its statistics, which the user asked for by pressing Ctrl-C.
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            continue
        if line is None:
            return
        yield line


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
