"""Deterministic simulation of the HA core (see :mod:`tests.unit.ha_sim` for the model).

N nodes (2-4), each a real :class:`~appliance.ha.runtime.Runtime` over ONE shared in-memory store,
one global simulated time, per-node monotonic and wall clocks. Store calls take effect at their
start; the reply arrives ``latency`` seconds later. Each node has a local fence (as
:class:`appliance.ha.fence.FileFence`), agents are woken by NOTIFY as with the PostgreSQL store (or,
with ``notify=False``, only sleep), and a clean stop is ``Runtime.stop()`` then ``services.stop()``
as in ``Agent.run``.

* Scenario tests follow the numbered fault scenarios of ``shared/design/ha.md`` §10.
* Property tests draw fault schedules with hypothesis (derandomized: CI runs the same examples) and
  check the invariants at every event:

  - acting (must always hold): never two nodes whose primary-only services run with their local fence
    open (:mod:`appliance.ha.fence`: the services act only until the trust deadline the runtime grants);
  - weak (must always hold): never two nodes with primary-only services running AND trust windows
    that have not ended;
  - strong: never two nodes with primary-only service PROCESSES running at all; an overlap is tolerated
    (and is exactly what the fence covers) only when the stale node's agent is SIGSTOPped (it cannot
    check anything) or, in the "beyond the design's bounds" run, blocked in an over-long store call
    or asleep past its window after one;
  - the store's epoch never decreases; every successful ACQUIRE increments it by exactly 1;
  - no change of holder that no fault/stop/admin action/handover explains (no needless switch, no
    automatic failback);
  - after all faults heal and 3·I (plus the longest pause) pass: exactly one node runs the primary-only
    services, holds a live lease at the store's epoch, and trusts it; and it stays that way.

Known product bugs are pinned by ``xfail(strict=True)`` tests with a minimal reproduction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.ha.model import NodeStatus
from appliance.ha.status import status_of
from appliance.ha.timing import WAKE_SLACK_S
from tests.unit.ha_sim import BREAKABLE, FAULT_KINDS, MIN_WAKE_S, Fault, HotLoop, Sim, apply, new_sim

I = 10.0  # noqa: E741 - the keepalive interval, as the design calls it
GRAIN = WAKE_SLACK_S + 2 * MIN_WAKE_S  # the scheduling granularity of the simulation
PAUSE = frozenset({"paused"})
SETTINGS = {"derandomize": True, "database": None, "deadline": None, "print_blob": False,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


@contextmanager
def cluster(priorities: list[int], phases: list[float] | None = None, keepalive: float = I,
            notify: bool = True) -> Iterator[Sim]:
    """A simulated cluster; ``notify=False``: the agents' LISTEN connections are down (they only sleep)."""
    sim = new_sim(priorities, keepalive, phases, notify)
    try:
        yield sim
    finally:
        sim.close()


def tail(sim: Sim, lines: int = 40) -> str:
    return "\n".join(sim.trace[-lines:])


def primaries(sim: Sim) -> list[str]:
    return [n.node_id for n in sim.nodes.values() if n.services.primary]


def intervals(sim: Sim, node_id: str) -> list[tuple[float, float | None]]:
    return [(s, e) for s, e in sim.nodes[node_id].services.intervals if s is not None]


def assert_safe(sim: Sim, excused: frozenset[str] = frozenset()) -> None:
    """Acting and weak invariants, epoch rules, and no strong (process) overlap except by nodes labelled
    ``excused``."""
    assert not sim.stats.acting_violations, (sim.stats.acting_violations[:3], tail(sim))
    assert not sim.stats.weak_violations, (sim.stats.weak_violations[:3], tail(sim))
    assert not sim.stats.problems, (sim.stats.problems, tail(sim))
    bad = [o for o in sim.stats.overlaps if o.unexplained(excused)]
    assert not bad, (bad[:3], tail(sim))


def assert_converged(sim: Sim, all_up: bool = True) -> None:
    error = sim.convergence_error(all_up)
    assert error is None, (error, tail(sim))


def settle_and_check_stable(sim: Sim, seconds: float) -> None:
    """The converged state holds for ``seconds`` more: no new epoch, no service start or stop."""
    epoch, starts = sim.store.epoch, sim.primary_starts()
    stops = sum(1 for n in sim.nodes.values() for _, e in n.services.intervals if e is not None)
    sim.run_until(sim.t + seconds)
    assert_converged(sim)
    assert sim.store.epoch == epoch and sim.primary_starts() == starts, tail(sim)
    assert stops == sum(1 for n in sim.nodes.values() for _, e in n.services.intervals if e is not None)


