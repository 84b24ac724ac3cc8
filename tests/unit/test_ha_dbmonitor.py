"""The DB-node monitor over rounds of probes: what it does to a node's runtime, store and memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.clock import FakeClock
from appliance.ha.dbmonitor import DbMonitor, FollowedFile, Outcome
from appliance.ha.dbnodes import Followed, HostState
from appliance.ha.memstore import InMemoryStore
from appliance.ha.model import Action
from appliance.ha.runtime import Runtime
from appliance.ha.store import StoreUnavailable
from appliance.services import NoServices

KEY = "u@10.0.0.1:5432,10.0.0.2:5432/db/appliance"


class FakeWatch:
    """What the probes see, set by the test; ``fresh_states`` is what a reconnect asks for."""

    def __init__(self) -> None:
        self.hosts: list[HostState] = []
        self.fresh_asked = 0

    def states(self) -> list[HostState]:
        return list(self.hosts)

    def fresh_states(self) -> list[HostState]:
        self.fresh_asked += 1
        return list(self.hosts)

    def close(self) -> None:
        pass


def hosts(a: tuple[bool, int] | None, b: tuple[bool, int] | None) -> list[HostState]:
    def one(host: str, s: tuple[bool, int] | None) -> HostState:
        return HostState(host, 5432, False, error="refused") if s is None else HostState(host, 5432, True, s[0], s[1])
    return [one("10.0.0.1", a), one("10.0.0.2", b)]


@pytest.fixture
def node(tmp_path: Path) -> Any:
    clock = FakeClock()
    store = InMemoryStore(clock, keepalive_s=1.0)
    store.register("a", "EMS-1", 10)
    runtime = Runtime(store, "a", NoServices(), clock, keepalive_s=1.0)
    watch = FakeWatch()
    monitor = DbMonitor(watch, FollowedFile(tmp_path), KEY)  # type: ignore[arg-type]
    monitor.attach(runtime)
    return clock, store, runtime, watch, monitor, tmp_path


def test_the_first_writer_is_remembered_and_a_new_one_is_a_failover_with_grace(node: Any) -> None:
    clock, _store, runtime, watch, monitor, tmp_path = node
    watch.hosts = hosts((True, 1), (False, 1))
    assert monitor.check() is Outcome.NOTHING
    assert FollowedFile(tmp_path).load(KEY) == Followed("10.0.0.1", 5432, 1, None)
    watch.hosts = hosts(None, (True, 2))
    assert monitor.check() is Outcome.FOLLOWED
    assert monitor.pick_writer() == ("10.0.0.2", 5432)
    assert runtime.local.grace_until == pytest.approx(clock.monotonic() + 2.0)
    assert FollowedFile(tmp_path).load(KEY).address == ("10.0.0.2", 5432)  # type: ignore[union-attr]
    assert FollowedFile(tmp_path).load("another target") is None


def test_a_stale_old_primary_back_read_write_is_never_connected_to(node: Any) -> None:
    _clock, _store, runtime, watch, monitor, _tmp = node
    watch.hosts = hosts(None, (True, 2))
    monitor.check()
    watch.hosts = hosts((True, 1), (True, 2))  # the old primary started again as a primary, first in the list
    assert monitor.check() is Outcome.NOTHING
    assert monitor.alarm and "two read-write database nodes" in monitor.alarm
    assert monitor.pick_writer() == ("10.0.0.2", 5432) and watch.fresh_asked == 1
    assert runtime.local.db_alarm is None  # the node ahead is written to; the alarm is shown


def test_nothing_is_written_while_the_writer_cannot_be_told_and_grace_follows(node: Any) -> None:
    clock, store, runtime, watch, monitor, _tmp = node
    assert runtime.tick().action is Action.ACQUIRE
    watch.hosts = hosts((True, 1), (False, 1))
    monitor.check()
    watch.hosts = hosts((True, 3), (True, 3))  # the same timeline on both: nothing tells them apart
    assert monitor.check() is Outcome.REFUSED
    with pytest.raises(StoreUnavailable, match="writing to neither"):
        monitor.pick_writer()
    seq = store.snapshot().node("a").heartbeat_seq  # type: ignore[union-attr]
    assert runtime.tick().reason.startswith("ALARM: two read-write database nodes")
    clock.advance(1.6)  # past the trust window (1.5·I): the primary steps down without the database
    assert runtime.tick().action is Action.DEMOTE and not runtime.local.acting
    assert store.snapshot().node("a").heartbeat_seq == seq  # type: ignore[union-attr]
    watch.hosts = hosts((False, 3), (True, 3))
    assert monitor.check() is Outcome.FOLLOWED  # writes resume, on the only read-write node
    assert runtime.local.db_alarm is None and runtime.local.grace_until is not None
    runtime.tick()
    assert store.snapshot().node("a").heartbeat_seq > seq  # type: ignore[union-attr]


def test_a_single_host_target_has_nothing_to_watch(tmp_path: Path) -> None:
    monitor = DbMonitor(None, FollowedFile(tmp_path), KEY)
    assert monitor.check() is Outcome.NOTHING and not (tmp_path / "db-followed.json").exists()
