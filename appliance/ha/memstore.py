"""An in-memory :class:`~appliance.ha.store.HaStore` for unit tests and the deterministic simulation.

Each method runs under one lock, which gives it the atomicity the contract asks of the database.
Its "database clock" is the injected clock's wall time (:meth:`Clock.now`), as a PostgreSQL store's
would be the server's ``now()``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.clock import Clock
from appliance.ha.model import ClusterView, Lease, NodeState
from appliance.ha.store import HaStore, NotRegistered


@dataclass
class _Row:
    node_id: str
    name: str
    priority: int
    role: str = "standby"
    admin_state: str = "active"
    last_heartbeat: datetime | None = None
    heartbeat_seq: int = 0


class InMemoryStore(HaStore):
    def __init__(self, clock: Clock, keepalive_s: float = 10.0) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self.holder: str | None = None
        self.epoch = 0
        self.expires_at: datetime | None = None
        self.handover_to: str | None = None
        self.settings = {"keepalive_interval_s": str(keepalive_s), "maintenance": "off", "db_check_interval_s": "10"}
        self._previous_keepalive: tuple[float, datetime] | None = None

    # --- set-up (what registration does in the real schema) -----------------------------------------

    def register(self, node_id: str, name: str, priority: int, role: str = "standby") -> None:
        with self._lock:
            self._rows[node_id] = _Row(node_id, name, priority, role, last_heartbeat=self.clock.now())

    # --- the contract ------------------------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        with self._lock:
            row = self._row(node_id)
            row.last_heartbeat = self.clock.now()
            row.heartbeat_seq += 1

    def snapshot(self) -> ClusterView:
        with self._lock:
            now = self.clock.now()
            nodes = tuple(
                NodeState(r.node_id, r.name, r.priority, r.role, r.admin_state,
                          None if r.last_heartbeat is None else (now - r.last_heartbeat).total_seconds(),
                          r.heartbeat_seq)
                for r in sorted(self._rows.values(), key=lambda r: r.name)
            )
            remaining = None if self.expires_at is None else (self.expires_at - now).total_seconds()
            keepalive = float(self.settings["keepalive_interval_s"])
            judge = keepalive
            if self._previous_keepalive is not None:
                previous, changed_at = self._previous_keepalive
                # While the change propagates, judge liveness by the longer of the two intervals.
                if (now - changed_at).total_seconds() <= 2 * max(previous, keepalive):
                    judge = max(previous, keepalive)
            return ClusterView(nodes, Lease(self.holder, self.epoch, remaining, self.handover_to), keepalive,
                               self.settings.get("maintenance") == "on", judge_keepalive_s=judge,
                               db_check_s=float(self.settings["db_check_interval_s"]))

    def try_acquire(self, node_id: str, expected_epoch: int, ttl_s: float) -> int | None:
        with self._lock:
            self._row(node_id)
            now = self.clock.now()
            # A planned successor still waits for the holder to release (which expires the lease):
            # taking a live lease would make two primaries.
            free = self.holder is None or self.expires_at is None or self.expires_at <= now
            if self.epoch != expected_epoch or not free:
                return None
            self.holder, self.epoch = node_id, self.epoch + 1
            self.expires_at, self.handover_to = now + timedelta(seconds=ttl_s), None
            for row in self._rows.values():
                row.role = "primary" if row.node_id == node_id else "standby"
            return self.epoch

    def renew(self, node_id: str, epoch: int, ttl_s: float) -> bool:
        with self._lock:
            if self.holder != node_id or self.epoch != epoch:
                return False
            self.expires_at = self.clock.now() + timedelta(seconds=ttl_s)
            return True

    def release(self, node_id: str, epoch: int, handover_to: str | None) -> bool:
        with self._lock:
            if self.holder != node_id or self.epoch != epoch:
                return False
            if self.expires_at is not None and self.expires_at <= self.clock.now():
                return False  # already released (or lapsed): nothing to give up, nobody to wake
            self.expires_at, self.handover_to = self.clock.now(), handover_to
            return True

    def request_handover(self, target: str | None) -> None:
        with self._lock:
            if target is not None:
                self._row(target)
            self.handover_to = target

    def set_admin_state(self, node_id: str, state: str) -> None:
        if state not in ("active", "stopped"):
            raise ValueError(f"admin state must be active or stopped, not {state!r}")
        with self._lock:
            self._row(node_id).admin_state = state

    def rename(self, node_id: str, name: str) -> None:
        with self._lock:
            self._row(node_id).name = name

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            if key == "keepalive_interval_s" and float(self.settings[key]) != float(value):
                now, before = self.clock.now(), float(self.settings[key])
                if self._previous_keepalive is not None:
                    previous, changed_at = self._previous_keepalive
                    # Changed again while an earlier change still spreads: keep the longest interval.
                    if (now - changed_at).total_seconds() <= 2 * max(previous, before):
                        before = max(before, previous)
                self._previous_keepalive = (before, now)
            self.settings[key] = value

    def _row(self, node_id: str) -> _Row:
        row = self._rows.get(node_id)
        if row is None:
            raise NotRegistered(f"node {node_id} is not registered in the cluster")
        return row

    def lease_row(self) -> tuple[str | None, int]:
        """For tests: the lease's holder and epoch, as the store has them."""
        with self._lock:
            return self.holder, self.epoch

