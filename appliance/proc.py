"""Running the few external programs the product uses: argv lists, absolute paths, clean environment.

User text never reaches a shell: there is no ``shell=True`` anywhere, every program is named by an
absolute path from the configuration, and children get a fixed, minimal environment (so no
``LD_PRELOAD``, ``PAGER`` or ``PATH`` of the user's reaches them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appliance.errors import CommandFailed, NotConfigured

CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"}


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
