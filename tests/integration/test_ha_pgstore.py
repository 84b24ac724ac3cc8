"""PgStore beyond the contract: failures of a real PostgreSQL, and how the store lives through them.

A DB restart, a read-only server, a multi-host failover, a row lock held by another session, a killed
backend: each must give a prompt :class:`StoreUnavailable` (never a hang, never a password) and the
same store object must recover by itself once the database is back.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from psycopg import sql

from appliance.db import schema as S
from appliance.db.target import DbTarget, Timeouts
from appliance.ha.model import NodeIdentity
from appliance.ha.pgstore import PgStore
from appliance.ha.store import StoreUnavailable
from appliance.ha.timing import ha_timeouts

SCHEMA = "appliance"
FAST = Timeouts(connect_timeout=2, statement_timeout=3, lock_timeout=1, idle_in_transaction_session_timeout=5,
                tcp_user_timeout=3, keepalives_idle=2, keepalives_interval=1, keepalives_count=2)


def q(text: str, schema: str = SCHEMA) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(schema))


def deploy(cluster: Any, dbname: str = "postgres", schema: str = SCHEMA) -> None:
    with cluster.connect(dbname=dbname) as conn, conn.transaction():
        S.deploy(conn, schema, deployed_by="pgstore-test", product_version="0.0.0")


def add_node(cluster: Any, name: str, dbname: str = "postgres", schema: str = SCHEMA) -> str:
    node_id = str(uuid.uuid4())
    cluster.sql(q("INSERT INTO {s}.nodes (node_id, hardware_id, name, priority, role, product_version,"
                  " last_heartbeat) VALUES (%s, %s, %s, 1, 'standby', '0.0.0', now())", schema),
                (node_id, f"hw-{node_id}", name), dbname=dbname)
    return node_id


def target_of(*clusters: Any, dbname: str = "postgres", user: str | None = None,
              password: str | None = None) -> DbTarget:
    return DbTarget(hosts=tuple(c.host for c in clusters), ports=tuple(c.port for c in clusters),
                    user=user or clusters[0].superuser, password=password or clusters[0].superuser_password,
                    dbname=dbname, sslmode="disable")


def unavailable(call: Any, *args: Any, password: str) -> StoreUnavailable:
    """Run ``call``; it must raise a clean StoreUnavailable: no password anywhere, no chained psycopg error."""
    with pytest.raises(StoreUnavailable) as info:
        call(*args)
    exc = info.value
    for text in (str(exc), repr(exc), exc.message, exc.hint or ""):
        assert password not in text, text
    assert exc.__cause__ is None and exc.__context__ is None, "a psycopg exception is chained"
    assert exc.message.startswith("HA store: "), exc.message
    return exc


def eventually(call: Any, *args: Any, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            return call(*args)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- a database on the shared server, with its own role and an awkward password -----------------------


@dataclass
class Db:
    cluster: Any
    dbname: str
    user: str
    password: str

    def target(self, password: str | None = None) -> DbTarget:
        return target_of(self.cluster, dbname=self.dbname, user=self.user, password=password or self.password)

    def store(self, timeouts: Timeouts = FAST, password: str | None = None) -> PgStore:
        return PgStore(self.target(password), SCHEMA, application_name=f"appliance-agent:{self.dbname}",
                       timeouts=timeouts)


@pytest.fixture
def db(pg_primary: Any) -> Iterator[Db]:
    tag = uuid.uuid4().hex[:8]
    user, password = f"ha_{tag}", f"pw 'q' \\ = {tag}-secret"
    pg_primary.create_role(user, password)
    pg_primary.create_database(f"ha_{tag}", owner=user)
    with pg_primary.connect(dbname=f"ha_{tag}", user=user, password=password, tcp=True) as conn, \
            conn.transaction():
        S.deploy(conn, SCHEMA, deployed_by="pgstore-test", product_version="0.0.0")
    try:
        yield Db(pg_primary, f"ha_{tag}", user, password)
    finally:
        pg_primary.drop_database(f"ha_{tag}")
        pg_primary.drop_role(user)


# --- tests ---------------------------------------------------------------------------------------------


def test_importing_the_module_does_not_load_psycopg() -> None:
    code = "import sys, appliance.ha.pgstore; assert 'psycopg' not in sys.modules, 'psycopg loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_ha_timeouts_fail_well_inside_an_interval() -> None:
    for keepalive in (1.0, 5.0, 10.0, 30.0):
        t = ha_timeouts(keepalive)
        assert t.statement_timeout <= keepalive / 2 or t.statement_timeout == 0.5
        assert 0 < t.lock_timeout < t.statement_timeout <= 5
        assert t.effective_connect_timeout == 2
        assert t.tcp_user_timeout <= 10


def test_connection_is_lazy_reused_and_reopened_after_close(db: Db) -> None:
    node = add_node(db.cluster, "node-a", db.dbname)
    store = db.store()
    assert store.connected_to is None  # nothing opened by the constructor
    store.heartbeat(node)
    where = store.connected_to
    assert where == f"{db.cluster.host}:{db.cluster.port}"
    pids = {r[0] for r in db.cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                         (f"appliance-agent:{db.dbname}",))}
    store.heartbeat(node)
    store.snapshot()
    assert {r[0] for r in db.cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                         (f"appliance-agent:{db.dbname}",))} == pids and len(pids) == 1
    store.close()
    assert store.connected_to is None
    store.heartbeat(node)  # reopens
    assert store.snapshot().node(node).heartbeat_seq == 3  # type: ignore[union-attr]
    store.close()


def test_wrong_password_is_unavailable_and_never_shown(db: Db) -> None:
    wrong = f"{db.password} but wrong 'x'"
    store = db.store(password=wrong)
    exc = unavailable(store.snapshot, password=wrong)
    assert "password authentication failed" in exc.message
    assert db.password not in exc.message


def test_a_killed_backend_is_replaced_before_the_next_call(db: Db) -> None:
    """A session ended by the server while idle (pg_terminate_backend, a proxy recycling it, a restart)
    is noticed without a round trip: the next call runs on a new connection instead of failing."""
    node = add_node(db.cluster, "node-a", db.dbname)
    store = db.store()
    store.heartbeat(node)
    app = f"appliance-agent:{db.dbname}"
    db.cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,))
    deadline = time.monotonic() + 5
    while db.cluster.sql("SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (app,)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    store.heartbeat(node)
    assert store.snapshot().node(node).heartbeat_seq == 2  # type: ignore[union-attr]
    store.close()


@pytest.mark.parametrize(
    ("lock_timeout", "statement_timeout", "says"),
    [(0.3, 5.0, "lock timeout"), (0.0, 0.5, "statement timeout")],
    ids=["lock_timeout", "statement_timeout"],
)
def test_a_locked_lease_row_fails_fast_instead_of_hanging(
    db: Db, lock_timeout: float, statement_timeout: float, says: str
) -> None:
    a, b = add_node(db.cluster, "node-a", db.dbname), add_node(db.cluster, "node-b", db.dbname)
    timeouts = Timeouts(connect_timeout=2, statement_timeout=statement_timeout, lock_timeout=lock_timeout,
                        idle_in_transaction_session_timeout=5, tcp_user_timeout=3)
    store = db.store(timeouts)
    assert store.try_acquire(a, 0, 30.0) == 1
    assert store.release(a, 1, None)  # released: every call below would now change the row, so waits for it
    blocker = db.cluster.connect(dbname=db.dbname, autocommit=False)
    try:
        blocker.execute(q("SELECT * FROM {s}.lease FOR UPDATE"))  # an open transaction holding the row
        bound = lock_timeout or statement_timeout
        # (release is not among them: releasing a lease that has already lapsed is a no-op that never
        # touches the row, so it cannot wait for it.)
        for call, args in ((store.renew, (a, 1, 30.0)), (store.try_acquire, (b, 1, 30.0)),
                           (store.request_handover, (b,))):
            t0 = time.monotonic()
            exc = unavailable(call, *args, password=db.password)
            elapsed = time.monotonic() - t0
            assert bound - 0.05 <= elapsed < bound + 1.0, (call, elapsed)
            assert says in exc.message.lower(), exc.message
            assert exc.hint is not None and "lock" in exc.hint and "firewall" not in exc.hint
        # Reads and heartbeats do not wait for the lease row: the node still shows it is alive.
        store.heartbeat(a)
        assert store.snapshot().lease.holder == a
        assert store.release(a, 1, None) is False  # already released: returns at once, changes nothing
    finally:
        blocker.rollback()
        blocker.close()
    assert store.try_acquire(b, 1, 30.0) == 2  # the same store recovers by itself
    store.close()


def test_a_locked_node_row_makes_the_heartbeat_fail_fast(db: Db) -> None:
    a = add_node(db.cluster, "node-a", db.dbname)
    store = db.store()
    blocker = db.cluster.connect(dbname=db.dbname, autocommit=False)
    try:
        blocker.execute(q("SELECT * FROM {s}.nodes FOR UPDATE"))
        t0 = time.monotonic()
        unavailable(store.heartbeat, a, password=db.password)
        assert time.monotonic() - t0 < FAST.lock_timeout + 1.0
    finally:
        blocker.rollback()
        blocker.close()
    store.heartbeat(a)
    store.close()


def test_register_then_lease_moves_with_roles(db: Db) -> None:
    """The registry written by the store's registration (inside a caller's transaction, as redirect does it)
    and the store's HA loop agree on lease and roles."""
    a_id, b_id = NodeIdentity(str(uuid.uuid4()), "hw-a", "node-a"), NodeIdentity(str(uuid.uuid4()), "hw-b", "node-b")
    with db.cluster.connect(dbname=db.dbname, user=db.user, password=db.password, tcp=True) as conn:
        with conn.transaction():
            PgStore.on_connection(conn, db.target(), SCHEMA).register_node(a_id, role="primary",
                                                                             product_version="0.0.0")
        with conn.transaction():
            PgStore.on_connection(conn, db.target(), SCHEMA).register_node(b_id, role="standby",
                                                                             product_version="0.0.0")
    store = db.store()
    view = store.snapshot()
    assert (view.lease.holder, view.lease.epoch, view.lease.expired) == (a_id.node_id, 1, False)
    assert {n.name: n.role for n in view.nodes} == {"node-a": "primary", "node-b": "standby"}
    assert store.renew(a_id.node_id, 1, 30.0)
    assert store.try_acquire(b_id.node_id, 1, 30.0) is None
    assert store.release(a_id.node_id, 1, b_id.node_id)
    assert store.try_acquire(b_id.node_id, 1, 30.0) == 2
    view = store.snapshot()
    assert {n.name: n.role for n in view.nodes} == {"node-a": "standby", "node-b": "primary"}
    store.close()


