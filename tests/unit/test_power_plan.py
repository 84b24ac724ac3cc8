"""The HA-aware decision of ``execute reboot|shutdown``, over the in-memory store (pure logic).

Who hands over to whom comes from the same rule as ``ha switchover``; the plan's text is what the
admin reads above the question, so it is asserted too.
"""

from __future__ import annotations

import pytest

from appliance.clock import FakeClock
from appliance.ha.memstore import InMemoryStore
from appliance.ha.model import NodeIdentity
from appliance.ops.power import plan

KA = 1.0
ME = NodeIdentity("a", "hw-a", "EMS-1")


def cluster() -> tuple[InMemoryStore, FakeClock]:
    clock = FakeClock()
    store = InMemoryStore(clock, keepalive_s=KA)
    store.register("a", "EMS-1", 30)
    store.register("b", "EMS-2", 20)
    store.register("c", "EMS-3", 10)
    assert store.try_acquire("a", 0, 2 * KA) == 1
    return store, clock


def test_the_primary_with_an_online_standby_hands_over_to_the_best_one_first() -> None:
    store, _clock = cluster()
    chosen = plan("reboot", store.snapshot(), ME, local=False)
    assert chosen.handover_to == "EMS-2"
    assert chosen.text.startswith("This node is the primary: the role is handed over to EMS-2 first")
    assert "then this node will reboot and rejoin as a standby" in chosen.text


def test_a_standby_that_is_taken_out_is_passed_over() -> None:
    store, _clock = cluster()
    store.set_admin_state("b", "stopped")
    assert plan("poweroff", store.snapshot(), ME, local=False).handover_to == "EMS-3"


def test_the_primary_without_an_online_standby_goes_and_says_the_cluster_has_no_primary() -> None:
    store, clock = cluster()
    clock.advance(3 * KA)  # the standbys fall silent
    store.heartbeat("a")
    assert store.renew("a", 1, 2 * KA)
    chosen = plan("poweroff", store.snapshot(), ME, local=False)
    assert chosen.handover_to is None
    assert "no standby can take over" in chosen.text and "no primary until" in chosen.text
    assert "will shut down" in chosen.text


def test_a_standby_just_goes() -> None:
    store, _clock = cluster()
    chosen = plan("reboot", store.snapshot(), NodeIdentity("b", "hw-b", "EMS-2"), local=False)
    assert chosen.handover_to is None
    assert chosen.text == "This node is a standby (the primary is EMS-1): it will reboot; the cluster keeps running."


def test_a_standalone_node_has_nobody_to_hand_over_to() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, keepalive_s=KA)
    store.register("a", "EMS-1", 30)
    assert store.try_acquire("a", 0, 2 * KA) == 1
    chosen = plan("reboot", store.snapshot(), ME, local=True)
    assert chosen.handover_to is None and "standalone" in chosen.text


@pytest.mark.parametrize("action", ["reboot", "poweroff"])
def test_an_unreadable_cluster_goes_without_handover_and_names_the_reason(action: str) -> None:
    chosen = plan(action, None, None, local=False, unreachable="connection refused")
    assert chosen.handover_to is None
    assert "(connection refused)" in chosen.text and "without handing anything over" in chosen.text


def test_when_the_lease_has_expired_nobody_is_primary() -> None:
    store, clock = cluster()
    clock.advance(3 * KA)
    chosen = plan("reboot", store.snapshot(), ME, local=False)
    assert chosen.handover_to is None and "there is no primary now" in chosen.text
