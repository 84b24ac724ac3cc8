"""Running the few external programs the product uses: argv lists, absolute paths, clean environment.

User text never reaches a shell: there is no ``shell=True`` anywhere, every program is named by an
absolute path from the configuration, and children get a fixed, minimal environment (so no
``LD_PRELOAD``, ``PAGER`` or ``PATH`` of the user's reaches them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.errors import CommandFailed, NotConfigured
from appliance.interrupts import sigint_handled

if TYPE_CHECKING:
    import subprocess

CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"}
# Grace for a child to finish (print its summary) after it was asked to stop, before it is killed.
STOP_GRACE_S = 3.0
MAX_LINE = 4096  # a line of a child's output is cut there (a child cannot make the shell hold more)


def tool_argv(tool: Path, args: Sequence[str]) -> list[str]:
    """``[tool, *args]`` after checking ``tool`` is an absolute path to an executable file."""
    if not tool.is_absolute():
        raise NotConfigured(f"the program path {tool} is not absolute", hint="fix [tools] in the config")
    if not tool.is_file():
        raise NotConfigured(
            f"{tool} is not installed",
            hint="install the package that provides it, or fix its path under [tools] in the config",
        )
    return [str(tool), *args]


def run_tool(tool: Path, args: Sequence[str], *, timeout_s: float) -> str:
    """Run a program to completion and return its standard output.

    :raises CommandFailed: it exited non-zero (first line of its stderr in the message) or timed out.
    """
    import subprocess  # only when a program actually runs: keeps the shell's start-up fast

    argv = tool_argv(tool, args)
    try:
        done = subprocess.run(
            argv, env=CHILD_ENV, capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL, check=False, close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{tool.name} did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
        raise CommandFailed(f"{tool.name} failed: {reason}")
    return done.stdout


class ChildLines:
    """A program's output (stdout and stderr merged) as lines, as they come; bounded in time and size.

    Iterate once. The whole run is capped at ``deadline_s`` (then the child is killed); a Ctrl-C
    while it runs asks it to stop with ``stop_signal`` (ping prints its summary on SIGINT), and
    kills it if it has not stopped within :data:`STOP_GRACE_S`. ``returncode`` is set at the end;
    ``timed_out`` says whether the deadline killed it; ``interrupted`` whether Ctrl-C stopped it. With
    ``errors_apart`` standard error is not merged: its lines (the program's own complaints, at most
    :data:`MAX_LINE` characters) are in ``errors`` at the end, for the caller to report as an error.
    """

    def __init__(self, argv: list[str], *, deadline_s: float, stop_signal: int | None = None,
                 env: Mapping[str, str] = CHILD_ENV, errors_apart: bool = False) -> None:
        import signal
        import subprocess  # only when a program actually runs: keeps the shell's start-up fast

        self.argv = argv
        self.deadline_s = deadline_s
        self.stop_signal = signal.SIGINT if stop_signal is None else stop_signal
        self.returncode: int | None = None
        self.timed_out = False
        self.interrupted = False  # a Ctrl-C asked it to stop
        self.errors: list[str] = []
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if errors_apart else subprocess.STDOUT,
            env=dict(env), text=True, errors="replace", close_fds=True,
        )

    def __iter__(self) -> Iterator[str]:
        proc = self.proc
        assert proc.stdout is not None
        with self._deadline(), self._ctrl_c_stops():
            try:
                while line := proc.stdout.readline(MAX_LINE):
                    yield line.rstrip("\n")
            finally:
                if proc.poll() is None:
                    proc.kill()
                self.returncode = proc.wait(timeout=STOP_GRACE_S)
                proc.stdout.close()
                if proc.stderr is not None:
                    self.errors = proc.stderr.read(MAX_LINE).splitlines()
                    proc.stderr.close()

    @contextmanager
    def _deadline(self) -> Iterator[None]:
        import threading

        def expire() -> None:
            if self.proc.poll() is None:
                self.timed_out = True
                self.proc.kill()

        timer = threading.Timer(self.deadline_s, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    @contextmanager
    def _ctrl_c_stops(self) -> Iterator[None]:
        """While the child runs, Ctrl-C asks it to stop instead of interrupting the shell.

        Its output is then read to the end (a summary the user asked for by pressing Ctrl-C). On a
        terminal it got the same SIGINT already; from -c or SSH it may not have.
        """
        import threading

        proc: subprocess.Popen[str] = self.proc
        stopper = threading.Timer(STOP_GRACE_S, proc.kill)
        stopper.daemon = True

        def forward(signum: int, frame: object) -> None:
            self.interrupted = True
            if proc.poll() is None:
                proc.send_signal(self.stop_signal)
                if not stopper.is_alive():
                    stopper.start()

        try:
            with sigint_handled(forward):
                yield
        finally:
            stopper.cancel()