def renew_times(sim: Sim, node_id: str) -> list[float]:
    return [float(line.split()[0]) for line in sim.trace if line.split()[1:3] == [node_id, "tick:"]
            and " renew: " in line]


# === scenarios of design §10 ==================================================================================


@settings(max_examples=40, **SETTINGS)
@given(st.permutations([300, 200, 100, 50]), st.lists(st.integers(0, 15), min_size=4, max_size=4))
def test_cold_start_in_any_order_elects_the_highest_priority_node(prios: list[int], boot: list[int]) -> None:
    """§10.28: all nodes start within the start window (1.5·I), in any order: exactly one primary, the
    highest-priority node, at epoch 1."""
    with cluster(prios, [b * I / 10 for b in boot]) as sim:
        sim.run_until(4 * I)
        best = f"n{prios.index(300)}"
        assert [(a.node, a.epoch) for a in sim.store.acquires] == [(best, 1)], tail(sim)
        assert_converged(sim)
        assert_safe(sim)


def test_kill_primary_fails_over_to_the_best_online_standby_and_it_does_not_fail_back() -> None:
    """§10.1, §10.21 (tie -> lowest id), §10.22 (the old primary reboots as a standby)."""
    with cluster([300, 200, 200], [0.0, 4.0, 7.0]) as sim:
        sim.run_until(5 * I)
        assert primaries(sim) == ["n0"]
        crash = 5 * I + 3.0
        sim.at(crash, lambda: sim.crash("n0"))
        sim.at(9 * I, lambda: sim.restart("n0"))
        sim.run_until(20 * I)
        assert [(a.node, a.epoch, a.previous_holder) for a in sim.store.acquires] == [("n0", 1, None),
                                                                                      ("n1", 2, "n0")]
        start = intervals(sim, "n1")[0][0]
        assert start - crash <= 3 * I + GRAIN
        assert intervals(sim, "n0") == [(0.0, crash)]  # died with the node; never primary again
        assert_converged(sim)
        assert_safe(sim)


def test_offline_top_candidate_is_skipped() -> None:
    """§10.21: the highest-priority standby is cut off from the database; the next one takes over."""
    with cluster([300, 250, 100], [0.0, 2.0, 5.0]) as sim:
        sim.at(3 * I, lambda: sim.partition("n1", 10 * I))
        sim.at(4 * I + 1, lambda: sim.crash("n0"))
        sim.run_until(10 * I)
        assert [a.node for a in sim.store.acquires] == ["n0", "n2"]
        assert_safe(sim)


def test_quick_reboot_of_the_primary_reconfirms_its_own_lease() -> None:
    """§10.22: rebooted before its lease expired, the node starts as a standby and acts again only after
    renewing (confirming) the lease: same epoch, no failover, no overlap."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(3 * I + 1, lambda: sim.crash("n0"))
        sim.at(3 * I + 3, lambda: sim.restart("n0"))
        sim.run_until(8 * I)
        assert len(sim.store.acquires) == 1 and sim.store.epoch == 1
        assert [s for s, _ in intervals(sim, "n0")] == [0.0, 3 * I + 3]
        assert_converged(sim)
        assert_safe(sim)


@pytest.mark.parametrize(("notify", "bound"), [(True, GRAIN), (False, I + GRAIN)], ids=["notify", "no-notify"])
def test_graceful_stop_hands_over_within_one_interval(notify: bool, bound: float) -> None:
    """§10.2: SIGTERM: services stop first, the lease is released to the best other node, which takes it
    at once when woken by the release's NOTIFY, else at its next tick (within I), never after the TTL."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0], notify=notify) as sim:
        stop = 4 * I + 1
        sim.at(stop, lambda: sim.request_stop("n0"))
        sim.run_until(8 * I)
        assert intervals(sim, "n0") == [(0.0, stop)]
        last = sim.store.acquires[-1]
        assert (last.node, last.epoch, last.handed_over) == ("n1", 2, True)
        assert 0 < last.t - stop <= bound
        assert sim.nodes["n0"].state == "stopped" and not sim.stats.stop_left_running
        assert_safe(sim)


