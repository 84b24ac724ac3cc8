"""``system get sessions`` and ``execute passwd``: who is logged in, and changing one's own password.

Sessions come from utmp (``/run/utmp``, what ``who`` and ``w`` read): user, terminal, origin, login
time, and the idle time of the terminal (its last input, as ``w`` computes it). Entries of processes
that are gone are left out. Commands run over SSH without a terminal (``ssh ems@vm 'cmd'``) have no
utmp entry: they are not sessions one could be idle in.

``execute passwd`` runs ``/usr/bin/passwd`` (setuid root; PAM asks for the current password, then
the new one twice, and applies the quality rules of ``/etc/pam.d/common-password``) on the user's own
terminal, as the logged-in user: it can only ever change that user's password. It is refused as root
(it would change root's password without asking for the current one) and without a terminal.
"""

from __future__ import annotations

import os
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import CommandFailed, PermissionDenied, UsageError
from appliance.interrupts import sigint_handled
from appliance.proc import CHILD_ENV, tool_argv

UTMP = Path("/run/utmp")
# struct utmp on Linux x86-64/aarch64 (glibc, bits/utmp.h): 384 bytes.
_UTMP = struct.Struct("<hxxi32s4s32s256shhiii16s20s")
USER_PROCESS = 7


@dataclass(frozen=True)
class Session:
    user: str
    tty: str
    origin: str  # the remote host, or "console"
    since: datetime
    idle_s: int | None
    pid: int
    this_session: bool


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def sessions(clock: Clock, utmp: Path = UTMP, dev: Path = Path("/dev"), own_tty: str | None = None) -> list[Session]:
    try:
        data = utmp.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CommandFailed(f"cannot read {utmp}: {exc.strerror}") from None
    if own_tty is None:
        try:
            own_tty = os.ttyname(0).removeprefix("/dev/")
        except OSError:
            own_tty = ""
    now = clock.now().timestamp()
    found = []
    for offset in range(0, len(data) - _UTMP.size + 1, _UTMP.size):
        kind, pid, line, _id, user, host, _term, _exit, _session, sec, _usec, _addr, _unused = \
            _UTMP.unpack_from(data, offset)
        if kind != USER_PROCESS or not _runs(pid):
            continue
        tty = _text(line)
        try:
            idle: int | None = max(0, int(now - (dev / tty).stat().st_atime))
        except OSError:
            idle = None
        found.append(Session(_text(user), tty, _text(host) or "console", datetime.fromtimestamp(sec, UTC),
                             idle, pid, bool(own_tty) and tty == own_tty))
    return found


def change_password(config: Config, *, stdin_isatty: bool) -> int:
    """Run passwd on this terminal for the logged-in user; its exit status (0: changed)."""
    if os.geteuid() == 0:
        raise PermissionDenied("execute passwd changes the password of the appliance account you logged in as; "
                               "it is not run as root")
    if not stdin_isatty:
        raise UsageError("execute passwd needs a terminal to ask for the passwords on",
                         hint="log in interactively, or use ssh -t ems@vm 'execute passwd'")
    argv = tool_argv(config.tools.passwd, [])
    # passwd owns the terminal while it runs; a Ctrl-C goes to it (and ends it), not to the shell.
    # A Python handler, not SIG_IGN: the child gets the default disposition back at exec.
    timeout_s = config.shell.idle_timeout_s or 900  # nobody answering passwd's questions: give up
    with sigint_handled(lambda signum, frame: None):
        try:
            return subprocess.run(argv, env=CHILD_ENV, check=False, close_fds=True, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"no answer within {timeout_s} s: the password was not changed") from None


def _runs(pid: int) -> bool:
    """Whether ``pid`` runs, also for another user's process: with /proc mounted hidepid=invisible (the
    image) its /proc entry is invisible to the login user, but signal 0 still tells (EPERM = it runs)."""
    if pid <= 0:  # 0 and negative numbers name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
