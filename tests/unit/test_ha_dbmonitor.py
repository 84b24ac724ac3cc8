"""The DB-node monitor's rules over rounds of probes, and what it does to a node's runtime."""

from __future__ import annotations

from appliance.clock import FakeClock
from appliance.db.connect import DbTarget
from appliance.ha.dbmonitor import SPLIT_BRAIN_ALARM, DbMonitor, HostState, Outcome
from appliance.ha.memstore import InMemoryStore
from appliance.ha.model import Action
from appliance.ha.runtime import Runtime
from appliance.services import NoServices

A, B = ("10.0.0.1", 5432), ("10.0.0.2", 5432)
TARGET = DbTarget(("10.0.0.1", "10.0.0.2"), (5432,), "u", "pw", "db")


def hosts(*writable: bool | None) -> list[HostState]:
    return [HostState(h, p, w, 1) for (h, p), w in zip((A, B), writable, strict=True)]


def test_a_new_read_write_node_is_a_failover_and_two_are_a_split_brain() -> None:
    monitor = DbMonitor(FakeClock(), lambda target: [])
    assert monitor.observe(hosts(True, False)) is Outcome.NOTHING  # the first writer is learnt, not followed
    assert monitor.observe(hosts(True, False)) is Outcome.NOTHING
    assert monitor.observe(hosts(None, True)) is Outcome.FOLLOWED
    assert monitor.writer == B
    assert monitor.observe(hosts(True, True)) is Outcome.SPLIT_BRAIN
    assert monitor.observe(hosts(False, True)) is Outcome.RESOLVED
    assert monitor.observe(hosts(None, None)) is Outcome.NOTHING  # nobody writable: the store calls fail
    monitor.reset()  # a redirect to another database: the next writer is learnt afresh
    assert monitor.observe(hosts(True, False)) is Outcome.NOTHING


def test_the_split_brain_alarm_stops_every_write_and_the_primary_fences_itself() -> None:
    clock = FakeClock()
    store = InMemoryStore(clock, keepalive_s=1.0)
    store.register("a", "EMS-1", 10)
    runtime = Runtime(store, "a", NoServices(), clock, keepalive_s=1.0)
    assert runtime.tick().action is Action.ACQUIRE
    rounds = iter([hosts(True, False), hosts(True, True), hosts(True, True), hosts(True, False)])
    monitor = DbMonitor(clock, lambda target: next(rounds))
    monitor.check(runtime, TARGET)
    monitor.next_check = 0.0
    assert monitor.check(runtime, TARGET) is Outcome.SPLIT_BRAIN
    seq = store.snapshot().node("a").heartbeat_seq  # type: ignore[union-attr]
    decision = runtime.tick()
    assert decision.reason.startswith(f"ALARM: {SPLIT_BRAIN_ALARM}; writing to neither.")
    clock.advance(1.6)  # past the trust window (1.5·I): the primary steps down without the database
    assert runtime.tick().action is Action.DEMOTE and not runtime.local.acting
    assert store.snapshot().node("a").heartbeat_seq == seq  # type: ignore[union-attr]
    monitor.next_check = 0.0
    monitor.check(runtime, TARGET)
    monitor.next_check = 0.0
    assert monitor.check(runtime, TARGET) is Outcome.RESOLVED and runtime.local.db_alarm is None
    runtime.tick()
    assert store.snapshot().node("a").heartbeat_seq > seq  # type: ignore[union-attr]
