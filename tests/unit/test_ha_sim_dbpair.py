"""Defect 1 of the repmgr issue in the deterministic simulation: a stale database primary after a failover.

The scenario the field saw: the database fails over (A dies, B promoted), A is started again as a primary
(first in every node's host list), then every session on B is cut. A client that takes "the first
read-write host" moves to A; the product's rule never does. Then random timings and app-node faults on
top, with the rule: no call ever lands on the stale node, and never two nodes acting at once.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.ha_sim_dbpair import PairSim, new_pair_sim

I = 1.0  # noqa: E741 - the keepalive interval


def field_scenario(sim: PairSim, failover_at: float, stale_at: float, blip_at: float) -> None:
    sim.at(failover_at, sim.failover)
    sim.at(stale_at, sim.restart_stale)
    sim.at(blip_at, lambda: sim.blip("B"))


def test_the_first_read_write_host_client_writes_to_the_stale_node() -> None:
    """The simulation finds defect 1: with libpq's choice, heartbeats and the lease land on A."""
    sim = new_pair_sim([300, 200, 100], I, client="first")
    try:
        field_scenario(sim, 10 * I, 14 * I, 15 * I)
        sim.run_until(30 * I)
    finally:
        sim.close()
    assert sim.stale_writes > 0
    assert any("to the stale database node A" in p for p in sim.stats.problems)


def test_the_writer_rule_never_touches_the_stale_node() -> None:
    sim = new_pair_sim([300, 200, 100], I, client="rule")
    try:
        field_scenario(sim, 10 * I, 14 * I, 15 * I)
        sim.run_until(30 * I)
    finally:
        sim.close()
    assert sim.stale_writes == 0, "\n".join(sim.stats.problems + sim.trace[-30:])
    assert sim.stats.acting_violations == []
    assert sim.convergence_error() is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(failover=st.floats(3, 12), stale=st.floats(0.1, 6), blips=st.lists(st.floats(0, 10), max_size=3),
       crash=st.one_of(st.none(), st.tuples(st.integers(0, 2), st.floats(0, 15), st.floats(0.5, 6))),
       pause=st.one_of(st.none(), st.tuples(st.integers(0, 2), st.floats(0, 15), st.floats(0.1, 3))))
def test_random_database_splits_never_write_to_the_stale_node(failover: float, stale: float, blips: list[float],
                                                              crash: tuple[int, float, float] | None,
                                                              pause: tuple[int, float, float] | None) -> None:
    sim = new_pair_sim([300, 200, 100], I, client="rule")
    try:
        sim.at(failover * I, sim.failover)
        sim.at((failover + stale) * I, sim.restart_stale)
        for b in blips:
            sim.at((failover + stale + b) * I, lambda: sim.blip("B"))
        if crash is not None:
            node, at, down = crash
            sim.at(at * I, lambda: sim.crash(f"n{node}"))
            sim.at((at + down) * I, lambda: sim.restart(f"n{node}"))
        if pause is not None:
            node, at, length = pause
            sim.at(at * I, lambda: sim.pause(f"n{node}", length * I))
        sim.run_until(40 * I)
    finally:
        sim.close()
    assert sim.stale_writes == 0, "\n".join(sim.stats.problems + sim.trace[-30:])
    assert sim.stats.acting_violations == [], sim.trace[-40:]
    assert sim.convergence_error() is None, sim.trace[-40:]


@pytest.mark.parametrize("client", ["first", "rule"])
def test_a_plain_database_failover_needs_no_choice(client: str) -> None:
    """Without a stale node both ways agree: the cluster follows B and stays whole."""
    sim = new_pair_sim([300, 200, 100], I, client=client)
    try:
        sim.at(10 * I, sim.failover)
        sim.run_until(25 * I)
    finally:
        sim.close()
    assert sim.stale_writes == 0 and sim.stats.acting_violations == []
    assert sim.convergence_error() is None
