"""App nodes sharing one machine, and the shared database they are redirected onto, driven from outside.

A :class:`Node` is one appliance node as a user sees it: its own state dir, its own local database (on a
:class:`~appliance.testkit.pgcluster.PgCluster`), its configuration file and two services run by the
``process`` backend, ``demo`` (primary only) and ``beat`` (every role). Its tools (``appliance-shell``,
``appliance-admin``) run as separate processes of this venv, with a clean environment. A :class:`Remote`
is a fresh role and database on a cluster, the target of ``redirect``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, LiteralString

from appliance.config import Config, load_config
from appliance.node import ActiveTarget, read_targets
from appliance.sandbox.nodeconfig import node_config_text
from appliance.services import ProcessServices
from appliance.testkit.pgcluster import PgCluster

BIN = Path(sys.executable).parent  # this venv's console scripts
# Quotes, space, '=', backslash, non-ASCII and '%': every hop must pass the password on unchanged.
SECRET = "p'a ss=w\"ö\\rd-%"
TIMEOUT = 60  # seconds for one tool run
# The test clusters run without TLS (the TLS paths have their own tests and the sandbox); nodes redirect
# with this mode unless a test passes --db_sslmode. SCRAM is still the only way a password is sent.
NO_TLS = "disable"


class Node:
    """One app node under ``base/name``, its local database on ``local``; see the module docstring."""

    def __init__(self, base: Path, name: str, local: PgCluster, *, standby_service: str = "/bin/sleep") -> None:
        self.name = name
        self.dir = base / name
        self.state = self.dir / "state"
        self.dir.mkdir(parents=True)
        (self.dir / "admin-pw").write_text(local.superuser_password + "\n")
        (self.dir / "admin-pw").chmod(0o600)
        suffix = uuid.uuid4().hex[:6]
        self.config_path = self.dir / "appliance.toml"
        self.config_path.write_text(node_config_text(
            name=name, hardware_id=f"HW-{name}-{suffix}", state_dir=self.state, local_port=local.port,
            local_db=f"local_{name}_{suffix}", local_user=f"app_{name}_{suffix}", admin_user=local.superuser,
            admin_password_file=self.dir / "admin-pw",
            database={"connect_timeout_s": 3, "lock_wait_s": 15, "sslmode": NO_TLS},
            services=[("demo", ["/bin/sleep", "3600"], ["primary"]),
                      ("beat", [standby_service, "3600"], ["primary", "standby"])],
        ))
        self.config: Config = load_config(self.config_path)

    def _command(self, tool: str, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir), "LANG": "C.UTF-8", "USER": "ems"}
        return [str(BIN / tool), "--config", str(self.config_path), *args], env

    def run(self, tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        argv, env = self._command(tool, args)
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=TIMEOUT,
                              check=False)

    def popen(self, tool: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
        """:meth:`run` in the background (stdin a pipe if ``stdin``, else /dev/null); the caller waits."""
        argv, env = self._command(tool, args)
        return subprocess.Popen(argv, text=True, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def init(self) -> None:
        done = self.run("appliance-admin", "init")
        assert done.returncode == 0, done.stderr
        ProcessServices(self.config).start("primary")

    def sh(self, line: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("appliance-shell", "-c", line, stdin=stdin)

    def redirect(self, remote: Remote, role: str, *, password: str | None = None,
                 extra: str = "") -> subprocess.CompletedProcess[str]:
        flag = "--is_primary_node" if role == "primary" else "--is_secondary_node"
        line = (f"redirect --db_host 127.0.0.1 --db_port {remote.port} --db_user {remote.user} "
                f"--db_name {remote.dbname} --db_pass - {flag} --yes {extra}")
        return self.sh(line, stdin=(password if password is not None else remote.password) + "\n")

    def targets(self) -> tuple[ActiveTarget, ActiveTarget]:
        return read_targets(self.config)

    def running(self) -> list[str]:
        return sorted(ProcessServices(self.config).running())

    def all_text(self) -> str:
        """Every file this node wrote, as text (credentials are encrypted and must not contain it)."""
        chunks = []
        for path in self.state.rglob("*"):
            if path.is_file() and not path.is_symlink():
                chunks.append(path.read_bytes().decode("utf-8", "replace"))
        return "\n".join(chunks)


class Remote:
    """A new role (``dba_<tag>``, an odd password) owning a new database (``shared_<tag>``) on ``cluster``."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.port = cluster.port
        tag = uuid.uuid4().hex[:8]
        self.user, self.dbname, self.password = f"dba_{tag}", f"shared_{tag}", SECRET + tag
        cluster.create_role(self.user, self.password)
        cluster.create_database(self.dbname, owner=self.user)

    def rows(self, query: LiteralString) -> list[tuple[Any, ...]]:
        return self.cluster.sql(query, dbname=self.dbname)
