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

This module is the program only, and runs as root: it imports the configuration, the naming rule
(:mod:`appliance.names`), :mod:`appliance.proc` and :mod:`appliance.system_hostname` (and :data:`PROG`
from its package), and nothing of the shell or of the hostname backends. The calling side is
:mod:`appliance.privileged.client`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from appliance.config import DEFAULT_CONFIG_PATH, Config, load_config
from appliance.errors import ApplianceError, CommandFailed, ExitStatus, NotConfigured
from appliance.names import check_single_label
from appliance.privileged import PROG
from appliance.proc import run_tool
from appliance.system_hostname import set_hosts_name, set_in_etc, set_with_hostnamectl

__all__ = ["MAX_ARG_LEN", "PROG", "USAGE", "Refused", "Request", "apply", "check_request", "main"]

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
    if request.verb == "set-hostname":
        return _set_hostname(request.args[0], config)
    action, *units = request.args
    run_tool(config.tools.systemctl, [action, "--", *units], timeout_s=config.services.stop_timeout_s + 10)
    return f"{action} {' '.join(units)}: done"


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
