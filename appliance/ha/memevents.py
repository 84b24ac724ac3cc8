"""The in-memory store's events, notifications and join codes (a part of :class:`~appliance.ha.memstore.
InMemoryStore`, split off along the same seam as the PostgreSQL store's :mod:`appliance.ha.pgevents`).

Every method runs under the store's one lock, as the registry's do; the "database clock" is the store's
injected clock. The contract is :class:`~appliance.ha.store.HaStore`'s.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from appliance.clock import Clock
from appliance.errors import Conflict
from appliance.ha.events import DEDUP_WINDOW_S, MAX_AGE_S, MAX_EVENTS, Event, NewEvent
from appliance.ha.model import Claimed, ClaimOutcome, CodeState, Delivery, JoinCodeInfo
from appliance.ha.notify import CLAIM_S, DELIVERY_DEADLINE_S, Channels, email_from_json, webhook_from_json
from appliance.ha.settings import Setting
from appliance.ha.store import code_conflict, not_registered

FORGET_CODES_S = 86_400.0  # spent, revoked or expired codes are forgotten a day later


@dataclass
class _Code:
    code_id: str
    secret_hash: bytes
    issued_by: str
    issued_at: datetime
    expires_at: datetime
    claimed_by: str | None = None
    used_by: str | None = None
    used_at: datetime | None = None
    revoked_at: datetime | None = None
    failures: int = 0

    def state(self, now: datetime) -> CodeState:
        if self.used_at is not None:
            return CodeState.USED
        if self.revoked_at is not None:
            return CodeState.REVOKED
        if self.expires_at <= now:
            return CodeState.EXPIRED
        return CodeState.CLAIMED if self.claimed_by else CodeState.OUTSTANDING

    def ended(self) -> datetime | None:
        return self.used_at or self.revoked_at


@dataclass
class _Delivery:
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    deadline_at: datetime | None = None
    claimed_by: str | None = None
    claim_expires_at: datetime | None = None


class MemoryEvents:
    clock: Clock
    _lock: threading.Lock
    epoch: int
    settings: dict[str, str]

    def __init__(self) -> None:
        self._events: list[tuple[Event, str | None]] = []  # (event, dedup key)
        self._deliveries: dict[tuple[int, str], _Delivery] = {}
        self._codes: dict[str, _Code] = {}
        self._secrets: dict[str, bytes] = {}
        self._seq = 0

    # provided by the store
    def _online_ids(self, liveness_s: float) -> set[str]:
        raise NotImplementedError

    def _registered(self, node_id: str) -> bool:
        raise NotImplementedError

    def _name_of(self, node_id: str) -> str:
        raise NotImplementedError

    # --- events ----------------------------------------------------------------------------------------

    def record_events(self, events: Sequence[NewEvent], *, deliver_by: str | None) -> list[str]:
        with self._lock:
            return self._record(events, deliver_by)

    def _record(self, events: Sequence[NewEvent], deliver_by: str | None) -> list[str]:
        now = self.clock.now()
        done: list[str] = []
        channels = self._channels().configured()
        for new in events:
            if any(e.id == new.id for e, _ in self._events):
                continue
            if new.dedup_key is not None and any(
                    key == new.dedup_key and (now - e.time).total_seconds() <= DEDUP_WINDOW_S
                    for e, key in self._events):
                continue
            self._seq += 1
            when = new.wall_time if new.wall_time is not None else now - timedelta(seconds=max(0.0, new.age_s))
            event = Event(new.id, self._seq, when, new.node, new.kind.value,
                          self.epoch if new.epoch is None else new.epoch, dict(new.details), new.duration_s)
            self._events.append((event, new.dedup_key))
            for channel in channels:
                self._deliveries[(self._seq, channel.value)] = _Delivery(
                    next_attempt_at=now, deadline_at=now + timedelta(seconds=DELIVERY_DEADLINE_S),
                    claimed_by=deliver_by,
                    claim_expires_at=None if deliver_by is None else now + timedelta(seconds=CLAIM_S))
            done.append(new.id)
        self._prune(now)
        return done

    def _prune(self, now: datetime) -> None:
        keep = [(e, k) for e, k in self._events if (now - e.time).total_seconds() <= MAX_AGE_S][-MAX_EVENTS:]
        kept = {e.seq for e, _ in keep}
        self._events = keep
        self._deliveries = {key: d for key, d in self._deliveries.items() if key[0] in kept}

    def events(self, *, since_s: float | None = None, limit: int = 50, kind: str | None = None) -> list[Event]:
        with self._lock:
            now = self.clock.now()
            found = [e for e, _ in sorted(self._events, key=lambda x: (x[0].time, x[0].seq))
                     if (kind is None or e.kind == kind)
                     and (since_s is None or (now - e.time).total_seconds() <= since_s)]
            return [replace(e, deliveries={ch: d.status for (seq, ch), d in self._deliveries.items() if seq == e.seq})
                    for e in found[-limit:]] if limit > 0 else []

    # --- deliveries ------------------------------------------------------------------------------------

    def claim_deliveries(self, node_id: str, channels: Sequence[str], *, liveness_s: float, claim_s: float,
                         limit: int = 8, busy: Sequence[tuple[int, str]] = ()) -> Claimed:
        with self._lock:
            now = self.clock.now()
            online = self._online_ids(liveness_s)
            docs = {e.seq: e for e, _ in self._events}
            taken: list[Delivery] = []
            next_due: float | None = None
            for (seq, channel), d in sorted(self._deliveries.items()):
                if d.status != "pending" or channel not in channels or (seq, channel) in busy:
                    continue
                assert d.deadline_at is not None and d.next_attempt_at is not None
                if d.deadline_at <= now:
                    d.status = "failed"
                    continue
                due_in = (d.next_attempt_at - now).total_seconds()
                held = d.claimed_by not in (None, node_id) and d.claimed_by in online and \
                    d.claim_expires_at is not None and d.claim_expires_at > now
                if due_in > 0 or held or len(taken) >= limit:
                    wait = max(due_in, 0.0)
                    if held and d.claim_expires_at is not None:
                        wait = max(wait, min((d.claim_expires_at - now).total_seconds(), liveness_s))
                    next_due = wait if next_due is None else min(next_due, wait)
                    continue
                d.claimed_by, d.claim_expires_at = node_id, now + timedelta(seconds=claim_s)
                taken.append(Delivery(seq, channel, d.attempts, docs[seq].document(),
                                      (d.deadline_at - now).total_seconds()))
            return Claimed(tuple(taken), next_due)

    def finish_delivery(self, event_seq: int, channel: str, node_id: str, *, delivered: bool,
                        error: str | None = None, retry_in_s: float | None = None) -> bool:
        with self._lock:
            d = self._deliveries.get((event_seq, channel))
            if d is None or d.status != "pending" or d.claimed_by != node_id:
                return False
            now = self.clock.now()
            d.attempts += 0 if delivered else 1
            if delivered:
                d.status = "delivered"
            elif retry_in_s is None or (d.deadline_at is not None and now + timedelta(seconds=retry_in_s)
                                        >= d.deadline_at):
                d.status = "failed"
            else:
                d.next_attempt_at, d.claimed_by, d.claim_expires_at = now + timedelta(seconds=retry_in_s), None, None
            return True

    # --- channels --------------------------------------------------------------------------------------

    def _channels(self) -> Channels:
        web, mail = self.settings.get(Setting.NOTIFY_WEBHOOK), self.settings.get(Setting.NOTIFY_EMAIL)
        return Channels(webhook_from_json(web) if web else None, email_from_json(mail) if mail else None,
                        tuple(sorted(self._secrets.items())))

    def notify_channels(self) -> Channels:
        with self._lock:
            return self._channels()

    def set_notify_channel(self, channel: str, config: str | None, secrets: dict[str, bytes | None], *,
                           event: NewEvent | None = None) -> None:
        key = Setting.NOTIFY_WEBHOOK if channel == "webhook" else Setting.NOTIFY_EMAIL
        if channel not in ("webhook", "email"):
            raise ValueError(f"unknown notification channel {channel!r}")
        key.check(config or "")
        with self._lock:
            self.settings[key] = config or ""
            for name, value in secrets.items():
                if value is None:
                    self._secrets.pop(name, None)
                else:
                    self._secrets[name] = value
            self._record([event] if event else [], None)

    # --- join codes ------------------------------------------------------------------------------------

    def issue_join_code(self, code_id: str, secret_hash: bytes, issued_by: str, lifetime_s: float) -> None:
        with self._lock:
            if not self._registered(issued_by):
                raise not_registered(issued_by)
            if code_id in self._codes:
                raise Conflict(f"join code {code_id} exists already")
            now = self.clock.now()
            self._codes = {k: c for k, c in self._codes.items()
                           if (now - (c.ended() or c.expires_at)).total_seconds() < FORGET_CODES_S}
            self._codes[code_id] = _Code(code_id, secret_hash, issued_by, now, now + timedelta(seconds=lifetime_s))

    def join_codes(self) -> list[JoinCodeInfo]:
        with self._lock:
            now = self.clock.now()
            return [JoinCodeInfo(c.code_id, self._name_of(c.issued_by), c.issued_by, c.issued_at,
                                 (c.expires_at - now).total_seconds(), c.state(now), c.claimed_by, c.used_by,
                                 c.failures)
                    for c in sorted(self._codes.values(), key=lambda c: c.issued_at, reverse=True)]

    def revoke_join_code(self, code_id: str) -> bool:
        with self._lock:
            code = self._codes.get(code_id)
            now = self.clock.now()
            if code is None or code.state(now) not in (CodeState.OUTSTANDING, CodeState.CLAIMED):
                return False
            code.revoked_at = now
            return True

    def claim_join_code(self, code_id: str, secret_hash: bytes, hardware_id: str, *,
                        max_failures: int) -> ClaimOutcome:
        with self._lock:
            code = self._codes.get(code_id)
            if code is None:
                return ClaimOutcome.UNKNOWN
            now = self.clock.now()
            if not hmac.compare_digest(code.secret_hash, secret_hash):
                code.failures += 1
                if code.failures >= max_failures and code.state(now) in (CodeState.OUTSTANDING, CodeState.CLAIMED):
                    code.revoked_at = now
                return ClaimOutcome.UNKNOWN
            state = code.state(now)
            if state in (CodeState.USED, CodeState.EXPIRED, CodeState.REVOKED):
                return {CodeState.USED: ClaimOutcome.USED, CodeState.EXPIRED: ClaimOutcome.EXPIRED}.get(
                    state, ClaimOutcome.REVOKED)
            if code.claimed_by not in (None, hardware_id):
                return ClaimOutcome.TAKEN
            code.claimed_by = hardware_id
            return ClaimOutcome.OK

    def use_join_code(self, code_id: str, hardware_id: str, node_name: str) -> None:
        with self._lock:
            code = self._codes.get(code_id)
            now = self.clock.now()
            if code is None:
                raise code_conflict(code_id, "it is unknown to this cluster")
            state = code.state(now)
            if state not in (CodeState.OUTSTANDING, CodeState.CLAIMED) or code.claimed_by != hardware_id:
                raise code_conflict(code_id, f"it is {state.value}" if state is not CodeState.OUTSTANDING
                                    and state is not CodeState.CLAIMED else "another node claimed it")
            code.used_by, code.used_at = node_name, now

    def outstanding_join_codes(self, issued_by: str) -> float | None:
        with self._lock:
            now = self.clock.now()
            left = [(c.expires_at - now).total_seconds() for c in self._codes.values()
                    if c.issued_by == issued_by and c.state(now) in (CodeState.OUTSTANDING, CodeState.CLAIMED)]
            return max(left) if left else None

    def _forget_codes_of(self, node_id: str) -> None:
        self._codes = {k: c for k, c in self._codes.items() if c.issued_by != node_id}
