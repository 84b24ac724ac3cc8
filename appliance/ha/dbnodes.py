"""Which database node the cluster writes to: the rule, as a pure function over what the probes saw.

A shared database given as several hosts (a repmgr or Patroni pair) has one read-write node in steady
state. libpq's own choice (``target_session_attrs=read-write``) is "the first read-write host in the
list", which is wrong exactly when it matters: an old primary started again as a primary after a
failover is read-write too, and it is usually first in the list. Heartbeats and lease changes written
there are thrown away when it is rewound, and the same epoch could be issued on two histories.

So the HA store never lets libpq choose. Before it (re)connects it asks :func:`choose_writer`, over a
fresh probe of every configured host, and connects to the one host it names:

* a host counts only if it answers, is read-write, and belongs to the cluster's database (its system
  identifier is the one the schema was deployed on, when known);
* **the node this agent last followed** is kept while it is read-write and every other read-write node
  is behind it (a lower timeline): an old primary that comes back read-write is stale, never followed;
* **another node** is followed only if it is the only read-write one and not behind the followed node
  (a lower timeline would be a stale primary seen through a partition), or if it is strictly ahead of
  every other read-write node (the promoted standby while the old primary is still up);
* two read-write nodes that nothing tells apart (same timeline, nothing followed): **write to neither**.

Two read-write nodes are a split brain of the database whether or not one of them can be chosen: the
alarm names both and their timelines, so the admin can stop or rejoin the stale one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostState:
    """What one probe of one configured database host saw."""

    host: str
    port: int
    reachable: bool
    writable: bool = False  # read-write (not in recovery)
    timeline: int | None = None
    system_id: str | None = None  # pg_control_system(): the same on a primary and its standbys
    latency_ms: float | None = None
    error: str | None = None  # why it did not answer (one line, no secret)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def describe(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        timeline = f" timeline {self.timeline}" if self.timeline is not None else ""
        return f"{host}:{self.port}{timeline}"


@dataclass(frozen=True)
class Followed:
    """The database node this agent writes to, as it was when it was last followed."""

    host: str
    port: int
    timeline: int | None = None
    system_id: str | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class Verdict(enum.Enum):
    KEEP = "keep"  # write to the node followed so far
    FOLLOW = "follow"  # a database failover: write to another node from now on
    NONE = "none"  # no read-write node of this cluster answers: write nowhere (and wait)
    REFUSE = "refuse"  # read-write nodes exist but none may be written to (alarm)


@dataclass(frozen=True)
class WriterChoice:
    verdict: Verdict
    writer: HostState | None = None  # for KEEP and FOLLOW
    alarm: str | None = None  # set while the database is split (two read-write nodes) or refused
    stale: tuple[HostState, ...] = ()  # read-write nodes that are not written to

    @property
    def split_brain(self) -> bool:
        return self.alarm is not None


def choose_writer(hosts: Sequence[HostState], followed: Followed | None,
                  system_id: str | None = None) -> WriterChoice:
    """The rule of the module docstring.

    :param hosts: one fresh probe per configured host.
    :param followed: the node written to so far (None: none yet).
    :param system_id: the cluster's system identifier (None: unknown, not checked).
    """
    writers = [h for h in hosts if h.reachable and h.writable and (system_id is None or h.system_id in (None,
                                                                                                        system_id))]
    foreign = [h for h in hosts if h.reachable and h.writable and h not in writers]
    if not writers:
        if foreign:
            return WriterChoice(Verdict.REFUSE, alarm=_foreign_alarm(foreign), stale=tuple(foreign))
        return WriterChoice(Verdict.NONE)
    current = next((h for h in writers if followed is not None and h.address == followed.address), None)
    others = [h for h in writers if h is not current]
    split = len(writers) > 1
    if current is not None:
        if all(_ahead(current, h) for h in others):
            return _choice(Verdict.KEEP, current, others, split)
        best = _strictly_best(writers)
        if best is None:
            return WriterChoice(Verdict.REFUSE, alarm=_ambiguous_alarm(writers), stale=tuple(writers))
        return _choice(Verdict.FOLLOW, best, [h for h in writers if h is not best], split)
    if len(writers) == 1:
        only = writers[0]
        if followed is not None and followed.timeline is not None and only.timeline is not None \
                and only.timeline < followed.timeline:
            return WriterChoice(Verdict.REFUSE, alarm=_behind_alarm(only, followed), stale=(only,))
        return _choice(Verdict.FOLLOW if followed is not None else Verdict.KEEP, only, [], False)
    best = _strictly_best(writers)
    if best is None or (followed is not None and followed.timeline is not None and best.timeline is not None
                        and best.timeline < followed.timeline):
        return WriterChoice(Verdict.REFUSE, alarm=_ambiguous_alarm(writers), stale=tuple(writers))
    return _choice(Verdict.FOLLOW if followed is not None else Verdict.KEEP, best,
                   [h for h in writers if h is not best], True)


def _choice(verdict: Verdict, writer: HostState, stale: list[HostState], split: bool) -> WriterChoice:
    alarm = None
    if split:
        alarm = (f"two read-write database nodes: {', '.join(h.describe() for h in [writer, *stale])}; "
                 f"writing to {writer.describe()} only (the others are behind it)")
    return WriterChoice(verdict, writer, alarm, tuple(stale))


def _ahead(a: HostState, b: HostState) -> bool:
    return a.timeline is not None and b.timeline is not None and a.timeline > b.timeline


def _strictly_best(writers: Sequence[HostState]) -> HostState | None:
    """The one read-write node on the highest timeline, if exactly one is (None: a tie or unknown)."""
    known = [h for h in writers if h.timeline is not None]
    if len(known) != len(writers) or not known:
        return None
    top = max(h.timeline for h in known if h.timeline is not None)
    best = [h for h in known if h.timeline == top]
    return best[0] if len(best) == 1 else None


def _ambiguous_alarm(writers: Sequence[HostState]) -> str:
    return (f"two read-write database nodes: {', '.join(h.describe() for h in writers)}; nothing tells which "
            "one is current, so writing to neither")


def _behind_alarm(only: HostState, followed: Followed) -> str:
    host = f"[{followed.host}]" if ":" in followed.host else followed.host
    return (f"the only read-write database node {only.describe()} is behind the one this cluster followed "
            f"({host}:{followed.port} timeline {followed.timeline}): it is a stale primary; writing to neither")


def _foreign_alarm(foreign: Sequence[HostState]) -> str:
    return (f"read-write database node(s) {', '.join(h.describe() for h in foreign)} belong to another database "
            "cluster (system identifier); writing to neither")
