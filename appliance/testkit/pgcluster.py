"""Real, throw-away PostgreSQL 15 clusters for tests and benchmarks.

A :class:`PgCluster` is one data directory plus one postmaster, listening on ``127.0.0.1`` on a free
port, with its unix socket inside the data directory. It is meant for tests only: ``fsync`` and
``full_page_writes`` are off, so a host crash loses data (a ``kill -9`` of the server does not).
:meth:`PgCluster.add_standby` makes a streaming standby of a running cluster (a :class:`PgPair`).

When the caller is root, the binaries run as the unprivileged OS user ``postgres`` (see
:mod:`appliance.testkit.pghost`, which also makes the base directories).

Typical use (see ``tests/integration/conftest.py`` for the fixtures)::

    base = make_base_dir()
    primary = PgCluster.init(base, superuser_password="pw")
    primary.start()
    standby = primary.add_standby()
    primary.create_role("app", "secret", createdb=True)
    primary.sql("SELECT 1")
    ...
    standby.destroy()
    primary.destroy()   # stop (fast), kill -9 if that fails, remove the files

Nothing here runs a shell: every command is an argv list, and passwords never appear in argv (initdb
reads a ``--pwfile``, pg_basebackup a ``PGPASSFILE``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, LiteralString, NamedTuple, TypeAlias

import psycopg
from psycopg import sql
from psycopg.abc import Params

from appliance.testkit.pghost import (
    PG_BIN_DIR,
    PG_OS_USER,
    as_pg_user,
    child_pids,
    chown_to_pg_user,
    free_port,
    pid_alive,
    running_as_root,
)

DEFAULT_SUPERUSER = "postgres"
DEFAULT_TIMEOUT = 30  # seconds, for every wait (pg_ctl -t, replication catch-up, reload)

# What :meth:`PgCluster.sql` runs: psycopg's query types, less the Python 3.14 template strings.
Statement: TypeAlias = LiteralString | sql.SQL | sql.Composed

_BIND_ERRORS = ("could not bind", "Address already in use", "could not create any TCP/IP sockets")


class PgClusterError(RuntimeError):
    """A cluster command failed; the message carries the command's output and the server log tail."""


