"""Schema deployment against a real PostgreSQL: deploy, verify, upgrade, refuse, lock."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from appliance.clock import SystemClock
from appliance.db import schema as S
from appliance.errors import Conflict


@pytest.fixture
def db(pg_primary):
    name = f"t_{uuid.uuid4().hex[:10]}"
    pg_primary.create_database(name)
    conns = []

    def connect(autocommit=True):
        conn = pg_primary.connect(dbname=name, autocommit=autocommit)
        conns.append(conn)
        return conn

    yield connect
    for conn in conns:
        conn.close()
    pg_primary.drop_database(name)


def deployed(connect, schema="appliance", upto=None):
    conn = connect()
    with conn.transaction():
        cluster_id = S.deploy(conn, schema, deployed_by="node1", product_version="0.1.0", upto=upto)
    return conn, cluster_id


def test_migrations_are_contiguous_and_checksums_stable():
    assert [m.version for m in S.migrations()] == list(range(1, S.latest_version() + 1))
    assert S.checksum(1) != S.checksum(2) and S.checksum(2) == S.checksum(2)


def test_catalog_does_not_depend_on_the_session_search_path(db):
    conn, _ = deployed(db)
    plain = S.catalog_text(conn, "appliance")
    conn.execute("SET search_path TO appliance, public")
    assert S.catalog_text(conn, "appliance") == plain
    assert conn.execute("SHOW search_path").fetchone()[0] == "appliance, public"


def test_absent_then_deploy_then_current(db):
    conn = db()
    assert S.read_state(conn, "appliance").kind is S.StateKind.ABSENT
    conn, cluster_id = deployed(db)
    state = S.read_state(conn, "appliance")
    assert state.kind is S.StateKind.CURRENT and state.version == S.latest_version()
    assert state.cluster_id == cluster_id and state.system_identifier.isdigit()
    assert conn.execute("SELECT count(*) FROM appliance.lease").fetchone()[0] == 1


def test_prefix_gives_independent_schemas(db):
    deployed(db, schema="a_appliance")
    conn = db()
    assert S.read_state(conn, "b_appliance").kind is S.StateKind.ABSENT
    assert S.read_state(conn, "a_appliance").kind is S.StateKind.CURRENT
    with pytest.raises(Exception, match="invalid schema name"):
        S.schema_name("Bad-Prefix")


def test_failed_deploy_leaves_nothing(db):
    conn = db()
    with pytest.raises(psycopg.Error):
        with conn.transaction():
            S.deploy(conn, "appliance", deployed_by="n", product_version="0.1.0")
            conn.execute("SELECT 1/0")
    assert S.read_state(conn, "appliance").kind is S.StateKind.ABSENT
    assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'appliance'").fetchone()[0] == 0


def test_empty_schema_counts_as_absent(db):
    conn = db()
    conn.execute("CREATE SCHEMA appliance")
    assert S.read_state(conn, "appliance").kind is S.StateKind.ABSENT
    with conn.transaction():
        S.deploy(conn, "appliance", deployed_by="n", product_version="0.1.0")
    assert S.read_state(conn, "appliance").kind is S.StateKind.CURRENT


def test_foreign_objects_are_listed(db):
    conn = db()
    conn.execute("CREATE SCHEMA appliance; CREATE TABLE appliance.nodes (x int); CREATE TABLE appliance.other (y int)")
    state = S.read_state(conn, "appliance")
    assert state.kind is S.StateKind.FOREIGN and set(state.detail) == {"nodes", "other"}
    assert "nodes" in state.describe()


def test_meta_without_row_is_foreign(db):
    conn, _ = deployed(db)
    conn.execute("DELETE FROM appliance.meta")
    state = S.read_state(conn, "appliance")
    assert state.kind is S.StateKind.FOREIGN and "meta (no version row)" in state.detail


def test_newer_schema_is_reported(db):
    conn, _ = deployed(db)
    conn.execute("UPDATE appliance.meta SET schema_version = %s", (S.latest_version() + 1,))
    assert S.read_state(conn, "appliance").kind is S.StateKind.NEWER


def test_drift_names_the_difference(db):
    conn, _ = deployed(db)
    conn.execute("ALTER TABLE appliance.nodes ADD COLUMN extra text")
    state = S.read_state(conn, "appliance")
    assert state.kind is S.StateKind.DRIFT
    assert any("unexpected column nodes.extra text" in line for line in state.detail)


def test_checksum_mismatch_is_drift(db):
    conn, _ = deployed(db)
    conn.execute("UPDATE appliance.meta SET checksum = 'sha256:00'")
    state = S.read_state(conn, "appliance")
    assert state.kind is S.StateKind.DRIFT and "checksum" in state.detail[0]


def test_older_then_upgrade(db):
    conn, cluster_id = deployed(db, upto=1)
    state = S.read_state(conn, "appliance")
    assert state.kind is S.StateKind.OLDER and state.version == 1
    with conn.transaction():
        S.upgrade(conn, "appliance", state, product_version="0.2.0")
    after = S.read_state(conn, "appliance")
    assert after.kind is S.StateKind.CURRENT and after.cluster_id == cluster_id
    assert conn.execute("SELECT handover_to FROM appliance.lease").fetchone() == (None,)


NODE = ("INSERT INTO appliance.nodes (node_id, hardware_id, name, priority, role, product_version)"
        " VALUES (gen_random_uuid(), %s, %s, 1, 'standby', '0.1.0') RETURNING node_id::text")


@pytest.mark.parametrize("name", ["EMS\x1b]0;owned\x07", "a\nforged", "-x", "a_b", "ems.", "12", "x" * 64, ""])
def test_schema_v4_refuses_a_node_name_that_is_not_a_host_name(db, name):
    conn, _ = deployed(db)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(NODE, (uuid.uuid4().hex, name))
    assert conn.execute(NODE, (uuid.uuid4().hex, "EMS-1.example")).fetchone()


def test_upgrade_to_v4_renames_a_stored_name_that_breaks_the_rule(db):
    conn, _ = deployed(db, upto=3)
    [(bad_id,)] = conn.execute(NODE, ("hw-1", "EMS\x1b]0;owned\x07\nfake row")).fetchall()
    [(good_id,)] = conn.execute(NODE, ("hw-2", "EMS-2")).fetchall()
    with conn.transaction():
        S.upgrade(conn, "appliance", S.read_state(conn, "appliance"), product_version="0.3.0")
    rows = dict(conn.execute("SELECT node_id::text, name FROM appliance.nodes").fetchall())
    assert rows == {bad_id: f"node-{bad_id[:8]}", good_id: "EMS-2"}
    assert S.read_state(conn, "appliance").kind is S.StateKind.CURRENT


def test_privileges(db, pg_primary):
    role = f"r_{uuid.uuid4().hex[:8]}"
    pg_primary.create_role(role, "pw-1")
    conn, _ = deployed(db)
    dbname = conn.info.dbname
    with pg_primary.connect(dbname=dbname, user=role, password="pw-1", tcp=True) as weak:
        assert S.missing_privileges(weak, "appliance", create=False) == ["USAGE on schema appliance"]
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA appliance TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON appliance.nodes TO {}").format(sql.Identifier(role)))
        missing = S.missing_privileges(weak, "appliance", create=False)
        assert "INSERT/UPDATE/DELETE on appliance.nodes" in missing and len(missing) == len(S.TABLES)
        assert "SELECT/INSERT/UPDATE/DELETE on appliance.lease" in missing
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
        assert S.missing_privileges(weak, "appliance", create=True) == [
            "CREATE on the database (to create the schema)"]
        assert not S.owns_schema(weak, "appliance")
    assert S.owns_schema(conn, "appliance")
    pg_primary.sql(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)), dbname=dbname)
    pg_primary.drop_role(role)


def test_deploy_lock_serialises_and_names_the_holder(db):
    holder, waiter = db(), db()
    holder.execute("SET application_name = 'appliance-redirect:node-a'")
    with S.deploy_lock(holder, "appliance", wait_s=1, clock=SystemClock()):
        notes = []
        with pytest.raises(Conflict) as info:
            with S.deploy_lock(waiter, "appliance", wait_s=0.6, clock=SystemClock(), on_wait=notes.append):
                pass
        assert "appliance-redirect:node-a" in info.value.message
        assert "pg_terminate_backend(" in info.value.hint and notes
    # released: the waiter gets it at once
    with S.deploy_lock(waiter, "appliance", wait_s=0.5, clock=SystemClock()):
        pass


def test_lock_is_freed_when_the_holder_dies(db):
    holder, waiter = db(), db()
    got = threading.Event()
    with S.deploy_lock(holder, "appliance", wait_s=1, clock=SystemClock()):
        pid = holder.info.backend_pid

        def wait() -> None:
            with S.deploy_lock(waiter, "appliance", wait_s=10, clock=SystemClock()):
                got.set()

        thread = threading.Thread(target=wait)
        thread.start()
        db().execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(10)
    assert got.is_set()


def test_concurrent_deployers_deploy_once(db):
    results: list[str] = []
    errors: list[BaseException] = []

    def deployer() -> None:
        try:
            conn = db()
            with S.deploy_lock(conn, "appliance", wait_s=20, clock=SystemClock()):
                if S.read_state(conn, "appliance").kind is S.StateKind.ABSENT:
                    with conn.transaction():
                        results.append(S.deploy(conn, "appliance", deployed_by="x", product_version="0.1.0"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deployer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 1
