"""One node's HA loop body: heartbeat, snapshot, decide, act. Shared by the agent and the simulation.

The runtime owns the node's :class:`~appliance.ha.model.Local` state and the only two side effects of
leadership: the store's lease operations and starting/stopping the primary-only services. It never
sleeps; the caller waits ``decision.wake_in_s`` (bounded by the keepalive interval) between ticks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from appliance.clock import Clock
from appliance.ha.decide import decide, lease_ttl_s, trust_s
from appliance.ha.model import Action, ClusterView, Decision, Local
from appliance.ha.store import HaStore, NotRegistered, StoreUnavailable
from appliance.services import ServiceManager


class Fence(Protocol):
    """Tells this node's primary-only services until when they may act (see :mod:`appliance.ha.fence`)."""

    def grant(self, until_monotonic: float, epoch: int) -> None: ...

    def revoke(self) -> None: ...


class Runtime:
    def __init__(self, store: HaStore, node_id: str, services: ServiceManager, clock: Clock,
                 fence: Fence | None = None) -> None:
        self.store = store
        self.services = services
        self.clock = clock
        self.fence = fence
        self.local = Local(node_id)
        self.view: ClusterView | None = None
        self.keepalive_s = 10.0  # until the first snapshot says otherwise

    @property
    def node_id(self) -> str:
        return self.local.node_id

    def start(self) -> None:
        """Begin as a standby: only the services of every role run until the lease is confirmed."""
        self.services.start("standby")

    def tick(self) -> Decision:
        try:
            self.store.heartbeat(self.node_id)
            self.view = self.store.snapshot()
            self.keepalive_s = self.view.keepalive_s
        except (StoreUnavailable, NotRegistered):
            self.view = None
        decision = decide(self.view, self.local, self.clock.monotonic())
        return self._apply(decision)

    def stop(self) -> Decision:
        """A clean stop: resign (handing the lease over) if primary, and stop acting."""
        self.local = replace(self.local, stopping=True)
        return self.tick()

    def grace(self, seconds: float) -> None:
        """Judge nobody dead for ``seconds`` (after the database failed over)."""
        self.local = replace(self.local, grace_until=self.clock.monotonic() + seconds)

    # --- carrying a decision out -------------------------------------------------------------------

    def _apply(self, decision: Decision) -> Decision:
        action = decision.action
        if action is Action.DEMOTE:
            self.step_down()
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
        try:
            renewed = self.store.renew(self.node_id, decision.expected_epoch, lease_ttl_s(self.keepalive_s))
        except (StoreUnavailable, NotRegistered):
            if self.local.acting and not self._trusted():
                self.step_down()
                return Decision(Action.DEMOTE, "renewal failed and the trust window has ended: stepping down")
            return Decision(Action.STAY, "renewal failed (database unavailable); still within the trust window",
                            wake_in_s=min(1.0, self.keepalive_s))
        if not renewed:
            self.step_down()
            return Decision(Action.DEMOTE, "the lease was lost (not renewed): stepping down")
        self.local = replace(self.local, epoch=decision.expected_epoch,
                             trusted_until=started + trust_s(self.keepalive_s))
        if not self._trusted():
            self.step_down()  # the renewal itself took longer than the trust budget
            return Decision(Action.DEMOTE, "the renewal was too slow to trust: stepping down")
        if not self.local.acting:
            self._act()
            return Decision(Action.RENEW, f"confirmed the lease (epoch {decision.expected_epoch}): acting as primary",
                            expected_epoch=decision.expected_epoch, wake_in_s=decision.wake_in_s)
        self._grant()
        return decision

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
        if not self._trusted():
            return Decision(Action.STAY, "took the lease too slowly to trust it; renewing first", wake_in_s=0.0)
        self._act()
        return Decision(Action.ACQUIRE, f"{decision.reason}; now primary (epoch {epoch})", expected_epoch=epoch,
                        wake_in_s=self.keepalive_s)

    def _trusted(self) -> bool:
        until = self.local.trusted_until
        return until is not None and self.clock.monotonic() < until

    def _grant(self) -> None:
        if self.fence is not None and self.local.trusted_until is not None and self.local.epoch is not None:
            self.fence.grant(self.local.trusted_until, self.local.epoch)

    def _act(self) -> None:
        self._grant()  # before the services start: they check the fence from their first moment
        self.services.start("primary")
        self.local = replace(self.local, acting=True)

    def step_down(self) -> None:
        if self.fence is not None:
            self.fence.revoke()
        if self.local.acting:
            self.services.start("standby")  # stops the primary-only services, keeps the rest
        self.local = replace(self.local, acting=False, epoch=None, trusted_until=None)