def test_keepalive_change_is_recorded_atomically(db: Db) -> None:
    store = db.store()
    store.set_setting("keepalive_interval_s", "20")
    rows = dict(db.cluster.sql(q("SELECT key, value FROM {s}.cluster_settings"), dbname=db.dbname))
    assert (rows["keepalive_interval_s"], rows["keepalive_previous_s"]) == ("20", "10")
    view = store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (20.0, 20.0)
    store.set_setting("keepalive_interval_s", "5")
    view = store.snapshot()
    assert (view.keepalive_s, view.judge_keepalive_s) == (5.0, 20.0)
    store.close()


def test_an_invalid_keepalive_setting_is_reported_not_crashed_on(db: Db) -> None:
    db.cluster.sql(q("UPDATE {s}.cluster_settings SET value = 'soon' WHERE key = 'keepalive_interval_s'"),
                   dbname=db.dbname)
    store = db.store()
    exc = unavailable(store.snapshot, password=db.password)
    assert "keepalive_interval_s" in exc.message and "'soon'" in exc.message
    store.close()


def test_unexpected_calls_are_refused_clearly(db: Db) -> None:
    a = add_node(db.cluster, "node-a", db.dbname)
    store = db.store()
    with pytest.raises(ValueError, match="admin state"):
        store.set_admin_state(a, "paused")
    store.close()


