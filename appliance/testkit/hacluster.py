"""A cluster of real ``appliance-agent`` processes on real PostgreSQL, watched from the outside.

:class:`HaCluster` builds N app nodes (``node1``..``nodeN``) with :class:`appliance.testkit.nodes.Node`
(each has its own state dir, its own local database and ``appliance-admin init``), redirects node1 as
primary and the others as secondaries onto ONE shared database, sets the keepalive interval I directly
in that database, then starts each node's ``appliance-agent`` as a separate process.

Every node runs the primary-only demo service (``python -m appliance.ha.demo_service <shared log>``),
which writes to one shared log while the node's fence allows it. That log tells an outside observer WHO
acted as primary and WHEN (see :mod:`appliance.testkit.demolog`); :meth:`HaCluster.overlaps` finds two
nodes acting at the same time (two primaries: always a failure). Times measured by the test with
``time.monotonic()`` compare directly with the log's.

Faults: :meth:`kill9`, :meth:`sigstop`/:meth:`sigcont`, :meth:`sigterm` of an agent; a partition between
one node and the database through a :class:`~appliance.testkit.tcpproxy.TcpProxy` (``proxied=`` node
names); a database failover with a :class:`~appliance.testkit.pgcluster.PgPair` (multi-host target
``--db_host h,h --db_port P1,P2``).

:meth:`HaCluster.stop_all` (SIGCONT, SIGTERM, then SIGKILL the agents; stop every node's services;
close the proxies; drop the shared database) leaves nothing running, even after a failed test.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from psycopg.abc import Params

from appliance.config import Config, load_config
from appliance.db.target import DbTarget
from appliance.ha.pgstore import PgStore
from appliance.ha.settings import Setting
from appliance.ha.timing import trust_s
from appliance.services import ProcessServices
from appliance.testkit.demolog import DemoLine, Interval, intervals, read_demo_lines
from appliance.testkit.nodes import BIN, Node, Remote
from appliance.testkit.pgcluster import PgCluster, PgPair, Statement
from appliance.testkit.pghost import free_port
from appliance.testkit.tcpproxy import TcpProxy

SCHEMA = "appliance"
_T = TypeVar("_T")
_LIVE: set[HaCluster] = set()


@atexit.register
def _leftovers() -> None:  # last line of defence if a fixture finalizer never ran
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop_all()


class Agent:
    """One ``appliance-agent`` process (running, stopped or gone)."""

    def __init__(self, proc: subprocess.Popen[bytes], started: float) -> None:
        self.proc = proc
        self.started = started
        self.stopped = False  # SIGSTOPped by the test

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class HaNode:
    """An app node of the cluster: a :class:`Node` (composition) plus its agent and its DB target."""

    def __init__(self, base: Path, name: str, local: PgCluster, demo_log: Path, health_port: int | None = None) -> None:
        self.node = Node(base, name, local)
        self.name = name
        # The node's configuration, with the demo service as its primary-only service.
        text = self.node.config_path.read_text()
        demo = json.dumps([sys.executable, "-m", "appliance.ha.demo_service", str(demo_log)])
        old = 'name = "demo"\ncommand = ["/bin/sleep", "3600"]'
        assert old in text, "appliance.testkit.nodes.Node changed its configuration"
        text = text.replace(old, f'name = "demo"\ncommand = {demo}')
        self.health_port = health_port  # the agent's health endpoint on 127.0.0.1, if any
        if health_port is not None:
            text += f'[health]\nlisten = "127.0.0.1:{health_port}"\n'
        self.join_port = free_port()  # the node's join service (listening only while its codes are outstanding)
        text += f'[join]\nlisten = "127.0.0.1:{self.join_port}"\n'
        self.node.config_path.write_text(text)
        self.node.config = load_config(self.node.config_path)
        self.agent: Agent | None = None
        self.agent_log = self.node.dir / "agent.log"
        self.proxy: TcpProxy | None = None
        self.node_id = ""

    @property
    def dir(self) -> Path:
        return self.node.dir

    @property
    def state(self) -> Path:
        return self.node.state

    @property
    def config(self) -> Config:
        return self.node.config

    def sh(self, line: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.node.sh(line, stdin=stdin)

    def status(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.state / "agent-status.json").read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def agent_alive(self) -> bool:
        return self.agent is not None and self.agent.alive()

    def log_text(self) -> str:
        try:
            return self.agent_log.read_text(errors="replace")
        except OSError:
            return ""


class HaCluster:
    """N app nodes with real agents on one shared database; see the module docstring.

    :param base: a fresh directory for the nodes' files.
    :param db: the shared database's cluster (a :class:`PgCluster`), or a :class:`PgPair` (``.primary``,
        ``.standby``): then every node's target is the multi-host ``primary,standby``.
    :param local: the cluster holding each node's own (local) database; default: ``db``'s primary.
        Give the session cluster for DB failover tests, so killing the pair's primary leaves it alone.
    :param nodes: how many app nodes.
    :param keepalive_s: the keepalive interval I, written directly into the shared database.
    :param db_check_s: the agents' DB node check interval (``db_check_interval_s``), if given.
    :param proxied: names of nodes whose DB target goes through their own :class:`TcpProxy`.
    :param priorities: the nodes' priorities (node1 first), set directly in the database, so the order of
        takeover is known (registration gives random ones). Default: node1 highest, then node2...
    :param health: give every agent a health endpoint on a free port of 127.0.0.1 (``HaNode.health_port``).
    """

    def __init__(self, base: Path, db: PgCluster | PgPair, *, local: PgCluster | None = None, nodes: int = 3,
                 keepalive_s: int = 1, db_check_s: int | None = None, proxied: Iterable[str] = (),
                 priorities: Iterable[int] | None = None, health: bool = False) -> None:
        self.pair = None if isinstance(db, PgCluster) else db
        # the read-write node of the shared database, now
        self.db: PgCluster = db if isinstance(db, PgCluster) else db.primary
        self.keepalive_s = keepalive_s
        self.db_check_s = db_check_s
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.demo_log = base / "demo.log"
        self.demo_log.touch()
        self.remote = Remote(self.db)
        self.nodes: dict[str, HaNode] = {}
        self._proxied = set(proxied)
        self._priorities = list(priorities) if priorities is not None else [100 * (nodes - i) for i in range(nodes)]
        self._local = local or self.db
        self._log_marks: dict[str, int] = {}
        self._count = nodes
        self._health = health
        self.marked = 0.0
        self.pristine = False  # for fixtures that hand out a cluster nothing was done to yet
        _LIVE.add(self)

    # --- building ----------------------------------------------------------------------------------

    def build(self, *, start: bool = True) -> HaCluster:
        """Create, init and redirect the nodes; set the interval; start the agents (unless ``start=False``)."""
        names = [f"node{i + 1}" for i in range(self._count)]
        for name in names:
            self.nodes[name] = HaNode(self.base, name, self._local, self.demo_log,
                                      free_port() if self._health else None)
        # appliance-admin init on every node, in parallel (each creates its own local database).
        procs = {name: n.node.popen("appliance-admin", "init") for name, n in self.nodes.items()}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{name}: appliance-admin init failed:\n{out}{err}"
        for name in names:
            if name in self._proxied:
                self.nodes[name].proxy = TcpProxy(self.db.port)
        first, rest = names[0], names[1:]
        done = self.redirect(first, "primary")
        assert done.returncode == 0, f"{first}: redirect failed:\n{done.stdout}{done.stderr}"
        # The secondaries in parallel: they queue on the deployment lock, but start up together.
        procs = {name: self._redirect_popen(name, "standby") for name in rest}
        for name, proc in procs.items():
            out, err = proc.communicate(self.remote.password + "\n", timeout=120)
            assert proc.returncode == 0, f"{name}: redirect failed:\n{out}{err}"
        ids = dict(self.sql("SELECT name, node_id::text FROM appliance.nodes"))
        for name, node in self.nodes.items():
            node.node_id = ids[name]
        with self.store() as store:
            for name, priority in zip(names, self._priorities, strict=False):
                store.set_priority(self.nodes[name].node_id, priority)
            if self.db_check_s is not None:
                store.seed_settings({Setting.DB_CHECK: str(self.db_check_s)})
        self.set_keepalive(self.keepalive_s)
        if start:
            for name in names:
                self.start_agent(name)
        return self

    def set_keepalive(self, seconds: int) -> None:
        """Set I as a fresh cluster's, with no transition grace (``ha set keepalive-interval`` would add one)."""
        with self.store() as store:
            store.seed_settings({Setting.KEEPALIVE: str(seconds)})
        self.keepalive_s = seconds

    def _target_args(self, name: str) -> str:
        node = self.nodes[name]
        if node.proxy is not None:
            return f"--db_host 127.0.0.1 --db_port {node.proxy.port}"
        if self.pair is not None:
            return (f"--db_host 127.0.0.1,127.0.0.1 --db_port {self.pair.primary.port},{self.pair.standby.port}")
        return f"--db_host 127.0.0.1 --db_port {self.db.port}"

    def _redirect_line(self, name: str, role: str) -> str:
        flag = "--is_primary_node" if role == "primary" else "--is_secondary_node"
        r = self.remote
        return (f"redirect {self._target_args(name)} --db_user {r.user} --db_name {r.dbname} --db_pass - "
                f"{flag} --yes")

    def redirect(self, name: str, role: str) -> subprocess.CompletedProcess[str]:
        return self.nodes[name].sh(self._redirect_line(name, role), stdin=self.remote.password + "\n")

    def _redirect_popen(self, name: str, role: str) -> subprocess.Popen[str]:
        return self.nodes[name].node.popen("appliance-shell", "-c", self._redirect_line(name, role), stdin=True)

    # --- the shared database -----------------------------------------------------------------------

    def sql(self, query: Statement, params: Params | None = None) -> list[tuple[Any, ...]]:
        """One statement on the shared database's read-write node, as superuser."""
        return self.db.sql(query, params, dbname=self.remote.dbname)

    def lease(self) -> tuple[str | None, int]:
        """(holder name or None, epoch), as the database has it now."""
        rows = self.sql("SELECT n.name, l.epoch FROM appliance.lease l LEFT JOIN appliance.nodes n"
                        " ON n.node_id = l.holder WHERE l.id = 1")
        return rows[0][0], int(rows[0][1])

    def epoch(self) -> int:
        return self.lease()[1]

    def heartbeat_seqs(self) -> dict[str, int]:
        return {name: int(seq) for name, seq in self.sql("SELECT name, heartbeat_seq FROM appliance.nodes")}

    def listening(self) -> set[str]:
        """Nodes whose agent has its LISTEN session (the notification channel) open on the shared database."""
        rows = self.sql("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                        " AND query ILIKE 'LISTEN %%' AND application_name LIKE 'appliance-agent:%%'")
        return {str(r[0]).split(":", 1)[1] for r in rows}

    def listen_age(self, name: str) -> float | None:
        """Seconds since the node's agent opened its LISTEN session (by the DB clock), None without one."""
        rows = self.sql("SELECT extract(epoch FROM now() - backend_start)::float8 FROM pg_stat_activity"
                        " WHERE datname = current_database() AND query ILIKE 'LISTEN %%'"
                        " AND application_name = %s", (f"appliance-agent:{name}",))
        return float(rows[0][0]) if rows else None

    def store(self) -> PgStore:
        """The product's HA store on the shared database (a context manager: closed after the block)."""
        target = DbTarget(hosts=("127.0.0.1",), ports=(self.db.port,), user=self.remote.user,
                          password=self.remote.password, dbname=self.remote.dbname)
        return PgStore(target, SCHEMA, application_name="hacluster-test")

    def request_handover(self, name: str | None) -> float:
        """What ``ha switchover --to NAME`` does in the database (record the successor and notify), without the
        shell's start-up time; returns when (monotonic) it committed."""
        with self.store() as store:
            store.request_handover(self.nodes[name].node_id if name else None)
        return time.monotonic()

    # --- agents ------------------------------------------------------------------------------------

    def start_agent(self, name: str) -> Agent:
        node = self.nodes[name]
        assert not node.agent_alive(), f"{name}: an agent is running already"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(node.dir)}
        with open(node.agent_log, "ab") as log:
            log.write(f"=== harness: starting appliance-agent at monotonic {time.monotonic():.3f}\n".encode())
            log.flush()
            proc = subprocess.Popen([str(BIN / "appliance-agent"), "--config", str(node.node.config_path)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        node.agent = Agent(proc, time.monotonic())
        return node.agent

    def _agent(self, name: str) -> Agent:
        agent = self.nodes[name].agent
        assert agent is not None and agent.alive(), f"{name}: its agent is not running"
        return agent

    def _signal(self, name: str, sig: signal.Signals) -> tuple[Agent, float]:
        agent = self._agent(name)
        at = time.monotonic()
        os.kill(agent.pid, sig)
        return agent, at

    def kill9(self, name: str) -> float:
        """SIGKILL the node's agent (its services keep running until their fence closes); returns when."""
        agent = self._agent(name)
        at = time.monotonic()
        os.kill(agent.pid, signal.SIGKILL)
        agent.proc.wait(timeout=10)
        return at

    def sigstop(self, name: str) -> float:
        agent, at = self._signal(name, signal.SIGSTOP)
        agent.stopped = True
        return at

    def sigcont(self, name: str) -> float:
        agent, at = self._signal(name, signal.SIGCONT)
        agent.stopped = False
        return at

    def sigterm(self, name: str) -> float:
        """SIGTERM the node's agent; returns when it was sent (see :meth:`wait_exit`)."""
        return self._signal(name, signal.SIGTERM)[1]

    def wait_exit(self, name: str, timeout: float = 30) -> int:
        agent = self.nodes[name].agent
        assert agent is not None
        return agent.proc.wait(timeout=timeout)

    def status(self, name: str, *, current: bool = True) -> dict[str, Any] | None:
        """The node's ``agent-status.json`` (None if there is none).

        ``current``: only if written by the agent running now (not left behind by a killed one).
        """
        node = self.nodes[name]
        doc = node.status()
        if current and doc is not None and (node.agent is None or doc.get("pid") != node.agent.pid):
            return None
        return doc

    def acting_nodes(self) -> list[str]:
        """Nodes whose RUNNING agent says it acts as primary (a dead agent's stale file is ignored)."""
        found = []
        for name, node in self.nodes.items():
            doc = self.status(name)
            if node.agent_alive() and doc is not None and doc.get("acting"):
                found.append(name)
        return found

    def states(self) -> dict[str, str | None]:
        """The ``state`` each running agent reports (PRIM, SECOND...)."""
        out: dict[str, str | None] = {}
        for name, node in self.nodes.items():
            doc = self.status(name)
            out[name] = doc.get("state") if doc and node.agent_alive() else None
        return out

    def primary(self) -> str | None:
        """The node acting as primary, if exactly one running agent says so."""
        acting = self.acting_nodes()
        return acting[0] if len(acting) == 1 else None

    def wait_for(self, predicate: Callable[[], _T | None], timeout: float, what: str = "", poll: float = 0.05) -> _T:
        """Poll ``predicate`` until it returns a true value; return it, or fail with the cluster's state."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what or predicate}\n"
                                     + self.describe())
            time.sleep(poll)

    def wait_stable(self, timeout: float = 20) -> str:
        """Wait until exactly one running agent acts and every other running agent reports SECOND."""

        def ok() -> str | None:
            prim = self.primary()
            if prim is None:
                return None
            others = [s for n, s in self.states().items() if n != prim and self.nodes[n].agent_alive()]
            return prim if all(s == "SECOND" for s in others) else None

        return self.wait_for(ok, timeout, "one primary and every other node SECOND")

    # --- the primary's renewals (its fence) ---------------------------------------------------------

    def fence(self, name: str) -> tuple[float, int] | None:
        """(until, epoch) of the node's fence file: ``until`` = start of its last renewal + 1.5·I (monotonic)."""
        try:
            doc = json.loads((self.nodes[name].state / "run" / "fence").read_text())
            return float(doc["until"]), int(doc["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def renewal_start(self, name: str) -> float | None:
        """Monotonic start of the node's last successful renewal (from its fence), if it holds one."""
        f = self.fence(name)
        return None if f is None else f[0] - trust_s(self.keepalive_s)

    def at_phase(self, name: str, phase: float) -> float:
        """Wait for the primary ``name``'s next renewal, then until ``phase``·I after its start; return that start.

        Fault tests use it to hit the primary at a known point of its cycle, so their timing bounds hold
        deterministically (a fault just after a renewal leaves the full lease to run out; just before, little).
        """
        before = self.fence(name)

        def renewed() -> tuple[float, int] | None:
            f = self.fence(name)
            return f if f is not None and f != before else None

        fresh = self.wait_for(renewed, 3 * self.keepalive_s + 2, f"a renewal by {name}")
        start = fresh[0] - trust_s(self.keepalive_s)
        delay = start + phase * self.keepalive_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return start

    # --- the shell ---------------------------------------------------------------------------------

    def sh(self, name: str, line: str) -> subprocess.CompletedProcess[str]:
        return self.nodes[name].sh(line)

    def get_nodes(self, name: str = "node1") -> dict[str, Any]:
        """``ha get nodes --json`` run on ``name``."""
        done = self.sh(name, "ha get nodes --json")
        assert done.returncode == 0, done.stdout + done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    # --- the observer: the shared demo log ---------------------------------------------------------

    def demo_lines(self) -> list[DemoLine]:
        return read_demo_lines(self.demo_log)

    def demo_intervals(self, since: float | None = None) -> list[Interval]:
        """Per-node acting intervals [first line, last line], split by epoch, by ``fenced`` and by gaps."""
        out = intervals(self.demo_lines())
        return out if since is None else [i for i in out if i.end >= since]

    def overlaps(self) -> list[tuple[Interval, Interval]]:
        """Pairs of intervals of two different nodes that intersect: TWO PRIMARIES (must be empty)."""
        ivs = self.demo_intervals()
        return [(a, b) for i, a in enumerate(ivs) for b in ivs[i + 1:] if a.overlaps(b)]

    def first_line_after(self, node: str, t: float, *, epoch: int | None = None) -> DemoLine | None:
        """The first demo line of ``node`` (acting, under ``epoch`` if given) at or after monotonic ``t``."""
        for line in sorted(self.demo_lines(), key=lambda x: x.mono):
            if line.node == node and line.mono >= t and line.epoch is not None and epoch in (None, line.epoch):
                return line
        return None

    def last_line(self, node: str) -> DemoLine | None:
        lines = [x for x in self.demo_lines() if x.node == node and x.epoch is not None]
        return max(lines, key=lambda x: x.mono) if lines else None

    def acting_since(self, t: float) -> set[str]:
        """Nodes with an epoch line in the demo log at or after monotonic ``t``."""
        return {x.node for x in self.demo_lines() if x.epoch is not None and x.mono >= t}

    def lines_of(self, node: str, after: float) -> list[DemoLine]:
        return [x for x in self.demo_lines() if x.node == node and x.epoch is not None and x.mono > after]

    def acting_in_log(self, within: float = 0.3) -> list[str]:
        """Nodes with an epoch line in the demo log during the last ``within`` seconds."""
        now = time.monotonic()
        return sorted({x.node for x in self.demo_lines() if x.epoch is not None and x.mono >= now - within})

    # --- the agents' logs --------------------------------------------------------------------------

    def log_events(self, name: str, needle: str) -> list[tuple[float, str]]:
        """(wall time, line) of the agent log lines of ``name`` containing ``needle``."""
        out = []
        for line in self.nodes[name].log_text().splitlines():
            if needle not in line:
                continue
            try:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            out.append((stamp, line))
        return out

    def describe(self) -> str:
        """The cluster's state for failure messages: lease, statuses, demo intervals, agent log tails."""
        parts = [f"now (monotonic) {time.monotonic():.3f}"]
        with contextlib.suppress(Exception):
            parts.append(f"lease: {self.lease()}")
        for name, node in self.nodes.items():
            parts.append(f"{name}: agent {'alive' if node.agent_alive() else 'not running'} "
                         f"status {node.status()}")
        parts.append("demo intervals: " + "; ".join(
            f"{i.node} e{i.epoch} {i.start:.3f}-{i.end:.3f}{' fenced' if i.fenced else ''}"
            for i in self.demo_intervals()[-12:]))
        for name, node in self.nodes.items():
            tail = node.log_text().splitlines()[-12:]
            parts.append(f"--- {name} agent log (tail) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # --- partitions ----------------------------------------------------------------------------------

    def partition(self, name: str, mode: str = "refuse") -> float:
        proxy = self.nodes[name].proxy
        assert proxy is not None, f"{name} is not behind a proxy (proxied=...)"
        at = time.monotonic()
        proxy.cut(mode)
        return at

    def heal(self, name: str) -> float:
        proxy = self.nodes[name].proxy
        assert proxy is not None
        proxy.restore()
        return time.monotonic()

    # --- database failover (pg_pair) ------------------------------------------------------------------

    def db_failover(self, *, promote_first: bool = False) -> tuple[float, float]:
        """kill -9 the DB primary and promote the standby (or the other way round); returns (kill, promoted).

        Both times are monotonic. Afterwards :attr:`db` is the promoted node.
        """
        assert self.pair is not None, "a DB failover needs a pg_pair"
        old, new = self.pair.primary, self.pair.standby
        with contextlib.suppress(Exception):
            old.wait_standbys(timeout=5)  # a synchronous-enough copy: the HA rows are recent on the standby
        if promote_first:
            new.promote()
            promoted = time.monotonic()
            killed = time.monotonic()
            old.kill9()
        else:
            killed = time.monotonic()
            old.kill9()
            new.promote()
            promoted = time.monotonic()
        self.db = new
        return killed, promoted

    # --- reuse between tests --------------------------------------------------------------------------

    def mark(self) -> float:
        """Start a new chapter: :meth:`log_since` shows only what the agents log from now on; returns the time."""
        self._log_marks = {name: len(node.log_text()) for name, node in self.nodes.items()}
        self.marked = time.monotonic()
        return self.marked

    def log_since(self, name: str) -> str:
        """The agent log of ``name`` since the last :meth:`mark` (all of it without one)."""
        return self.nodes[name].log_text()[self._log_marks.get(name, 0):]

    def restore_baseline(self, primary: str = "node1", timeout: float = 20) -> None:
        """Undo what a test did: heal partitions, resume and restart agents, maintenance off, every node
        back in the cluster, the settings and priorities of :meth:`build`, and ``primary`` acting with every
        other node SECOND (by a switchover if needed). Raises AssertionError if that cannot be reached.
        """
        for name, node in self.nodes.items():
            if node.proxy is not None and node.proxy.is_cut:
                node.proxy.restore()
            if node.agent is not None and node.agent.alive() and node.agent.stopped:
                self.sigcont(name)
        with self.store() as store:
            view = store.snapshot()
            if view.maintenance:
                store.set_setting(Setting.MAINTENANCE, "off")
            for row in view.nodes:
                if row.admin_state != "active":
                    store.set_admin_state(row.node_id, "active")
            if view.lease.handover_to is not None:
                store.request_handover(None)
            for name, priority in zip(self.nodes, self._priorities, strict=False):
                now = view.node(self.nodes[name].node_id)
                if now is not None and now.priority != priority:
                    store.set_priority(now.node_id, priority)
        for name, node in self.nodes.items():
            if not node.agent_alive():
                self.start_agent(name)
        current = self.wait_stable(timeout)
        if current != primary:
            done = self.sh(primary, f"ha switchover --to {primary} --yes")
            assert done.returncode == 0, done.stdout + done.stderr
            self.wait_for(lambda: self.wait_stable(timeout) == primary, timeout, f"{primary} primary again")
        # Its primary-only service really runs. An agent can believe it acts while its service is gone (a
        # product bug, see test_ha_agents); a restarted agent starts the services afresh.
        try:
            self.wait_for(lambda: self.acting_in_log() == [primary], 1, f"{primary}'s demo service writing")
        except AssertionError:
            self.kill9(primary)
            self.start_agent(primary)
            self.wait_for(lambda: self.acting_in_log() == [primary], timeout, f"{primary}'s demo service writing")
            self.wait_stable(timeout)

    # --- the end -------------------------------------------------------------------------------------

    def stop_all(self, *, drop: bool = True) -> None:
        """Stop every agent (SIGCONT, SIGTERM, then SIGKILL) and every service; close proxies; drop the DB."""
        agents = [n.agent for n in self.nodes.values() if n.agent is not None and n.agent.alive()]
        for agent in agents:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent.pid, signal.SIGCONT)
                os.kill(agent.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for agent in agents:
            try:
                agent.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent.pid, signal.SIGKILL)
                agent.proc.wait(timeout=10)
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                ProcessServices(node.config).stop()
            if node.proxy is not None:
                node.proxy.close()
        if drop:
            with contextlib.suppress(Exception):
                self.db.drop_database(self.remote.dbname)
                self.db.drop_role(self.remote.user)
            for node in self.nodes.values():  # the nodes' local databases
                local = self._local
                with contextlib.suppress(Exception):
                    cfg = node.config.local_db
                    local.drop_database(cfg.name)
                    local.drop_role(cfg.user)
        _LIVE.discard(self)


def new_base(prefix: str = "hacluster-") -> Path:
    """A fresh directory for a cluster's files (outside pytest's tmp_path, e.g. for the benchmark)."""
    return Path(tempfile.mkdtemp(prefix=prefix + uuid.uuid4().hex[:4] + "-"))