def test_pause_of_the_primary_longer_than_its_lease_overlaps_only_while_paused() -> None:
    """§10.3: SIGSTOP the primary's agent for 1.5·T. A standby takes over after T. The old primary's
    service processes keep running while its agent is stopped (the strong invariant fails, by design),
    but its fence closed at its trust deadline, before the lease could be taken, so the two never ACT
    at once; on SIGCONT its first tick demotes it, and it stays a standby."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        pause_at, pause_for = 3 * I + 2, 3 * I
        sim.at(pause_at, lambda: sim.pause("n0", pause_for))
        sim.run_until(12 * I)
        takeover = intervals(sim, "n1")[0][0]
        resume = pause_at + pause_for
        # The holder renews every I/2, so its lease ends 1.5·I to 2·I after the pause began.
        assert 1.5 * I <= takeover - pause_at <= 3 * I + GRAIN
        assert intervals(sim, "n0") == [(0.0, resume)]  # demoted at the very first tick after SIGCONT
        assert sim.overlap_seconds() == pytest.approx(resume - takeover)
        assert all(dict(o.labels)["n0"] == "paused" for o in sim.stats.overlaps)
        last_renewal = max(t for t in renew_times(sim, "n0") if t < pause_at)
        assert sim.stats.late_fence["paused"] == pytest.approx(resume - (last_renewal + 1.5 * I))
        assert takeover >= last_renewal + 2 * I  # the fence (trust deadline) closed 0.5·I before
        assert [a.node for a in sim.store.acquires] == ["n0", "n1"]
        assert_safe(sim, excused=PAUSE)
        assert_converged(sim)


@settings(max_examples=30, **SETTINGS)
@given(st.integers(0, 99), st.integers(1, 49))
def test_pause_of_the_primary_shorter_than_half_an_interval_changes_nothing(start: int, length: int) -> None:
    """§10.4 (the part the timing allows): a pause < 0.5·I at any phase: no demotion, no epoch change."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(3 * I + start * I / 100, lambda: sim.pause("n0", length * I / 100))
        sim.run_until(8 * I)
        assert intervals(sim, "n0") == [(0.0, None)] and sim.store.epoch == 1, tail(sim)
        assert_safe(sim)


def test_pause_of_the_primary_for_half_the_threshold_does_not_demote() -> None:
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(2 * I + 7.5, lambda: sim.pause("n0", I))  # renewed at 2·I; paused 2.75·I .. 3.75·I
        sim.run_until(8 * I)
        assert sim.store.epoch == 1
        assert intervals(sim, "n0") == [(0.0, None)], tail(sim)


def test_paused_standby_returns_as_standby() -> None:
    """§10.5: a standby stopped for > T is shown WAIT (not eligible), then rejoins as a standby."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0]) as sim:
        sim.at(3 * I, lambda: sim.pause("n1", 4 * I))
        sim.run_until(6 * I)
        view = sim.store.snapshot()
        node = view.node("n1")
        assert node is not None and status_of(view, node) is NodeStatus.WAIT
        assert [n.node_id for n in view.candidates()] == ["n0", "n2"]
        sim.run_until(10 * I)
        view = sim.store.snapshot()
        node = view.node("n1")
        assert node is not None and status_of(view, node) is NodeStatus.SECOND
        assert intervals(sim, "n0") == [(0.0, None)] and sim.store.epoch == 1
        assert_safe(sim)


def test_primary_cut_off_from_the_database_self_fences_before_anyone_takes_over() -> None:
    """§10.6: the primary stops its services when its trust window ends (1.5·I after its last renewal
    started), strictly before the lease can be taken; the best standby takes over; on healing the old
    primary returns as a standby."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0]) as sim:
        sim.at(3 * I + 1, lambda: sim.partition("n0", 6 * I))
        sim.run_until(14 * I)
        last_renewal = max(t for t in renew_times(sim, "n0") if t < 3 * I + 1)
        (_, stopped), = intervals(sim, "n0")
        assert stopped == pytest.approx(last_renewal + 1.5 * I)
        takeover = intervals(sim, "n1")[0][0]
        assert takeover >= last_renewal + 2 * I > stopped
        assert sim.overlap_seconds() == 0 and not sim.stats.overlaps
        assert [a.node for a in sim.store.acquires] == ["n0", "n1"]
        assert_converged(sim)