def test_release_to_an_unregistered_successor_still_gives_the_lease_up(db: Db) -> None:
    """The successor is a foreign key: one that is gone is not recorded, but the lease is released (a
    node stepping down must never be kept from it), and the best candidate takes over."""
    a = add_node(db.cluster, "node-a", db.dbname)
    store = db.store()
    assert store.try_acquire(a, 0, 30.0) == 1
    assert store.release(a, 1, str(uuid.uuid4()))
    lease = store.snapshot().lease
    assert (lease.holder, lease.epoch, lease.handover_to, lease.expired) == (a, 1, None, True)
    store.close()


# --- the server goes away, or stops taking writes -------------------------------------------------------


def test_a_db_restart_is_unavailable_during_and_recovers_by_itself(pg_fresh: Any) -> None:
    deploy(pg_fresh)
    a = add_node(pg_fresh, "node-a")
    password = pg_fresh.superuser_password
    store = PgStore(target_of(pg_fresh), SCHEMA, application_name="appliance-agent:a", timeouts=FAST)
    assert store.try_acquire(a, 0, 30.0) == 1
    pg_fresh.stop("fast")
    for call, args in ((store.heartbeat, (a,)), (store.snapshot, ()), (store.renew, (a, 1, 30.0))):
        t0 = time.monotonic()
        exc = unavailable(call, *args, password=password)
        assert time.monotonic() - t0 < 2 * FAST.effective_connect_timeout
        assert str(pg_fresh.port) in exc.message
    pg_fresh.start()
    assert store.renew(a, 1, 30.0)  # the first call after the restart already works
    store.heartbeat(a)
    # A restart between two calls costs nothing either: the dead session is replaced before use.
    pg_fresh.restart("fast")
    assert store.renew(a, 1, 30.0)
    assert store.snapshot().lease.epoch == 1
    store.close()


