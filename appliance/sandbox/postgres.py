"""PostgreSQL instances for the sandbox: initdb, start, stop, in a directory of the sandbox.

PostgreSQL refuses to run as root, so when the sandbox runs as root every PostgreSQL program runs as
the unprivileged ``postgres`` user (Debian's package creates it) through ``runuser``. Passwords reach
initdb through a file (never argv), and roles get SCRAM verifiers computed client-side. An instance
given TLS (:meth:`Postgres.enable_tls`) accepts TCP connections only over TLS, with SCRAM, and the
sandbox's own connections to it verify its certificate (verify-full).
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from pathlib import Path

from appliance.db.connect import connect
from appliance.db.target import DbTarget, Timeouts
from appliance.errors import CommandFailed, NotConfigured
from appliance.sandbox.tls import TlsMaterial

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RUN_AS = "postgres"
TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_reachable(directory: Path) -> None:
    """As root, PostgreSQL runs as ``postgres``: every parent directory must be searchable by others."""
    for parent in [directory, *directory.parents]:
        if not parent.stat().st_mode & 0o001:
            raise NotConfigured(
                f"PostgreSQL runs as user {RUN_AS} and cannot reach {directory}: {parent} is not searchable by others",
                hint="choose a --dir under a directory others may enter (for example under /tmp or /srv)",
            )


class Postgres:
    """One cluster: ``<dir>/data``, log ``<dir>/postgres.log``, listening on 127.0.0.1:``port`` (and on
    ``extra_listen``, reachable with a password from ``networks``: the sandbox's network namespaces)."""

    def __init__(self, directory: Path, port: int, superuser: str = "postgres", *, extra_listen: tuple[str, ...] = (),
                 networks: tuple[str, ...] = (), ca_file: Path | None = None) -> None:
        self.dir, self.port, self.superuser = directory, port, superuser
        self.extra_listen, self.networks = extra_listen, networks
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.ca_file = ca_file  # set: the instance has TLS, and the sandbox verifies it against this CA

    def _argv(self, program: str, *args: str) -> list[str]:
        path = PG_BIN / program
        if not path.exists():
            raise NotConfigured(f"{path} is missing", hint="install PostgreSQL 15 (scripts/setup.sh does)")
        argv = [str(path), *args]
        if os.geteuid() == 0:
            return ["/usr/sbin/runuser", "-u", RUN_AS, "--", *argv]
        return argv

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(self._argv(program, *args), capture_output=True, text=True, timeout=TIMEOUT_S,
                              check=False, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise CommandFailed(f"{program} failed for {self.dir}: {reason}", hint=f"see {self.log}")

    def init(self, password: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _check_reachable(self.dir)
        pwfile = self.dir / ".pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam(RUN_AS)
            for path in (self.dir, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", self.superuser, "--pwfile", str(pwfile),
                      "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        finally:
            pwfile.unlink(missing_ok=True)
        listen = ",".join(("127.0.0.1", *self.extra_listen))
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.writelines(f"host all all {network} scram-sha-256\n" for network in self.networks)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\n# appliance-sandbox\nlisten_addresses = '{listen}'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.data}'\nfsync = off\nfull_page_writes = off\n"
                       "synchronous_commit = off\n")

    def enable_tls(self, material: TlsMaterial, ca_file: Path) -> None:
        """Serve TLS with ``material`` (before the first start): TCP clients, from loopback and from
        ``networks``, must use TLS and SCRAM; the CA certificate is written to ``ca_file`` for them."""
        files = (("server.crt", material.server_cert, 0o644), ("server.key", material.server_key, 0o600))
        for name, data, mode in files:
            path = self.data / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            self._own(path)
        ca_file.write_bytes(material.ca_cert)
        ca_file.chmod(0o644)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                       "ssl_min_protocol_version = 'TLSv1.2'\npassword_encryption = 'scram-sha-256'\n")
        hba = self.data / "pg_hba.conf"
        networks = ("127.0.0.1/32", "::1/128", *self.networks)
        hba.write_text("# appliance-sandbox: over TCP, TLS and SCRAM only\n"
                       "local   all  all  scram-sha-256\n"
                       + "".join(f"hostssl all  all  {network}  scram-sha-256\n" for network in networks))
        self._own(hba)
        self.ca_file = ca_file

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(RUN_AS)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        if self.running():
            return
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(TIMEOUT_S), "start")

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(TIMEOUT_S), "stop")

    def running(self) -> bool:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        return True

    def create_role_and_db(self, superuser_password: str, role: str, password: str, dbname: str) -> None:
        """A login role (SCRAM verifier made here, so the plaintext never reaches the server) owning ``dbname``."""
        from psycopg import sql  # heavy: kept out of the module's imports (see appliance.db.connect)

        tls = ("verify-full", str(self.ca_file)) if self.ca_file else ("disable", None)
        admin = DbTarget(("127.0.0.1",), (self.port,), self.superuser, superuser_password, "postgres", *tls)
        with connect(admin, application_name="appliance-sandbox", timeouts=Timeouts(), autocommit=True) as conn:
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                             sql.Literal(verifier)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                       sql.Identifier(role)))
