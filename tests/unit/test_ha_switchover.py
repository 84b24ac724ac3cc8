"""A planned switchover over the in-memory store: who is chosen, what is refused, and the wait."""

from __future__ import annotations

import pytest

from appliance.clock import FakeClock
from appliance.errors import CommandFailed, Conflict, NotConfigured
from appliance.ha.memstore import InMemoryStore
from appliance.ha.switchover import choose, switchover

KA = 1.0


def cluster() -> tuple[InMemoryStore, FakeClock]:
    clock = FakeClock()
    store = InMemoryStore(clock, keepalive_s=KA)
    store.register("a", "EMS-1", 30)
    store.register("b", "EMS-2", 20)
    store.register("c", "EMS-3", 10)
    assert store.try_acquire("a", 0, 2 * KA) == 1
    return store, clock


def test_the_best_online_standby_is_chosen_unless_one_is_named() -> None:
    store, _clock = cluster()
    holder, target = choose(store.snapshot(), None)
    assert (holder.name, target.name) == ("EMS-1", "EMS-2")
    assert choose(store.snapshot(), "EMS-3")[1].name == "EMS-3"


@pytest.mark.parametrize(("setup", "to", "error", "text"), [
    (lambda s, c: s.set_admin_state("b", "stopped"), "EMS-2", Conflict, "EMS-2 is taken out of the cluster"),
    (lambda s, c: None, "EMS-9", NotConfigured, "no node named EMS-9"),
    (lambda s, c: None, "EMS-1", Conflict, "EMS-1 is already the primary"),
    (lambda s, c: (c.advance(3 * KA), s.heartbeat("a"), s.renew("a", 1, 2 * KA)), "EMS-2", Conflict,
     "EMS-2 is offline"),
    (lambda s, c: c.advance(3 * KA), None, Conflict, "there is no primary to switch over from"),
])
def test_refusals_name_the_reason(setup, to, error, text) -> None:  # type: ignore[no-untyped-def]
    store, clock = cluster()
    setup(store, clock)
    with pytest.raises(error, match=text):
        choose(store.snapshot(), to)


class AgentAfterTicks(InMemoryStore):
    """The primary's agent acting on a handover request after a few of the command's polls."""

    def __init__(self, clock: FakeClock, polls: int) -> None:
        super().__init__(clock, keepalive_s=KA)
        self.polls = polls

    def snapshot(self):  # type: ignore[no-untyped-def]
        view = super().snapshot()
        if view.lease.handover_to == "b" and view.lease.holder == "a":
            self.polls -= 1
            if self.polls == 0:
                self.release("a", view.lease.epoch, "b")
                self.try_acquire("b", view.lease.epoch, 2 * KA)
        return super().snapshot()


def test_the_command_waits_for_the_successor_and_reports_the_new_epoch() -> None:
    clock = FakeClock()
    store = AgentAfterTicks(clock, polls=3)
    store.register("a", "EMS-1", 30)
    store.register("b", "EMS-2", 20)
    assert store.try_acquire("a", 0, 2 * KA) == 1
    done = switchover(store, None, clock)
    assert (done.source, done.target, done.epoch) == ("EMS-1", "EMS-2", 2)
    assert done.seconds == pytest.approx(0.1)  # two polls of 50 ms before the agent acted


def test_a_switchover_that_does_not_happen_is_withdrawn() -> None:
    store, clock = cluster()
    with pytest.raises(CommandFailed, match="did not complete within 5 s; the request was withdrawn"):
        switchover(store, "EMS-3", clock)  # nobody acts on it; the fake clock runs out
    assert store.snapshot().lease.handover_to is None