def test_standby_cut_off_from_the_database_changes_nothing() -> None:
    """§10.7."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(2 * I, lambda: sim.partition("n1", 5 * I, delay=0.1 * I))
        sim.run_until(12 * I)
        assert intervals(sim, "n0") == [(0.0, None)] and sim.store.epoch == 1
        assert_safe(sim)
        assert_converged(sim)


def test_short_database_outage_changes_nothing() -> None:
    """§10.8 (the part the timing allows): all nodes lose the database for 0.4·I: no demotion, same epoch."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        for start in (2 * I + 1, 4 * I + 8.5):
            sim.at(start, lambda: [sim.partition(n, 0.4 * I) for n in ("n0", "n1")])
        sim.run_until(8 * I)
        assert intervals(sim, "n0") == [(0.0, None)] and sim.store.epoch == 1, tail(sim)


def test_database_outage_shorter_than_the_threshold_keeps_the_primary() -> None:
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(2 * I + 7.5, lambda: [sim.partition(n, 1.5 * I) for n in ("n0", "n1")])
        sim.run_until(8 * I)
        assert sim.store.epoch == 1 and sim.store.lease_row()[0] == "n0", tail(sim)


def test_database_outage_longer_than_the_threshold_prefers_the_previous_holder() -> None:
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(3 * I + 1, lambda: [sim.partition(n, 3 * I) for n in ("n0", "n1")])
        sim.run_until(10 * I)
        assert sim.store.lease_row() == ("n0", 1), tail(sim)


def test_moderately_slow_database_causes_no_failover_and_no_flapping() -> None:
    """§10.15 (within budget): every store call of the primary takes 0.1·I: nothing changes."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(1.5 * I, lambda: sim.slow("n0", 0.1 * I, 10 * I))
        sim.run_until(14 * I)
        assert intervals(sim, "n0") == [(0.0, None)] and sim.store.epoch == 1, tail(sim)
        assert_safe(sim)


def test_slow_heartbeat_does_not_make_the_primary_flap() -> None:
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(2 * I + 1, lambda: sim.slow("n0", 0.8 * I, 10 * I, frozenset({"heartbeat"})))
        sim.run_until(14 * I)
        assert sim.store.epoch == 1
        assert intervals(sim, "n0") == [(0.0, None)], tail(sim)


def test_wall_clock_jumps_change_nothing() -> None:
    """§10.17, §10.18: ±1 h jumps of the primary's and a standby's wall clock: the run is identical to one
    without jumps (leases use the store clock, local windows the monotonic clock)."""

    def run(jumps: bool) -> tuple[object, ...]:
        with cluster([300, 200, 100], [0.0, 3.0, 6.0]) as sim:
            if jumps:
                for k, (node, seconds) in enumerate([("n0", 3600.0), ("n1", -3600.0), ("n0", -7200.0),
                                                      ("n2", 3600.0)]):
                    sim.at((2 + 2 * k) * I + 0.5, lambda n=node, s=seconds: sim.jump_wall(n, s))
            sim.at(9 * I, lambda: sim.crash("n0"))
            sim.run_until(15 * I)
            assert_safe(sim)
            return (tuple(sim.store.acquires), tuple(sim.primary_starts()),
                    tuple(tuple(intervals(sim, n)) for n in sim.nodes))

    assert run(jumps=True) == run(jumps=False)


@settings(max_examples=60, **SETTINGS)
@given(st.integers(2, 4), st.lists(st.integers(0, 3), min_size=4, max_size=4),
       st.lists(st.integers(0, 4), min_size=4, max_size=4), st.integers(0, 99))
def test_simultaneous_takeover_race_has_exactly_one_winner(n: int, phase: list[int], lat: list[int],
                                                           crash: int) -> None:
    """§10.20: standbys of EQUAL priority, ticking at (nearly) the same instants, with store calls of
    different speeds (so their snapshots go stale differently) race for the lease of a crashed primary:
    exactly one CAS succeeds, the epoch rises by exactly one, never two primaries."""
    with cluster([300] + [200] * (n - 1), [0.0] + [p * 0.01 for p in phase[: n - 1]]) as sim:
        for i in range(1, n):
            sim.at(0.5, lambda i=i: sim.slow(f"n{i}", lat[i - 1] * 0.05 * I, 100 * I))
        sim.at(3 * I + crash * I / 100, lambda: sim.crash("n0"))
        sim.run_until(10 * I)
        assert [a.epoch for a in sim.store.acquires] == [1, 2], tail(sim)
        assert sim.store.acquires[1].node in [f"n{i}" for i in range(1, n)]
        assert_safe(sim)


@pytest.mark.parametrize(("notify", "bound"), [(True, 0.1), (False, 2 * I + GRAIN)], ids=["notify", "no-notify"])
def test_switchover_to_an_online_node_hands_over_without_overlap(notify: bool, bound: float) -> None:
    """§10.24: the old primary stops its services, then hands the lease to X (epoch +1): well under a second
    with NOTIFY; without it (LISTEN connection down) within 2·I (the holder sees the request at its next
    tick, X the release at its next one)."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0], notify=notify) as sim:
        request = 3 * I + 1
        sim.at(request, lambda: sim.switchover("n2"))
        sim.run_until(8 * I)
        last = sim.store.acquires[-1]
        assert (last.node, last.epoch, last.handed_over) == ("n2", 2, True)
        (_, stopped), = intervals(sim, "n0")
        started = intervals(sim, "n2")[0][0]
        assert request < stopped <= started <= request + bound
        assert sim.overlap_seconds() == 0
        assert_converged(sim)


