"""The keepalive rules of appliance.ha.timing, one by one (pure functions: no clock, no I/O)."""

from __future__ import annotations

import pytest

from appliance.ha import timing as T


@pytest.mark.parametrize("keepalive", [0.25, 1.0, 10.0, 30.0])
def test_the_trust_window_ends_half_an_interval_before_the_lease(keepalive: float) -> None:
    assert T.lease_ttl_s(keepalive) - T.trust_s(keepalive) == pytest.approx(0.5 * keepalive)
    # A pause of up to one interval after a renewal costs the holder nothing: it renews at I/2.
    assert T.trust_s(keepalive) - T.renew_every_s(keepalive) == pytest.approx(keepalive)


def test_online_is_two_intervals_by_the_database_clock() -> None:
    assert T.is_online(20.0, 10.0) and not T.is_online(20.01, 10.0)
    assert not T.is_online(None, 10.0)  # never heard from


def test_a_change_of_interval_is_judged_by_the_longer_one_while_it_spreads() -> None:
    assert T.judge_keepalive_s(2.0, None) == 2.0
    assert T.judge_keepalive_s(2.0, (10.0, 5.0)) == 10.0  # shortened 5 s ago: still 10
    assert T.judge_keepalive_s(2.0, (10.0, 20.0)) == 10.0  # up to 2·10 s after the change
    assert T.judge_keepalive_s(2.0, (10.0, 20.5)) == 2.0
    assert T.judge_keepalive_s(10.0, (2.0, 1.0)) == 10.0  # lengthened: the new one at once


def test_a_second_change_remembers_the_longest_interval_still_spreading() -> None:
    assert T.previous_to_record(3.0, None) == 3.0
    assert T.previous_to_record(3.0, (10.0, 1.0)) == 10.0  # 10 -> 3 -> now: some node may beat at 10
    assert T.previous_to_record(3.0, (10.0, 25.0)) == 3.0  # that change is over


@pytest.mark.parametrize("keepalive", [1.0, 2.0, 10.0, 30.0])
def test_the_ha_statement_timeout_fits_inside_half_an_interval(keepalive: float) -> None:
    timeouts = T.ha_timeouts(keepalive)
    assert timeouts.statement_timeout <= max(T.STATEMENT_FLOOR_S, keepalive / 2)
    assert timeouts.statement_timeout < T.trust_s(keepalive)
    assert 0 < timeouts.lock_timeout < timeouts.statement_timeout <= T.STATEMENT_CAP_S


def test_a_configured_statement_timeout_is_a_cap_never_a_floor() -> None:
    assert T.ha_timeouts(10.0, statement_cap_s=2.0).statement_timeout == 2.0
    assert T.ha_timeouts(1.0, statement_cap_s=2.0).statement_timeout == 0.5  # lowered to I/2 at run time
    assert T.statement_timeout_problem(2.0, 1.0) is not None
    assert T.statement_timeout_problem(0.5, 1.0) is None


def test_grace_windows_and_the_switchover_wait() -> None:
    assert T.regain_grace_s(4.0) == 4.0
    assert T.db_failover_grace_s(4.0) == 8.0
    assert T.switchover_wait_s(1.0) == 5.0
