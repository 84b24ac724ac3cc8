"""One node's HA loop body: heartbeat, snapshot, decide, act. Shared by the agent and the simulation.

The runtime owns the node's :class:`~appliance.ha.model.Local` state and the only two side effects of
leadership: the store's lease operations and starting/stopping the primary-only services. It never
sleeps; the caller waits ``decision.wake_in_s`` (bounded by the keepalive interval) between ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from appliance.clock import Clock
from appliance.errors import ApplianceError
from appliance.ha.decide import decide
from appliance.ha.events import EventKind
from appliance.ha.model import Action, ClusterView, Decision, Local
from appliance.ha.store import HaStore, NotRegistered, StoreUnavailable
from appliance.ha.timing import DEFAULT_KEEPALIVE_S, lease_ttl_s, regain_grace_s, renew_every_s, trust_s
from appliance.services import ServiceManager


class Fence(Protocol):
    """Tells this node's primary-only services until when they may act (see :mod:`appliance.ha.fence`)."""

    def grant(self, until_monotonic: float, epoch: int, timeline: int | None = None) -> None: ...

    def revoke(self) -> None: ...


class Runtime:
    def __init__(self, store: HaStore, node_id: str, services: ServiceManager, clock: Clock,
                 fence: Fence | None = None, keepalive_s: float = DEFAULT_KEEPALIVE_S) -> None:
        self.store = store
        self.services = services
        self.clock = clock
        self.fence = fence
        self.local = Local(node_id)
        self.view: ClusterView | None = None
        self.keepalive_s = keepalive_s  # until the first snapshot says otherwise
        self.renewed_at: float | None = None  # monotonic start of the last successful renewal
        self.store_lost = False  # the last snapshot failed (not merely: none taken yet)
        self.services_missing: list[str] = []  # services of this node's role that do not run (and would not start)
        self.on_renewal: Callable[[float, bool], None] | None = None  # (seconds, renewed): for the metrics
        # (kind, details, epoch, duration): the HA events this node sees (takeover, step-down, switchover done),
        # handed to the agent's outbox; never waits for anything.
        self.emit: Callable[[EventKind, dict[str, Any], int | None, float | None], None] | None = None
        self.view_at: float | None = None  # monotonic time of the last snapshot

    @property
    def node_id(self) -> str:
        return self.local.node_id

    def start(self) -> None:
        """Begin as a standby: only the services of every role run until the lease is confirmed."""
        self.services.start("standby")

    def tick(self) -> Decision:
        decision = self._tick()
        return self._reconciled(decision)

    def _tick(self) -> Decision:
        if self.local.db_alarm is not None:
            # Write to no database node: no heartbeat, no renewal (decide() says why and what to do).
            decision = decide(None, self.local, self.clock.monotonic())
            return self._apply(decision)
        early: Decision | None = None
        if self.local.acting and self.local.epoch is not None and not self.local.stopping:
            # The holder renews FIRST: a slow heartbeat or snapshot must not eat its trust window.
            early = self._renew(Decision(Action.RENEW, "renewing the lease", expected_epoch=self.local.epoch))
        was_lost = self.store_lost
        try:
            self.store.heartbeat(self.node_id)
            self.view = self.store.snapshot()
            self.view_at = self.clock.monotonic()
            self.keepalive_s = self.view.keepalive_s
            self.store_lost = False
        except (StoreUnavailable, NotRegistered):
            self.view, self.store_lost = None, True
        if self.view is not None and was_lost and not self.local.acting:
            # Back in touch with the database: everyone's heartbeats are as old as the outage. Give the
            # previous holder time to renew before anybody is judged dead.
            self.grace(regain_grace_s(self.keepalive_s))
        decision = decide(self.view, self.local, self.clock.monotonic())
        if early is not None and early.action is Action.RENEW and decision.action is Action.RENEW:
            # Renewed at the start of this tick already; report what that renewal said.
            return self._paced(early if early.reason != "renewing the lease" else decision)
        done = self._apply(decision)
        if early is not None and early.action is Action.DEMOTE:
            # The step-down happened in the early renewal: say so, not only what followed it.
            return Decision(Action.DEMOTE, f"{early.reason}; then: {done.reason}", done.expected_epoch,
                            done.target, done.wake_in_s)
        return done

    def _reconciled(self, decision: Decision) -> Decision:
        """Start the services of this node's role that should run and do not.

        A primary-only service exits by itself when the fence deadline passes; if the lease is renewed at
        that very moment, starting it again finds the exiting process still there and starts nothing.
        So every tick compares what should run with what runs. The primary's services are started only
        inside the trust window (outside it they would fence themselves off at once).
        """
        if self.local.stopping:
            self.services_missing = []
            return decision
        role = "primary" if self.local.acting else "standby"
        if role == "primary" and not self._trusted():
            return decision
        try:
            missing = self.services.missing(role)
            if not missing:
                self.services_missing = []
                return decision
            self.services.start(role)
            still = self.services.missing(role)
        except ApplianceError as exc:
            still, missing = self.services_missing or ["(unknown)"], []
            note = f"cannot start the {role} services: {exc.message}"
        else:
            started = [name for name in missing if name not in still]
            note = (f"started {', '.join(started)} again (not running)" if started else "") + \
                (f"{'; ' if started else ''}{', '.join(still)} not running and cannot be started" if still else "")
        self.services_missing = still
        return Decision(decision.action, f"{decision.reason}; {note}", decision.expected_epoch, decision.target,
                        decision.wake_in_s)

    def _paced(self, decision: Decision) -> Decision:
        """The holder's next tick: I/2 after the START of its last renewal, not after this tick's end."""
        if self.renewed_at is None:
            return decision
        wake = max(0.0, self.renewed_at + renew_every_s(self.keepalive_s) - self.clock.monotonic())
        return Decision(decision.action, decision.reason, decision.expected_epoch, decision.target, wake)

    def stop(self) -> Decision:
        """A clean stop: resign (handing the lease over) if primary, and stop acting."""
        self.local = replace(self.local, stopping=True)
        return self.tick()

    def grace(self, seconds: float) -> None:
        """Judge nobody dead for ``seconds`` (after the database failed over)."""
        self.local = replace(self.local, grace_until=self.clock.monotonic() + seconds)

    def set_db_alarm(self, alarm: str | None) -> None:
        """Raise (text: why) or clear (None) the alarm under which this node writes to no database node."""
        self.local = replace(self.local, db_alarm=alarm)

    # --- carrying a decision out -------------------------------------------------------------------

    def _apply(self, decision: Decision) -> Decision:
        action = decision.action
        if action is Action.DEMOTE:
            self.step_down(_cause(decision.reason), decision.reason)
            # Decide again at once: the lease may still be ours to renew (after a short pause, say).
            return Decision(action, decision.reason, wake_in_s=0.0) if decision.wake_in_s is None else decision
        elif action is Action.RENEW:
            return self._renew(decision)
        elif action is Action.ACQUIRE:
            return self._acquire(decision)
        elif action is Action.RESIGN:
            self.step_down()  # services stop BEFORE the lease is released: never two primaries
            try:
                assert decision.expected_epoch is not None
                self.store.release(self.node_id, decision.expected_epoch, decision.target)
            except (StoreUnavailable, NotRegistered):
                pass  # the lease simply expires; nobody can take it before then
        return decision

    def _renew(self, decision: Decision) -> Decision:
        assert decision.expected_epoch is not None
        started = self.clock.monotonic()  # the trust window is anchored at the start of the attempt
        lapsed = self.local.acting and not self._trusted()  # its services may have fenced themselves off
        try:
            renewed = self.store.renew(self.node_id, decision.expected_epoch, lease_ttl_s(self.keepalive_s))
        except (StoreUnavailable, NotRegistered):
            self._observe_renewal(started, False)
            if self.local.acting and not self._trusted():
                self.step_down("fence_expired", "renewal failed (database unavailable) and the trust window ended")
                return Decision(Action.DEMOTE, "renewal failed and the trust window has ended: stepping down",
                                wake_in_s=0.0)
            left = (self.local.trusted_until or 0.0) - self.clock.monotonic()
            if self.local.acting:
                return Decision(Action.STAY, f"renewal failed (database unavailable); trusted for {left:.1f} s more",
                                wake_in_s=max(0.0, min(1.0, left)))
            return Decision(Action.STAY, "could not confirm the lease (database unavailable)",
                            wake_in_s=min(1.0, self.keepalive_s))
        self._observe_renewal(started, renewed)
        if not renewed:
            self.step_down("lost_lease", "the lease was not renewed: another node holds it")
            return Decision(Action.DEMOTE, "the lease was lost (not renewed): stepping down")
        self.local = replace(self.local, epoch=decision.expected_epoch,
                             trusted_until=started + trust_s(self.keepalive_s))
        self.renewed_at = started
        if not self._trusted():
            self.step_down("fence_expired", "the renewal took longer than the trust window")
            return Decision(Action.DEMOTE, "the renewal was too slow to trust: stepping down")
        if not self.local.acting:
            self._act()
            return self._paced(Decision(Action.RENEW, f"confirmed the lease (epoch {decision.expected_epoch}): "
                                        "acting as primary", expected_epoch=decision.expected_epoch))
        if lapsed:
            # After a pause past the trust deadline the primary-only services stopped themselves at the
            # fence; the lease is still ours, so open the fence again and start them again.
            self._act()
            return self._paced(Decision(Action.RENEW, f"renewed the lease (epoch {decision.expected_epoch}) after "
                                        "the trust window had lapsed: restarted the primary services",
                                        expected_epoch=decision.expected_epoch))
        self._grant()
        return self._paced(decision)

    def _acquire(self, decision: Decision) -> Decision:
        assert decision.expected_epoch is not None
        started = self.clock.monotonic()
        try:
            epoch = self.store.try_acquire(self.node_id, decision.expected_epoch, lease_ttl_s(self.keepalive_s))
        except (StoreUnavailable, NotRegistered):
            return Decision(Action.STAY, "could not take the lease (database unavailable)", wake_in_s=1.0)
        if epoch is None:
            return Decision(Action.STAY, "another node took the lease first", wake_in_s=self.keepalive_s)
        self.local = replace(self.local, epoch=epoch, trusted_until=started + trust_s(self.keepalive_s))
        self.renewed_at = started
        if not self._trusted():
            return Decision(Action.STAY, "took the lease too slowly to trust it; renewing first", wake_in_s=0.0)
        self._act()
        self._emit_acquired(epoch)
        return self._paced(Decision(Action.ACQUIRE, f"{decision.reason}; now primary (epoch {epoch})",
                                    expected_epoch=epoch))

    def _emit_acquired(self, epoch: int) -> None:
        """A takeover, or a switchover done (its duration by the DB clock: asked how long ago, plus since)."""
        view = self.view
        if self.emit is None or view is None:
            return
        lease = view.lease
        before = view.node(lease.holder) if lease.holder else None
        me = view.node(self.node_id)
        source = before.name if before is not None else lease.holder
        if lease.handover_to == self.node_id and lease.handover_requested_s is not None:
            since = self.clock.monotonic() - (self.view_at or self.clock.monotonic())
            self.emit(EventKind.SWITCHOVER, {"phase": "done", "from": source, "to": me.name if me else None},
                      epoch, lease.handover_requested_s + since)
            return
        if lease.handover_to == self.node_id:
            reason = f"handed over by {source}"
        elif lease.holder is None:
            reason = "the lease was free"
        else:
            reason = f"the lease of {source} expired"
        self.emit(EventKind.TAKEOVER, {"from": source, "reason": reason, "previous_epoch": lease.epoch}, epoch, None)

    def _observe_renewal(self, started: float, renewed: bool) -> None:
        if self.on_renewal is not None:
            self.on_renewal(self.clock.monotonic() - started, renewed)

    def _trusted(self) -> bool:
        until = self.local.trusted_until
        return until is not None and self.clock.monotonic() < until

    def _grant(self) -> None:
        if self.fence is not None and self.local.trusted_until is not None and self.local.epoch is not None:
            lease = self.view.lease if self.view is not None else None
            timeline = lease.timeline if lease is not None and lease.epoch == self.local.epoch else None
            self.fence.grant(self.local.trusted_until, self.local.epoch, timeline)

    def _act(self) -> None:
        self._grant()  # before the services start: they check the fence from their first moment
        self.services.start("primary")
        self.local = replace(self.local, acting=True)

    def step_down(self, cause: str | None = None, detail: str = "") -> None:
        """Stop acting as primary; an involuntary step-down (``cause``) is an event."""
        if self.local.acting and cause is not None and self.emit is not None:
            self.emit(EventKind.STEP_DOWN, {"reason": cause, "detail": detail}, self.local.epoch, None)
        if self.fence is not None:
            self.fence.revoke()
        if self.local.acting:
            self.services.start("standby")  # stops the primary-only services, keeps the rest
        self.local = replace(self.local, acting=False, epoch=None, trusted_until=None)


def _cause(reason: str) -> str | None:
    """Why a DEMOTE decision steps down, as the ``step_down`` event says it (None: a voluntary stop)."""
    if reason.startswith(("stopping", "taken out of the cluster")):
        return None
    if "trust window" in reason or "unreachable" in reason:
        return "fence_expired"
    if "no longer registered" in reason:
        return "unregistered"
    return "lost_lease"
