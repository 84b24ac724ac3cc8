"""An in-memory :class:`~appliance.ha.store.HaStore` for unit tests and the deterministic simulation.

Each method runs under one lock, which gives it the atomicity the contract asks of the database.
Its "database clock" is the injected clock's wall time (:meth:`Clock.now`), as a PostgreSQL store's
would be the server's ``now()``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from appliance.clock import Clock
from appliance.ha.events import NewEvent
from appliance.ha.memevents import MemoryEvents
from appliance.ha.model import (
    ClusterView,
    Lease,
    LeaseRecord,
    NodeIdentity,
    NodeState,
    RegisteredNode,
    Registration,
)
from appliance.ha.settings import Setting, setting
from appliance.ha.store import (
    REGISTRATION_PRIORITY,
    HaStore,
    NotRegistered,
    check_boot_start,
    check_priority,
    live_primary_conflict,
    twin_conflict,
)
from appliance.ha.timing import (
    DEFAULT_KEEPALIVE_S,
    is_online,
    judge_keepalive_s,
    lease_ttl_s,
    previous_to_record,
)


@dataclass
class _Row:
    node_id: str
    name: str
    priority: int
    role: str = "standby"
    admin_state: str = "active"
    last_heartbeat: datetime | None = None
    heartbeat_seq: int = 0
    hardware_id: str = ""
    boot_start: str = "enabled"
    extra: dict[str, object] = field(default_factory=dict)


class InMemoryStore(MemoryEvents, HaStore):
    """The contract in memory; events, notifications and join codes are :class:`MemoryEvents`'."""

    def __init__(self, clock: Clock, keepalive_s: float = DEFAULT_KEEPALIVE_S) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self.holder: str | None = None
        self.epoch = 0
        self.expires_at: datetime | None = None
        self.handover_to: str | None = None
        self.handover_requested_at: datetime | None = None
        self.settings: dict[str, str] = {
            Setting.KEEPALIVE: str(keepalive_s), Setting.MAINTENANCE: "off", Setting.DB_CHECK: "10",
            Setting.FAILBACK: "off",
        }
        MemoryEvents.__init__(self)
        self._previous_keepalive: tuple[float, datetime] | None = None
        self.timeline = 1  # the history epochs are issued on (a simulated database failover changes it)
        self.lease_timeline: int | None = None

    # --- set-up for tests (what registration does in the real schema, with a chosen priority) ----------

    def register(self, node_id: str, name: str, priority: int, role: str = "standby") -> None:
        with self._lock:
            self._rows[node_id] = _Row(node_id, name, priority, role, last_heartbeat=self.clock.now(),
                                       hardware_id=f"hw-{node_id}")

    # --- the contract: the HA loop ----------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        with self._lock:
            row = self._row(node_id)
            row.last_heartbeat = self.clock.now()
            row.heartbeat_seq += 1

    def snapshot(self) -> ClusterView:
        with self._lock:
            return self._view(self.clock.now())

    def _view(self, now: datetime) -> ClusterView:
        nodes = tuple(
            NodeState(r.node_id, r.name, r.priority, r.role, r.admin_state,
                      None if r.last_heartbeat is None else (now - r.last_heartbeat).total_seconds(),
                      r.heartbeat_seq, r.last_heartbeat, r.boot_start)
            for r in sorted(self._rows.values(), key=lambda r: r.name)
        )
        remaining = None if self.expires_at is None else (self.expires_at - now).total_seconds()
        asked = None if self.handover_requested_at is None else (now - self.handover_requested_at).total_seconds()
        keepalive = float(self.settings[Setting.KEEPALIVE])
        previous = None
        if self._previous_keepalive is not None:
            before, changed_at = self._previous_keepalive
            previous = (before, (now - changed_at).total_seconds())
        return ClusterView(nodes, Lease(self.holder, self.epoch, remaining, self.handover_to, self.lease_timeline,
                                        asked),
                           keepalive,
                           self.settings.get(Setting.MAINTENANCE) == "on",
                           judge_keepalive_s=judge_keepalive_s(keepalive, previous),
                           db_check_s=float(self.settings[Setting.DB_CHECK]),
                           vip=self.settings.get(Setting.VIP) or None,
                           failback=self.settings.get(Setting.FAILBACK) == "on")

    def try_acquire(self, node_id: str, expected_epoch: int, ttl_s: float) -> int | None:
        with self._lock:
            self._row(node_id)
            now = self.clock.now()
            # A planned successor still waits for the holder to release (which expires the lease):
            # taking a live lease would make two primaries.
            if self.epoch != expected_epoch or not self._free(now):
                return None
            self.holder, self.epoch, self.lease_timeline = node_id, self.epoch + 1, self.timeline
            self.expires_at, self.handover_to = now + timedelta(seconds=ttl_s), None
            self.handover_requested_at = None
            for row in self._rows.values():
                row.role = "primary" if row.node_id == node_id else "standby"
            return self.epoch

    def _free(self, now: datetime) -> bool:
        return self.holder is None or self.expires_at is None or self.expires_at <= now

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

    def request_handover(self, target: str | None, *, event: NewEvent | None = None) -> None:
        with self._lock:
            if target is not None:
                self._row(target)
            self.handover_to = target
            self.handover_requested_at = None if target is None else self.clock.now()
            self._record([event] if event else [], None)

    def set_admin_state(self, node_id: str, state: str, *, event: NewEvent | None = None) -> None:
        if state not in ("active", "stopped"):
            raise ValueError(f"admin state must be active or stopped, not {state!r}")
        with self._lock:
            self._row(node_id).admin_state = state
            self._record([event] if event else [], None)

    def rename(self, node_id: str, name: str) -> None:
        with self._lock:
            self._row(node_id).name = name

    def set_priority(self, node_id: str, priority: int, *, event: NewEvent | None = None) -> None:
        check_priority(priority)
        with self._lock:
            self._row(node_id).priority = priority
            self._record([event] if event else [], None)

    def set_boot_start(self, node_id: str, mode: str, *, event: NewEvent | None = None) -> None:
        check_boot_start(mode)
        with self._lock:
            self._row(node_id).boot_start = mode
            self._record([event] if event else [], None)

    # --- the contract: settings ----------------------------------------------------------------------

    def set_setting(self, setting_: Setting | str, value: str, *, event: NewEvent | None = None) -> None:
        key = setting(setting_)
        key.check(value)
        with self._lock:
            self._record([event] if event else [], None)
            if key is Setting.KEEPALIVE and float(self.settings[key]) != float(value):
                now, replaced = self.clock.now(), float(self.settings[key])
                earlier = None
                if self._previous_keepalive is not None:
                    before, changed_at = self._previous_keepalive
                    earlier = (before, (now - changed_at).total_seconds())
                self._previous_keepalive = (previous_to_record(replaced, earlier), now)
            self.settings[key] = value

    def seed_settings(self, values: dict[Setting, str]) -> None:
        checked = {setting(k).value: setting(k).check(v) for k, v in values.items()}
        with self._lock:
            self.settings.update(checked)
            self._previous_keepalive = None

    # --- the contract: membership ------------------------------------------------------------------

    def register_node(self, me: NodeIdentity, *, role: str, product_version: str) -> Registration:
        if role not in ("primary", "standby"):
            raise ValueError(f"role must be primary or standby, not {role!r}")
        with self._lock:
            now = self.clock.now()
            view = self._view(now)
            twin = next((r for r in self._rows.values()
                         if r.hardware_id == me.hardware_id and r.node_id != me.node_id), None)
            if twin is not None:
                raise twin_conflict(twin.name, twin.node_id, me.hardware_id)
            old = self._rows.get(me.node_id)
            previous = None if old is None else _registered(old, now)
            lease_before = LeaseRecord(self.holder, self.epoch, self.expires_at)
            demoted = None
            if role == "primary":
                other = next((r for r in self._rows.values() if r.role == "primary" and r.node_id != me.node_id),
                             None)
                if other is not None:
                    age = _age(other, now)
                    if is_online(age, view.judge_keepalive_s or view.keepalive_s):
                        raise live_primary_conflict(other.name, age)
                    demoted = _registered(other, now)
                    other.role = "standby"
            row = old or _Row(me.node_id, me.name, random.randint(*REGISTRATION_PRIORITY))
            row.hardware_id, row.name, row.role, row.admin_state = me.hardware_id, me.name, role, "active"
            row.last_heartbeat, row.heartbeat_seq = now, row.heartbeat_seq + 1
            self._rows[me.node_id] = row
            keepalive = view.keepalive_s
            if role == "primary":
                if self.holder != me.node_id:
                    self.holder, self.epoch, self.lease_timeline = me.node_id, self.epoch + 1, self.timeline
                    self.expires_at = now + timedelta(seconds=lease_ttl_s(keepalive))
            elif self.holder == me.node_id:
                # A node re-joining as standby must not keep the lease it held as primary.
                self.holder, self.epoch = None, self.epoch + 1
            return Registration(previous, (), demoted, lease_before,
                                LeaseRecord(self.holder, self.epoch, self.expires_at, self.lease_timeline), keepalive)

    def undo_registration(self, me: NodeIdentity, done: Registration) -> None:
        with self._lock:
            if done.previous is None:
                if self.holder == me.node_id:
                    self.holder = None
                self._rows.pop(me.node_id, None)
                if self.handover_to == me.node_id:
                    self.handover_to = None
            else:
                p = done.previous
                row = self._rows.get(me.node_id)
                if row is not None:
                    row.name, row.role, row.admin_state = p.name, p.role, p.admin_state
            if done.demoted is not None and done.demoted.node_id in self._rows:
                self._rows[done.demoted.node_id].role = "primary"
            before = done.lease_before
            if self.holder != before.holder:
                # The epoch only ever grows (it is a fencing token), even when the holder is put back.
                self.holder, self.expires_at, self.epoch = before.holder, before.expires_at, self.epoch + 1

    def unregister_node(self, node_id: str, *, event: NewEvent | None = None) -> None:
        with self._lock:
            self._row(node_id)
            del self._rows[node_id]
            self._forget_codes_of(node_id)
            self._record([event] if event else [], None)
            if self.holder == node_id:
                self.holder, self.expires_at, self.epoch = None, None, self.epoch + 1
            if self.handover_to == node_id:
                self.handover_to = None

    # --- helpers -------------------------------------------------------------------------------------

    def _online_ids(self, liveness_s: float) -> set[str]:
        now = self.clock.now()
        return {r.node_id for r in self._rows.values() if r.last_heartbeat is not None
                and (now - r.last_heartbeat).total_seconds() <= liveness_s}

    def _registered(self, node_id: str) -> bool:
        return node_id in self._rows

    def _name_of(self, node_id: str) -> str:
        row = self._rows.get(node_id)
        return row.name if row is not None else node_id

    def _row(self, node_id: str) -> _Row:
        row = self._rows.get(node_id)
        if row is None:
            raise NotRegistered(f"node {node_id} is not registered in the cluster")
        return row

    def lease_row(self) -> tuple[str | None, int]:
        """For tests: the lease's holder and epoch, as the store has them."""
        with self._lock:
            return self.holder, self.epoch


def _age(row: _Row, now: datetime) -> float | None:
    return None if row.last_heartbeat is None else (now - row.last_heartbeat).total_seconds()


def _registered(row: _Row, now: datetime) -> RegisteredNode:
    return RegisteredNode(row.node_id, row.hardware_id, row.name, row.priority, row.role, row.admin_state,
                          _age(row, now))

