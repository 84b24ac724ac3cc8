"""``appliance-privhelper``: the one program the unprivileged appliance account may run as root.

On the image it is installed as ``/usr/libexec/appliance/privhelper`` and the appliance account
(``ems``: the login shell and the HA agent) runs it through ``sudo -n``; ``/etc/sudoers.d/appliance``
allows exactly this program and nothing else. Its whole command line::

    privhelper set-hostname NAME           static and transient hostname + the 127.0.1.1 line of /etc/hosts
    privhelper service start|stop UNIT...  only units listed in [services] primary_units/standby_units
    privhelper service restart UNIT        those, or services.agent_unit/database_unit/ssh_unit
                                           (a primary-only unit only if it runs: try-restart)
    privhelper network-apply IF dhcp|ADDR/PREFIX GW|none DNS[,DNS...]|none SECONDS
    privhelper network-confirm | network-revert          commit-confirm (appliance.ops.netapply)
    privhelper set-ntp SERVER...           timesyncd drop-in, synchronisation on
    privhelper ntp-off
    privhelper set-timezone ZONE           a zone of the tz database installed here
    privhelper set-time YYYY-MM-DDTHH:MM:SS    only while NTP synchronisation is off
    privhelper power reboot|poweroff       in a few seconds (a transient timer), so the caller can answer

The helper trusts nothing its caller could control: it checks every argument again (the hostname with
the shell's own rule, :func:`appliance.names.check_single_label`; units against the lists in the
configuration; addresses, zones and times with :mod:`appliance.ops.netconf` and
:mod:`appliance.ops.timeset`), reads the configuration from the fixed path
``/etc/appliance/appliance.toml`` (never from an option or ``$APPLIANCE_CONFIG``), has no options at
all, and runs programs only by absolute path, with argv lists (never a shell) and a fixed environment
(:mod:`appliance.proc`). Anything else is refused with exit status 2 and one line on stderr; a failure
while applying a request exits 1.

This module is the program only, and runs as root: it imports the configuration, the naming rule
(:mod:`appliance.names`), :mod:`appliance.proc`, :mod:`appliance.system_hostname` and the root-side
administration modules (``netconf``, ``netapply``, ``timeset``), and nothing of the shell or of the
hostname backends. The calling side is :mod:`appliance.privileged.client`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from appliance.clock import SystemClock
from appliance.config import DEFAULT_CONFIG_PATH, Config, load_config
from appliance.errors import ApplianceError, CommandFailed, ExitStatus, NotConfigured
from appliance.names import check_single_label
from appliance.ops.netapply import NetworkChanges
from appliance.ops.netconf import NetworkSpec
from appliance.ops.timeset import TimeSettings, check_servers, check_time, check_zone
from appliance.privileged import PROG
from appliance.proc import run_tool
from appliance.system_hostname import set_hosts_name, set_in_etc, set_with_hostnamectl

__all__ = ["MAX_ARG_LEN", "PROG", "USAGE", "Refused", "Request", "apply", "check_request", "main"]

USAGE = ("usage: privhelper set-hostname NAME | service start|stop UNIT... | service restart UNIT | "
         "network-apply IF dhcp|ADDR/PREFIX GW|none DNS|none SECONDS | network-confirm | network-revert | "
         "set-ntp SERVER... | ntp-off | set-timezone ZONE | set-time YYYY-MM-DDTHH:MM:SS | power reboot|poweroff")
# Seconds between `power` and the reboot: the caller's answer and audit record are written first.
POWER_DELAY_S = 3
MAX_ARG_LEN = 256  # no legitimate argument comes close (a label is <= 63, a unit name <= 256)


class Refused(Exception):
    """The request is not one the helper accepts (exit 2); nothing was done."""


@dataclass(frozen=True)
class Request:
    verb: str  # one of the verbs above
    args: tuple[str, ...]  # the checked arguments


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
    if verb == "network-apply":
        try:
            NetworkSpec.from_helper_args(rest)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        return Request(verb, rest)
    if verb in ("network-confirm", "network-revert", "ntp-off"):
        if rest:
            raise Refused(f"{verb} takes no arguments")
        return Request(verb, ())
    if verb == "set-ntp":
        return Request(verb, _checked(check_servers, rest))
    if verb == "set-timezone":
        if len(rest) != 1:
            raise Refused("set-timezone takes exactly one ZONE")
        return Request(verb, (_checked(lambda args: check_zone(config, args[0]), rest),))
    if verb == "set-time":
        if len(rest) != 1:
            raise Refused("set-time takes exactly one YYYY-MM-DDTHH:MM:SS")
        return Request(verb, (_checked(lambda args: check_time(args[0]), rest),))
    if verb == "power":
        if rest not in (("reboot",), ("poweroff",)):
            raise Refused("power takes reboot or poweroff")
        return Request(verb, rest)
    raise Refused(f"unknown request {verb!r}")


def _checked(check: Callable[[tuple[str, ...]], Any], rest: tuple[str, ...]) -> Any:
    try:
        return check(rest)
    except ValueError as exc:
        raise Refused(str(exc)) from None


def _check_hostname(rest: tuple[str, ...], config: Config) -> str:
    if len(rest) != 1:
        raise Refused("set-hostname takes exactly one NAME")
    try:
        return check_single_label(rest[0])
    except ValueError as exc:
        raise Refused(f"invalid hostname: {exc}") from None


def _check_service(rest: tuple[str, ...], config: Config) -> tuple[str, ...]:
    if len(rest) < 2 or rest[0] not in ("start", "stop", "restart"):
        raise Refused("service takes start, stop or restart and UNIT names")
    if config.services.backend != "systemd":
        raise Refused(f"services.backend is {config.services.backend!r}, not 'systemd': no unit may be controlled")
    listed = set(config.services.primary_units) | set(config.services.standby_units)
    units = rest[1:]
    if rest[0] == "restart":
        services = config.services
        if len(units) != 1:
            raise Refused("service restart takes exactly one UNIT")
        if units[0] not in listed | {services.agent_unit, services.database_unit, services.ssh_unit}:
            raise Refused(f"unit {units[0]!r} is not one of the appliance's services in the configuration")
        return rest
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
    verb, args = request.verb, request.args
    if verb == "set-hostname":
        return _set_hostname(args[0], config)
    if verb == "service":
        return _service(args, config)
    if verb.startswith("network-"):
        changes = NetworkChanges(config, SystemClock())
        if verb == "network-apply":
            spec, seconds = NetworkSpec.from_helper_args(args)
            return changes.apply(spec, seconds)
        return changes.confirm() if verb == "network-confirm" else changes.revert()
    time = TimeSettings(config)
    if verb == "set-ntp":
        return time.set_ntp(args)
    if verb == "ntp-off":
        return time.ntp_off()
    if verb == "set-timezone":
        return time.set_timezone(args[0])
    if verb == "set-time":
        return time.set_time(args[0])
    return _power(args[0], config)


def _service(args: tuple[str, ...], config: Config) -> str:
    action, *units = args
    timeout_s = config.services.stop_timeout_s + 10
    if action == "restart" and units[0] in config.services.primary_units:
        # A primary-only unit runs where this node acts as primary; restarting it must never start it
        # on a standby, so it is restarted only if it runs.
        action = "try-restart"
    run_tool(config.tools.systemctl, [action, "--", *units], timeout_s=timeout_s)
    return f"{action} {' '.join(units)}: done"


def _power(action: str, config: Config) -> str:
    # A transient timer, not `systemctl reboot` at once: logind would end the caller's session (and
    # the shell in it) before it has printed its answer and written its audit record.
    unit = f"appliance-power-{action}"
    run_tool(config.tools.systemd_run, [
        f"--unit={unit}", f"--on-active={POWER_DELAY_S}s", "--timer-property=AccuracySec=100ms",
        f"--description=Appliance {action} (execute {'reboot' if action == 'reboot' else 'shutdown'})",
        "--", str(config.tools.systemctl), action,
    ], timeout_s=30)
    return f"{action} in {POWER_DELAY_S} s"


def _set_hostname(name: str, config: Config) -> str:
    backend = config.hostname.backend
    hosts = config.hostname.etc_root / "etc" / "hosts"
    if backend == "etc":
        set_in_etc(config.hostname.etc_root, name, set_kernel=config.hostname.set_kernel)
    elif backend in ("helper", "hostnamectl"):
        set_with_hostnamectl(config.tools.hostnamectl, name)
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


if __name__ == "__main__":
    sys.exit(main())
