"""What a throw-away PostgreSQL cluster needs from the host, and what it can see of it.

Where the PostgreSQL 15 binaries are, which OS user runs them, a base directory that user can reach,
a free port, and the processes in ``/proc`` (to kill a postmaster with its children and to see that
they are gone). :mod:`appliance.testkit.pgcluster` builds clusters on these.

PostgreSQL refuses to run as root. When the caller is root (as in CI), every PostgreSQL binary runs
as the unprivileged OS user ``postgres`` through ``runuser -u postgres -- ...`` and the cluster
directories are owned by that user; otherwise the binaries run as the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

PG_MAJOR = 15
PG_BIN_DIR = Path(os.environ.get("PGCLUSTER_BIN_DIR", f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
PG_OS_USER = "postgres"  # the unprivileged user the server runs as when we are root


def pg_unavailable_reason() -> str | None:
    """Why real-PostgreSQL tests cannot run here, or None when they can."""
    initdb = PG_BIN_DIR / "initdb"
    if not initdb.is_file():
        return f"PostgreSQL {PG_MAJOR} binaries not found ({initdb} is missing)"
    if running_as_root():
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return f"running as root but there is no OS user {PG_OS_USER!r} to run PostgreSQL as"
        if _runuser() is None:
            return "running as root but runuser(1) is not installed"
    return None


def running_as_root() -> bool:
    return os.geteuid() == 0


def _runuser() -> str | None:
    return shutil.which("runuser") or next(
        (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None
    )


def as_pg_user(argv: Sequence[str]) -> list[str]:
    """``argv`` run as the OS user PostgreSQL runs as: through ``runuser`` when we are root, else as it is."""
    if running_as_root():
        return [_runuser() or "runuser", "-u", PG_OS_USER, "--", *argv]
    return list(argv)


def chown_to_pg_user(path: Path) -> None:
    """Give ``path`` to the OS user PostgreSQL runs as (only when we are root: otherwise it is ours)."""
    if running_as_root():
        pw = pwd.getpwnam(PG_OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def make_base_dir(prefix: str = "pgcluster-") -> Path:
    """Create a fresh directory for clusters, usable by the user the server runs as.

    It is created under ``$PGCLUSTER_TMPDIR`` or the system temp dir, mode 0700, and owned by
    ``postgres`` when running as root. The caller removes it (``shutil.rmtree``).
    """
    parent = os.environ.get("PGCLUSTER_TMPDIR") or tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    chown_to_pg_user(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (it may be taken before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stat_fields(data: bytes) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after ``comm``, from the state letter on."""
    # "pid (comm) S ppid ...": comm may contain spaces and parentheses, so split at the last ')'.
    return data[data.rindex(b")") + 2 :].split()


def proc_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...), or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return _stat_fields(data)[0].decode()


def pid_alive(pid: int) -> bool:
    """The process exists and is neither a zombie nor dead (a killed, unreaped child counts as gone)."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """The pids of the direct children of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if int(_stat_fields(data)[1]) == pid:
            out.append(int(entry))
    return out
