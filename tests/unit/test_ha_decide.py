"""Table-style unit tests of the pure HA decision :func:`appliance.ha.decide.decide` on hand-built views.

Every case builds a :class:`ClusterView` by hand (ages and remainders as the database clock would
compute them), a :class:`Local` for the deciding node and its monotonic ``now``, and checks the
Action (the tested value), the CAS epoch / target / wake where they matter, and that the reason is a
sensible one-line sentence mentioning the cause. Timing (I = keepalive interval): lease TTL 2·I,
trust window 1.5·I from the start of a renewal, online = heartbeat age <= 2·I (database clock).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.ha.decide import decide
from appliance.ha.model import Action, ClusterView, Decision, Lease, Local, NodeState, NodeStatus
from appliance.ha.status import status_of
from appliance.ha.timing import WAKE_SLACK_S, lease_ttl_s, trust_s

KA = 10.0  # keepalive interval of the hand-built views
NOW = 5000.0  # the deciding node's monotonic clock
FRESH = 1.0  # a heartbeat age that is clearly online
STALE = 2 * KA + 0.5  # clearly offline (just over 2·I)


def node(node_id: str, priority: int = 100, age: float | None = FRESH, admin: str = "active") -> NodeState:
    return NodeState(node_id, node_id.upper(), priority, "standby", admin, age, 7)


def view(*nodes: NodeState, holder: str | None = None, epoch: int = 4, remaining: float | None = 12.0,
         handover: str | None = None, maintenance: bool = False, keepalive: float = KA,
         judge: float | None = None) -> ClusterView:
    return ClusterView(tuple(nodes), Lease(holder, epoch, remaining, handover), keepalive, maintenance,
                       judge_keepalive_s=judge)


def primary(node_id: str = "a", epoch: int = 4, trust_left: float = 0.5 * KA) -> Local:
    """A node acting as primary at ``epoch``, trusted for ``trust_left`` more seconds."""
    return Local(node_id, acting=True, epoch=epoch, trusted_until=NOW + trust_left)


def standby(node_id: str) -> Local:
    return Local(node_id)


def assert_line(reason: str) -> None:
    """A loggable one-liner: non-empty, no newline, no unformatted or missing values."""
    assert isinstance(reason, str) and reason.strip() == reason and 0 < len(reason) <= 200, reason
    assert "\n" not in reason and reason[0].isalpha(), reason
    assert "None" not in reason and "{" not in reason, reason


def assert_sentence(decision: Decision, *words: str) -> None:
    """The reason is one readable sentence (several words) that names the cause (case-insensitively)."""
    reason = decision.reason
    assert_line(reason)
    assert len(reason.split()) >= 3, f"not a sentence: {reason!r}"
    for word in words:
        assert word.lower() in reason.lower(), f"{word!r} not in {reason!r}"


@dataclass(frozen=True)
class Case:
    id: str
    view: ClusterView | None
    local: Local
    action: Action
    words: tuple[str, ...] = ()
    expected_epoch: int | None = None
    target: str | None = None
    wake: float | str | None = "any"  # "any": not checked
    now: float = NOW


A, B, C, D = node("a", 100), node("b", 200), node("c", 200), node("d", 50)

CASES = [
    # --- the primary -----------------------------------------------------------------------------------
    Case("primary renews its lease, every half interval", view(A, B, holder="a"), primary("a"), Action.RENEW,
         ("primary", "renew"), expected_epoch=4, wake=KA / 2),
    Case("primary renews a lapsed lease nobody took (same epoch)", view(A, B, holder="a", remaining=-3.0),
         primary("a"), Action.RENEW, ("renew",), expected_epoch=4),
    Case("restarted holder (epoch unknown) confirms its lease by renewing", view(A, B, holder="a"),
         standby("a"), Action.RENEW, ("renew",), expected_epoch=4),
    Case("trust window ended: demote even though the lease still names it", view(A, B, holder="a", remaining=4.0),
         primary("a", trust_left=-0.01), Action.DEMOTE, ("trust window", "stepping down")),
    Case("trust window ends exactly now: demote", view(A, B, holder="a", remaining=5.0),
         primary("a", trust_left=0.0), Action.DEMOTE, ("trust window",)),
    Case("acting without any trust window: demote", view(A, B, holder="a"),
         Local("a", acting=True, epoch=4), Action.DEMOTE, ("trust window",)),
    Case("lease moved to a newer epoch while it still names this node: demote", view(A, B, holder="a", epoch=6),
         primary("a", epoch=5), Action.DEMOTE, ("epoch 6", "stepping down")),
    Case("holder no longer registered: demote", view(B, holder="a"), primary("a"), Action.DEMOTE,
         ("no longer registered",)),
    Case("unregistered standby stays", view(B, holder="b"), standby("a"), Action.STAY, ("not registered",)),
    # --- the database is unreachable ---------------------------------------------------------------------
    Case("DB unreachable, trust left: keep acting, check again within 1 s", None, primary("a", trust_left=3.0),
         Action.STAY, ("unreachable", "trusted"), wake=1.0),
    Case("DB unreachable, little trust left: wake when it ends", None, primary("a", trust_left=0.4),
         Action.STAY, ("unreachable",), wake=0.4),
    Case("DB unreachable, trust window ended: demote", None, primary("a", trust_left=-0.5), Action.DEMOTE,
         ("unreachable", "trust window", "stepping down")),
    Case("DB unreachable, standby: wait", None, standby("b"), Action.STAY, ("unreachable",), wake=None),
    # --- the lease is held by another node ---------------------------------------------------------------
    Case("lease held by another: standby stays", view(A, B, holder="a"), standby("b"), Action.STAY,
         ("standby", "A is primary")),
    Case("lease held by another while acting: demote", view(A, B, holder="b", epoch=5), primary("a", epoch=4),
         Action.DEMOTE, ("held by B", "stepping down")),
    Case("lease held by an unknown node while acting: demote", view(A, B, holder="zz", epoch=5),
         primary("a"), Action.DEMOTE, ("zz", "stepping down")),
    # --- the lease expired: the best online node takes it -----------------------------------------------
    Case("expired, holder offline: highest priority acquires", view(node("x", 900, STALE), A, B, D, holder="x",
         remaining=-0.1), standby("b"), Action.ACQUIRE, ("taking over", "highest-priority"), expected_epoch=4),
    Case("expired: lower priority waits for the best", view(node("x", 900, STALE), A, B, holder="x",
         remaining=-0.1), standby("a"), Action.STAY, ("B is first in line",), wake=KA),
    Case("expired: priority tie goes to the lowest node id", view(node("x", 900, STALE), C, B, holder="x",
         remaining=-1.0), standby("b"), Action.ACQUIRE, ("taking over",), expected_epoch=4),
    Case("expired: priority tie, higher node id waits", view(node("x", 900, STALE), C, B, holder="x",
         remaining=-1.0), standby("c"), Action.STAY, ("B is first in line",)),
    Case("expired: offline top candidate is skipped", view(node("x", 900, STALE), node("b", 300, STALE), C, A,
         holder="x", remaining=-1.0), standby("c"), Action.ACQUIRE, ("taking over",), expected_epoch=4),
    Case("expired: the offline top candidate itself is not first", view(node("x", 900, STALE), node("b", 300, STALE),
         C, holder="x", remaining=-1.0), standby("b"), Action.STAY, ("C is first in line",)),
    Case("expired: never-heard-from top candidate is skipped", view(node("x", 900, STALE), node("b", 300, None), C,
         holder="x", remaining=-1.0), standby("c"), Action.ACQUIRE, ("taking over",)),
    Case("expired: admin-stopped top candidate is never chosen", view(node("x", 900, STALE),
         node("b", 300, admin="stopped"), C, holder="x", remaining=-1.0), standby("c"), Action.ACQUIRE,
         ("taking over",), expected_epoch=4),
    Case("expired: the admin-stopped node itself stays", view(node("x", 900, STALE), node("b", 300, admin="stopped"),
         C, holder="x", remaining=-1.0), standby("b"), Action.STAY, ("taken out of the cluster",)),
    Case("free lease (never held): best acquires at epoch 0", view(A, B, holder=None, epoch=0, remaining=None),
         standby("b"), Action.ACQUIRE, ("taking over", "free"), expected_epoch=0),
    Case("free lease: no online node at all", view(node("a", 100, STALE), holder=None, epoch=0, remaining=None),
         standby("a"), Action.STAY, ("no node is online",)),
    Case("expired, holder still online: others wait for it to renew", view(node("a", 100, 19.0), B, holder="a",
         remaining=-2.0), standby("b"), Action.STAY, ("lapsed", "online"), wake=KA / 2),
    Case("expired, holder online but admin-stopped: the best takes over", view(node("a", 900, admin="stopped"), B,
         holder="a", remaining=-2.0), standby("b"), Action.ACQUIRE, ("taking over",)),
    # --- planned handover (switchover, clean stop) -------------------------------------------------------
    Case("released to me: the target acquires though not the best", view(A, node("b", 900), D, holder="a",
         remaining=0.0, handover="d"), standby("d"), Action.ACQUIRE, ("handed over",), expected_epoch=4),
    Case("released to another (online): the best waits", view(A, node("b", 900), D, holder="a", remaining=0.0,
         handover="d"), standby("b"), Action.STAY, ("handover to D",), wake=KA / 4),
    Case("released to an offline target: the best takes over", view(node("a", 100, STALE), node("b", 900),
         node("d", 50, STALE), holder="a", remaining=-5.0, handover="d"), standby("b"), Action.ACQUIRE,
         ("taking over",)),
    Case("holder with handover to an online target resigns", view(A, B, D, holder="a", handover="d"),
         primary("a"), Action.RESIGN, ("switchover", "D"), expected_epoch=4, target="d"),
    Case("holder with handover to an offline target keeps renewing", view(A, B, node("d", 50, STALE), holder="a",
         handover="d"), primary("a"), Action.RENEW, ("renew",)),
    Case("holder with handover to an admin-stopped target keeps renewing", view(A, B, node("d", 50, admin="stopped"),
         holder="a", handover="d"), primary("a"), Action.RENEW, ("renew",)),
    Case("holder with handover to itself keeps renewing", view(A, B, holder="a", handover="a"), primary("a"),
         Action.RENEW, ("renew",)),
    Case("standby target before the release: waits", view(A, D, holder="a", handover="d"), standby("d"),
         Action.STAY, ("A is primary",)),
    # --- clean stop / taken out of the cluster --------------------------------------------------------------
    Case("stopping primary resigns to the best other node", view(node("a", 900), B, C, D, holder="a"),
         replace(primary("a"), stopping=True), Action.RESIGN, ("stopping", "B"), expected_epoch=4, target="b"),
    Case("stopping primary skips offline and stopped nodes", view(node("a", 900), node("b", 300, STALE),
         node("c", 300, admin="stopped"), D, holder="a"), replace(primary("a"), stopping=True), Action.RESIGN,
         ("stopping", "D"), target="d"),
    Case("stopping primary with nobody else online resigns to nobody", view(A, node("b", 100, STALE), holder="a"),
         replace(primary("a"), stopping=True), Action.RESIGN, ("stopping", "whoever is next"), target=None),
    Case("admin-stopped holder resigns", view(node("a", 900, admin="stopped"), B, holder="a"), primary("a"),
         Action.RESIGN, ("taken out of the cluster", "B"), target="b"),
    Case("stopping standby just stays", view(A, B, holder="a"), replace(standby("b"), stopping=True),
         Action.STAY, ("stopping",)),
    Case("stopping, acting but the lease is not ours: demote", view(A, B, holder="b"),
         replace(primary("a"), stopping=True), Action.DEMOTE, ("stopping", "stepping down")),
    # --- maintenance ------------------------------------------------------------------------------------------
    Case("maintenance: no automatic acquire", view(node("x", 900, STALE), B, holder="x", remaining=-5.0,
         maintenance=True), standby("b"), Action.STAY, ("maintenance",), wake=KA),
    Case("maintenance: a planned handover still completes", view(A, B, holder="a", remaining=0.0, handover="b",
         maintenance=True), standby("b"), Action.ACQUIRE, ("handed over",), expected_epoch=4),
    Case("maintenance: the holder still resigns to a switchover target", view(A, B, holder="a", handover="b",
         maintenance=True), primary("a"), Action.RESIGN, ("switchover",), target="b"),
    Case("maintenance: the holder keeps renewing", view(A, B, holder="a", maintenance=True), primary("a"),
         Action.RENEW, ("renew",)),
    # --- grace window after a database failover ------------------------------------------------------------
    Case("grace window: nobody is judged dead", view(node("x", 900, STALE), B, holder="x", remaining=-5.0),
         replace(standby("b"), grace_until=NOW + 3.0), Action.STAY, ("grace",), wake=3.0),
    Case("grace window longer than I: wake after I", view(node("x", 900, STALE), B, holder="x", remaining=-5.0),
         replace(standby("b"), grace_until=NOW + 50.0), Action.STAY, ("grace",), wake=KA),
    Case("grace window over: take over", view(node("x", 900, STALE), B, holder="x", remaining=-5.0),
         replace(standby("b"), grace_until=NOW - 0.1), Action.ACQUIRE, ("taking over",)),
    Case("grace does not stop a planned handover", view(A, B, holder="a", remaining=0.0, handover="b"),
         replace(standby("b"), grace_until=NOW + 30.0), Action.ACQUIRE, ("handed over",)),
    # --- wake-up times of standbys ----------------------------------------------------------------------------
    Case("first in line (holder ranks lower) wakes as the lease expires", view(D, A, B, holder="d", remaining=3.0),
         standby("b"), Action.STAY, ("standby",), wake=3.0 + WAKE_SLACK_S),
    Case("first in line wakes after at most I", view(D, A, B, holder="d", remaining=19.0), standby("b"),
         Action.STAY, (), wake=KA),
    Case("not first in line: wakes after I", view(D, A, B, holder="d", remaining=3.0), standby("a"), Action.STAY,
         (), wake=KA),
    # --- keepalive change in progress --------------------------------------------------------------------------
    Case("keepalive lowered 10->5: a node still on the old cadence stays online (judge 10)",
         view(node("x", 900, STALE), node("b", 300, 15.0), C, holder="x", remaining=-1.0, keepalive=5.0, judge=10.0),
         standby("b"), Action.ACQUIRE, ("taking over",)),
    Case("keepalive lowered 10->5 and propagated: the slow node is offline",
         view(node("x", 900, 30.0), node("b", 300, 15.0), C, holder="x", remaining=-1.0, keepalive=5.0),
         standby("c"), Action.ACQUIRE, ("taking over",)),
]


def _case_id(case: object) -> str:
    return case.id if isinstance(case, Case) else case.values[0].id  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_decide_table(case: Case) -> None:
    decision = decide(case.view, case.local, case.now)
    assert decision.action is case.action, decision
    assert_sentence(decision, *case.words)
    if case.action in (Action.ACQUIRE, Action.RENEW, Action.RESIGN):
        assert decision.expected_epoch == (case.expected_epoch if case.expected_epoch is not None
                                           else case.view.lease.epoch if case.view else None)
    if case.action is Action.RESIGN:
        assert decision.target == case.target
    if case.wake != "any":
        if case.wake is None:
            assert decision.wake_in_s is None
        else:
            assert decision.wake_in_s == pytest.approx(case.wake)


def test_timing_constants() -> None:
    """Lease 2·I, trust 1.5·I: the primary stops 0.5·I before anyone can take its lease."""
    assert lease_ttl_s(KA) == 2 * KA
    assert trust_s(KA) == 1.5 * KA
    assert lease_ttl_s(KA) - trust_s(KA) == pytest.approx(0.5 * KA)
    assert 0 < WAKE_SLACK_S < 0.1 * KA


def test_only_the_best_of_many_acquires() -> None:
    """Every node of the cluster decides on the same view: exactly one ACQUIRE (the CAS does the rest)."""
    nodes = (node("x", 900, STALE), node("n1", 10), node("n2", 300, STALE), node("n3", 200), node("n4", 200),
             node("n5", 250, admin="stopped"), node("n6", 0))
    v = view(*nodes, holder="x", remaining=-0.5)
    winners = [n.node_id for n in nodes if decide(v, standby(n.node_id), NOW).action is Action.ACQUIRE]
    assert winners == ["n3"]


def test_status_of() -> None:
    a, b, c = node("a"), node("b"), node("c", 100, STALE)
    v = view(a, b, c, node("s", admin="stopped"), holder="a")
    assert status_of(v, a) is NodeStatus.PRIM
    assert status_of(v, b) is NodeStatus.SECOND
    assert status_of(v, c) is NodeStatus.WAIT
    assert status_of(v, node("s", admin="stopped")) is NodeStatus.STOP
    # the only standby offline or taken out: the primary runs without redundancy
    assert status_of(view(a, c, node("s", admin="stopped"), holder="a"), a) is NodeStatus.ALONE
    # the holder of an expired lease is not shown as primary
    assert status_of(view(a, b, holder="a", remaining=-1.0), a) is NodeStatus.SECOND
    assert status_of(view(node("a", 100, STALE), b, holder="a", remaining=-1.0), node("a", 100, STALE)) \
        is NodeStatus.WAIT
    # an admin-stopped holder shows STOP
    stopped_holder = node("a", admin="stopped")
    assert status_of(view(stopped_holder, b, holder="a"), stopped_holder) is NodeStatus.STOP
    # keepalive transition: judged by the longer interval
    slow = node("b", 100, 15.0)
    assert status_of(view(a, slow, holder="a", keepalive=5.0, judge=10.0), slow) is NodeStatus.SECOND
    assert status_of(view(a, slow, holder="a", keepalive=5.0), slow) is NodeStatus.WAIT


def test_online_boundary() -> None:
    """Online means a heartbeat age of at most 2·I (inclusive), by the judge interval if one is set."""
    v = view(node("a", 100, 2 * KA), node("b", 100, 2 * KA + 0.001), node("c", 100, None), holder=None, epoch=0,
             remaining=None)
    assert [n.node_id for n in v.candidates()] == ["a"]
    kv = view(node("a", 100, 2 * KA), keepalive=KA / 2, judge=KA)
    assert kv.online(kv.nodes[0])
    assert not replace(kv, judge_keepalive_s=None).online(kv.nodes[0])


def test_next_in_line_behind_a_top_priority_holder_wakes_at_expiry() -> None:
    v = view(node("a", 900), B, D, holder="a", remaining=3.0)
    decision = decide(v, standby("b"), NOW)
    assert decision.action is Action.STAY
    assert decision.wake_in_s == pytest.approx(3.0 + WAKE_SLACK_S)


def test_stopping_primary_steps_down_even_when_the_database_is_unreachable() -> None:
    decision = decide(None, replace(primary("a", trust_left=5.0), stopping=True), NOW)
    assert decision.action is Action.DEMOTE


def test_holder_does_not_resign_again_after_releasing_to_its_successor() -> None:
    released = view(A, B, D, holder="a", remaining=-0.2, handover="d")
    decision = decide(released, standby("a"), NOW)  # stepped down when it resigned: no epoch, not acting
    assert decision.action is not Action.RESIGN


# --- properties over random views ---------------------------------------------------------------------------

IDS = ("a", "b", "c", "d")
ages = st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2 * KA, 2 * KA + 0.01, 35.0]), st.floats(0, 60))
nodes_st = st.lists(
    st.builds(lambda nid, prio, age, admin: NodeState(nid, nid.upper(), prio, "standby", admin, age, 1),
              st.sampled_from(IDS), st.sampled_from([0, 100, 200]), ages,
              st.sampled_from(["active", "active", "stopped"])),
    min_size=1, max_size=4, unique_by=lambda n: n.node_id)
views_st = st.builds(
    lambda nodes, holder, epoch, remaining, handover, maintenance, keepalive: ClusterView(
        tuple(nodes), Lease(holder, epoch, remaining, handover), keepalive, maintenance),
    nodes_st, st.one_of(st.none(), st.sampled_from(IDS)), st.integers(0, 5),
    st.one_of(st.none(), st.sampled_from([-30.0, -0.01, 0.0, 0.01, 5.0, 20.0]), st.floats(-40, 20)),
    st.one_of(st.none(), st.sampled_from(IDS)), st.booleans(), st.sampled_from([1.0, 5.0, 10.0, 30.0]))
locals_st = st.builds(
    lambda nid, acting, epoch, trust, stopping, grace: Local(
        nid, acting=acting, epoch=epoch if acting else None,
        trusted_until=None if trust is None else NOW + trust, stopping=stopping,
        grace_until=None if grace is None else NOW + grace),
    st.sampled_from(IDS), st.booleans(), st.integers(0, 5), st.one_of(st.none(), st.floats(-20, 20)),
    st.booleans(), st.one_of(st.none(), st.floats(-10, 10)))


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(views_st, locals_st)
def test_decide_properties(v: ClusterView, local: Local) -> None:
    d = decide(v, local, NOW)
    assert_line(d.reason)
    trusted = local.trusted_until is not None and NOW < local.trusted_until
    if local.acting and not trusted:
        assert d.action is Action.DEMOTE  # an untrusted primary always steps down, whatever the view says
    if d.action is Action.RENEW:
        assert v.lease.holder == local.node_id and d.expected_epoch == v.lease.epoch
    if d.action is Action.RESIGN:
        assert v.lease.holder == local.node_id and not v.lease.expired and d.target != local.node_id
    if d.action is Action.ACQUIRE:
        assert v.lease.expired and not local.acting and not local.stopping
        assert d.expected_epoch == v.lease.epoch
        me = v.node(local.node_id)
        assert me is not None and me.admin_state == "active"
        if v.lease.handover_to != local.node_id:  # an automatic takeover: only the best online node
            assert not v.maintenance and v.candidates()[0].node_id == local.node_id
    if d.wake_in_s is not None:
        assert 0 <= d.wake_in_s <= v.keepalive_s


@settings(max_examples=300, derandomize=True, deadline=None)
@given(views_st)
def test_at_most_one_node_acquires_per_view(v: ClusterView) -> None:
    """All registered standbys deciding on the same snapshot: at most one ACQUIRE, unless a handover names a
    target that is offline in this snapshot (then the target and the best may both try; the CAS picks one)."""
    winners = [n.node_id for n in v.nodes if decide(v, standby(n.node_id), NOW).action is Action.ACQUIRE]
    target = v.node(v.lease.handover_to) if v.lease.handover_to else None
    limit = 2 if target is not None and not (target.admin_state == "active" and v.online(target)) else 1
    assert len(winners) <= limit, winners


# --- priority 0 and failback ---------------------------------------------------------------------------


def _nodes(*specs: tuple[str, int]) -> tuple[NodeState, ...]:
    return tuple(NodeState(name, name, priority, "standby", "active", 0.1, 1) for name, priority in specs)


def test_a_node_of_priority_0_never_takes_the_lease_even_alone() -> None:
    view = ClusterView(_nodes(("w", 0)), Lease(None, 3, None, None), 1.0, False)
    decision = decide(view, Local("w"), 100.0)
    assert decision.action is Action.STAY
    assert "w online with priority 0 (never primary)" in decision.reason


def test_a_primary_given_priority_0_hands_over_or_steps_down() -> None:
    view = ClusterView(_nodes(("a", 0), ("b", 5)), Lease("a", 3, 1.5, None), 1.0, False)
    decision = decide(view, Local("a", acting=True, epoch=3, trusted_until=101.0), 100.0)
    assert (decision.action, decision.target) == (Action.RESIGN, "b")
    alone = ClusterView(_nodes(("a", 0)), Lease("a", 3, 1.5, None), 1.0, False)
    decision = decide(alone, Local("a", acting=True, epoch=3, trusted_until=101.0), 100.0)
    assert (decision.action, decision.target) == (Action.RESIGN, None)
    released = ClusterView(_nodes(("a", 0)), Lease("a", 3, -0.1, None), 1.0, False)
    assert decide(released, Local("a"), 100.0).action is Action.STAY  # never renews what it gave up


def test_no_failback_by_default_and_failback_when_asked() -> None:
    nodes = _nodes(("a", 5), ("b", 50))
    view = ClusterView(nodes, Lease("a", 3, 1.5, None), 1.0, False)
    local = Local("a", acting=True, epoch=3, trusted_until=101.0)
    assert decide(view, local, 100.0).action is Action.RENEW  # b is preferred, but a healthy primary stays
    on = ClusterView(nodes, Lease("a", 3, 1.5, None), 1.0, False, failback=True)
    decision = decide(on, local, 100.0)
    assert (decision.action, decision.target) == (Action.RESIGN, "b")
    assert "failback" in decision.reason
    paused = ClusterView(nodes, Lease("a", 3, 1.5, None), 1.0, True, failback=True)
    assert decide(paused, local, 100.0).action is Action.RENEW  # maintenance: nothing moves
