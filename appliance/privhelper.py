"""``appliance-privhelper``: the one program the unprivileged appliance account may run as root.

On the image it is installed as ``/usr/libexec/appliance/privhelper`` and the appliance account
(``ems``: the login shell and the HA agent) runs it through ``sudo -n``; ``/etc/sudoers.d/appliance``
allows exactly this program and nothing else. Its whole command line::

    privhelper set-hostname NAME           static and transient hostname + the 127.0.1.1 line of /etc/hosts
    privhelper service start|stop UNIT...  only units listed in [services] primary_units/standby_units

The helper trusts nothing its caller could control: it checks every argument again (the hostname with
the shell's own rule, :func:`appliance.names.check_single_label`; units against the lists in the
configuration), reads the configuration from the fixed path ``/etc/appliance/appliance.toml`` (never
from an option or ``$APPLIANCE_CONFIG``), has no options at all, and runs programs only by absolute
path, with argv lists (never a shell) and a fixed environment (:mod:`appliance.proc`). Anything else is
refused with exit status 2 and one line on stderr; a failure while applying a request exits 1.

The client side (:func:`call_helper`) is what :mod:`appliance.hostname` (backend ``helper``) and
:mod:`appliance.services` (``systemd`` backend when not running as root) use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from appliance.config import DEFAULT_CONFIG_PATH, Config, load_config
from appliance.errors import ApplianceError, CommandFailed, ExitStatus, NotConfigured, PermissionDenied

PROG = "privhelper"
USAGE = "usage: privhelper set-hostname NAME | privhelper service start|stop UNIT..."
MAX_ARG_LEN = 256  # no legitimate argument comes close (a label is <= 63, a unit name <= 256)


class Refused(Exception):
    """The request is not one the helper accepts (exit 2); nothing was done."""


@dataclass(frozen=True)
class Request:
    verb: str  # "set-hostname" | "service"
    args: tuple[str, ...]  # (NAME,) | (start|stop, UNIT, ...)


def check_request(argv: Sequence[str], config: Config) -> Request:
    """Re-check the whole command line against the configuration.

    :raises Refused: with a one-line reason.
    """
    if not argv:
        raise Refused("no request given")
    for arg in argv:
        if not isinstance(arg, str) or not arg:
            raise Refused("empty argument")
        if len(arg) > MAX_ARG_LEN:
            raise Refused("argument too long")
        if not arg.isascii() or not arg.isprintable() or any(c.isspace() for c in arg):
            raise Refused("arguments must be printable ASCII without spaces")
    verb, rest = argv[0], tuple(argv[1:])
    if verb == "set-hostname":
        return Request(verb, (_check_hostname(rest, config),))
    if verb == "service":
        return Request(verb, _check_service(rest, config))
    raise Refused(f"unknown request {verb!r}")


def _check_hostname(rest: tuple[str, ...], config: Config) -> str:
    from appliance.names import check_single_label

    if len(rest) != 1:
        raise Refused("set-hostname takes exactly one NAME")
    try:
        return check_single_label(rest[0])
    except ValueError as exc:
        raise Refused(f"invalid hostname: {exc}") from None


def _check_service(rest: tuple[str, ...], config: Config) -> tuple[str, ...]:
    if len(rest) < 2 or rest[0] not in ("start", "stop"):
        raise Refused("service takes start or stop and one or more UNIT names")
    if config.services.backend != "systemd":
        raise Refused(f"services.backend is {config.services.backend!r}, not 'systemd': no unit may be controlled")
    listed = set(config.services.primary_units) | set(config.services.standby_units)
    units = rest[1:]
    for unit in units:
        if unit not in listed:
            raise Refused(f"unit {unit!r} is not listed in [services] primary_units or standby_units")
    if len(set(units)) != len(units):
        raise Refused("a unit is named twice")
    return rest


def apply(request: Request, config: Config) -> str:
    """Carry out a checked request; return a one-line report.

    :raises ApplianceError: it failed (the message says what and why).
    """
    from appliance.proc import run_tool

    if request.verb == "set-hostname":
        return _set_hostname(request.args[0], config)
    action, *units = request.args
    run_tool(config.tools.systemctl, [action, "--", *units], timeout_s=config.services.stop_timeout_s + 10)
    return f"{action} {' '.join(units)}: done"


def _set_hostname(name: str, config: Config) -> str:
    from appliance.hostname import EtcBackend, HostnamectlBackend, set_hosts_name

    backend = config.hostname.backend
    hosts = config.hostname.etc_root / "etc" / "hosts"
    if backend == "etc":
        EtcBackend(config.hostname.etc_root, config.hostname.set_kernel).set(name)
    elif backend in ("helper", "hostnamectl"):
        HostnamectlBackend(config.tools.hostnamectl).set(name)
        try:
            set_hosts_name(hosts, name)
        except OSError as exc:
            raise CommandFailed(f"hostname set to {name}, but {hosts} could not be updated: {exc.strerror}") from None
    else:
        raise NotConfigured(f"hostname.backend {backend!r} is not applied by the privileged helper")
    return f"hostname set to {name}"


def main(argv: Sequence[str] | None = None, *, config_path: Path = DEFAULT_CONFIG_PATH,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The program. ``argv`` None means: the installed program (``sys.argv``, clean process state).

    Tests pass ``argv`` and a ``config_path`` of their own; the installed program has no way to change
    the configuration path.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if argv is None:
        argv = sys.argv[1:]
        # Whatever sudo left in the environment, nothing of it reaches this process's children
        # (run_tool passes a fixed one anyway); files it creates get the usual modes.
        os.environ.clear()
        os.environ.update({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"})
        os.umask(0o022)
    try:
        config = load_config(config_path)
    except ApplianceError as exc:
        err.write(f"{PROG}: error: {exc.message}\n")
        return ExitStatus.FAILED
    try:
        request = check_request(list(argv), config)
    except Refused as exc:
        err.write(f"{PROG}: refused: {exc} ({USAGE})\n")
        return ExitStatus.USAGE
    try:
        report = apply(request, config)
    except ApplianceError as exc:
        err.write(f"{PROG}: error: {exc.message}\n")
        return ExitStatus.FAILED
    except OSError as exc:
        err.write(f"{PROG}: error: {exc.strerror or exc}\n")
        return ExitStatus.FAILED
    out.write(report + "\n")
    return ExitStatus.OK


# --- the client side: the shell and the agent, running as the appliance account --------------------


def helper_argv(config: Config, args: Sequence[str]) -> list[str]:
    """``[sudo, -n, --, privhelper, *args]``: sudo never prompts (-n), and the helper is named by path."""
    from appliance.proc import tool_argv

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
    import subprocess

    from appliance.proc import CHILD_ENV

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


if __name__ == "__main__":
    sys.exit(main())
