"""A real repmgr-managed PostgreSQL pair for tests and benchmarks: the vendor's shared-database setup.

Two PostgreSQL 15 clusters (``db1`` primary, ``db2`` streaming standby, :mod:`appliance.testkit.pgcluster`)
registered with repmgr 5.3 (Debian's ``postgresql-15-repmgr``), each with its own ``repmgrd`` running
with ``failover=automatic`` and a one-second monitor interval, as the appliance's HA guide deploys it.
Everything runs as the unprivileged ``postgres`` OS user (``runuser`` when we are root).

Faults, as they happen in the field:

* :meth:`RepmgrPair.kill_node`: the node dies (kill -9 of its postmaster and of its repmgrd); the other
  repmgrd promotes its standby after ``reconnect_attempts`` x ``reconnect_interval``;
* :meth:`RepmgrPair.start_as_primary`: an old primary is started again as it was, which makes it a
  second read-write node (a split brain of the database) until someone rejoins it;
* :meth:`RepmgrPair.rejoin`: it becomes a standby of the new primary again (cloned afresh and
  registered, as ``repmgr standby clone --force`` would do);
* :meth:`RepmgrPair.switchover`: ``repmgr standby switchover`` on the standby. repmgr runs commands on
  the other node over ssh; both nodes share this host, so a stand-in ``ssh`` (first in repmgr's PATH)
  runs the command locally as the same user. That stand-in exists only here, for the tests.

repmgr's own sessions use trust authentication for the ``repmgr`` role on loopback (test clusters only);
the appliance's role uses SCRAM like everywhere else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance.testkit.pgcluster import PgCluster, PgClusterError
from appliance.testkit.pghost import PG_BIN_DIR, as_pg_user, chown_to_pg_user, pid_alive

REPMGR = PG_BIN_DIR / "repmgr"
REPMGRD = PG_BIN_DIR / "repmgrd"
MONITOR_S = 1
RECONNECT_ATTEMPTS = 3
RECONNECT_INTERVAL_S = 1

# The stand-in for ssh between the two database nodes (they share this host): skip ssh's options and
# the host name, run the remote command here, as this user.
_SSH_STANDIN = """#!{python}
import os, sys
args = sys.argv[1:]
with_value = {{"-o", "-p", "-i", "-l", "-F", "-E", "-c", "-b", "-e", "-J", "-L", "-R", "-D", "-W", "-S"}}
i = 0
while i < len(args) and args[i].startswith("-"):
    i += 2 if args[i] in with_value else 1