def test_a_server_that_turns_read_only_is_unavailable_then_recovers(pg_fresh: Any) -> None:
    deploy(pg_fresh)
    a = add_node(pg_fresh, "node-a")
    store = PgStore(target_of(pg_fresh), SCHEMA, application_name="appliance-agent:a", timeouts=FAST)
    store.heartbeat(a)
    pg_fresh.settings["default_transaction_read_only"] = True
    pg_fresh.reload()
    try:
        # The session already open refuses the write (SQLSTATE 25006) or is replaced by a new one,
        # which target_session_attrs=read-write refuses: either way a clear "read-only" failure.
        exc = unavailable(store.heartbeat, a, password=pg_fresh.superuser_password)
        assert "read-only" in exc.message, exc.message
        exc = unavailable(store.heartbeat, a, password=pg_fresh.superuser_password)
        assert "read-only" in exc.message, exc.message
    finally:
        pg_fresh.settings["default_transaction_read_only"] = False
        pg_fresh.reload()
    eventually(store.heartbeat, a)
    store.close()


def test_a_standby_as_the_only_host_is_unavailable_with_a_clear_message(pg_pair: Any) -> None:
    deploy(pg_pair.primary)
    a = add_node(pg_pair.primary, "node-a")
    pg_pair.primary.wait_standbys()
    store = PgStore(target_of(pg_pair.standby), SCHEMA, application_name="appliance-agent:a", timeouts=FAST)
    for call, args in ((store.heartbeat, (a,)), (store.snapshot, ())):
        exc = unavailable(call, *args, password=pg_pair.standby.superuser_password)
        assert "read-only standby" in exc.message, exc.message
        assert str(pg_pair.standby.port) in exc.message
    store.close()


def test_follows_a_db_failover_of_a_multi_host_target(pg_pair: Any) -> None:
    primary, standby = pg_pair
    deploy(primary)
    a = add_node(primary, "node-a")
    store = PgStore(target_of(primary, standby), SCHEMA, application_name="appliance-agent:a", timeouts=FAST)
    assert store.try_acquire(a, 0, 30.0) == 1
    store.heartbeat(a)
    assert store.connected_to == f"{primary.host}:{primary.port}"
    primary.wait_standbys()
    primary.kill9()
    exc = unavailable(store.heartbeat, a, password=primary.superuser_password)
    # Until the standby is promoted, no host of the list takes writes: say so, per host.
    exc = unavailable(store.heartbeat, a, password=primary.superuser_password)
    assert "read-only standby" in exc.message and "refused" in exc.message, exc.message
    standby.promote()
    eventually(store.heartbeat, a)  # the same store object, now on the promoted standby
    assert store.connected_to == f"{standby.host}:{standby.port}"
    view = store.snapshot()
    assert view.node(a).heartbeat_seq == 2  # type: ignore[union-attr]  # replicated, then continued
    assert (view.lease.holder, view.lease.epoch) == (a, 1)
    assert store.renew(a, 1, 30.0)
    store.close()


def test_stores_in_threads_do_not_share_a_connection(db: Db) -> None:
    """One store serialises its calls; many threads on one store never interleave transactions."""
    nodes = [add_node(db.cluster, f"node-{i}", db.dbname) for i in range(3)]
    store = db.store()
    errors: list[BaseException] = []

    def beat(node: str) -> None:
        try:
            for _ in range(50):
                store.heartbeat(node)
                store.snapshot()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=beat, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert [n.heartbeat_seq for n in store.snapshot().nodes] == [50, 50, 50]
    store.close()