@pytest.mark.parametrize("fault", ["target-freezes", "target-dies", "stop-to-dead-successor-then-restart"])
def test_switchover_to_a_target_that_freezes_or_dies_does_not_busy_loop(fault: str) -> None:
    """§10.25 with NOTIFY: the target is SIGSTOPped, or killed, right as the switchover is requested; or a
    clean stop hands over to a standby that has just died, and the old primary restarts right away."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0]) as sim:
        if fault == "target-freezes":
            sim.at(3 * I + 1, lambda: (sim.pause("n2", 5 * I), sim.switchover("n2")))
        elif fault == "target-dies":
            sim.at(3 * I + 1, lambda: (sim.crash("n2"), sim.switchover("n2")))
        else:
            sim.at(3 * I + 1, lambda: (sim.crash("n1"), sim.request_stop("n0")))
            sim.at(3 * I + 3, lambda: sim.restart("n0"))
        sim.run_until(8 * I)  # raises HotLoop


def test_switchover_to_a_target_that_freezes_without_notify_falls_back_to_the_old_primary() -> None:
    """Without NOTIFY the same case is calm: the holder re-resigns once per tick until the frozen target is
    judged offline (2·I after its last heartbeat), then renews its lease again (same epoch)."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0], notify=False) as sim:
        sim.at(3 * I + 1, lambda: (sim.pause("n2", 5 * I), sim.switchover("n2")))
        sim.run_until(8 * I)
        assert max(n.ticks for n in sim.nodes.values()) < 40
        assert primaries(sim) == ["n0"] and sim.store.epoch == 1
        (_, stopped), (restarted, _) = intervals(sim, "n0")
        assert restarted - stopped <= 2 * I + I + GRAIN  # no primary until the target is judged offline
        assert_safe(sim)


def test_switchover_target_dying_mid_way_converges_to_one_primary() -> None:
    """§10.25 without NOTIFY (with it, see the busy-loop test above): the target crashes right after the old
    primary released the lease to it: exactly one primary again (the old one, still online) within T + I."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0], notify=False) as sim:
        sim.at(3 * I + 1, lambda: sim.switchover("n2"))
        # n0 renews every I/2, so it sees the request and resigns at 3.5·I; n2 would take it at 3.6·I.
        sim.at(3.5 * I + 0.5, lambda: sim.crash("n2"))
        sim.run_until(3.5 * I + 0.5 + 3 * I)
        assert_converged(sim, all_up=False)
        assert primaries(sim) == ["n0"] and sim.store.epoch == 1, tail(sim)
        assert_safe(sim)


def test_keepalive_change_declares_nobody_dead() -> None:
    """§10.27: 10 s -> 30 s -> 10 s -> 5 s while running: every running node stays online in every snapshot,
    the lease never changes hands, the primary never stops."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0]) as sim:
        for at, value in ((3 * I + 1, 30.0), (15 * I + 2, 10.0), (25 * I + 7, 5.0)):
            sim.at(at, lambda v=value: sim.set_keepalive(v))
        t = 2 * I
        while t < 35 * I:
            sim.run_until(t)
            view = sim.store.snapshot()
            offline = [n.node_id for n in view.nodes if not view.online(n)]
            assert not offline, (t, offline, tail(sim))
            t += 0.5
        assert sim.store.epoch == 1 and intervals(sim, "n0") == [(0.0, None)]
        assert_safe(sim)


