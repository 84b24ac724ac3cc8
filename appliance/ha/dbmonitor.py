"""Watching the database's own nodes: follow a DB failover, and raise the alarm on a DB split brain.

Every DB check interval (a cluster setting) the agent probes each configured database host in
parallel. What it learns goes through :meth:`DbMonitor.observe`, which holds the rules:

* **one read-write node, a different one than before** (repmgr, Patroni or an admin promoted a
  standby): a database failover. The HA store drops its connection (the next call reconnects to the
  read-write node) and nobody is judged dead for a while
  (:func:`~appliance.ha.timing.db_failover_grace_s`): everyone's heartbeats paused while the database
  moved;
* **two or more read-write nodes**: a split brain of the database. Writing to either could fork the
  cluster's HA state, so the node writes to neither (:attr:`~appliance.ha.model.Local.db_alarm`) and
  decides as if the database were unreachable, until one read-write node is left;
* **no read-write node**: nothing to do here; the store's calls fail and the trust window runs out.

A switch to another database altogether (``redirect``) is not a failover: :meth:`DbMonitor.reset`
forgets the previous read-write node.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.clock import Clock
from appliance.db.connect import probe
from appliance.db.errors import DbError
from appliance.db.target import DbTarget, Timeouts
from appliance.ha.runtime import Runtime
from appliance.ha.timing import db_failover_grace_s

logger = logging.getLogger("appliance.agent")

FIRST_CHECK_S = 1.0  # before the first snapshot the interval is unknown: look again soon, not in 10 s
SPLIT_BRAIN_ALARM = "two read-write database nodes"


@dataclass(frozen=True)
class HostState:
    """One probe's result: ``writable`` None when the host did not answer."""

    host: str
    port: int
    writable: bool | None
    timeline: int | None = None
    latency_ms: float | None = None


class Outcome(enum.Enum):
    NOTHING = "nothing"
    FOLLOWED = "followed"  # the read-write node changed: a database failover
    SPLIT_BRAIN = "split_brain"  # more than one read-write node (alarm raised)
    RESOLVED = "resolved"  # the split brain is over (alarm cleared)


Prober = Callable[[DbTarget], list[HostState]]


def probe_hosts(target: DbTarget, timeouts: Timeouts) -> list[HostState]:
    """Probe every host of ``target`` at once (one dead host costs one connect timeout, not one per host)."""
    from concurrent.futures import ThreadPoolExecutor  # deferred: the thread pool machinery is not cheap

    def one(host_port: tuple[str, int]) -> HostState:
        host, port = host_port
        try:
            info = probe(target, host, port, application_name="appliance-agent:probe", timeouts=timeouts,
                         samples=1)
        except DbError:
            return HostState(host, port, None)
        return HostState(host, port, not info.is_in_recovery, info.timeline, info.latency_ms)

    pairs = target.host_ports()
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return list(pool.map(one, pairs))


class DbMonitor:
    """The DB-node monitor of one agent; :meth:`check` probes when due and applies the outcome."""

    def __init__(self, clock: Clock, prober: Prober) -> None:
        self.clock = clock
        self.prober = prober
        self.writer: tuple[str, int] | None = None  # the read-write DB node in use, as last probed
        self.split_brain = False
        self.next_check = 0.0

    def reset(self) -> None:
        """Another database altogether (redirect), not a failover of the same one: forget the writer."""
        self.writer, self.split_brain, self.next_check = None, False, 0.0

    def due(self) -> bool:
        return self.clock.monotonic() >= self.next_check

    def seconds_to_next(self) -> float:
        return max(0.0, self.next_check - self.clock.monotonic())

    def check(self, runtime: Runtime, target: DbTarget) -> Outcome:
        """Probe every configured host (when due) and carry the outcome out on ``runtime``."""
        if not self.due():
            return Outcome.NOTHING
        view = runtime.view
        self.next_check = self.clock.monotonic() + (view.db_check_s if view else FIRST_CHECK_S)
        previous = self.writer
        outcome = self.observe(self.prober(target))
        runtime.set_db_alarm(SPLIT_BRAIN_ALARM if self.split_brain else None)
        if outcome is Outcome.FOLLOWED:
            assert self.writer is not None and previous is not None
            grace = db_failover_grace_s(runtime.keepalive_s)
            logger.warning("database failover: the read-write node is now %s:%d (was %s:%d); reconnecting, "
                           "nobody is judged dead for %.0f s", *self.writer, *previous, grace)
            runtime.store.close()  # the next store call reconnects, and finds the new read-write node
            runtime.grace(grace)
        return outcome

    def observe(self, hosts: Sequence[HostState]) -> Outcome:
        """The rules above, over one round of probes (no I/O); logs the alarm and its end."""
        writers = [h for h in hosts if h.writable]
        if len(writers) > 1:
            if not self.split_brain:
                logger.error("ALARM: %d read-write database nodes (%s); writing to neither until one is left",
                             len(writers), ", ".join(f"{h.host}:{h.port} timeline {h.timeline}" for h in writers))
            self.split_brain = True
            return Outcome.SPLIT_BRAIN
        outcome = Outcome.NOTHING
        if self.split_brain:
            logger.warning("one read-write database node again: resuming")
            self.split_brain = False
            outcome = Outcome.RESOLVED
        if not writers:
            return outcome
        writer = (writers[0].host, writers[0].port)
        previous, self.writer = self.writer, writer
        if previous is not None and writer != previous:
            return Outcome.FOLLOWED
        return outcome
