"""The app cluster on a real repmgr-managed database pair, through the database faults the field sees.

The shared database is the vendor's setup: PostgreSQL 15 ``db1`` (primary) and ``db2`` (standby) under
repmgr 5.3 with repmgrd and automatic failover (``appliance/testkit/repmgr.py``); three app nodes with
real agents are redirected onto both hosts (``--db_host h,h --db_port P1,P2``). Every test checks, from
the outside:

* the shared demo log: never two nodes acting at once;
* every database node's own tables: no heartbeat and no lease change ever lands on a stale node (an old
  primary started again as a primary);
* afterwards, exactly one app primary whose primary-only service runs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.testkit.hacluster import HaCluster
from appliance.testkit.pgcluster import PgCluster, PgPair
from appliance.testkit.pghost import make_base_dir
from appliance.testkit.repmgr import RepmgrNode, RepmgrPair, repmgr_unavailable_reason
from tests.integration.conftest import SUPERUSER_PASSWORD

I = 1  # noqa: E741 - the keepalive interval, as the design calls it


@pytest.fixture
def pair() -> Iterator[RepmgrPair]:
    reason = repmgr_unavailable_reason()
    if reason:
        pytest.skip(reason)
    base = make_base_dir("repmgr-")
    made = RepmgrPair(base, SUPERUSER_PASSWORD)
    try:
        yield made
    finally:
        made.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster(pair: RepmgrPair, pg_primary: PgCluster, tmp_path: Any) -> Iterator[HaCluster]:
    c = HaCluster(tmp_path / "cluster", PgPair(pair.nodes[0].cluster, pair.nodes[1].cluster), local=pg_primary,
                  keepalive_s=I, db_check_s=10)
    try:
        c.build()
        assert c.wait_stable() == "node1"
        yield c
    finally:
        c.stop_all()


def ha_rows(node: RepmgrNode, dbname: str) -> tuple[Any, ...]:
    """The HA state as this database node has it: every node's heartbeat count, and the lease."""
    beats = tuple(node.cluster.sql("SELECT name, heartbeat_seq FROM appliance.nodes ORDER BY name", dbname=dbname))
    lease = tuple(node.cluster.sql("SELECT holder::text, epoch, expires_at, timeline FROM appliance.lease",
                                   dbname=dbname))
    return beats, lease


def start_stale(pair: RepmgrPair, node: RepmgrNode, c: HaCluster) -> tuple[Any, ...]:
    """Start a dead old primary again as a primary, and read its HA rows before any agent can write."""
    cluster = node.cluster
    saved = list(cluster.hba_lines)
    cluster.hba_lines = [f"host all {c.remote.user} 127.0.0.1/32 reject", *saved]
    cluster.write_config()
    pair.start_as_primary(node)
    rows = ha_rows(node, c.remote.dbname)
    cluster.hba_lines = saved
    cluster.write_config()
    cluster.reload()
    return rows


def healthy(c: HaCluster, since: float) -> str:
    """One primary acting (its demo service writing) since ``since``, and no two at once, ever."""
    primary = c.wait_stable(15)
    c.wait_for(lambda: c.first_line_after(primary, since), 10, f"{primary}'s service running")
    assert c.overlaps() == [], "TWO PRIMARIES at once:\n" + c.describe()
    return primary


def every_agent_on(c: HaCluster, node: RepmgrNode, timeout: float = 15) -> None:
    """Every agent heartbeats on ``node`` (read there)."""
    before = dict(node.cluster.sql("SELECT name, heartbeat_seq FROM appliance.nodes", dbname=c.remote.dbname))
    c.wait_for(lambda: all(v > before[k] for k, v in node.cluster.sql(
        "SELECT name, heartbeat_seq FROM appliance.nodes", dbname=c.remote.dbname)), timeout,
               f"every agent heartbeating on {node.name}")


def test_kill9_of_the_db_primary_is_followed_and_the_service_keeps_running(pair: RepmgrPair,
                                                                            cluster: HaCluster) -> None:
    db1, db2 = pair.nodes
    killed = pair.kill_node(db1)
    pair.wait_primary(db2)
    cluster.db = db2.cluster
    every_agent_on(cluster, db2)
    primary = healthy(cluster, time.monotonic())
    assert cluster.first_line_after(primary, killed + 3 * I) is not None  # running after the failover