def test_maintenance_blocks_automatic_failover_until_it_ends() -> None:
    """§10.29: the primary dies during maintenance: no promotion; when maintenance ends the best standby
    takes over within I."""
    with cluster([300, 200, 100], [0.0, 3.0, 6.0]) as sim:
        sim.at(2 * I, lambda: sim.set_maintenance(True))
        sim.at(3 * I + 1, lambda: sim.crash("n0"))
        end = 9 * I + 4
        sim.at(end, lambda: sim.set_maintenance(False))
        sim.run_until(end)
        assert len(sim.store.acquires) == 1 and not primaries(sim)
        sim.run_until(12 * I)
        assert sim.store.acquires[-1].node == "n1" and sim.store.acquires[-1].t - end <= I + GRAIN
        assert_safe(sim)


def test_switchover_still_works_in_maintenance() -> None:
    with cluster([300, 200], [0.0, 3.0]) as sim:
        sim.at(I, lambda: sim.set_maintenance(True))
        sim.at(2 * I + 1, lambda: sim.switchover("n1"))
        sim.run_until(6 * I)
        assert [a.node for a in sim.store.acquires] == ["n0", "n1"] and primaries(sim) == ["n1"]
        assert_safe(sim)


def test_clean_stop_while_cut_off_from_the_database_leaves_no_primary_behind() -> None:
    """SIGTERM while the primary cannot reach the DB: ``Runtime.stop()`` cannot resign, but it steps down
    (its services stop) before returning; the lease expires and a standby takes over without overlap."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(2 * I + 1, lambda: sim.partition("n0", 10 * I))
        sim.at(2 * I + 2, lambda: sim.request_stop("n0"))
        sim.run_until(8 * I)
        assert sim.stats.stop_left_running == []
        assert intervals(sim, "n0") == [(0.0, 2 * I + 2)]
        assert primaries(sim) == ["n1"] and sim.overlap_seconds() == 0
        assert_safe(sim)


def test_primary_blocked_in_a_long_store_call_is_stopped_by_its_fence() -> None:
    """Keepalive 2 s (allowed) with a black-holed DB whose calls hang 1.5·I (the agent's own timeouts are
    2-3 s). The holder renews first in each tick, so the failed renewal is noticed early and it steps down
    when its trust window ends; in any case the local fence (deadline = trust end) stops its services from
    acting before the standby can take over."""
    ka = 2.0
    with cluster([300, 200], [0.0, 0.5], keepalive=ka) as sim:
        sim.at(2 * ka + 0.1, lambda: sim.partition("n0", 4 * ka, delay=1.5 * ka))  # just after a renewal
        sim.run_until(10 * ka)
        bad = [o for o in sim.stats.overlaps if o.unexplained(PAUSE)]
        assert all(dict(o.labels)["n0"] == "in-call" for o in bad)  # if processes overlap at all ...
        assert_safe(sim, excused=PAUSE | {"in-call"})  # ... never two ACTING: the fence closed in time


def test_holder_that_heartbeats_but_cannot_renew_is_replaced() -> None:
    """Liveness: the holder still heartbeats (so it looks online) but its renewals fail. It self-fences at
    its trust deadline; the standbys wait for it at most one interval after its lease lapsed, then elect."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(2 * I + 1, lambda: sim.break_calls("n0", frozenset({"renew"}), 20 * I))
        sim.run_until(8 * I)
        assert primaries(sim) == ["n1"], tail(sim)
        assert_safe(sim)


def test_holder_that_renews_but_cannot_read_the_cluster_stays_primary() -> None:
    """The holder renews first in each tick; if only its snapshot fails it still holds a valid lease, so it
    stays the one primary (no needless failover, no gap)."""
    with cluster([300, 200], [0.0, 5.0]) as sim:
        sim.at(2 * I + 1, lambda: sim.break_calls("n0", frozenset({"snapshot"}), 20 * I))
        sim.run_until(8 * I)
        assert primaries(sim) == ["n0"] and sim.store.epoch == 1, tail(sim)
        assert_safe(sim)


def test_failed_renewal_does_not_sleep_past_the_trust_deadline() -> None:
    with cluster([300, 200], [0.0, 2.0], keepalive=5.0) as sim:
        sim.at(11.0, lambda: sim.break_calls("n0", frozenset({"renew"}), 6 * 5.0))
        sim.run_until(40.0)
        assert sim.stats.late_fence.get("idle", 0.0) == 0.0, (sim.stats.late_fence, tail(sim))


