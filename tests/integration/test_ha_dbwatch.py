"""The DB-host watchers against real PostgreSQL: what they see, and what a reconnect waits for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.db.target import DbTarget, Timeouts
from appliance.ha.dbwatch import DbWatch, probe_hosts

FAST = Timeouts(connect_timeout=2, statement_timeout=1, lock_timeout=0.5, tcp_user_timeout=2)


def target(*ports: int, cluster: Any) -> DbTarget:
    return DbTarget(("127.0.0.1",) * len(ports), ports, cluster.superuser, cluster.superuser_password,
                    "postgres", "disable")


@pytest.fixture
def watch_of() -> Iterator[Any]:
    made: list[DbWatch] = []

    def make(t: DbTarget) -> DbWatch:
        made.append(DbWatch(t, application_name="dbwatch-test", timeouts=lambda: FAST, interval=lambda: 0.2))
        return made[-1]

    yield make
    for watch in made:
        watch.close()


def test_roles_timelines_and_a_promotion_are_seen(pg_pair: Any, watch_of: Any) -> None:
    primary, standby = pg_pair
    watch = watch_of(target(primary.port, standby.port, cluster=primary))
    states = watch.fresh_states()
    assert [(s.reachable, s.writable, s.timeline) for s in states] == [(True, True, 1), (True, False, 1)]
    assert states[0].system_id == states[1].system_id is not None
    standby.promote()  # the old primary still runs: two read-write nodes, the new one on timeline 2
    states = watch.fresh_states()
    assert [(s.writable, s.timeline) for s in states] == [(True, 1), (True, 2)]
    # The shell's one-off probe sees the same.
    once = probe_hosts(target(primary.port, standby.port, cluster=primary), FAST, "dbwatch-test")
    assert [(s.reachable, s.writable, s.timeline) for s in once] == [(True, True, 1), (True, True, 2)]


def test_a_black_holed_host_costs_a_reconnect_one_connect_timeout_once(pg_primary: Any, silent_port: int,
                                                                       watch_of: Any) -> None:
    watch = watch_of(target(pg_primary.port, silent_port, cluster=pg_primary))
    started = time.monotonic()
    first = watch.fresh_states()
    took_first = time.monotonic() - started
    assert first[0].writable and not first[1].reachable
    started = time.monotonic()
    again = watch.fresh_states()
    took_again = time.monotonic() - started
    assert again[0].writable and not again[1].reachable
    assert took_first >= 1.5 and took_again < 1.0, (took_first, took_again)
