"""Self-test of the cluster harness (appliance/testkit/pgcluster.py): the things other tests rely on."""

from __future__ import annotations

import os
import pwd

import psycopg
import pytest

from appliance.testkit.pgcluster import PgCluster, PgPair
from appliance.testkit.pghost import PG_OS_USER, child_pids, pid_alive
from tests.integration.conftest import SUPERUSER_PASSWORD

pytestmark = pytest.mark.pg


def test_runs_unprivileged_with_private_socket(pg_primary: PgCluster) -> None:
    pid = pg_primary.pid()
    assert pid is not None
    expected_uid = pwd.getpwnam(PG_OS_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert os.stat(f"/proc/{pid}").st_uid == expected_uid
    assert (pg_primary.socket_dir / f".s.PGSQL.{pg_primary.port}").exists()
    rows = pg_primary.sql("SELECT current_setting('listen_addresses'), current_setting('fsync'), current_user")
    assert rows == [("127.0.0.1", "off", pg_primary.superuser)]
    assert pg_primary.superuser_password == SUPERUSER_PASSWORD


def test_hba_override_is_applied_and_restored(pg_primary: PgCluster) -> None:
    user = "hba_probe_user"
    pg_primary.create_role(user, "Pw-hba-probe")
    try:
        with pg_primary.hba_override(f"host all {user} 127.0.0.1/32 reject"):
            with pytest.raises(psycopg.OperationalError, match="rejects connection"):
                pg_primary.connect(user=user, password="Pw-hba-probe", tcp=True)
        pg_primary.connect(user=user, password="Pw-hba-probe", tcp=True).close()
    finally:
        pg_primary.drop_role(user)


def test_kill9_then_restart_recovers(pg_fresh: PgCluster) -> None:
    pg_fresh.sql("CREATE TABLE t AS SELECT 1 AS x")
    pid = pg_fresh.pid()
    assert pid is not None
    children = child_pids(pid)
    assert children  # checkpointer, walwriter, ...
    pg_fresh.kill9()
    assert pg_fresh.pid() is None
    assert not any(pid_alive(p) for p in [pid, *children])
    pg_fresh.start()
    assert pg_fresh.sql("SELECT x FROM t") == [(1,)]


def test_stop_modes_and_restart(pg_fresh: PgCluster) -> None:
    for mode in ("smart", "fast", "immediate"):
        pg_fresh.stop(mode)
        assert pg_fresh.pid() is None
        pg_fresh.start()
        assert pg_fresh.sql("SELECT 1") == [(1,)]


def test_destroy_leaves_nothing(pg_fresh: PgCluster) -> None:
    pid = pg_fresh.pid()
    assert pid is not None
    pg_fresh.destroy()
    assert not pid_alive(pid)
    assert not pg_fresh.cluster_dir.exists()
    pg_fresh.destroy()  # idempotent: the fixture calls it again


def test_standby_streams_replays_and_promotes(pg_pair: PgPair) -> None:
    primary, standby = pg_pair
    assert standby.sql("SELECT pg_is_in_recovery()") == [(True,)]
    assert primary.sql("SELECT application_name, state FROM pg_stat_replication") == [("standby", "streaming")]
    auto_conf = (standby.data_dir / "postgresql.auto.conf").read_text()
    assert "passfile=" in auto_conf and primary.superuser_password not in auto_conf
    primary.sql("CREATE TABLE r AS SELECT 42 AS x")
    primary.wait_standbys()
    assert standby.sql("SELECT x FROM r") == [(42,)]
    primary.kill9()
    standby.promote()
    assert standby.sql("SELECT pg_is_in_recovery()") == [(False,)]
    standby.sql("INSERT INTO r VALUES (43)")