# === failover time ===========================================================================================


@settings(max_examples=200, **SETTINGS)
@given(st.lists(st.sampled_from([100, 200, 300]), min_size=2, max_size=4),
       st.lists(st.integers(0, 99), min_size=4, max_size=4), st.integers(0, 199))
def test_failover_time_after_a_primary_crash_is_at_most_three_intervals(prios: list[int], phases: list[int],
                                                                          crash: int) -> None:
    """§10.1: with the rest healthy, the best surviving node runs the primary services at most 3·I (plus the
    scheduling granularity) after the primary was killed; the epoch rises by exactly one."""
    with cluster(prios, [p * I / 100 for p in phases[: len(prios)]]) as sim:
        sim.run_until(3 * I)
        old = sim.store.lease_row()[0]
        assert old is not None
        at = 3 * I + crash * I / 100
        sim.at(at, lambda: sim.crash(old))
        sim.run_until(at + 4 * I)
        survivors = sorted((-p, f"n{i}") for i, p in enumerate(prios) if f"n{i}" != old)
        new = survivors[0][1]
        assert [a.node for a in sim.store.acquires[1:]] == [new], tail(sim)
        assert sim.store.epoch == 2
        took = intervals(sim, new)[0][0] - at
        assert I <= took + GRAIN and took <= 3 * I + GRAIN, (took, tail(sim))
        assert_safe(sim)


def test_failover_time_is_typically_under_two_and_a_half_intervals() -> None:
    """A sweep of crash instants and tick phases: the mean failover time stays <= 2.5·I, the worst <= 3·I."""
    times = []
    for k in range(40):
        with cluster([300, 200, 100], [0.0, (k * 0.37) % I, (k * 0.71) % I]) as sim:
            at = 4 * I + k * 0.25
            sim.at(at, lambda: sim.crash("n0"))
            sim.run_until(at + 4 * I)
            times.append(intervals(sim, "n1")[0][0] - at)
    assert max(times) <= 3 * I + GRAIN
    assert sum(times) / len(times) <= 2.5 * I


# === random fault schedules ======================================================================================


def faults(latencies: list[float], timeouts: list[float], keepalives: list[float],
           kinds: tuple[str, ...] = FAULT_KINDS) -> st.SearchStrategy[Fault]:
    """One fault; times/durations in units of I; node index < 0 means 'whoever holds the lease then'."""
    arg = {
        "crash": st.sampled_from([0.0, 0.5, 1.0, 3.0]),  # auto-restart after (0: at the heal)
        "restart": st.just(0.0),
        "pause": st.sampled_from([0.3, 0.45, 1.0, 1.6, 3.0, 5.0]),
        "partition": st.sampled_from([0.5, 1.0, 1.9, 2.5, 4.0]),
        "slow": st.sampled_from([1.0, 3.0, 6.0]),
        "lose": st.sampled_from([1, 2, 3, 6]),
        "jump": st.sampled_from([-3600.0, 3600.0]),
        "keepalive": st.sampled_from(keepalives),
        "maintenance": st.sampled_from([1.0, 3.0]),
        "switchover": st.just(0.0),
        "stop": st.sampled_from([0.0, 1.0, 3.0]),
        "admin": st.sampled_from([1.0, 3.0]),
        "break": st.sampled_from([0.5, 1.0, 3.0]),
    }
    arg2 = {"partition": st.sampled_from(timeouts), "slow": st.sampled_from(latencies),
            "break": st.integers(0, len(BREAKABLE) - 1).map(float)}
    return st.sampled_from(kinds).flatmap(lambda kind: st.builds(
        Fault, st.integers(4, 80).map(lambda q: q / 4), st.just(kind), st.integers(-3, 3), arg[kind],
        arg2.get(kind, st.just(0.0))))


