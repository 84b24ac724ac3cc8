"""Following the database's own nodes: which one the HA store writes to, DB failover and split brain.

For a target with several hosts (a repmgr or Patroni pair) the agent watches every host all the time
(:mod:`appliance.ha.dbwatch`) and applies the rule of :mod:`appliance.ha.dbnodes` twice:

* **at every tick**, over the latest answers: a new read-write node is a database failover (the store
  drops its connection, and nobody is judged dead for :func:`~appliance.ha.timing.db_failover_grace_s`:
  everyone's heartbeats paused while the database moved); two read-write nodes are a split brain of the
  database (an alarm naming both, and writes go only to the node ahead, or to neither);
* **before the store opens a connection** (:meth:`DbMonitor.pick_writer`), over fresh answers from every
  host: the store connects to the one host the rule names, never to "the first read-write host".

The node followed last is remembered on the node's own disk (``<state_dir>/db-followed.json``, written
first by ``redirect``), so an agent that restarts during a split brain still knows which node is
current. Leaving a time of writing to neither opens the same grace window as a database failover.

A single-host target has nothing to choose: the store connects as it is told, and the monitor only keeps
the host's latest answer (for the metrics).
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.db.target import DbTarget
from appliance.fsutil import write_atomic
from appliance.ha.dbnodes import Followed, HostState, Verdict, WriterChoice, choose_writer
from appliance.ha.dbwatch import DbWatch
from appliance.ha.events import EventKind
from appliance.ha.runtime import Runtime
from appliance.ha.store import StoreUnavailable
from appliance.ha.timing import db_failover_grace_s

logger = logging.getLogger("appliance.agent")

FOLLOWED_FILE = "db-followed.json"


class Outcome(enum.Enum):
    NOTHING = "nothing"
    FOLLOWED = "followed"  # the read-write node changed: a database failover
    REFUSED = "refused"  # no node may be written to (alarm)
    RESOLVED = "resolved"  # writing again after a time of writing to neither


def target_key(target: DbTarget, schema: str) -> str:
    """What the followed node belongs to: another database (a redirect) starts with no memory."""
    return f"{target.user}@{target.hosts_text()}/{target.dbname}/{schema}"


class FollowedFile:
    """``<state_dir>/db-followed.json``: the database node this node last wrote to, for one target."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FOLLOWED_FILE

    def load(self, key: str) -> Followed | None:
        try:
            doc: Any = json.loads(self.path.read_text())
            if doc.get("target") != key:
                return None
            return Followed(str(doc["host"]), int(doc["port"]),
                            None if doc.get("timeline") is None else int(doc["timeline"]),
                            None if doc.get("system_id") is None else str(doc["system_id"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, key: str, followed: Followed) -> None:
        doc = {"target": key, "host": followed.host, "port": followed.port, "timeline": followed.timeline,
               "system_id": followed.system_id}
        try:
            write_atomic(self.path, json.dumps(doc) + "\n", mode=0o644)
        except OSError as exc:
            logger.warning("cannot record the followed database node in %s: %s", self.path, exc.strerror)


class DbMonitor:
    """The database-node monitor of one agent. For a single-host target it only keeps the host's latest
    answer (for the metrics): there is nothing to choose."""

    def __init__(self, watch: DbWatch | None, followed_file: FollowedFile, key: str, *, multi: bool = True) -> None:
        self.watch = watch
        self.multi = multi and watch is not None
        self.file, self.key = followed_file, key
        self.followed = followed_file.load(key)
        self.alarm: str | None = None  # shown to the admin while the database is split
        self.hosts: list[HostState] = []
        self.runtime: Runtime | None = None
        # (kind, details, dedup key): every agent sees a database failover or split brain, the key makes
        # the reports of one occurrence one event.
        self.emit: Callable[[EventKind, dict[str, Any], str], None] | None = None
        self._split_key: str | None = None

    def attach(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def check(self) -> Outcome:
        """At every tick, over the latest answers (no waiting)."""
        if self.watch is None:
            return Outcome.NOTHING
        self.hosts = self.watch.states()
        if not self.multi:
            return Outcome.NOTHING
        return self._apply(self._choose(self.hosts), reconnect=True)

    def pick_writer(self) -> tuple[str, int]:
        """For the store, before it opens a connection: every host asked again now, then the rule.

        :raises StoreUnavailable: no node may be written to now (the alarm says why).
        """
        assert self.watch is not None
        self.hosts = self.watch.fresh_states()
        choice = self._choose(self.hosts)
        self._apply(choice, reconnect=False)  # the store is connecting already
        if choice.writer is None:
            reason = choice.alarm or "no read-write database node of this cluster answers"
            raise StoreUnavailable(f"HA store: {reason}", "Check the database nodes (ha get nodes).")
        return choice.writer.address

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()

    def _choose(self, hosts: list[HostState]) -> WriterChoice:
        return choose_writer(hosts, self.followed, self.followed.system_id if self.followed else None)

    def _apply(self, choice: WriterChoice, *, reconnect: bool) -> Outcome:
        runtime = self.runtime
        if choice.alarm != self.alarm:
            if choice.alarm:
                logger.error("ALARM: %s", choice.alarm)
            else:
                logger.warning("the database has one read-write node again: alarm over")
            self._alarm_event(self.alarm, choice.alarm)
            self.alarm = choice.alarm
        if runtime is None:
            return Outcome.NOTHING
        refused = choice.verdict is Verdict.REFUSE
        was_refused = runtime.local.db_alarm is not None
        runtime.set_db_alarm(choice.alarm if refused else None)
        if refused:
            return Outcome.REFUSED
        writer = choice.writer
        outcome = Outcome.NOTHING
        if writer is not None:
            followed = Followed(writer.host, writer.port, writer.timeline, writer.system_id)
            if choice.verdict is Verdict.FOLLOW:
                previous = self.followed
                grace = db_failover_grace_s(runtime.keepalive_s)
                logger.warning("database failover: the read-write node is now %s (was %s); reconnecting, "
                               "nobody is judged dead for %.0f s", writer.describe(),
                               _describe(previous), grace)
                if reconnect:
                    runtime.store.close()  # the next store call reconnects through pick_writer
                runtime.grace(grace)
                if self.emit is not None:
                    self.emit(EventKind.DB_FAILOVER, {"from": _describe(previous), "to": writer.describe(),
                                                      "timeline": writer.timeline},
                              f"db_failover:{writer.host}:{writer.port}:tl{writer.timeline}")
                outcome = Outcome.FOLLOWED
            if followed != self.followed:
                self.followed = followed
                self.file.save(self.key, followed)
        if was_refused:
            # Nobody wrote while the database was split: everyone's heartbeats are as old as that.
            runtime.grace(db_failover_grace_s(runtime.keepalive_s))
            return Outcome.RESOLVED if outcome is Outcome.NOTHING else outcome
        return outcome


    def _alarm_event(self, before: str | None, now: str | None) -> None:
        """The split-brain alarm raised, or its end (the same key for every node that sees it)."""
        if self.emit is None:
            return
        if now and not before:
            writable = sorted(f"{h.host}:{h.port}:tl{h.timeline}" for h in self.hosts if h.reachable and h.writable)
            self._split_key = "db_split_brain:" + ",".join(writable)
            self.emit(EventKind.DB_SPLIT_BRAIN, {"phase": "begin", "alarm": now, "nodes": writable}, self._split_key)
        elif before and not now:
            key = self._split_key or "db_split_brain:?"
            self.emit(EventKind.DB_SPLIT_BRAIN, {"phase": "end"}, key + ":end")
            self._split_key = None


def _describe(followed: Followed | None) -> str:
    if followed is None:
        return "none"
    host = f"[{followed.host}]" if ":" in followed.host else followed.host
    return f"{host}:{followed.port}" + (f" timeline {followed.timeline}" if followed.timeline is not None else "")