command = " ".join(args[i + 1:]) or "true"
os.execv("/bin/sh", ["sh", "-c", command])
"""


def repmgr_unavailable_reason() -> str | None:
    if not REPMGR.is_file() or not REPMGRD.is_file():
        return f"repmgr is not installed ({REPMGR}; scripts/setup.sh installs postgresql-15-repmgr)"
    return None


class RepmgrNode:
    """One database node: its cluster, its repmgr.conf and its repmgrd process."""

    def __init__(self, node_id: int, cluster: PgCluster, conf: Path) -> None:
        self.node_id, self.cluster, self.conf = node_id, cluster, conf
        self.repmgrd: subprocess.Popen[bytes] | None = None
        self.log_mark = 0  # where in its repmgrd log the current daemon's lines begin

    @property
    def name(self) -> str:
        return self.cluster.name

    @property
    def port(self) -> int:
        return self.cluster.port


class RepmgrPair:
    """``db1`` (primary) and ``db2`` (standby) under repmgr; see the module docstring."""

    def __init__(self, base: Path, superuser_password: str) -> None:
        self.base = base
        self.bin_dir = base / "bin"
        self.bin_dir.mkdir(exist_ok=True)
        ssh = self.bin_dir / "ssh"
        ssh.write_text(_SSH_STANDIN.format(python=sys.executable))
        ssh.chmod(0o755)
        settings = {"shared_preload_libraries": "repmgr", "wal_log_hints": True}
        primary = PgCluster.init(base, superuser_password=superuser_password, name="db1", settings=settings)
        primary.hba_lines = ["host repmgr repmgr 127.0.0.1/32 trust", "host replication repmgr 127.0.0.1/32 trust",
                             *primary.hba_lines]
        primary.write_config()
        primary.start()
        primary.create_role("repmgr", superuser=True, replication=True)
        primary.create_database("repmgr", owner="repmgr")
        self.nodes = [RepmgrNode(1, primary, self._write_conf(1, primary))]
        self._repmgr(self.nodes[0], "primary", "register")
        standby = primary.add_standby("db2")
        self.nodes.append(RepmgrNode(2, standby, self._write_conf(2, standby)))
        # --wait-sync: repmgrd on the standby reads its node record there; under load the record written on
        # the primary may not have replicated yet when repmgrd starts ("no metadata record found").
        self._repmgr(self.nodes[1], "standby", "register", "--wait-sync=30")
        for node in self.nodes:
            self.start_repmgrd(node)
        self.wait_repmgrd()

    def wait_repmgrd(self, timeout: float = 30) -> None:
        """Wait until every node's repmgrd is running and monitoring (a failover before that is not seen)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            primary = not node.cluster.is_standby
            needle = "monitoring cluster primary" if primary else "monitoring connection to upstream"
            while needle not in self._daemon_log(node)[node.log_mark:]:
                if time.monotonic() > deadline or not self.repmgrd_alive(node):
                    raise PgClusterError(f"repmgrd of {node.name} is not monitoring:\n{self.repmgrd_log(node)[-2000:]}")
                time.sleep(0.05)

    # --- who is who ---------------------------------------------------------------------------------

    def node(self, name: str) -> RepmgrNode:
        return next(n for n in self.nodes if n.name == name)

    def other(self, node: RepmgrNode) -> RepmgrNode:
        return next(n for n in self.nodes if n is not node)

    def read_write(self) -> list[RepmgrNode]:
        """The nodes that answer and are read-write now."""
        found = []
        for node in self.nodes:
            with contextlib.suppress(Exception):
                if node.cluster.is_running() and not node.cluster.sql("SELECT pg_is_in_recovery()")[0][0]:
                    found.append(node)
        return found

    def timeline(self, node: RepmgrNode) -> int:
        row = node.cluster.sql("SELECT CASE WHEN pg_is_in_recovery() THEN"
                               " (SELECT timeline_id FROM pg_control_checkpoint())"
                               " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END")
        return int(row[0][0])

    def wait_primary(self, node: RepmgrNode, timeout: float = 30) -> float:
        """Wait until ``node`` is read-write (repmgrd promoted it); returns when (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node in self.read_write():
                return time.monotonic()
            time.sleep(0.05)
        raise PgClusterError(f"{node.name} was not promoted within {timeout} s:\n{self.repmgrd_log(node)[-2000:]}")

    # --- faults --------------------------------------------------------------------------------------

    def kill_node(self, node: RepmgrNode) -> float:
        """The node dies: its repmgrd and its PostgreSQL get SIGKILL. Returns when (monotonic)."""
        self.stop_repmgrd(node, signal.SIGKILL)
        at = time.monotonic()
        node.cluster.kill9()
        return at

    def start_as_primary(self, node: RepmgrNode) -> None:
        """Start a dead old primary again as it was: a second read-write node (nobody rejoined it)."""
        node.cluster.is_standby = False
        node.cluster.start()

    def rejoin(self, node: RepmgrNode) -> None:
        """Make ``node`` (dead, or running as a stale primary) a standby of the other node again: its data
        is thrown away and cloned afresh from the other node (what ``repmgr standby clone --force`` does),
        on the same port and directory, then registered again."""
        self.stop_repmgrd(node, signal.SIGKILL)
        port = node.cluster.port
        with contextlib.suppress(Exception):
            node.cluster.kill9()
        with contextlib.suppress(ValueError):
            self.other(node).cluster.standbys.remove(node.cluster)
        shutil.rmtree(node.cluster.cluster_dir)
        node.cluster = self.other(node).cluster.add_standby(node.name, port=port)
        self._repmgr(node, "standby", "register", "--force", "--upstream-node-id", str(self.other(node).node_id),
                     "--wait-sync=30")
        self.start_repmgrd(node)
        self.wait_repmgrd()

    def switchover(self, to: RepmgrNode) -> float:
        """``repmgr standby switchover`` on the standby ``to``; returns when it finished (monotonic)."""
        self._repmgr(to, "standby", "switchover", "--siblings-follow", "--always-promote", timeout=180)
        for node in self.nodes:
            node.cluster.is_standby = node is not to
        return time.monotonic()

    # --- repmgrd ------------------------------------------------------------------------------------

    def _daemon_log(self, node: RepmgrNode) -> str:
        try:
            return (self.base / f"{node.name}-repmgrd.log").read_text(errors="replace")
        except OSError:
            return ""

    def start_repmgrd(self, node: RepmgrNode) -> None:
        node.log_mark = len(self._daemon_log(node))
        log = open(self.base / f"{node.name}-repmgrd.out", "ab")  # the child keeps its own copy of the descriptor
        try:
            node.repmgrd = subprocess.Popen(as_pg_user([str(REPMGRD), "-f", str(node.conf), "--daemonize=false"]),
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._env(),
                                            cwd=self.base, start_new_session=True)
        finally:
            log.close()

    def stop_repmgrd(self, node: RepmgrNode, sig: signal.Signals = signal.SIGTERM) -> None:
        proc, node.repmgrd = node.repmgrd, None
        if proc is None or proc.poll() is not None:
            return
        # runuser's child is repmgrd: signal the whole session so that the daemon itself gets it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def repmgrd_log(self, node: RepmgrNode) -> str:
        texts = []
        for path in (self.base / f"{node.name}-repmgrd.log", self.base / f"{node.name}-repmgrd.out"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def destroy(self) -> None:
        for node in self.nodes:
            self.stop_repmgrd(node, signal.SIGKILL)
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.cluster.destroy()

    # --- plumbing -----------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "HOME": str(self.base)}

    def _write_conf(self, node_id: int, cluster: PgCluster) -> Path:
        conf = self.base / f"{cluster.name}-repmgr.conf"
        bindir = PG_BIN_DIR
        data = cluster.data_dir
        pg_ctl = f"{bindir}/pg_ctl -D {data} -l {cluster.log_file} -w -t 60"
        lines = {
            "node_id": str(node_id),
            "node_name": f"'{cluster.name}'",
            "conninfo": f"'host=127.0.0.1 port={cluster.port} user=repmgr dbname=repmgr connect_timeout=2'",
            "data_directory": f"'{data}'",
            "pg_bindir": f"'{bindir}'",
            "use_replication_slots": "false",
            "failover": "'automatic'",
            "promote_command": f"'{REPMGR} standby promote -f {conf} --log-to-file'",
            "follow_command": f"'{REPMGR} standby follow -f {conf} --log-to-file --upstream-node-id=%n'",
            "monitor_interval_secs": str(MONITOR_S),
            "reconnect_attempts": str(RECONNECT_ATTEMPTS),
            "reconnect_interval": str(RECONNECT_INTERVAL_S),
            "standby_disconnect_on_failover": "false",
            "primary_visibility_consensus": "false",
            "log_file": f"'{self.base / f'{cluster.name}-repmgrd.log'}'",
            "log_level": "'INFO'",
            "repmgrd_pid_file": f"'{self.base / f'{cluster.name}-repmgrd.pid'}'",
            "service_start_command": f"'{pg_ctl} start'",
            "service_stop_command": f"'{pg_ctl} -m fast stop'",
            "service_restart_command": f"'{pg_ctl} -m fast restart'",
            "service_promote_command": f"'{bindir}/pg_ctl -D {data} -w promote'",
            "ssh_options": "'-q'",
        }
        conf.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        chown_to_pg_user(conf)
        return conf

    def _repmgr(self, node: RepmgrNode, *args: str, timeout: float = 60) -> str:
        argv = as_pg_user([str(REPMGR), "-f", str(node.conf), *args])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self._env(), cwd=self.base,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise PgClusterError(f"repmgr {' '.join(args)} on {node.name} failed (exit {done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}")
        return done.stdout

    def repmgrd_alive(self, node: RepmgrNode) -> bool:
        return node.repmgrd is not None and pid_alive(node.repmgrd.pid)
