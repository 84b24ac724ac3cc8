"""One contract suite for :class:`~appliance.ha.store.HaStore`, run against BOTH implementations.

``memory``: :class:`InMemoryStore` on a :class:`FakeClock` (time advances by hand, instantly).
``postgres``: :class:`PgStore` on a fresh schema in a database of the session's ``pg_primary``; time
advances for real (``time.sleep``), so the waits are kept short (keepalive 1 s, TTLs under 1 s) and
ages are compared with a tolerance. Each test says what the contract promises, never how a store
keeps it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from appliance.clock import FakeClock
from appliance.errors import Conflict
from appliance.ha.events import EventKind, NewEvent
from appliance.ha.memstore import InMemoryStore
from appliance.ha.model import ClaimOutcome, ClusterView, CodeState, NodeIdentity
from appliance.ha.notify import EmailConfig, WebhookConfig, email_to_json, webhook_to_json
from appliance.ha.settings import Setting
from appliance.ha.store import HaStore, NotRegistered

KEEPALIVE_S = 1.0


@dataclass
class Backend:
    """One store implementation under test, and how to drive its clock and registry."""

    kind: str
    store: HaStore
    advance: Callable[[float], None]  # let the store's clock move on by t seconds
    register: Callable[[str, str, int], None]  # node_id, name, priority (a standby, heard from now)
    new_client: Callable[[], HaStore]  # another client of the same state (postgres: its own connection)
    slack: float  # how far a measured age may exceed the ideal one (real time is not exact)
    names: dict[str, str] = field(default_factory=dict)

    def node(self, name: str, priority: int = 100) -> str:
        node_id = str(uuid.uuid4())
        self.register(node_id, name, priority)
        self.names[node_id] = name
        return node_id

    def roles(self, view: ClusterView | None = None) -> dict[str, str]:
        view = view or self.store.snapshot()
        return {self.names.get(n.node_id, n.node_id): n.role for n in view.nodes}

    def close_to(self, measured: float | None, ideal: float) -> bool:
        """``measured`` is ``ideal`` (memory), or at most ``slack`` later (postgres: real time)."""
        return measured is not None and ideal - 0.02 - 1e-9 <= measured <= ideal + self.slack

    def remains(self, measured: float | None, ideal: float) -> bool:
        """A remainder: ``ideal`` (memory), or at most ``slack`` less (postgres: time went by)."""
        return measured is not None and ideal - self.slack - 1e-9 <= measured <= ideal + 1e-6


# --- backends -----------------------------------------------------------------------------------------


def _memory_backend() -> Backend:
    clock = FakeClock()
    store = InMemoryStore(clock, keepalive_s=KEEPALIVE_S)
    return Backend(
        kind="memory",
        store=store,
        advance=clock.advance,
        register=lambda node_id, name, priority: store.register(node_id, name, priority),
        new_client=lambda: store,
        slack=1e-9,
    )


@pytest.fixture(scope="module")
def pg_database(pg_primary: Any) -> Iterator[tuple[Any, str]]:
    name = f"ha_contract_{uuid.uuid4().hex[:8]}"
    pg_primary.create_database(name)
    yield pg_primary, name
    pg_primary.drop_database(name)


def _postgres_backend(pg_database: tuple[Any, str]) -> Iterator[Backend]:
    from psycopg import sql

    from appliance.db import schema as S
    from appliance.db.target import DbTarget, Timeouts
    from appliance.ha.pgstore import PgStore

    cluster, dbname = pg_database
    schema = f"ha_{uuid.uuid4().hex[:10]}"
    admin = cluster.connect(dbname=dbname)
    with admin.transaction():
        S.deploy(admin, schema, deployed_by="contract-test", product_version="0.0.0")

    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(schema))

    admin.execute(q("UPDATE {s}.cluster_settings SET value = %s WHERE key = 'keepalive_interval_s'"),
                  (f"{KEEPALIVE_S:g}",))
    target = DbTarget(hosts=(cluster.host,), ports=(cluster.port,), user=cluster.superuser,
                      password=cluster.superuser_password, dbname=dbname, sslmode="disable")
    # Generous statement/lock timeouts: this suite tests the contract, not fail-fast behaviour
    # (test_ha_pgstore.py does), and a loaded CI host must not turn a slow commit into a failure.
    timeouts = Timeouts(connect_timeout=3, statement_timeout=5, lock_timeout=3,
                        idle_in_transaction_session_timeout=10, tcp_user_timeout=5)
    clients: list[PgStore] = []

    def new_client() -> HaStore:
        store = PgStore(target, schema, application_name=f"contract-test:{len(clients)}", timeouts=timeouts)
        clients.append(store)
        return store

    def register(node_id: str, name: str, priority: int) -> None:
        admin.execute(q("INSERT INTO {s}.nodes (node_id, hardware_id, name, priority, role, product_version,"
                        " last_heartbeat) VALUES (%s, %s, %s, %s, 'standby', '0.0.0', now())"),
                      (node_id, f"hw-{node_id}", name, priority))

    try:
        yield Backend(kind="postgres", store=new_client(), advance=time.sleep, register=register,
                      new_client=new_client, slack=0.25)
    finally:
        for store in clients:
            store.close()
        admin.execute(q("DROP SCHEMA {s} CASCADE"))
        admin.close()


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield _memory_backend()
    else:
        yield from _postgres_backend(request.getfixturevalue("pg_database"))


# --- heartbeat and snapshot ---------------------------------------------------------------------------


def test_initial_snapshot(backend: Backend) -> None:
    a, b = backend.node("node-a", 10), backend.node("node-b", 20)
    view = backend.store.snapshot()
    assert [n.node_id for n in view.nodes] == [a, b]  # ordered by name
    assert [(n.name, n.priority, n.role, n.admin_state, n.heartbeat_seq) for n in view.nodes] == [
        ("node-a", 10, "standby", "active", 0),
        ("node-b", 20, "standby", "active", 0),
    ]
    assert all(backend.close_to(n.heartbeat_age_s, 0.0) for n in view.nodes)
    lease = view.lease
    assert (lease.holder, lease.epoch, lease.remaining_s, lease.handover_to) == (None, 0, None, None)
    assert view.lease.expired
    assert view.keepalive_s == KEEPALIVE_S and view.judge_keepalive_s == KEEPALIVE_S
    assert view.maintenance is False


def test_heartbeat_of_an_unknown_node_is_not_registered(backend: Backend) -> None:
    backend.node("node-a")
    with pytest.raises(NotRegistered):
        backend.store.heartbeat(str(uuid.uuid4()))
    with pytest.raises(NotRegistered):
        backend.store.heartbeat("not-a-node-id")


def test_heartbeat_bumps_the_sequence_and_resets_the_age(backend: Backend) -> None:
    a = backend.node("node-a")
    backend.advance(0.3)
    before = backend.store.snapshot().node(a)
    assert before is not None and backend.close_to(before.heartbeat_age_s, 0.3)
    backend.store.heartbeat(a)
    backend.store.heartbeat(a)
    after = backend.store.snapshot().node(a)
    assert after is not None and after.heartbeat_seq == before.heartbeat_seq + 2
    assert backend.close_to(after.heartbeat_age_s, 0.0)


def test_ages_are_measured_from_one_instant_of_the_store_clock(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    backend.store.heartbeat(a)
    backend.advance(0.4)
    backend.store.heartbeat(b)
    backend.advance(0.2)
    view = backend.store.snapshot()
    age_a, age_b = view.node(a).heartbeat_age_s, view.node(b).heartbeat_age_s  # type: ignore[union-attr]
    assert backend.close_to(age_a, 0.6) and backend.close_to(age_b, 0.2)
    assert age_a is not None and age_b is not None
    assert backend.close_to(age_a - age_b, 0.4)  # both ages from the same "now"


def test_online_follows_two_keepalive_intervals(backend: Backend) -> None:
    a = backend.node("node-a")
    assert backend.store.snapshot().online(backend.store.snapshot().node(a))  # type: ignore[arg-type]
    backend.advance(2 * KEEPALIVE_S + 0.1)
    view = backend.store.snapshot()
    assert not view.online(view.node(a))  # type: ignore[arg-type]
    backend.store.heartbeat(a)
    view = backend.store.snapshot()
    assert view.online(view.node(a))  # type: ignore[arg-type]


def test_snapshot_is_consistent_while_the_lease_changes_hands(backend: Backend) -> None:
    """The lease and the roles change in one step, so no snapshot sees a holder that is not primary."""
    a, b = backend.node("node-a"), backend.node("node-b")
    writer = backend.new_client()
    stop = threading.Event()
    errors: list[BaseException] = []
    changes = [0]

    def flip() -> None:
        try:
            epoch = 0
            while not stop.is_set():
                for me in (a, b):
                    got = writer.try_acquire(me, epoch, 30.0)
                    assert got == epoch + 1
                    writer.heartbeat(me)
                    assert writer.release(me, got, None)
                    epoch = got
                    changes[0] += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    seen = 0
    deadline = time.monotonic() + 0.6
    try:
        while time.monotonic() < deadline or seen < 20:
            view = backend.store.snapshot()
            primaries = [n.node_id for n in view.nodes if n.role == "primary"]
            if view.lease.holder is None:
                assert primaries == []
            else:
                assert primaries == [view.lease.holder], view
            seen += 1
            if backend.kind == "memory":
                time.sleep(0.001)  # let the writer run
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert changes[0] > 1


# --- taking the lease ---------------------------------------------------------------------------------


def test_acquire_a_free_lease(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(a, 0, 0.8) == 1
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch, view.lease.handover_to) == (a, 1, None)
    assert backend.remains(view.lease.remaining_s, 0.8)
    assert not view.lease.expired
    assert backend.roles(view) == {"node-a": "primary", "node-b": "standby"}
    assert b  # registered, stays standby


def test_acquire_by_an_unknown_node_is_not_registered(backend: Backend) -> None:
    backend.node("node-a")
    with pytest.raises(NotRegistered):
        backend.store.try_acquire(str(uuid.uuid4()), 0, 1.0)
    assert backend.store.snapshot().lease.epoch == 0


def test_a_held_unexpired_lease_cannot_be_taken(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(a, 0, 30.0) == 1
    assert backend.store.try_acquire(b, 1, 30.0) is None
    assert backend.store.try_acquire(a, 1, 30.0) is None  # not even by its holder: that is renew's job
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch) == (a, 1)
    assert backend.roles(view) == {"node-a": "primary", "node-b": "standby"}


def test_a_stale_expected_epoch_never_wins(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(b, 1, 30.0) is None  # free lease, wrong epoch
    assert backend.store.try_acquire(a, 0, 0.3) == 1
    backend.advance(0.4)
    assert backend.store.snapshot().lease.expired
    assert backend.store.try_acquire(b, 0, 30.0) is None  # expired lease, stale epoch
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch) == (a, 1)


def test_an_expired_lease_can_be_taken_and_the_roles_follow(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(a, 0, 0.3) == 1
    backend.advance(0.4)
    view = backend.store.snapshot()
    assert view.lease.expired and view.lease.remaining_s is not None and view.lease.remaining_s < 0
    assert view.lease.holder == a  # expiry does not erase the holder
    assert backend.store.try_acquire(b, 1, 30.0) == 2
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch) == (b, 2)
    assert backend.roles(view) == {"node-a": "standby", "node-b": "primary"}


def test_concurrent_acquires_have_exactly_one_winner(backend: Backend) -> None:
    """N clients race with the same expected epoch, round after round: one winner each time."""
    rounds = 200
    ids = [backend.node(f"node-{i}") for i in range(4)]
    clients = [backend.new_client() for _ in ids]
    barrier = threading.Barrier(len(ids), timeout=20)
    won: list[list[int | None]] = [[None] * rounds for _ in ids]
    released: list[list[bool | None]] = [[None] * rounds for _ in ids]
    errors: list[BaseException] = []

    def race(i: int) -> None:
        me, store = ids[i], clients[i]
        try:
            for r in range(rounds):
                barrier.wait()
                got = store.try_acquire(me, r, 30.0)
                won[i][r] = got
                barrier.wait()
                if got is not None:
                    released[i][r] = store.release(me, got, None)
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(i,), daemon=True) for i in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in range(rounds):  # checked first: a double win is the failure that matters
        winners = [(i, won[i][r]) for i in range(len(ids)) if won[i][r] is not None]
        if errors and not winners:
            break  # the race stopped here
        assert len(winners) == 1, f"round {r}: winners (client, epoch) {winners}"
        assert winners[0][1] == r + 1
        assert released[winners[0][0]][r] is True
    assert not errors, errors[0]
    view = backend.store.snapshot()
    last = next(ids[i] for i in range(len(ids)) if won[i][rounds - 1] is not None)
    assert (view.lease.holder, view.lease.epoch) == (last, rounds)
    assert [n.node_id for n in view.nodes if n.role == "primary"] == [last]


# --- renew and release --------------------------------------------------------------------------------


def test_renew_only_by_the_holder_at_its_epoch(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(a, 0, 0.5) == 1
    backend.advance(0.3)
    assert backend.store.renew(a, 1, 0.9)
    view = backend.store.snapshot()
    assert backend.remains(view.lease.remaining_s, 0.9)
    assert not backend.store.renew(a, 0, 30.0)  # stale epoch
    assert not backend.store.renew(a, 2, 30.0)  # future epoch
    assert not backend.store.renew(b, 1, 30.0)  # another node
    assert not backend.store.renew(str(uuid.uuid4()), 1, 30.0)  # nobody
    assert not backend.store.renew("not-a-node-id", 1, 30.0)
    view2 = backend.store.snapshot()
    assert view.lease.remaining_s is not None and view2.lease.remaining_s is not None
    assert view2.lease.remaining_s <= view.lease.remaining_s  # not extended by any refused renewal
    assert (view2.lease.holder, view2.lease.epoch) == (a, 1)


def test_a_node_that_lost_the_lease_cannot_renew_it(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(a, 0, 0.3) == 1
    backend.advance(0.4)
    assert backend.store.try_acquire(b, 1, 30.0) == 2
    assert not backend.store.renew(a, 1, 30.0)
    assert not backend.store.release(a, 1, None)
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch, view.lease.expired) == (b, 2, False)


def test_release_names_a_successor_who_takes_over(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(a, 0, 30.0) == 1
    assert not backend.store.release(b, 1, b)  # not the holder
    assert not backend.store.release(a, 0, b)  # stale epoch
    assert backend.store.snapshot().lease.remaining_s > 1  # type: ignore[operator]
    assert backend.store.release(a, 1, b)
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch, view.lease.handover_to) == (a, 1, b)
    assert view.lease.expired  # given up at once, the holder still recorded
    assert backend.store.try_acquire(b, 1, 30.0) == 2
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch, view.lease.handover_to) == (b, 2, None)
    assert backend.roles(view) == {"node-a": "standby", "node-b": "primary"}


def test_a_released_lease_is_free_for_any_node(backend: Backend) -> None:
    """As the contract's CAS is written: once released (expired), the successor named is a preference
    for the decision, not a condition of the store."""
    a, b, c = backend.node("node-a"), backend.node("node-b"), backend.node("node-c")
    assert backend.store.try_acquire(a, 0, 30.0) == 1
    assert backend.store.release(a, 1, b)
    assert backend.store.try_acquire(c, 1, 30.0) == 2
    assert backend.roles() == {"node-a": "standby", "node-b": "standby", "node-c": "primary"}


# --- handover, admin state, settings ------------------------------------------------------------------


def test_a_requested_handover_never_takes_a_live_lease(backend: Backend) -> None:
    """The request only asks the holder to hand over; the target takes the lease after the holder
    released it (which expires it). Taking it while the holder may still act would make two primaries."""
    a, b, c = backend.node("node-a"), backend.node("node-b"), backend.node("node-c")
    assert backend.store.try_acquire(a, 0, 30.0) == 1
    backend.store.request_handover(b)
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.handover_to, view.lease.expired) == (a, b, False)
    assert backend.store.try_acquire(b, 1, 30.0) is None  # the holder has not let go yet
    assert backend.store.try_acquire(c, 1, 30.0) is None
    assert backend.store.release(a, 1, b)
    assert backend.store.try_acquire(b, 0, 30.0) is None  # still a compare-and-set on the epoch
    assert backend.store.try_acquire(b, 1, 30.0) == 2
    view = backend.store.snapshot()
    assert (view.lease.holder, view.lease.epoch, view.lease.handover_to) == (b, 2, None)
    assert backend.roles(view) == {"node-a": "standby", "node-b": "primary", "node-c": "standby"}


def test_request_handover_can_be_cleared_and_checks_the_target(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert backend.store.try_acquire(a, 0, 30.0) == 1
    backend.store.request_handover(b)
    backend.store.request_handover(None)
    assert backend.store.snapshot().lease.handover_to is None
    assert backend.store.try_acquire(b, 1, 30.0) is None
    with pytest.raises(NotRegistered):
        backend.store.request_handover(str(uuid.uuid4()))
    assert backend.store.snapshot().lease.handover_to is None


def test_set_admin_state(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    backend.store.set_admin_state(a, "stopped")
    view = backend.store.snapshot()
    assert [(n.node_id, n.admin_state) for n in view.nodes] == [(a, "stopped"), (b, "active")]
    assert [n.node_id for n in view.candidates()] == [b]
    backend.store.set_admin_state(a, "active")
    assert backend.store.snapshot().node(a).admin_state == "active"  # type: ignore[union-attr]
    with pytest.raises(NotRegistered):
        backend.store.set_admin_state(str(uuid.uuid4()), "stopped")


def test_maintenance_flag(backend: Backend) -> None:
    assert backend.store.snapshot().maintenance is False
    backend.store.set_setting("maintenance", "on")
    assert backend.store.snapshot().maintenance is True
    backend.store.set_setting("maintenance", "off")
    assert backend.store.snapshot().maintenance is False


def test_virtual_ip_setting(backend: Backend) -> None:
    assert backend.store.snapshot().vip is None
    backend.store.set_setting("vip", "192.0.2.10/24")
    assert backend.store.snapshot().vip == "192.0.2.10/24"
    backend.store.set_setting("vip", "2001:db8::10/64")
    assert backend.store.snapshot().vip == "2001:db8::10/64"
    for bad in ("192.0.2.10", "192.0.2.0/24", "127.0.0.1/8", "fe80::1/64", "nonsense/24"):
        with pytest.raises(ValueError, match="vip"):
            backend.store.set_setting("vip", bad)
    assert backend.store.snapshot().vip == "2001:db8::10/64"
    backend.store.set_setting("vip", "")  # ha unset vip
    assert backend.store.snapshot().vip is None


def test_a_longer_keepalive_is_judged_by_the_longer_one_at_once(backend: Backend) -> None:
    backend.store.set_setting("keepalive_interval_s", "3")
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (3.0, 3.0)


def test_a_shorter_keepalive_is_judged_by_the_old_one_until_it_propagated(backend: Backend) -> None:
    """While the change propagates (two of the longer intervals), liveness is judged by the longer one,
    so a node that has not adopted the new interval yet is not judged dead; then by the new one."""
    a = backend.node("node-a")
    backend.store.set_setting("keepalive_interval_s", "0.25")
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (0.25, KEEPALIVE_S)
    backend.advance(1.0)
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (0.25, KEEPALIVE_S)
    assert view.online(view.node(a))  # type: ignore[arg-type]  # 1 s old: fine by the old interval
    backend.advance(2 * KEEPALIVE_S - 1.0 + 0.1)
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (0.25, 0.25)
    assert not view.online(view.node(a))  # type: ignore[arg-type]


def test_a_second_change_keeps_the_longest_interval_still_spreading(backend: Backend) -> None:
    """3 -> 0.25 -> 0.5 in quick succession: nodes may still beat every 3 s, so judge by 3 s."""
    backend.store.set_setting("keepalive_interval_s", "3")
    backend.store.set_setting("keepalive_interval_s", "0.25")
    backend.store.set_setting("keepalive_interval_s", "0.5")
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (0.5, 3.0)


def test_rewriting_the_same_interval_starts_no_transition(backend: Backend) -> None:
    backend.store.set_setting("keepalive_interval_s", str(KEEPALIVE_S))
    view = backend.store.snapshot()
    assert view.judge_keepalive_s == KEEPALIVE_S


def test_rename_records_the_new_name(backend: Backend) -> None:
    a = backend.node("node-a")
    backend.store.rename(a, "EMS-1")
    assert backend.store.snapshot().node(a).name == "EMS-1"  # type: ignore[union-attr]
    with pytest.raises(NotRegistered):
        backend.store.rename(str(uuid.uuid4()), "x")


def test_other_settings_do_not_start_a_keepalive_transition(backend: Backend) -> None:
    backend.store.set_setting("maintenance", "on")
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (KEEPALIVE_S, KEEPALIVE_S)


# --- settings: validation and seeding -------------------------------------------------------------------


def test_a_bad_setting_value_or_key_is_refused_and_nothing_changes(backend: Backend) -> None:
    for key, value in (("keepalive_interval_s", "0"), ("keepalive_interval_s", "soon"),
                       ("keepalive_interval_s", "nan"), ("maintenance", "maybe"), ("no_such_setting", "1")):
        with pytest.raises(ValueError):
            backend.store.set_setting(key, value)
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.maintenance) == (KEEPALIVE_S, False)


def test_seeded_settings_start_no_keepalive_transition(backend: Backend) -> None:
    backend.store.set_setting("keepalive_interval_s", "3")  # a change: judged by the longer one for a while
    backend.store.seed_settings({Setting.KEEPALIVE: "0.5", Setting.MAINTENANCE: "on"})
    view = backend.store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s, view.maintenance) == (0.5, 0.5, True)


# --- membership -------------------------------------------------------------------------------------------


def _identity(name: str) -> NodeIdentity:
    return NodeIdentity(str(uuid.uuid4()), f"hw-{name}-{uuid.uuid4().hex[:6]}", name)


def test_a_primary_registers_with_the_lease_and_a_standby_without(backend: Backend) -> None:
    a, b = _identity("node-a"), _identity("node-b")
    done_a = backend.store.register_node(a, role="primary", product_version="0.0.0")
    done_b = backend.store.register_node(b, role="standby", product_version="0.0.0")
    assert done_a.previous is None and done_a.demoted is None
    assert (done_a.lease_before.holder, done_a.lease_after.holder, done_a.lease_after.epoch) == (None, a.node_id, 1)
    assert done_a.keepalive_s == KEEPALIVE_S
    assert done_b.lease_after.holder == a.node_id  # a standby leaves the lease alone
    view = backend.store.snapshot()
    assert {n.name: n.role for n in view.nodes} == {"node-a": "primary", "node-b": "standby"}
    assert view.holder() is not None and view.holder().node_id == a.node_id  # type: ignore[union-attr]
    assert backend.remains(view.lease.remaining_s, 2 * KEEPALIVE_S)  # the lease lifetime of the interval
    assert all(1 <= n.priority <= 1_000_000 and backend.close_to(n.heartbeat_age_s, 0.0) for n in view.nodes)


def test_a_second_live_primary_is_refused_a_dead_one_is_demoted(backend: Backend) -> None:
    a, b = _identity("node-a"), _identity("node-b")
    backend.store.register_node(a, role="primary", product_version="0.0.0")
    with pytest.raises(Conflict, match="node-a is already the live primary"):
        backend.store.register_node(b, role="primary", product_version="0.0.0")
    assert backend.store.snapshot().node(b.node_id) is None  # the refusal registered nothing
    backend.advance(2 * KEEPALIVE_S + 0.2)  # node-a falls silent: offline, lease expired
    done = backend.store.register_node(b, role="primary", product_version="0.0.0")
    assert done.demoted is not None and done.demoted.node_id == a.node_id
    view = backend.store.snapshot()
    assert {n.name: n.role for n in view.nodes} == {"node-a": "standby", "node-b": "primary"}
    assert (view.lease.holder, view.lease.epoch) == (b.node_id, 2)


def test_a_twin_hardware_id_is_refused(backend: Backend) -> None:
    a = _identity("node-a")
    backend.store.register_node(a, role="standby", product_version="0.0.0")
    twin = NodeIdentity(str(uuid.uuid4()), a.hardware_id, "node-a2")
    with pytest.raises(Conflict, match="hardware id"):
        backend.store.register_node(twin, role="standby", product_version="0.0.0")


def test_reregistering_keeps_the_priority_and_a_standby_gives_up_its_lease(backend: Backend) -> None:
    a = _identity("node-a")
    backend.store.register_node(a, role="primary", product_version="0.0.0")
    priority = backend.store.snapshot().node(a.node_id).priority  # type: ignore[union-attr]
    done = backend.store.register_node(a, role="standby", product_version="0.0.0")
    assert done.previous is not None and done.previous.role == "primary"
    view = backend.store.snapshot()
    assert view.node(a.node_id).priority == priority  # type: ignore[union-attr]
    assert (view.lease.holder, view.lease.epoch) == (None, 2)  # the fencing token grew


def test_undoing_a_registration_puts_everything_back(backend: Backend) -> None:
    a, b = _identity("node-a"), _identity("node-b")
    backend.store.register_node(a, role="primary", product_version="0.0.0")
    backend.advance(2 * KEEPALIVE_S + 0.2)
    done = backend.store.register_node(b, role="primary", product_version="0.0.0")
    backend.store.undo_registration(b, done)
    view = backend.store.snapshot()
    assert {n.name: n.role for n in view.nodes} == {"node-a": "primary"}
    assert view.lease.holder == a.node_id and view.lease.epoch == 3  # the epoch only ever grows
    # Undoing a re-registration restores the row as it was.
    again = backend.store.register_node(a, role="standby", product_version="0.0.0")
    backend.store.undo_registration(a, again)
    assert backend.store.snapshot().node(a.node_id).role == "primary"  # type: ignore[union-attr]


def test_unregistering_frees_the_lease_with_a_new_epoch(backend: Backend) -> None:
    a, b = _identity("node-a"), _identity("node-b")
    backend.store.register_node(a, role="primary", product_version="0.0.0")
    backend.store.register_node(b, role="standby", product_version="0.0.0")
    backend.store.request_handover(a.node_id)
    backend.store.unregister_node(a.node_id)
    view = backend.store.snapshot()
    assert [n.name for n in view.nodes] == ["node-b"]
    assert (view.lease.holder, view.lease.epoch, view.lease.handover_to, view.lease.expired) == (None, 2, None, True)
    with pytest.raises(NotRegistered):
        backend.store.unregister_node(a.node_id)


def test_set_priority_orders_the_candidates(backend: Backend) -> None:
    a, b = backend.node("node-a", 10), backend.node("node-b", 20)
    assert [n.node_id for n in backend.store.snapshot().candidates()] == [b, a]
    backend.store.set_priority(a, 30)
    assert [n.node_id for n in backend.store.snapshot().candidates()] == [a, b]
    for bad in (-1, 1_000_001):
        with pytest.raises(ValueError):
            backend.store.set_priority(a, bad)
    with pytest.raises(NotRegistered):
        backend.store.set_priority(str(uuid.uuid4()), 5)


# --- membership: priority 0, boot start, failback -------------------------------------------------------


def test_priority_zero_is_never_a_candidate(backend: Backend) -> None:
    a, b = backend.node("node-a", 10), backend.node("node-b", 20)
    backend.store.set_priority(b, 0)
    view = backend.store.snapshot()
    assert view.node(b).priority == 0  # type: ignore[union-attr]
    assert [n.node_id for n in view.candidates()] == [a]
    backend.store.set_priority(a, 0)
    assert backend.store.snapshot().candidates() == []


def test_boot_start_is_kept_per_node(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    assert {n.boot_start for n in backend.store.snapshot().nodes} == {"enabled"}
    backend.store.set_boot_start(a, "disabled")
    backend.store.set_boot_start(b, "keep")
    assert [n.boot_start for n in backend.store.snapshot().nodes] == ["disabled", "keep"]
    with pytest.raises(ValueError):
        backend.store.set_boot_start(a, "sometimes")
    with pytest.raises(NotRegistered):
        backend.store.set_boot_start(str(uuid.uuid4()), "keep")


def test_failback_setting(backend: Backend) -> None:
    assert backend.store.snapshot().failback is False
    backend.store.set_setting(Setting.FAILBACK, "on")
    assert backend.store.snapshot().failback is True
    with pytest.raises(ValueError):
        backend.store.set_setting(Setting.FAILBACK, "maybe")


def test_a_requested_handover_records_when_it_was_asked(backend: Backend) -> None:
    a, b = backend.node("node-a", 10), backend.node("node-b", 20)
    epoch = backend.store.try_acquire(a, 0, 5.0)
    assert epoch == 1
    assert backend.store.snapshot().lease.handover_requested_s is None
    backend.store.request_handover(b)
    backend.advance(0.3)
    asked = backend.store.snapshot().lease.handover_requested_s
    assert backend.close_to(asked, 0.3)
    assert backend.store.release(a, 1, b)
    assert backend.store.snapshot().lease.handover_requested_s is not None  # kept while it moves
    assert backend.store.try_acquire(b, 1, 5.0) == 2
    assert backend.store.snapshot().lease.handover_requested_s is None


# --- events -------------------------------------------------------------------------------------------


def _event(kind: EventKind = EventKind.SETTING, **kwargs: Any) -> NewEvent:
    return NewEvent(kind, kwargs.pop("node", "node-a"), details=kwargs.pop("details", {"key": "k"}), **kwargs)


def test_an_event_is_recorded_once_with_the_store_clock(backend: Backend) -> None:
    a = backend.node("node-a")
    event = _event(EventKind.TAKEOVER, node_id=a, epoch=7, duration_s=0.5, details={"from": "node-b"})
    assert backend.store.record_events([event], deliver_by=None) == [event.id]
    assert backend.store.record_events([event], deliver_by=None) == []  # a retried write
    [got] = backend.store.events()
    assert (got.id, got.kind, got.node, got.epoch, got.duration_s, dict(got.details)) == \
        (event.id, "takeover", "node-a", 7, 0.5, {"from": "node-b"})
    assert got.deliveries == {}  # no channel configured: nothing to deliver


def test_an_event_kept_locally_is_written_at_its_age(backend: Backend) -> None:
    backend.store.record_events([_event(age_s=30.0)], deliver_by=None)
    backend.store.record_events([_event()], deliver_by=None)
    old, new = backend.store.events()
    assert backend.close_to((new.time - old.time).total_seconds(), 30.0)


def test_an_event_without_an_epoch_gets_the_leases(backend: Backend) -> None:
    a = backend.node("node-a")
    backend.store.try_acquire(a, 0, 5.0)
    backend.store.record_events([_event()], deliver_by=None)
    assert [e.epoch for e in backend.store.events()] == [1]


def test_reports_of_one_occurrence_are_one_event(backend: Backend) -> None:
    first = _event(EventKind.DB_FAILOVER, node="node-a", dedup_key="db_failover:h:5432:2")
    second = _event(EventKind.DB_FAILOVER, node="node-b", dedup_key="db_failover:h:5432:2")
    other = _event(EventKind.DB_FAILOVER, node="node-b", dedup_key="db_failover:h:5433:3")
    backend.store.record_events([first], deliver_by=None)
    assert backend.store.record_events([second, other], deliver_by=None) == [other.id]
    assert [e.node for e in backend.store.events(kind="db_failover")] == ["node-a", "node-b"]


def test_events_are_filtered_by_kind_age_and_count(backend: Backend) -> None:
    backend.store.record_events([_event(EventKind.MAINTENANCE, age_s=100.0, details={"on": True})],
                                deliver_by=None)
    backend.store.record_events([_event(details={"key": str(i)}) for i in range(5)], deliver_by=None)
    assert len(backend.store.events()) == 6
    assert [e.kind for e in backend.store.events(kind="maintenance")] == ["maintenance"]
    assert len(backend.store.events(since_s=50.0)) == 5
    last = backend.store.events(limit=2)
    assert [e.details["key"] for e in last] == ["3", "4"]  # the newest two, oldest first


def test_a_change_and_its_event_commit_together(backend: Backend) -> None:
    a = backend.node("node-a")
    backend.store.set_setting(Setting.MAINTENANCE, "on", event=_event(EventKind.MAINTENANCE, details={"on": True}))
    backend.store.set_priority(a, 5, event=_event(details={"key": "priority"}))
    backend.store.set_admin_state(a, "stopped", event=_event(EventKind.NODE_STOP))
    with pytest.raises(ValueError):
        backend.store.set_setting(Setting.MAINTENANCE, "bad", event=_event(EventKind.MAINTENANCE))
    with pytest.raises(NotRegistered):
        backend.store.set_priority(str(uuid.uuid4()), 5, event=_event(EventKind.SETTING))
    assert [e.kind for e in backend.store.events()] == ["maintenance", "setting", "node_stop"]


# --- notifications ------------------------------------------------------------------------------------

WEBHOOK = webhook_to_json(WebhookConfig("https://hooks.example/ha", signed=True))
EMAIL = email_to_json(EmailConfig(("ops@example.com",), "smtp.example", 587, starttls=True, sender="ha@example.com",
                                  user="ha"))


def test_channels_and_their_sealed_secrets(backend: Backend) -> None:
    assert backend.store.notify_channels().configured() == []
    backend.store.set_notify_channel("webhook", WEBHOOK, {"notify_webhook_secret": b"sealed-1"})
    backend.store.set_notify_channel("email", EMAIL, {"notify_smtp_password": b"sealed-2"},
                                     event=_event(details={"key": "notify_email"}))
    channels = backend.store.notify_channels()
    assert channels.webhook == WebhookConfig("https://hooks.example/ha", True)
    assert channels.email is not None and channels.email.to == ("ops@example.com",)
    assert channels.sealed_secret("notify_webhook_secret") == b"sealed-1"
    backend.store.set_notify_channel("webhook", None, {"notify_webhook_secret": None})
    channels = backend.store.notify_channels()
    assert channels.webhook is None and channels.sealed_secret("notify_webhook_secret") is None
    with pytest.raises(ValueError):
        backend.store.set_notify_channel("webhook", '{"url": "http://example.com/"}', {})  # plain http, not loopback
    assert [e.kind for e in backend.store.events()] == ["setting"]


def test_the_writer_delivers_and_nobody_else_while_it_is_online(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    backend.store.set_notify_channel("webhook", WEBHOOK, {})
    backend.store.set_notify_channel("email", EMAIL, {})
    [event_id] = backend.store.record_events([_event(EventKind.TAKEOVER, node_id=a)], deliver_by=a)
    assert backend.store.events()[-1].deliveries == {"webhook": "pending", "email": "pending"}
    other = backend.store.claim_deliveries(b, ["webhook", "email"], liveness_s=5.0, claim_s=5.0)
    assert other.deliveries == () and other.next_due_s is not None  # held by the writer
    mine = backend.store.claim_deliveries(a, ["webhook"], liveness_s=5.0, claim_s=5.0)
    assert [(d.channel, d.event["id"], d.event["kind"]) for d in mine.deliveries] == \
        [("webhook", event_id, "takeover")]
    seq = mine.deliveries[0].event_seq
    assert backend.store.finish_delivery(seq, "webhook", a, delivered=True)
    assert not backend.store.finish_delivery(seq, "webhook", a, delivered=True)  # recorded once
    assert backend.store.events()[-1].deliveries == {"webhook": "delivered", "email": "pending"}


def test_a_silent_claimant_is_taken_over(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    backend.store.set_notify_channel("webhook", WEBHOOK, {})
    backend.store.record_events([_event(EventKind.TAKEOVER, node_id=a)], deliver_by=a)
    backend.advance(0.4)
    backend.store.heartbeat(b)
    taken = backend.store.claim_deliveries(b, ["webhook"], liveness_s=0.3, claim_s=5.0)
    assert [d.channel for d in taken.deliveries] == ["webhook"]  # node-a fell silent for longer than 0.3 s
    seq = taken.deliveries[0].event_seq
    assert not backend.store.finish_delivery(seq, "webhook", a, delivered=True)  # its claim moved on
    assert backend.store.claim_deliveries(a, ["webhook"], liveness_s=0.3, claim_s=5.0).deliveries == ()
    assert backend.store.finish_delivery(seq, "webhook", b, delivered=True)


def test_a_failed_attempt_is_retried_later_by_anyone(backend: Backend) -> None:
    a, b = backend.node("node-a"), backend.node("node-b")
    backend.store.set_notify_channel("webhook", WEBHOOK, {})
    backend.store.record_events([_event(EventKind.TAKEOVER, node_id=a)], deliver_by=a)
    [d] = backend.store.claim_deliveries(a, ["webhook"], liveness_s=5.0, claim_s=5.0).deliveries
    assert backend.store.claim_deliveries(a, ["webhook"], liveness_s=5.0, claim_s=5.0,
                                          busy=[(d.event_seq, "webhook")]).deliveries == ()
    assert backend.store.finish_delivery(d.event_seq, "webhook", a, delivered=False, error="HTTP 500",
                                         retry_in_s=0.3)
    early = backend.store.claim_deliveries(b, ["webhook"], liveness_s=5.0, claim_s=5.0)
    assert early.deliveries == () and early.next_due_s is not None and early.next_due_s <= 0.3 + 1e-6
    backend.advance(0.35)
    [again] = backend.store.claim_deliveries(b, ["webhook"], liveness_s=5.0, claim_s=5.0).deliveries
    assert again.attempts == 1
    assert backend.store.finish_delivery(again.event_seq, "webhook", b, delivered=False, error="HTTP 500")
    assert backend.store.events()[-1].deliveries == {"webhook": "failed"}  # no retry asked: given up


# --- join codes ---------------------------------------------------------------------------------------


def _issue(backend: Backend, issuer: str, code: str = "c0de01", secret: bytes = b"s" * 32,
           lifetime: float = 30.0) -> str:
    backend.store.issue_join_code(code, secret, issuer, lifetime)
    return code


def test_a_join_code_is_claimed_then_spent_once(backend: Backend) -> None:
    a = backend.node("node-a")
    code = _issue(backend, a)
    with pytest.raises(Conflict):
        _issue(backend, a)  # the same id twice
    [info] = backend.store.join_codes()
    assert (info.code_id, info.issued_by, info.state) == (code, "node-a", CodeState.OUTSTANDING)
    assert backend.remains(info.expires_in_s, 30.0)
    assert backend.store.outstanding_join_codes(a) is not None
    assert backend.store.claim_join_code(code, b"s" * 32, "hw-3", max_failures=5) is ClaimOutcome.OK
    assert backend.store.claim_join_code(code, b"s" * 32, "hw-3", max_failures=5) is ClaimOutcome.OK  # a retry
    assert backend.store.claim_join_code(code, b"s" * 32, "hw-4", max_failures=5) is ClaimOutcome.TAKEN
    with pytest.raises(Conflict, match="another node"):
        backend.store.use_join_code(code, "hw-4", "node-4")
    backend.store.use_join_code(code, "hw-3", "node-3")
    with pytest.raises(Conflict, match="used"):
        backend.store.use_join_code(code, "hw-3", "node-3")
    assert backend.store.claim_join_code(code, b"s" * 32, "hw-3", max_failures=5) is ClaimOutcome.USED
    [info] = backend.store.join_codes()
    assert (info.state, info.used_by) == (CodeState.USED, "node-3")
    assert backend.store.outstanding_join_codes(a) is None


def test_wrong_secrets_burn_a_code(backend: Backend) -> None:
    a = backend.node("node-a")
    code = _issue(backend, a)
    assert backend.store.claim_join_code("nosuch", b"s" * 32, "hw-3", max_failures=3) is ClaimOutcome.UNKNOWN
    for _ in range(3):
        assert backend.store.claim_join_code(code, b"x" * 32, "hw-3", max_failures=3) is ClaimOutcome.UNKNOWN
    assert backend.store.claim_join_code(code, b"s" * 32, "hw-3", max_failures=3) is ClaimOutcome.REVOKED
    assert backend.store.join_codes()[0].failures == 3


def test_an_expired_or_revoked_code_cannot_be_used(backend: Backend) -> None:
    a = backend.node("node-a")
    short = _issue(backend, a, "short1", lifetime=0.2)
    other = _issue(backend, a, "other1")
    backend.advance(0.3)
    assert backend.store.claim_join_code(short, b"s" * 32, "hw-3", max_failures=5) is ClaimOutcome.EXPIRED
    assert backend.store.revoke_join_code(other)
    assert not backend.store.revoke_join_code(other)
    assert not backend.store.revoke_join_code(short)  # expired already
    assert backend.store.claim_join_code(other, b"s" * 32, "hw-3", max_failures=5) is ClaimOutcome.REVOKED
    assert {i.code_id: i.state for i in backend.store.join_codes()} == {short: CodeState.EXPIRED,
                                                                       other: CodeState.REVOKED}
    assert backend.store.outstanding_join_codes(a) is None


def test_a_node_that_leaves_takes_its_codes_along(backend: Backend) -> None:
    a = _identity("node-a")
    backend.store.register_node(a, role="standby", product_version="0.0.0")
    _issue(backend, a.node_id)
    backend.store.unregister_node(a.node_id, event=_event(EventKind.LEAVE, node="node-a"))
    assert backend.store.join_codes() == []
    assert [e.kind for e in backend.store.events()] == ["leave"]
    with pytest.raises(NotRegistered):
        backend.store.issue_join_code("c0de02", b"s" * 32, a.node_id, 30.0)
