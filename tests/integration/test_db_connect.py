"""appliance.db.connect against real PostgreSQL 15 servers: every failure kind, no mocks."""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from appliance.db.connect import connect, probe
from appliance.db.errors import DbError, DbErrorKind, error_from_exception
from appliance.db.target import DbTarget, Timeouts
from appliance.errors import Conflict, NotConfigured, PermissionDenied, Unavailable
from appliance.testkit.pgcluster import PgCluster, PgPair

pytestmark = pytest.mark.pg

APP = "appliance-test"
# Quotes, spaces, '=', backslashes, '%', a leading '-', non-ASCII: all must survive as a keyword value.
WEIRD_PASSWORD = "-p'a\"ss w=o\\rd% é€ü 😀 ' key=value"


@dataclass(frozen=True)
class Env:
    cluster: PgCluster
    user: str
    password: str
    dbname: str

    def target(self, **changes: object) -> DbTarget:
        values: dict[str, object] = {
            "hosts": (self.cluster.host,),
            "ports": (self.cluster.port,),
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
        }
        values.update(changes)
        return DbTarget(**values)  # type: ignore[arg-type]


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def env(pg_primary: PgCluster) -> Iterator[Env]:
    """A role owning a database on the session cluster, with a password distinct from every name."""
    user, dbname = _name("app"), _name("appdb")
    password = "Pw-" + uuid.uuid4().hex
    pg_primary.create_role(user, password, createdb=True)
    pg_primary.create_database(dbname, owner=user)
    yield Env(pg_primary, user, password, dbname)
    pg_primary.drop_database(dbname)
    pg_primary.drop_role(user)


def assert_no_leak(exc: BaseException, password: str) -> None:
    """The password appears nowhere in what a user, a log or a traceback could show."""
    assert isinstance(exc, DbError)
    texts = [
        str(exc),
        repr(exc),
        exc.message,
        exc.hint or "",
        "".join(traceback.format_exception(exc)),
        repr(exc.failures),
        repr(exc.args),
    ]
    for text in texts:
        assert password not in text
    # Raised by us, from our own message: no psycopg exception (or its frames) hangs off the chain.
    assert exc.__cause__ is None
    assert exc.__context__ is None
    # Locals of the library's frames in the traceback (what a rich traceback would print).
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__", "").startswith("appliance."):
            for name, value in frame.f_locals.items():
                assert password not in repr(value), f"password in local {name!r} of {frame.f_code.co_name}"
        tb = tb.tb_next
    assert "\n" not in exc.message


def expect_error(target: DbTarget, kind: DbErrorKind, **kwargs: object) -> DbError:
    with pytest.raises(DbError) as info:
        connect(target, application_name=APP, **kwargs)  # type: ignore[arg-type]
    exc = info.value
    assert exc.kind is kind, exc.message
    assert_no_leak(exc, target.password)
    return exc


# -- success ------------------------------------------------------------------------------------------