def run_schedule(prios: list[int], phases: list[int], schedule: list[Fault], notify: bool,
                 excused: frozenset[str]) -> Sim | None:
    """Run the schedule, heal everything at 24·I, wait 3·I_max + the longest pause (+ in-flight calls), check
    convergence, then check that it stays converged for another 3·I_max. The caller closes the sim.

    None: the run hit the known NOTIFY busy loop (pinned by
    test_switchover_to_a_target_that_freezes_or_dies_does_not_busy_loop) and was cut short there; the
    invariants were checked up to that point. Any other busy loop fails."""
    sim = new_sim(prios, I, [p * I / 40 for p in phases[: len(prios)]], notify)
    try:
        for fault in schedule:
            apply(sim, fault, I)
        heal = 24 * I
        sim.at(heal, sim.heal)
        longest = max([f.arg * I for f in schedule if f.kind in ("pause", "slow")] + [0.0])
        latency = max([f.arg2 * I for f in schedule if f.kind in ("slow", "partition")] + [0.0])
        sim.run_until(heal)
        sim.run_until(heal + 3 * sim.keepalive_max + longest + 3 * latency + GRAIN)
        assert_converged(sim)
        settle_and_check_stable(sim, 3 * sim.keepalive_max)
    except HotLoop:
        known = sim.in_resign_loop()
        try:
            check_schedule(sim, excused)  # what happened before the loop
        finally:
            sim.close()
        if known:
            return None
        raise
    except BaseException:
        sim.close()
        raise
    return sim


def check_schedule(sim: Sim | None, excused: frozenset[str]) -> None:
    if sim is None:
        return
    try:
        assert_safe(sim, excused)
        assert all(blind for _, _, blind in sim.stats.stop_left_running), sim.stats.stop_left_running
        switches = sim.unexplained_switches(3 * sim.keepalive_max + I)
        assert not switches, (switches, tail(sim, 80))
    finally:
        sim.close()


PRIOS = st.lists(st.sampled_from([100, 200, 300]), min_size=2, max_size=4)
PHASES = st.lists(st.integers(0, 39), min_size=4, max_size=4)
WITHIN = ([0.02, 0.05, 0.1], [0.0, 0.05, 0.1], [5.0, 10.0, 20.0])
BEYOND = ([0.1, 0.2, 0.45, 0.8], [0.2, 0.5], [1.0, 5.0, 10.0, 30.0])
BEYOND_EXCUSED = PAUSE | {"in-call", "idle"}


@settings(max_examples=600, **SETTINGS)
@given(PRIOS, PHASES, st.lists(faults(*WITHIN), max_size=12))
def test_random_faults_within_the_design_bounds(prios: list[int], phases: list[int], schedule: list[Fault]) -> None:
    """Every fault kind, NOTIFY on, store calls answering (or timing out) within 0.1·I0 <= 0.2·I_min,
    keepalive 5-20 s. Process overlaps are excused only for SIGSTOPped agents (their fences closed in time).
    A run that falls into the known NOTIFY busy loop ends there (see run_schedule)."""
    check_schedule(run_schedule(prios, phases, schedule, True, PAUSE), PAUSE)


@settings(max_examples=500, **SETTINGS)
@given(PRIOS, PHASES, st.lists(faults(*WITHIN), max_size=12))
def test_random_faults_within_the_design_bounds_without_notify(prios: list[int], phases: list[int],
                                                                schedule: list[Fault]) -> None:
    """The same with the agents' LISTEN connections down (they only sleep): no busy loop possible."""
    check_schedule(run_schedule(prios, phases, schedule, False, PAUSE), PAUSE)


@settings(max_examples=300, **SETTINGS)
@given(PRIOS, PHASES, st.lists(faults(*BEYOND), max_size=12))
def test_random_faults_beyond_the_design_bounds(prios: list[int], phases: list[int], schedule: list[Fault]) -> None:
    """Calls taking up to 0.8·I0, timeouts up to 0.5·I0, keepalive 1-30 s (so a call may last many I).
    The acting and weak invariants, the epoch rules, convergence and no-needless-switch must still hold;
    process overlaps may now also come from agents blocked in over-long calls (``in-call``, see
    test_primary_blocked_in_a_long_store_call_is_stopped_by_its_fence) or asleep past their window after
    one (``idle``): the fence covers both."""
    check_schedule(run_schedule(prios, phases, schedule, True, BEYOND_EXCUSED), BEYOND_EXCUSED)


@settings(max_examples=200, **SETTINGS)
@given(PRIOS, PHASES, st.lists(faults(*BEYOND), max_size=12))
def test_random_faults_beyond_the_design_bounds_without_notify(prios: list[int], phases: list[int],
                                                               schedule: list[Fault]) -> None:
    check_schedule(run_schedule(prios, phases, schedule, False, BEYOND_EXCUSED), BEYOND_EXCUSED)
