"""Watching every configured database host all the time, without ever blocking the HA loop.

One thread per host keeps its own small connection to that host (autocommit, read-only queries, the HA
timeouts) and asks it, every poll interval, whether it is in recovery, its timeline and its system
identifier. The HA loop reads the latest answers (:meth:`DbWatch.states`) at no cost; before the HA
store opens a new connection it asks for answers newer than that moment (:meth:`DbWatch.fresh_states`),
bounded by the connect timeout, so a reconnect re-checks every host first.

The poll interval is the smaller of the keepalive interval and the cluster's DB check interval: a second
read-write node (an old primary started again after a failover) is seen within one interval. A host
that does not answer is retried at the same pace, in its own thread, so a black-holed host costs the HA
loop nothing. Connections per agent: one per configured host, on top of the store's and the listener's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.db.connect import connect
from appliance.db.errors import DbError, error_from_exception
from appliance.db.target import DbTarget, Timeouts
from appliance.ha.dbnodes import HostState

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("appliance.agent")

QUIET_WAIT_S = 0.3  # how long a reconnect waits for a host that did not answer last time either

# Recovery state, timeline and system identifier in one round trip. The timeline of a primary is read
# from its current WAL file name (exact right after a promotion); a standby's from its last restartpoint.
_STATE_SQL = (
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id::bigint FROM pg_control_checkpoint())"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,"
    " (SELECT system_identifier::text FROM pg_control_system())"
)


def read_state(conn: psycopg.Connection[Any], host: str, port: int, samples: int = 1) -> HostState:
    """One host's state over an open connection (raises psycopg.Error); ``latency_ms`` is the median round
    trip of ``samples`` queries."""
    started = time.perf_counter()
    row = conn.execute(_STATE_SQL).fetchone()
    rtts = [(time.perf_counter() - started) * 1000]
    for _ in range(samples - 1):
        t0 = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        rtts.append((time.perf_counter() - t0) * 1000)
    latency = sorted(rtts)[len(rtts) // 2]
    assert row is not None
    return HostState(host, port, True, not bool(row[0]), None if row[1] is None else int(row[1]),
                     None if row[2] is None else str(row[2]), round(latency, 3))


class HostWatcher:
    """One host, one thread, one connection; the latest :class:`HostState` in :attr:`state`."""

    def __init__(self, target: DbTarget, host: str, port: int, *, application_name: str,
                 timeouts: Callable[[], Timeouts], interval: Callable[[], float],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.target = target.for_host(host, port)
        self.host, self.port = host, port
        self.application_name = application_name
        self.timeouts, self.interval, self.on_change = timeouts, interval, on_change
        self.state = HostState(host, port, False, error="not checked yet")
        self.polled_at = 0.0  # monotonic start of the poll that produced ``state`` (0: none yet)
        self._conn: psycopg.Connection[Any] | None = None
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"dbwatch-{host}:{port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poll_now(self) -> None:
        self._wake.set()

    def wait_polled_after(self, since: float, deadline: float) -> bool:
        """Wait until a poll that started at or after ``since`` has finished (or ``deadline`` passed)."""
        with self._done:
            while self.polled_at < since:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=self.timeouts().effective_connect_timeout + 2)
        self._drop()

    def _run(self) -> None:
        while not self._stop:
            self._wake.clear()  # before the poll: a request made while it runs wakes the next one at once
            started = time.monotonic()
            state = self._poll()
            with self._done:
                changed = (state.reachable, state.writable, state.timeline) != \
                    (self.state.reachable, self.state.writable, self.state.timeline)
                if changed and self.polled_at:
                    logger.info("database node %s: %s", state.describe(),
                                ("read-write" if state.writable else "read-only") if state.reachable
                                else f"not answering ({state.error})")
                self.state, self.polled_at = state, started
                self._done.notify_all()
            if changed:
                self.on_change()  # the agent decides again now, not at its next tick
            self._wake.wait(max(0.05, self.interval() - (time.monotonic() - started)))

    def _poll(self) -> HostState:
        import psycopg  # deferred like everywhere: loaded by the agent's store long before this runs

        failure: DbError | None = None
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._drop()
                self._conn = connect(self.target, application_name=self.application_name, timeouts=self.timeouts(),
                                     read_write=False, autocommit=True)
            return read_state(self._conn, self.host, self.port)
        except DbError as exc:
            failure = exc
        except psycopg.Error as exc:
            failure = error_from_exception(exc, self.target, timeouts=self.timeouts())
        self._drop()
        return HostState(self.host, self.port, False, error=failure.message if failure else "unknown error")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass


class DbWatch:
    """A :class:`HostWatcher` for every host of a multi-host target."""

    def __init__(self, target: DbTarget, *, application_name: str, timeouts: Callable[[], Timeouts],
                 interval: Callable[[], float], on_change: Callable[[], None] = lambda: None) -> None:
        self.timeouts = timeouts
        self.watchers = [HostWatcher(target, host, port, application_name=application_name, timeouts=timeouts,
                                     interval=interval, on_change=on_change) for host, port in target.host_ports()]
        for watcher in self.watchers:
            watcher.start()

    def states(self) -> list[HostState]:
        """The latest answer of every host (some may be an interval old)."""
        return [w.state for w in self.watchers]

    def fresh_states(self) -> list[HostState]:
        """Every host asked again now; waits for the answers, at most one connect plus one statement timeout.

        A host that did not answer last time either (a dead or black-holed machine: its watcher may be
        stuck in a connect timeout) is given only ``QUIET_WAIT_S``: its "not answering" is recent, and the
        HA loop waiting for it would cost the primary its trust window. A host that has not answered by
        its deadline counts as not answering.
        """
        since = time.monotonic()
        for watcher in self.watchers:
            watcher.poll_now()
        timeouts = self.timeouts()
        deadline = since + timeouts.effective_connect_timeout + timeouts.statement_timeout + 0.5
        fresh = []
        for watcher in self.watchers:
            quiet = not watcher.state.reachable and watcher.polled_at > 0
            if watcher.wait_polled_after(since, min(deadline, since + QUIET_WAIT_S) if quiet else deadline):
                fresh.append(watcher.state)
            elif quiet:
                fresh.append(watcher.state)
            else:
                fresh.append(HostState(watcher.host, watcher.port, False, error="no answer in time"))
        return fresh

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.close()


def probe_hosts(target: DbTarget, timeouts: Timeouts, application_name: str) -> list[HostState]:
    """Every host of ``target`` asked once, in parallel, each on a connection opened and closed for it
    (the shell's reports; the agent keeps its watchers instead). One dead host costs one connect timeout."""
    from concurrent.futures import ThreadPoolExecutor  # deferred: the thread pool machinery is not cheap

    import psycopg

    def one(host_port: tuple[str, int]) -> HostState:
        host, port = host_port
        single = target.for_host(host, port)
        failure: DbError | None = None
        try:
            with connect(single, application_name=application_name, timeouts=timeouts, read_write=False,
                         autocommit=True) as conn:
                return read_state(conn, host, port, samples=3)
        except DbError as exc:
            failure = exc
        except psycopg.Error as exc:
            failure = error_from_exception(exc, single, timeouts=timeouts)
        return HostState(host, port, False, error=failure.message)

    pairs = target.host_ports()
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return list(pool.map(one, pairs))
