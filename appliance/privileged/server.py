"""``appliance-privhelper``: the root helper for what has no D-Bus API that polkit could grant.

On the image it is installed as ``/usr/libexec/appliance/privhelper`` and socket-activated:
``appliance-privhelper.socket`` (``/run/appliance-privhelper.sock``, ``Accept=yes``) starts one root
instance of ``privhelper serve`` per connection, with the connection as standard input. ``serve``
checks who is on the other end (``SO_PEERCRED``: the user must be root or listed in ``[privhelper]
users``), reads one request (a JSON array of strings, :mod:`appliance.privileged.client`) and answers
one line, ``STATUS TEXT``. Root's own units and timers run it with the request as arguments instead
(``privhelper network-revert``). The requests::

    privhelper hosts-name NAME             the 127.0.1.1 line of /etc/hosts (hostnamectl is polkit's)
    privhelper network-apply IF dhcp|ADDR/PREFIX GW|none DNS[,DNS...]|none SECONDS
    privhelper network-confirm | network-revert          commit-confirm (appliance.ops.netapply)
    privhelper set-ntp SERVER...           timesyncd drop-in, synchronisation on
    privhelper power reboot|poweroff       in a few seconds (a transient timer), so the caller can answer

Unit start/stop/restart, the hostname, the time zone, the clock and NTP off are not here: the callers
run systemctl, hostnamectl and timedatectl themselves, and the image's polkit rules decide.

The helper trusts nothing its caller could control: it checks every argument again (the hostname with
the shell's own rule, :func:`appliance.names.check_single_label`; addresses and servers with
:mod:`appliance.ops.netconf` and :mod:`appliance.ops.timeset`), reads the configuration from the fixed
path ``/etc/appliance/appliance.toml`` (never from an option or ``$APPLIANCE_CONFIG``), has no
options at all, and runs programs only by absolute path, with argv lists (never a shell) and a fixed
environment (:mod:`appliance.proc`). Anything else is refused with status 2 and one line; a failure
while applying a request is status 1.

This module is the program only, and runs as root: it imports the configuration, the naming rule
(:mod:`appliance.names`), :mod:`appliance.proc`, :mod:`appliance.system_hostname` and the root-side
administration modules (``netconf``, ``netapply``, ``timeset``), and nothing of the shell or of the
hostname backends. The calling side is :mod:`appliance.privileged.client`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from appliance.clock import SystemClock
from appliance.config import DEFAULT_CONFIG_PATH, Config, load_config
from appliance.errors import ApplianceError, CommandFailed, ExitStatus, NotConfigured
from appliance.names import check_single_label
from appliance.ops.netapply import NetworkChanges
from appliance.ops.netconf import NetworkSpec
from appliance.ops.timeset import TimeSettings, check_servers
from appliance.privileged import PROG
from appliance.privileged.client import MAX_REQUEST
from appliance.proc import run_tool
from appliance.system_hostname import set_hosts_name

if TYPE_CHECKING:
    import socket

__all__ = ["MAX_ARG_LEN", "PROG", "USAGE", "Refused", "Request", "apply", "check_request", "main", "serve"]

USAGE = ("usage: privhelper hosts-name NAME | network-apply IF dhcp|ADDR/PREFIX GW|none DNS|none SECONDS | "
         "network-confirm | network-revert | set-ntp SERVER... | power reboot|poweroff")
# Seconds between `power` and the reboot: the caller's answer and audit record are written first.
POWER_DELAY_S = 3
MAX_ARG_LEN = 256  # no legitimate argument comes close (a label is <= 63, an interface name <= 15)
# A client that connects and sends nothing (or dribbles) is dropped after this long: every instance
# of the socket-activated service ends by itself.
READ_TIMEOUT_S = 10.0


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
    if verb == "hosts-name":
        return Request(verb, (_check_hostname(rest),))
    if verb == "network-apply":
        try:
            NetworkSpec.from_helper_args(rest)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        return Request(verb, rest)
    if verb in ("network-confirm", "network-revert"):
        if rest:
            raise Refused(f"{verb} takes no arguments")
        return Request(verb, ())
    if verb == "set-ntp":
        return Request(verb, _checked(check_servers, rest))
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


def _check_hostname(rest: tuple[str, ...]) -> str:
    if len(rest) != 1:
        raise Refused("hosts-name takes exactly one NAME")
    try:
        return check_single_label(rest[0])
    except ValueError as exc:
        raise Refused(f"invalid hostname: {exc}") from None


def apply(request: Request, config: Config) -> str:
    """Carry out a checked request; return a one-line report.

    :raises ApplianceError: it failed (the message says what and why).
    """
    verb, args = request.verb, request.args
    if verb == "hosts-name":
        return _hosts_name(args[0], config)
    if verb.startswith("network-"):
        changes = NetworkChanges(config, SystemClock())
        if verb == "network-apply":
            spec, seconds = NetworkSpec.from_helper_args(args)
            return changes.apply(spec, seconds)
        return changes.confirm() if verb == "network-confirm" else changes.revert()
    if verb == "set-ntp":
        return TimeSettings(config).set_ntp(args)
    return _power(args[0], config)


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


def _hosts_name(name: str, config: Config) -> str:
    if config.hostname.backend not in ("helper", "hostnamectl"):
        raise NotConfigured(f"hostname.backend {config.hostname.backend!r} keeps no /etc/hosts line through the helper")
    hosts = config.hostname.etc_root / "etc" / "hosts"
    try:
        set_hosts_name(hosts, name)
    except OSError as exc:
        raise CommandFailed(f"{hosts} could not be updated: {exc.strerror}") from None
    return f"127.0.1.1 is {name} in {hosts}"


def handle(argv: Sequence[str], config: Config) -> tuple[int, str]:
    """Check and carry out one request: ``(status, one line)``."""
    try:
        request = check_request(list(argv), config)
    except Refused as exc:
        return ExitStatus.USAGE, f"{exc} ({USAGE})"
    try:
        return ExitStatus.OK, apply(request, config)
    except ApplianceError as exc:
        return ExitStatus.FAILED, exc.message
    except OSError as exc:
        return ExitStatus.FAILED, str(exc.strerror or exc)


def peer_allowed(uid: int, config: Config) -> bool:
    """Root, or a user named in ``[privhelper] users`` (a name that does not exist here allows nobody)."""
    import pwd

    if uid == 0:
        return True
    for name in config.privhelper.users:
        try:
            if pwd.getpwnam(name).pw_uid == uid:
                return True
        except KeyError:
            continue
    return False


def read_request(conn: socket.socket) -> list[str]:
    """One request line from ``conn`` (bounded in size and time).

    :raises Refused: it is not one line holding a JSON array of strings.
    """
    data = b""
    while b"\n" not in data:
        if len(data) > MAX_REQUEST:
            raise Refused("request too long")
        try:
            chunk = conn.recv(MAX_REQUEST + 1 - len(data))
        except TimeoutError:
            raise Refused(f"no complete request within {READ_TIMEOUT_S:g} s") from None
        if not chunk:
            break
        data += chunk
    line, _, _rest = data.partition(b"\n")
    try:
        argv = json.loads(line.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise Refused("the request is not a JSON array of strings") from None
    if not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
        raise Refused("the request is not a JSON array of strings")
    return argv


def serve(conn: socket.socket, config: Config, log: TextIO) -> int:
    """Answer the one request of a connection: check the peer, then the request. Returns the status."""
    import socket as socket_mod
    import struct

    creds = conn.getsockopt(socket_mod.SOL_SOCKET, socket_mod.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    conn.settimeout(READ_TIMEOUT_S)
    if not peer_allowed(uid, config):
        status, text = int(ExitStatus.USAGE), f"not allowed for uid {uid}"
        verb = "-"
        # Drained unread (bounded), so the client is not cut off mid-write and gets this answer.
        with contextlib.suppress(OSError):
            conn.recv(MAX_REQUEST + 1)
    else:
        try:
            argv = read_request(conn)
        except Refused as exc:
            argv = []
            status, text = int(ExitStatus.USAGE), str(exc)
        else:
            status, text = handle(argv, config)
        verb = argv[0] if argv and argv[0].isascii() and argv[0].isprintable() else "-"
    # The journal line: who asked for which verb, and the outcome (arguments are not secrets, but
    # the verb is enough to follow what happened).
    log.write(f"{PROG}: uid {uid} pid {pid}: {verb[:40]}: status {status}: {text.splitlines()[0] if text else ''}\n")
    log.flush()
    answer = f"{status} {' '.join(text.split())}\n".encode("utf-8", "replace")
    try:
        conn.sendall(answer)
    except OSError:
        pass  # the client went away; its loss
    return status


def main(argv: Sequence[str] | None = None, *, config_path: Path = DEFAULT_CONFIG_PATH,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The program. ``argv`` None means: the installed program (``sys.argv``, clean process state).

    ``serve`` answers the connection on standard input (the socket unit's instance); anything else is
    a request as arguments, for root's own units and timers. Tests pass ``argv`` and a
    ``config_path`` of their own; the installed program has no way to change the configuration path.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if argv is None:
        argv = sys.argv[1:]
        # Nothing of the caller's environment reaches this process's children (run_tool passes a
        # fixed one anyway); files it creates get the usual modes.
        os.environ.clear()
        os.environ.update({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "LANG": "C"})
        os.umask(0o022)
    try:
        config = load_config(config_path)
    except ApplianceError as exc:
        err.write(f"{PROG}: error: {exc.message}\n")
        return ExitStatus.FAILED
    if list(argv) == ["serve"]:
        return _serve_stdin(config, err)
    status, text = handle(argv, config)
    if status == ExitStatus.OK:
        out.write(text + "\n")
    else:
        err.write(f"{PROG}: {'refused' if status == ExitStatus.USAGE else 'error'}: {text}\n")
    return status


def _serve_stdin(config: Config, err: TextIO) -> int:
    import socket
    import stat

    if not stat.S_ISSOCK(os.fstat(0).st_mode):
        err.write(f"{PROG}: refused: serve answers a connection on standard input (appliance-privhelper.socket)\n")
        return ExitStatus.USAGE
    conn = socket.socket(fileno=os.dup(0))
    try:
        return serve(conn, config, err)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
