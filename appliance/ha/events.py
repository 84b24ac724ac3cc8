"""The cluster's HA events: what they are, what each records, how long they are kept. Pure.

Every HA event is recorded once, in the cluster's database, by the database clock (``events``): the
node that saw it writes it (the agent through its outbox, :mod:`appliance.ha.outbox`, so that an event
seen while the database is unreachable is written when it is back; the shell in the same transaction as
the change it reports). Kinds are stable snake_case words (the JSON of ``ha get events`` and of every
notification carries them); ``details`` is a small JSON object whose keys depend on the kind.

An occurrence that several nodes see (the database failing over, a split brain and its end) carries a
``dedup_key``: the stores keep the first report of a key within :data:`DEDUP_WINDOW_S` and drop the
others, so it is still recorded once.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EventKind(enum.StrEnum):
    TAKEOVER = "takeover"  # a node took the lease by itself (the primary died or stopped)
    STEP_DOWN = "step_down"  # a primary stopped acting: fence expired, lost the lease
    SWITCHOVER = "switchover"  # a planned handover: requested, done (with its duration), withdrawn
    MAINTENANCE = "maintenance"  # maintenance mode on/off
    NODE_STOP = "node_stop"  # ha stop, boot start disabled, or the agent stopping cleanly
    NODE_START = "node_start"  # ha start, or the agent starting (with its boot-start policy)
    JOIN = "join"  # a node joined with a join code
    LEAVE = "leave"  # a node left the cluster (ha leave)
    SETTING = "setting"  # a cluster setting or a node's priority/boot start changed
    DB_FAILOVER = "db_failover"  # the agents followed the database to another node
    DB_SPLIT_BRAIN = "db_split_brain"  # two read-write database nodes: the alarm, and its end
    REDIRECT = "redirect"  # a node moved onto this cluster's database (redirect)


KINDS: tuple[str, ...] = tuple(k.value for k in EventKind)

# Retention: the stores prune beyond either bound whenever they record events.
MAX_EVENTS = 10_000
MAX_AGE_S = 90 * 86_400.0
# Reports of one occurrence (same dedup key) by several nodes within this window are one event.
DEDUP_WINDOW_S = 120.0


@dataclass(frozen=True)
class NewEvent:
    """An event to record.

    :param epoch: the lease epoch it belongs to; None: the lease's epoch when it is written.
    :param age_s: how long ago it happened, on the reporting node's monotonic clock (an event kept
        while the database was unreachable is written at ``now() - age_s``).
    :param wall_time: when it happened by the reporting node's wall clock, used instead of ``age_s``
        only when the age cannot be known (kept across a reboot).
    """

    kind: EventKind
    node: str
    node_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    duration_s: float | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    age_s: float = 0.0
    wall_time: datetime | None = None
    dedup_key: str | None = None


@dataclass(frozen=True)
class Event:
    """An event as recorded (``time`` by the database clock)."""

    id: str
    seq: int
    time: datetime
    node: str
    kind: str
    epoch: int | None
    details: Mapping[str, Any]
    duration_s: float | None
    deliveries: Mapping[str, str] = field(default_factory=dict)  # channel -> pending | delivered | failed

    def document(self) -> dict[str, Any]:
        """The event as JSON (``ha get events --json``, and the body of every notification)."""
        return {"id": self.id, "time": self.time.isoformat(), "node": self.node, "kind": self.kind,
                "epoch": self.epoch, "details": dict(self.details), "duration_s": self.duration_s,
                "summary": summary(self.kind, self.details, self.duration_s)}


def summary(kind: str, details: Mapping[str, Any], duration_s: float | None = None) -> str:
    """One line for people (tables, e-mail subjects)."""
    d = dict(details)
    took = f" in {duration_s:.2f} s" if duration_s is not None else ""
    if kind == EventKind.TAKEOVER:
        source = f" from {d['from']}" if d.get("from") else ""
        return f"took over{source} ({d.get('reason', 'the lease was free')})"
    if kind == EventKind.STEP_DOWN:
        return f"stepped down: {d.get('reason', '?')}" + (f" ({d['detail']})" if d.get("detail") else "")
    if kind == EventKind.SWITCHOVER:
        return f"switchover {d.get('phase', '?')}: {d.get('from', '?')} -> {d.get('to', '?')}{took}"
    if kind == EventKind.MAINTENANCE:
        return "maintenance mode " + ("on" if d.get("on") else "off")
    if kind in (EventKind.NODE_STOP, EventKind.NODE_START):
        return str(d.get("why", ""))
    if kind == EventKind.JOIN:
        return f"joined with join code {d.get('code_id', '?')}" + (f" of {d['issuer']}" if d.get("issuer") else "")
    if kind == EventKind.LEAVE:
        return "left the cluster" + (f"; handed over to {d['handed_over_to']}" if d.get("handed_over_to") else "")
    if kind == EventKind.SETTING:
        target = f" of {d['node']}" if d.get("node") else ""
        return f"{d.get('key', '?')}{target}: {d.get('old', '-')} -> {d.get('new', '-')}"
    if kind == EventKind.DB_FAILOVER:
        return f"database failover followed: {d.get('from', '?')} -> {d.get('to', '?')}"
    if kind == EventKind.DB_SPLIT_BRAIN:
        return ("DB split brain ended" if d.get("phase") == "end" else "DB split brain: ") + \
            ("" if d.get("phase") == "end" else str(d.get("alarm", "")))
    if kind == EventKind.REDIRECT:
        return f"redirected onto this cluster as {d.get('role', '?')}"
    return str(d.get("why", ""))
