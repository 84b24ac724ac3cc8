"""The agent's event outbox: events are kept on this node's disk until the database has them.

The HA loop hands every event it sees (a takeover, a step-down, a database failover...) to
:meth:`Outbox.add`, which appends one JSON line to ``<state_dir>/events-outbox.jsonl`` and returns: a
write to the page cache, never a wait for the database, so an event never slows the loop. The agent's
background work (:mod:`appliance.ha.background`) writes them to the database in order and forgets them
once it has answered; an event seen while the database is unreachable, or while the agent is killed
before the write, is written later, and once (the store skips an id it has already).

Time: an event remembers this node's monotonic clock and the boot it happened in; when it is written,
its age on that clock gives its time by the database's clock (``now() - age``). An event from an
earlier boot (the agent killed, the machine rebooted) has no comparable monotonic time: its wall
time is used instead.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance.clock import Clock
from appliance.fsutil import write_atomic
from appliance.ha.events import EventKind, NewEvent

logger = logging.getLogger("appliance.agent")

OUTBOX_FILE = "events-outbox.jsonl"
MAX_KEPT = 5_000  # a database away for days must not fill the disk: the oldest are dropped (and logged)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class Outbox:
    def __init__(self, state_dir: Path, clock: Clock) -> None:
        self.path = state_dir / OUTBOX_FILE
        self.clock = clock
        self.boot = boot_id()
        self._lock = threading.Lock()
        self._kept: list[tuple[NewEvent, float | None]] = []  # (event, monotonic time if of this boot)
        self._load()

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                doc: dict[str, Any] = json.loads(line)
                event = NewEvent(EventKind(doc["kind"]), str(doc["node"]), doc.get("node_id"),
                                 dict(doc.get("details") or {}), doc.get("epoch"), doc.get("duration_s"),
                                 str(doc["id"]), dedup_key=doc.get("dedup_key"),
                                 wall_time=datetime.fromisoformat(doc["wall"]))
                mono = float(doc["mono"]) if doc.get("boot") == self.boot and self.boot else None
            except (ValueError, KeyError, TypeError):
                logger.warning("dropping an unreadable line of %s", self.path)
                continue
            self._kept.append((event, mono))

    def add(self, event: NewEvent) -> None:
        """Keep ``event`` (seen now); never raises (a full disk costs the event, logged, not the loop)."""
        mono, wall = self.clock.monotonic(), self.clock.now()
        doc = {"id": event.id, "kind": event.kind.value, "node": event.node, "node_id": event.node_id,
               "details": dict(event.details), "epoch": event.epoch, "duration_s": event.duration_s,
               "dedup_key": event.dedup_key, "mono": mono, "boot": self.boot, "wall": wall.isoformat()}
        with self._lock:
            self._kept.append((replace(event, wall_time=wall), mono))
            if len(self._kept) > MAX_KEPT:
                dropped = self._kept.pop(0)[0]
                logger.error("event outbox full: dropped %s event %s", dropped.kind.value, dropped.id)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, (json.dumps(doc, default=str) + "\n").encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                logger.warning("cannot keep the %s event in %s: %s", event.kind.value, self.path, exc.strerror)

    def pending(self) -> list[NewEvent]:
        """The kept events, oldest first, each with its age now (or its wall time from another boot)."""
        now = self.clock.monotonic()
        with self._lock:
            return [replace(e, age_s=max(0.0, now - mono), wall_time=None) if mono is not None else e
                    for e, mono in self._kept]

    def written(self, ids: set[str]) -> None:
        """Forget the events the database has now."""
        if not ids:
            return
        with self._lock:
            self._kept = [(e, m) for e, m in self._kept if e.id not in ids]
            try:
                if self._kept:
                    write_atomic(self.path, "".join(self._line(e, m) for e, m in self._kept), mode=0o600)
                else:
                    self.path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("cannot rewrite %s: %s", self.path, exc.strerror)

    def _line(self, event: NewEvent, mono: float | None) -> str:
        return json.dumps({"id": event.id, "kind": event.kind.value, "node": event.node, "node_id": event.node_id,
                           "details": dict(event.details), "epoch": event.epoch, "duration_s": event.duration_s,
                           "dedup_key": event.dedup_key, "mono": mono or 0.0, "boot": self.boot if mono else "",
                           "wall": (event.wall_time or self.clock.now()).isoformat()}, default=str) + "\n"

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)