def test_an_old_primary_back_as_primary_gets_no_write(pair: RepmgrPair, cluster: HaCluster) -> None:
    db1, db2 = pair.nodes
    pair.kill_node(db1)
    pair.wait_primary(db2)
    cluster.db = db2.cluster
    every_agent_on(cluster, db2)
    before = start_stale(pair, db1, cluster)  # two read-write nodes now; db1 is first in every node's list
    time.sleep(4 * I)
    every_agent_on(cluster, db2)
    assert ha_rows(db1, cluster.remote.dbname) == before, "an agent wrote to the stale database node"
    doc = cluster.get_nodes("node2")
    assert doc["db_alarm"] and "two read-write database nodes" in doc["db_alarm"]
    assert f"{db1.port} timeline 1" in doc["db_alarm"] and f"{db2.port} timeline 2" in doc["db_alarm"]
    assert doc["read_from"].startswith(f"127.0.0.1:{db2.port}")
    status = cluster.sh("node2", "ha get status --json")
    assert status.returncode == 0 and "two read-write database nodes" in json.loads(status.stdout)["db_alarm"]
    primary = healthy(cluster, time.monotonic())
    pair.rejoin(db1)
    cluster.wait_for(lambda: cluster.get_nodes("node3")["db_alarm"] is None, 10, "the alarm clears")
    assert cluster.primary() == primary  # no app failover for the database's split brain

    # Every agent saw the failover, the split brain and its end: each is one event.
    def db_events() -> list[tuple[Any, ...]]:
        return cluster.sql("SELECT kind, details->>'phase', details->>'to' FROM appliance.events"
                           " WHERE kind IN ('db_failover', 'db_split_brain') ORDER BY seq")

    cluster.wait_for(lambda: len(db_events()) >= 3, 10, "the DB events")
    time.sleep(2 * I)  # no late duplicate
    assert db_events() == [("db_failover", None, f"127.0.0.1:{db2.port} timeline 2"), ("db_split_brain", "begin", None),
                           ("db_split_brain", "end", None)]


def test_a_connection_blip_during_the_split_brain_does_not_move_writes_to_the_stale_node(
        pair: RepmgrPair, cluster: HaCluster) -> None:
    db1, db2 = pair.nodes
    pair.kill_node(db1)
    pair.wait_primary(db2)
    cluster.db = db2.cluster
    every_agent_on(cluster, db2)
    before = start_stale(pair, db1, cluster)
    time.sleep(0.5)
    # Every agent session on the current primary is cut: each agent reconnects, and must not take db1.
    db2.cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE "
                    "'appliance-agent:%'", dbname=cluster.remote.dbname)
    time.sleep(4 * I)
    every_agent_on(cluster, db2)
    assert ha_rows(db1, cluster.remote.dbname) == before, "an agent wrote to the stale database node"
    healthy(cluster, time.monotonic())


def test_a_repmgr_switchover_is_followed_without_an_app_failover(pair: RepmgrPair, cluster: HaCluster) -> None:
    db1, db2 = pair.nodes
    epoch, primary = cluster.epoch(), cluster.primary()
    pair.switchover(to=db2)
    cluster.db = db2.cluster
    every_agent_on(cluster, db2)
    assert healthy(cluster, time.monotonic()) == primary
    assert cluster.epoch() == epoch  # the lease never changed hands


def test_the_db_primary_and_the_app_primary_dying_together(pair: RepmgrPair, cluster: HaCluster) -> None:
    db1, db2 = pair.nodes
    app_primary = cluster.primary()
    assert app_primary is not None
    pair.kill_node(db1)
    killed = cluster.kill9(app_primary)
    pair.wait_primary(db2)
    cluster.db = db2.cluster
    new = cluster.wait_for(lambda: (p := cluster.primary()) != app_primary and p, 30, "a new app primary")
    healthy(cluster, killed)
    assert new != app_primary