def _quote_conf(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@dataclass
class Timing:
    """Wall-clock seconds of cluster operations, for the terminal summary."""

    initdb: list[float]
    start: list[float]
    basebackup: list[float]

    def add(self, what: Literal["initdb", "start", "basebackup"], seconds: float) -> None:
        with _LOCK:
            getattr(self, what).append(seconds)


TIMINGS = Timing([], [], [])
_LOCK = threading.Lock()
_LIVE: set[PgCluster] = set()


@atexit.register
def _kill_leftovers() -> None:  # last line of defence if a fixture finalizer never ran
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.kill9()


# ---------------------------------------------------------------------------------------------------
# The cluster


class PgCluster:
    """One PostgreSQL cluster under ``base_dir/name`` (``data/`` plus ``postgres.log``).

    Attributes tests may use: ``host`` (always ``127.0.0.1``), ``port``, ``superuser``,
    ``superuser_password``, ``data_dir``, ``socket_dir``, ``log_file``, ``settings`` (written to
    ``pgcluster.conf``, included from ``postgresql.conf``) and ``hba_lines`` (the whole
    ``pg_hba.conf``, first match wins; edit it, then call :meth:`reload`).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        cluster_dir: Path,
        *,
        name: str,
        port: int,
        superuser: str,
        superuser_password: str,
    ) -> None:
        self.name = name
        self.cluster_dir = cluster_dir
        self.data_dir = cluster_dir / "data"
        self.log_file = cluster_dir / "postgres.log"
        self.port = port
        self.superuser = superuser
        self.superuser_password = superuser_password
        self.settings: dict[str, object] = {}
        self.hba_lines: list[str] = self.default_hba_lines(superuser)
        self.standbys: list[PgCluster] = []
        self.is_standby = False
        self._destroyed = False

    def __repr__(self) -> str:
        return f"<PgCluster {self.name} {self.host}:{self.port} {self.data_dir}>"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    # -- creation ------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        base_dir: Path | str,
        *,
        superuser_password: str,
        superuser: str = DEFAULT_SUPERUSER,
        name: str = "primary",
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> PgCluster:
        """Run initdb (scram-sha-256, C locale, UTF8) in ``base_dir/name``; the server is not started.

        ``base_dir`` must be reachable by the OS user the server runs as (see :func:`make_base_dir`).
        """
        if "\n" in superuser_password or "\r" in superuser_password or not superuser_password:
            raise ValueError("the superuser password must be one non-empty line (initdb --pwfile)")
        cluster_dir = Path(base_dir) / name
        cluster_dir.mkdir(mode=0o700)
        chown_to_pg_user(cluster_dir)
        self = cls(
            cluster_dir,
            name=name,
            port=port or free_port(),
            superuser=superuser,
            superuser_password=superuser_password,
        )
        self._check_reachable()
        pwfile = cluster_dir / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(superuser_password + "\n")
        chown_to_pg_user(pwfile)
        t0 = time.monotonic()
        try:
            self._run(
                [
                    str(PG_BIN_DIR / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--locale=C",
                    "--encoding=UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                what="initdb",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        TIMINGS.add("initdb", time.monotonic() - t0)
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# added by appliance/testkit/pgcluster.py\ninclude = 'pgcluster.conf'\n")
        self.settings = self.default_settings()
        self.settings.update(settings or {})
        self.write_config()
        return self

    def default_settings(self) -> dict[str, object]:
        return {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "cluster_name": self.name,  # also the application_name in pg_stat_replication
            "lc_messages": "C",  # English server messages: the product matches on their text
            "password_encryption": "scram-sha-256",
            "ssl": False,
            # speed over durability: these clusters are thrown away
            "fsync": False,
            "full_page_writes": False,
            "autovacuum": False,
            "shared_buffers": "16MB",
            "max_connections": 60,
            "checkpoint_timeout": "1h",
            "max_wal_size": "1GB",
            # replication
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": "128MB",
            "hot_standby": True,
            "wal_retrieve_retry_interval": "200ms",
            "wal_receiver_status_interval": "1s",
            # logging, to debug failures
            "log_connections": True,
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }

    @staticmethod
    def default_hba_lines(superuser: str) -> list[str]:
        return [
            f"local all {superuser} scram-sha-256",
            "host replication all 127.0.0.1/32 scram-sha-256",
            "host all all 127.0.0.1/32 scram-sha-256",
        ]

    def write_config(self) -> None:
        """Write ``pgcluster.conf`` (from :attr:`settings`) and ``pg_hba.conf`` (from :attr:`hba_lines`)."""
        conf = "".join(f"{k} = {_quote_conf(v)}\n" for k, v in self.settings.items())
        self._write_file(self.data_dir / "pgcluster.conf", conf)
        self._write_file(self.data_dir / "pg_hba.conf", "\n".join(self.hba_lines) + "\n")

    def _write_file(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600)
        chown_to_pg_user(tmp)
        os.replace(tmp, path)

    # -- process control -----------------------------------------------------------------------------

    def start(self, timeout: int = DEFAULT_TIMEOUT) -> None:
        """Start the server and wait until it accepts connections (a new free port if ours was taken)."""
        for attempt in range(3):
            log_pos = self.log_file.stat().st_size if self.log_file.exists() else 0
            t0 = time.monotonic()
            try:
                self._pg_ctl("start", "-l", str(self.log_file), "-t", str(timeout))
            except PgClusterError:
                tail = self._log_since(log_pos)
                if attempt < 2 and any(s in tail for s in _BIND_ERRORS):
                    self.port = free_port()
                    self.settings["port"] = self.port
                    self.write_config()
                    continue
                raise
            TIMINGS.add("start", time.monotonic() - t0)
            with _LOCK:
                _LIVE.add(self)
            return

    def stop(self, mode: str = "fast", timeout: int = DEFAULT_TIMEOUT) -> None:
        """``pg_ctl stop -m smart|fast|immediate``; falls back to :meth:`kill9` if it does not stop."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"bad stop mode {mode!r}")
        if self.pid() is None:
            self._forget()
            return
        try:
            self._pg_ctl("stop", "-m", mode, "-t", str(timeout))
        except PgClusterError:
            if self.pid() is not None:
                self.kill9()
                return
            raise
        self._forget()

    def restart(self, mode: str = "fast", timeout: int = DEFAULT_TIMEOUT) -> None:
        self.stop(mode, timeout)
        self.start(timeout)

    def kill9(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and all its children (a crash), wait until they are gone.

        Also removes the stale lock files, so that :meth:`start` works afterwards (it runs crash
        recovery). A killed process may stay a zombie if nobody reaps it; that counts as gone.
        """
        pid = self.pid()
        if pid is not None:
            victims = [pid, *child_pids(pid)]
            for p in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while any(pid_alive(p) for p in victims):
                if time.monotonic() > deadline:
                    raise PgClusterError(f"{self.name}: processes survive SIGKILL: {victims}")
                time.sleep(0.02)
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "postmaster.pid").unlink()
            for lock in self.socket_dir.glob(".s.PGSQL.*"):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
        self._forget()

    def pid(self) -> int | None:
        """The postmaster's pid if it is running, else None."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
            pid = int(first)
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def promote(self, timeout: int = DEFAULT_TIMEOUT) -> None:
        """Promote this standby to a primary (``pg_ctl promote -w``)."""
        self._pg_ctl("promote", "-t", str(timeout))
        self.is_standby = False

    def reload(self, timeout: float = 10.0) -> None:
        """Write the config and pg_hba.conf, signal the server and wait until the reload is done."""
        self.write_config()
        bad = self.sql("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL")
        if bad:
            raise PgClusterError(f"{self.name}: bad pg_hba.conf lines: {bad}")
        before = self.sql("SELECT pg_conf_load_time()")[0][0]
        self._pg_ctl("reload")
        deadline = time.monotonic() + timeout
        # A new backend reports the postmaster's load time; once it moved, new sessions use the new
        # pg_hba.conf (the postmaster reloads it in the same SIGHUP handler, before forking again).
        while self.sql("SELECT pg_conf_load_time()")[0][0] <= before:
            if time.monotonic() > deadline:
                raise PgClusterError(f"{self.name}: no configuration reload within {timeout} s")
            time.sleep(0.02)

    @contextlib.contextmanager
    def hba_override(self, *lines: str) -> Iterator[None]:
        """Put ``lines`` first in pg_hba.conf for the duration of the block, then restore it."""
        saved = list(self.hba_lines)
        self.hba_lines[0:0] = lines
        self.reload()
        try:
            yield
        finally:
            self.hba_lines[:] = saved
            self.reload()

    def destroy(self, *, keep_files: bool | None = None) -> None:
        """Stop (fast, then kill -9 if needed) this cluster and its standbys; remove the files."""
        if keep_files is None:
            keep_files = bool(os.environ.get("PGCLUSTER_KEEP"))
        errors: list[BaseException] = []
        for standby in self.standbys:
            try:
                standby.destroy(keep_files=keep_files)
            except Exception as exc:
                errors.append(exc)
        try:
            self.stop("fast", timeout=15)
        except Exception as exc:
            errors.append(exc)
        if self.pid() is not None:
            self.kill9()
        if not keep_files:
            shutil.rmtree(self.cluster_dir, ignore_errors=True)
        self._destroyed = True
        if errors:
            raise errors[0]

    def _forget(self) -> None:
        with _LOCK:
            _LIVE.discard(self)

    # -- replication ---------------------------------------------------------------------------------

    def add_standby(
        self,
        name: str = "standby",
        *,
        base_dir: Path | None = None,
        start: bool = True,
        timeout: int = DEFAULT_TIMEOUT,
        port: int | None = None,
    ) -> PgCluster:
        """Make a streaming standby of this (running) cluster with ``pg_basebackup -R``.

        The standby listens on its own free port (or ``port``), is started and is streaming when this returns
        (unless ``start=False``). The replication password is passed in a passfile, so
        ``primary_conninfo`` carries ``passfile=``, not the password.
        """
        cluster_dir = (base_dir or self.cluster_dir.parent) / name
        cluster_dir.mkdir(mode=0o700)
        chown_to_pg_user(cluster_dir)
        standby = PgCluster(
            cluster_dir,
            name=name,
            port=port or free_port(),
            superuser=self.superuser,
            superuser_password=self.superuser_password,
        )
        passfile = cluster_dir / "pgpass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{self.host}:*:*:{_pgpass_escape(self.superuser)}:{_pgpass_escape(self.superuser_password)}\n")
        chown_to_pg_user(passfile)
        t0 = time.monotonic()
        self._run(
            [
                str(PG_BIN_DIR / "pg_basebackup"),
                "-h", self.host, "-p", str(self.port), "-U", self.superuser,
                "-D", str(standby.data_dir),
                "-R", "-X", "stream", "-c", "fast", "--no-sync", "-w",
            ],
            what="pg_basebackup",
            env={"PGPASSFILE": str(passfile), "PGCONNECT_TIMEOUT": "10"},
            timeout=timeout + 30,
        )  # fmt: skip
        TIMINGS.add("basebackup", time.monotonic() - t0)
        own = standby.default_settings()
        standby.settings = {
            **own,
            **self.settings,
            **{k: own[k] for k in ("port", "unix_socket_directories", "cluster_name")},
        }
        standby.hba_lines = list(self.hba_lines)
        standby.is_standby = True
        standby.write_config()
        self.standbys.append(standby)
        if start:
            standby.start(timeout)
            standby.wait_streaming(timeout)
        return standby

    def wait_streaming(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until this standby's WAL receiver is streaming."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sql("SELECT status FROM pg_stat_wal_receiver")
            if rows and rows[0][0] == "streaming":
                return
            if time.monotonic() > deadline:
                raise PgClusterError(f"{self.name}: not streaming after {timeout} s (status {rows})")
            time.sleep(0.05)

    def wait_standbys(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until every running standby of this primary has replayed all WAL written so far."""
        lsn = self.sql("SELECT pg_current_wal_insert_lsn()")[0][0]
        deadline = time.monotonic() + timeout
        for standby in self.standbys:
            if not standby.is_running():
                continue
            query = sql.SQL("SELECT pg_last_wal_replay_lsn() >= {}::pg_lsn").format(sql.Literal(str(lsn)))
            while not standby.sql(query)[0][0]:
                if time.monotonic() > deadline:
                    raise PgClusterError(f"{standby.name}: did not replay up to {lsn} within {timeout} s")
                time.sleep(0.02)

    # -- SQL -----------------------------------------------------------------------------------------

    def connect(
        self,
        *,
        dbname: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        autocommit: bool = True,
        tcp: bool = False,
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """A psycopg connection (superuser by default, over the unix socket unless ``tcp``)."""
        return psycopg.connect(
            host=self.host if tcp else str(self.socket_dir),
            port=self.port,
            user=user or self.superuser,
            password=self.superuser_password if password is None else password,
            dbname=dbname,
            connect_timeout=5,
            application_name="pgcluster",
            options="-c statement_timeout=30000 -c lock_timeout=10000",
            gssencmode="disable",
            autocommit=autocommit,
        )

    def sql(
        self, query: Statement, params: Params | None = None, *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement as superuser (autocommit); return its rows ([] when it returns none)."""
        with self.connect(dbname=dbname) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []

    def create_role(
        self,
        name: str,
        password: str | None = None,
        *,
        superuser: bool = False,
        createdb: bool = False,
        login: bool = True,
        replication: bool = False,
    ) -> None:
        """CREATE ROLE; the SCRAM verifier is computed client-side, so no plaintext reaches the server."""
        attrs = [
            "LOGIN" if login else "NOLOGIN",
            "SUPERUSER" if superuser else "NOSUPERUSER",
            "CREATEDB" if createdb else "NOCREATEDB",
            "REPLICATION" if replication else "NOREPLICATION",
        ]
        with self.connect() as conn:
            query = sql.SQL("CREATE ROLE {} " + " ".join(attrs)).format(sql.Identifier(name))
            if password is not None:
                verifier = conn.pgconn.encrypt_password(
                    password.encode("utf-8"), name.encode("utf-8"), b"scram-sha-256"
                )
                query = sql.SQL("{} PASSWORD {}").format(query, sql.Literal(verifier.decode("ascii")))
            conn.execute(query)

    def create_database(self, name: str, owner: str | None = None) -> None:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
        self.sql(query)

    def drop_database(self, name: str) -> None:
        self.sql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def drop_role(self, name: str) -> None:
        self.sql(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    # -- plumbing ------------------------------------------------------------------------------------

    def _check_reachable(self) -> None:
        if not running_as_root():
            return
        probe = subprocess.run(
            as_pg_user(["/usr/bin/test", "-w", str(self.cluster_dir)]),
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            capture_output=True,
            timeout=10,
            check=False,
        )
        if probe.returncode != 0:
            raise PgClusterError(
                f"OS user {PG_OS_USER!r} cannot write {self.cluster_dir}: every parent directory must be "
                "searchable by it (use appliance.testkit.pghost.make_base_dir())"
            )

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(
            [str(PG_BIN_DIR / "pg_ctl"), action, "-D", str(self.data_dir), "-w", *args],
            what=f"pg_ctl {action}",
        )

    def _run(
        self, argv: list[str], *, what: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = as_pg_user(argv)
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C",
            "LC_ALL": "C",
            "TZ": "UTC",
            **(env or {}),
        }
        try:
            proc = subprocess.run(
                argv,
                cwd=self.cluster_dir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgClusterError(f"{self.name}: {what} did not finish within {timeout} s") from exc
        if proc.returncode != 0:
            raise PgClusterError(
                f"{self.name}: {what} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
                f"--- server log tail ---\n{self._log_since(0)[-3000:]}"
            )
        return proc

    def _log_since(self, pos: int) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                return f.read()
        except FileNotFoundError:
            return ""


class PgPair(NamedTuple):
    """A primary and its streaming standby (:meth:`PgCluster.add_standby`), e.g. for a DB failover."""

    primary: PgCluster
    standby: PgCluster
