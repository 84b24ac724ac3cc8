"""Asking the privileged helper for something: the shell and the agent, as the appliance account.

The request goes through ``sudo -n -- <privhelper> VERB ARGS...`` (sudo never prompts, the helper is
named by its absolute path from ``[tools]``), with an argv list and a fixed environment. The helper's
one-line report comes back as the result; its refusals and failures, and sudo's own refusal, become
the product's errors. Used by :mod:`appliance.hostname` (backend ``helper``) and
:mod:`appliance.services` (``systemd`` backend when not running as root).
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.config import Config
from appliance.errors import CommandFailed, NotConfigured, PermissionDenied
from appliance.privileged import PROG
from appliance.proc import CHILD_ENV, tool_argv


def helper_argv(config: Config, args: Sequence[str]) -> list[str]:
    """``[sudo, -n, --, privhelper, *args]``: sudo never prompts (-n), and the helper is named by path."""
    helper = config.tools.privhelper
    if not helper.is_absolute():
        raise NotConfigured(f"the program path {helper} is not absolute", hint="fix tools.privhelper in the config")
    if not helper.is_file():
        raise NotConfigured(f"the privileged helper {helper} is not installed",
                            hint="install the appliance image's helper, or fix tools.privhelper in the config")
    return tool_argv(config.tools.sudo, ["-n", "--", str(helper), *args])


def call_helper(config: Config, args: Sequence[str], *, timeout_s: float) -> str:
    """Run one helper request through sudo; return its report line.

    :raises PermissionDenied: sudo refused (not allowed by sudoers, or it wanted a password).
    :raises CommandFailed: the helper refused the request or failed to apply it, or timed out.
    """
    import subprocess  # only when the helper actually runs: keeps the shell's start-up fast

    argv = helper_argv(config, args)
    try:
        done = subprocess.run(argv, env=CHILD_ENV, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, check=False, close_fds=True)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"the privileged helper did not finish within {timeout_s:g} s") from None
    if done.returncode == 0:
        return done.stdout.strip()
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    from_sudo = [line for line in lines if line.startswith("sudo:")]
    if from_sudo:
        raise PermissionDenied(f"cannot run the privileged helper: {from_sudo[0]}",
                               hint=f"sudoers must allow this account to run {config.tools.privhelper} "
                               "without a password (the image's /etc/sudoers.d/appliance)")
    reason = lines[-1] if lines else f"exit status {done.returncode}"
    for prefix in (f"{PROG}: error: ", f"{PROG}: "):
        if reason.startswith(prefix):
            reason = reason[len(prefix):]
            break
    raise CommandFailed(reason)