def test_connect_sets_application_name_and_timeouts(env: Env) -> None:
    timeouts = Timeouts(
        connect_timeout=3,
        statement_timeout=7,
        lock_timeout=2.5,
        idle_in_transaction_session_timeout=45,
        tcp_user_timeout=9,
        keepalives_idle=11,
        keepalives_interval=4,
        keepalives_count=2,
    )
    with connect(env.target(), application_name="appliance-test-ok", timeouts=timeouts) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("2500ms",)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("45s",)
        row = conn.execute(
            "SELECT application_name, usename, datname FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row == ("appliance-test-ok", env.user, env.dbname)
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert not conn.autocommit
        params = conn.info.get_parameters()
        assert params["connect_timeout"] == "3"
        assert params["target_session_attrs"] == "read-write"
        assert params["keepalives_idle"] == "11"
        assert params["keepalives_interval"] == "4"
        assert params["keepalives_count"] == "2"
        assert params["tcp_user_timeout"] == "9000"
        assert env.password not in conn.info.dsn
        assert env.password not in repr(conn)
        assert (conn.info.host, conn.info.port) == (env.cluster.host, env.cluster.port)


def test_default_timeouts_and_autocommit(env: Env) -> None:
    with connect(env.target(), application_name=APP, autocommit=True, read_write=False) as conn:
        assert conn.autocommit
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("10s",)
        assert conn.info.get_parameters()["connect_timeout"] == "5"
        assert conn.info.get_parameters().get("target_session_attrs", "any") == "any"


def test_weird_password_end_to_end(pg_primary: PgCluster) -> None:
    user = _name("weird")
    pg_primary.create_role(user, WEIRD_PASSWORD)
    try:
        target = DbTarget((pg_primary.host,), (pg_primary.port,), user, WEIRD_PASSWORD, "postgres")
        assert WEIRD_PASSWORD not in repr(target) and WEIRD_PASSWORD not in str(target)
        with connect(target, application_name=APP) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
        # One character off fails cleanly, and neither password leaks.
        wrong = DbTarget((pg_primary.host,), (pg_primary.port,), user, WEIRD_PASSWORD[:-1], "postgres")
        exc = expect_error(wrong, DbErrorKind.AUTH_FAILED)
        assert WEIRD_PASSWORD not in str(exc)
    finally:
        pg_primary.drop_role(user)


# -- authentication and authorisation -----------------------------------------------------------------


def test_wrong_password(env: Env) -> None:
    target = env.target(password="not-" + env.password)
    exc = expect_error(target, DbErrorKind.AUTH_FAILED)
    assert isinstance(exc, PermissionDenied)
    where = f"{env.cluster.host}:{env.cluster.port}"
    assert exc.message == (
        f"Cannot connect to PostgreSQL as {env.user}@{where}/{env.dbname}: "
        f'password authentication failed for user "{env.user}" (wrong user name or password).'
    )
    assert exc.hint and "password" in exc.hint
    assert env.password not in str(exc)


def test_unknown_user(env: Env) -> None:
    exc = expect_error(env.target(user="nobody_here"), DbErrorKind.AUTH_FAILED)
    assert '"nobody_here"' in exc.message and "wrong user name or password" in exc.message


def test_pg_hba_reject_line(env: Env) -> None:
    with env.cluster.hba_override(f"host all {env.user} 127.0.0.1/32 reject"):
        exc = expect_error(env.target(), DbErrorKind.HBA_REJECTED)
    assert isinstance(exc, PermissionDenied)
    assert "pg_hba.conf" in exc.message and "rejects client 127.0.0.1" in exc.message
    assert f'user "{env.user}"' in exc.message and f'database "{env.dbname}"' in exc.message
    assert exc.hint and "pg_hba.conf" in exc.hint
    # Restored: the same target works again.
    connect(env.target(), application_name=APP).close()


def test_pg_hba_no_entry(env: Env) -> None:
    # No line matches this user (as when the server only has hostssl lines for it).
    saved = list(env.cluster.hba_lines)
    env.cluster.hba_lines[:] = [saved[0], "host all someone_else 127.0.0.1/32 scram-sha-256"]
    env.cluster.reload()
    try:
        exc = expect_error(env.target(), DbErrorKind.HBA_REJECTED)
    finally:
        env.cluster.hba_lines[:] = saved
        env.cluster.reload()
    assert "has no entry for client 127.0.0.1" in exc.message and "(no encryption)" in exc.message
    assert exc.hint and "sslmode=require" in exc.hint


def test_missing_database(env: Env) -> None:
    exc = expect_error(env.target(dbname="no_such_db"), DbErrorKind.NO_DATABASE)
    assert isinstance(exc, NotConfigured)
    assert 'database "no_such_db" does not exist' in exc.message
    assert f"{env.user}@{env.cluster.host}:{env.cluster.port}/no_such_db" in exc.message


def test_no_connect_privilege(pg_primary: PgCluster) -> None:
    user, dbname, password = _name("lowpriv"), _name("closed"), "Pw-" + uuid.uuid4().hex
    pg_primary.create_role(user, password)
    pg_primary.create_database(dbname)
    pg_primary.sql(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
    try:
        target = DbTarget((pg_primary.host,), (pg_primary.port,), user, password, dbname)
        exc = expect_error(target, DbErrorKind.NO_PRIVILEGE)
        assert isinstance(exc, PermissionDenied)
        assert f'user "{user}" lacks the CONNECT privilege on database "{dbname}"' in exc.message
    finally:
        pg_primary.drop_database(dbname)
        pg_primary.drop_role(user)


def test_nologin_role(pg_primary: PgCluster) -> None:
    user, password = _name("nologin"), "Pw-" + uuid.uuid4().hex
    pg_primary.create_role(user, password, login=False)
    try:
        target = DbTarget((pg_primary.host,), (pg_primary.port,), user, password, "postgres")
        exc = expect_error(target, DbErrorKind.NO_PRIVILEGE)
        assert "not permitted to log in" in exc.message
    finally:
        pg_primary.drop_role(user)


def test_insufficient_privilege_inside_session(env: Env, pg_primary: PgCluster) -> None:
    user, password = _name("reader"), "Pw-" + uuid.uuid4().hex
    pg_primary.create_role(user, password)
    try:
        target = DbTarget((pg_primary.host,), (pg_primary.port,), user, password, env.dbname)
        with connect(target, application_name=APP) as conn:
            try:
                conn.execute("CREATE TABLE public.t_denied (x int)")  # PG 15: no CREATE on public
            except psycopg.Error as e:
                exc = error_from_exception(e, target, action="Cannot create the schema")
            else:
                pytest.fail("CREATE TABLE should have been refused")
        assert exc.kind is DbErrorKind.NO_PRIVILEGE
        assert isinstance(exc, PermissionDenied)
        assert exc.message.startswith(f"Cannot create the schema as {user}@{pg_primary.host}:{pg_primary.port}/")
        assert "permission denied for schema public" in exc.message
        assert password not in str(exc)
    finally:
        pg_primary.drop_role(user)


def test_too_old(env: Env) -> None:
    exc = expect_error(env.target(), DbErrorKind.TOO_OLD, min_server_version=990000)
    assert isinstance(exc, NotConfigured)
    assert "is version 15." in exc.message and "at least 99.0 is required" in exc.message


# -- network ------------------------------------------------------------------------------------------


def test_unresolvable_host(env: Env) -> None:
    exc = expect_error(env.target(hosts=("no-such-host.invalid",)), DbErrorKind.HOST_NOT_FOUND)
    assert isinstance(exc, Unavailable)
    assert "cannot resolve host name no-such-host.invalid" in exc.message
    assert f"{env.user}@no-such-host.invalid:{env.cluster.port}/{env.dbname}" in exc.message


def test_nothing_listening(env: Env, closed_port: int) -> None:
    exc = expect_error(env.target(ports=(closed_port,)), DbErrorKind.REFUSED)
    assert isinstance(exc, Unavailable)
    assert f"127.0.0.1:{closed_port}" in exc.message and "connection refused" in exc.message


def test_no_answer_times_out_after_connect_timeout(env: Env, silent_port: int) -> None:
    t0 = time.monotonic()
    exc = expect_error(env.target(ports=(silent_port,)), DbErrorKind.TIMEOUT, timeouts=Timeouts(connect_timeout=2))
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed < 4.0, elapsed
    assert isinstance(exc, Unavailable)
    assert f"127.0.0.1:{silent_port}" in exc.message and "no answer within 2 s" in exc.message


def test_tls_required_but_server_has_none(env: Env) -> None:
    exc = expect_error(env.target(sslmode="require"), DbErrorKind.TLS)
    assert "does not offer TLS" in exc.message and "sslmode=require" in exc.message
    assert exc.hint and "ssl" in exc.hint


# -- primaries and standbys ---------------------------------------------------------------------------


def _pair_target(pair: PgPair, *nodes: PgCluster, password: str | None = None) -> DbTarget:
    return DbTarget(
        tuple(n.host for n in nodes),
        tuple(n.port for n in nodes),
        pair.primary.superuser,
        password or pair.primary.superuser_password,
        "postgres",
    )


def test_read_write_on_standby_only_is_read_only(pg_pair_shared: PgPair) -> None:
    target = _pair_target(pg_pair_shared, pg_pair_shared.standby)
    exc = expect_error(target, DbErrorKind.READ_ONLY)
    assert isinstance(exc, Conflict)
    assert f"127.0.0.1:{pg_pair_shared.standby.port}" in exc.message and "read-only standby" in exc.message
    # Any session will do: the standby is fine.
    with connect(target, application_name=APP, read_write=False) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_multi_host_skips_the_standby(pg_pair_shared: PgPair) -> None:
    target = _pair_target(pg_pair_shared, pg_pair_shared.standby, pg_pair_shared.primary)
    with connect(target, application_name=APP) as conn:
        assert conn.info.port == pg_pair_shared.primary.port
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


def test_multi_host_all_fail_reports_each_host(pg_pair_shared: PgPair, closed_port: int) -> None:
    standby = pg_pair_shared.standby
    target = DbTarget(
        ("127.0.0.1", "no-such-host.invalid", "127.0.0.1"),
        (standby.port, 5432, closed_port),
        standby.superuser,
        standby.superuser_password,
        "postgres",
    )
    exc = expect_error(target, DbErrorKind.REFUSED)  # the down host matters more than "a standby"
    assert [(f.host, f.port, f.kind) for f in exc.failures] == [
        ("127.0.0.1", standby.port, DbErrorKind.READ_ONLY),
        ("no-such-host.invalid", 5432, DbErrorKind.HOST_NOT_FOUND),
        ("127.0.0.1", closed_port, DbErrorKind.REFUSED),
    ]
    assert exc.message == (
        f"Cannot connect to PostgreSQL as {standby.superuser} to database postgres on "
        f"127.0.0.1:{standby.port},no-such-host.invalid:5432,127.0.0.1:{closed_port}: "
        f"127.0.0.1:{standby.port}: the server is a read-only standby; "
        "no-such-host.invalid:5432: cannot resolve host name no-such-host.invalid; "
        f"127.0.0.1:{closed_port}: connection refused (nothing listens there)."
    )


def test_multi_host_only_standbys_is_read_only(pg_pair_shared: PgPair) -> None:
    standby = pg_pair_shared.standby
    target = _pair_target(pg_pair_shared, standby, standby)
    exc = expect_error(target, DbErrorKind.READ_ONLY)
    assert exc.hint and exc.hint.startswith("None of the hosts is a read-write primary.")


def test_multi_host_timeout_then_primary(pg_pair_shared: PgPair, silent_port: int) -> None:
    primary = pg_pair_shared.primary
    target = DbTarget(
        ("127.0.0.1", "127.0.0.1"),
        (silent_port, primary.port),
        primary.superuser,
        primary.superuser_password,
        "postgres",
    )
    t0 = time.monotonic()
    with connect(target, application_name=APP, timeouts=Timeouts(connect_timeout=2)) as conn:
        assert conn.info.port == primary.port
    assert 1.8 <= time.monotonic() - t0 < 4.0


def test_promoted_standby_becomes_read_write(pg_pair: PgPair) -> None:
    primary, standby = pg_pair
    target = _pair_target(pg_pair, standby)
    expect_error(target, DbErrorKind.READ_ONLY)
    primary.stop("fast")
    standby.promote()
    with connect(target, application_name=APP) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


# -- probe --------------------------------------------------------------------------------------------


def test_probe_primary_and_standby(pg_pair_shared: PgPair) -> None:
    primary, standby = pg_pair_shared
    target = _pair_target(pg_pair_shared, primary, standby)
    p = probe(target, primary.host, primary.port, application_name=APP)
    s = probe(target, standby.host, standby.port, application_name=APP)
    assert (p.host, p.port, s.port) == (primary.host, primary.port, standby.port)
    assert p.is_in_recovery is False and s.is_in_recovery is True
    assert 150000 <= p.version_num < 160000 and p.version.startswith("15.")
    assert p.timeline == 1 and s.timeline == 1
    assert p.system_identifier is not None and p.system_identifier == s.system_identifier
    assert 0 < p.latency_ms < 1000 and 0 < p.connect_ms < 5000


def test_probe_as_unprivileged_role_and_after_promotion(pg_pair: PgPair) -> None:
    primary, standby = pg_pair
    user, password = _name("monitor"), "Pw-" + uuid.uuid4().hex
    primary.create_role(user, password)
    primary.wait_standbys()
    target = DbTarget((standby.host,), (standby.port,), user, password, "postgres")
    before = probe(target, standby.host, standby.port, application_name=APP)
    assert before.is_in_recovery and before.timeline == 1
    standby.promote()
    after = probe(target, standby.host, standby.port, application_name=APP)
    assert not after.is_in_recovery and after.timeline == 2  # a new timeline, same system identifier
    assert after.system_identifier == before.system_identifier


def test_probe_failure_is_a_db_error(env: Env, closed_port: int) -> None:
    with pytest.raises(DbError) as info:
        probe(env.target(), "127.0.0.1", closed_port, application_name=APP)
    assert info.value.kind is DbErrorKind.REFUSED
    assert_no_leak(info.value, env.password)
