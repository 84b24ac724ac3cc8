"""``redirect`` end to end: real shell processes, real PostgreSQL, real service processes, real signals.

Each node (:class:`appliance.testkit.nodes.Node`) has its own state dir, its own local database (on the
session cluster) and two services run by the ``process`` backend: ``demo`` (primary only) and ``beat``
(every role).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from psycopg import sql

from appliance.db import schema as S
from appliance.services import ProcessServices
from appliance.testkit.nodes import BIN, SECRET, TIMEOUT, Node, Remote


@pytest.fixture
def make_node(tmp_path, pg_primary):
    nodes: list[Node] = []

    def make(name: str, **kwargs) -> Node:
        node = Node(tmp_path, name, pg_primary, **kwargs)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        ProcessServices(node.config).stop()


@pytest.fixture
def remote(pg_primary):
    r = Remote(pg_primary)
    yield r
    pg_primary.drop_database(r.dbname)
    pg_primary.drop_role(r.user)


def test_primary_then_secondary(make_node, remote):
    one, two = make_node("node1"), make_node("node2")
    one.init()
    two.init()
    assert one.running() == ["beat", "demo"]
    done = one.redirect(remote, "primary")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "INFO - Stopping services" in out and f"Deploying database schema appliance v{S.latest_version()}" in out
    assert "Node node1 is now the primary of cluster" in out
    done = two.redirect(remote, "standby")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Verified database schema appliance v{S.latest_version()}" in done.stdout
    rows = remote.rows("SELECT name, role FROM appliance.nodes ORDER BY name")
    assert rows == [("node1", "primary"), ("node2", "standby")]
    assert remote.rows("SELECT count(*) FROM appliance.node_addresses") == [(2,)]
    holder = remote.rows("SELECT n.name, l.epoch FROM appliance.lease l JOIN appliance.nodes n ON n.node_id = l.holder")
    assert holder[0][0] == "node1" and holder[0][1] >= 1
    _origin, active = one.targets()
    assert active.role == "primary" and not active.local and active.target.dbname == remote.dbname
    assert active.target.password == remote.password
    _origin, active = two.targets()
    assert active.role == "standby" and active.cluster_id == one.targets()[1].cluster_id
    assert one.running() == ["beat", "demo"] and two.running() == ["beat"]


def test_password_appears_nowhere(make_node, remote):
    one = make_node("node1")
    one.init()
    done = one.redirect(remote, "primary")
    assert done.returncode == 0, done.stderr
    wrong = one.redirect(remote, "primary", password=remote.password + "x")
    assert wrong.returncode == 1
    leaked = []
    for what, text in (("stdout", done.stdout + wrong.stdout), ("stderr", done.stderr + wrong.stderr),
                       ("state dir", one.all_text())):
        if remote.password in text or SECRET in text:
            leaked.append(what)
    for pid in _service_pids(one):  # children get neither the password in argv nor in the environment
        for part in ("cmdline", "environ"):
            if remote.password.encode() in Path(f"/proc/{pid}/{part}").read_bytes():
                leaked.append(f"/proc/{pid}/{part}")
    assert leaked == []
    audit = (one.state / "audit.log").read_text()
    assert "redirect --db_host 127.0.0.1" in audit and "--db_pass ********" in audit


def test_wrong_password_leaves_the_node_untouched(make_node, remote):
    one = make_node("node1")
    one.init()
    before = one.targets()
    done = one.redirect(remote, "primary", password="not-it")
    assert done.returncode == 1
    assert "error: " in done.stderr and "password" in done.stderr and remote.user in done.stderr
    assert "Stopping services" not in done.stdout  # refused in pre-flight, before anything changed
    assert one.targets() == before and one.running() == ["beat", "demo"]


def test_secondary_before_primary_is_refused(make_node, remote):
    two = make_node("node2")
    two.init()
    done = two.redirect(remote, "standby")
    assert done.returncode == 1 and "redirect the primary node first" in done.stderr
    assert two.targets()[1].local


def test_schema_newer_than_the_product_is_refused(make_node, remote):
    one, two = make_node("node1"), make_node("node2")
    one.init()
    two.init()
    assert one.redirect(remote, "primary").returncode == 0
    remote.rows(f"UPDATE appliance.meta SET schema_version = {S.latest_version() + 1}")
    done = two.redirect(remote, "standby")
    assert done.returncode == 1 and "newer than this appliance" in done.stderr
    assert two.targets()[1].local


def test_second_live_primary_is_refused_by_name(make_node, remote):
    one, two = make_node("node1"), make_node("node2")
    one.init()
    two.init()
    assert one.redirect(remote, "primary").returncode == 0
    done = two.redirect(remote, "primary")
    assert done.returncode == 1 and "node node1 is already the live primary" in done.stderr
    assert two.targets()[1].local and two.running() == ["beat", "demo"]


def test_rerun_gives_the_same_end_state(make_node, remote):
    one = make_node("node1")
    one.init()
    assert one.redirect(remote, "primary").returncode == 0
    first = (one.targets(), remote.rows("SELECT node_id, role, priority FROM appliance.nodes"),
             remote.rows("SELECT holder, epoch FROM appliance.lease"))
    again = one.redirect(remote, "primary")
    assert again.returncode == 0 and "Verified database schema" in again.stdout
    second = (one.targets(), remote.rows("SELECT node_id, role, priority FROM appliance.nodes"),
              remote.rows("SELECT holder, epoch FROM appliance.lease"))
    assert first == second


def test_failure_after_the_switch_rolls_everything_back(make_node, remote):
    one = make_node("node1")
    one.init()
    assert one.redirect(remote, "primary").returncode == 0
    # node2's "beat" exits at once, so the health check after starting as standby fails.
    two = make_node("node2", standby_service="/bin/false")
    done = two.run("appliance-admin", "init")
    assert done.returncode == 0
    before = two.targets()
    done = two.redirect(remote, "standby")
    assert done.returncode == 1, done.stdout
    assert "services did not stay up: beat" in done.stderr and "the node was left as it was" in done.stderr
    for step in ("stopped the services started in the new role", "restored the previous credentials and role",
                 "removed this node's registration", "started the services again as primary"):
        assert f"Rolled back: {step}" in done.stdout
    assert two.targets() == before
    assert remote.rows("SELECT name FROM appliance.nodes") == [("node1",)]


def test_ctrl_c_while_waiting_for_the_lock_rolls_back(make_node, remote, pg_primary):
    one = make_node("node1")
    one.init()
    before = one.targets()
    with pg_primary.connect(dbname=remote.dbname) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (S.lock_key("appliance"),))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(one.dir), "LANG": "C.UTF-8"}
        line = (f"redirect --db_host 127.0.0.1 --db_port {remote.port} --db_user {remote.user} "
                f"--db_name {remote.dbname} --db_pass - --is_primary_node --yes")
        proc = subprocess.Popen([str(BIN / "appliance-shell"), "--config", str(one.config_path), "-c", line],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(remote.password + "\n")
        proc.stdin.close()
        proc.stdin = None  # communicate() below must not touch it again
        seen = ""
        deadline = time.monotonic() + 20
        while "waiting" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "waiting" in seen, seen
        assert one.running() == []  # services were stopped before the lock wait
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "Rolled back: started the services again as primary" in seen + out
    assert one.targets() == before and one.running() == ["beat", "demo"]
    # Interrupted before the deploy transaction: nothing was created on the shared database.
    assert remote.rows("SELECT to_regclass('appliance.nodes')") == [(None,)]


def test_two_primaries_at_once_only_one_wins(make_node, remote):
    one, two = make_node("node1"), make_node("node2")
    one.init()
    two.init()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    procs = []
    for node in (one, two):
        line = (f"redirect --db_host 127.0.0.1 --db_port {remote.port} --db_user {remote.user} "
                f"--db_name {remote.dbname} --db_pass - --is_primary_node --yes")
        proc = subprocess.Popen([str(BIN / "appliance-shell"), "--config", str(node.config_path), "-c", line],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        procs.append(proc)
    results = [(*p.communicate(remote.password + "\n", timeout=TIMEOUT), p.returncode) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 1], results
    loser = next(r for r in results if r[2] == 1)
    assert "already the live primary" in loser[1]
    assert remote.rows("SELECT count(*) FROM appliance.nodes WHERE role = 'primary'") == [(1,)]
    assert remote.rows("SELECT count(*) FROM appliance.meta") == [(1,)]


def test_older_schema_is_upgraded_only_when_asked(make_node, remote, pg_primary):
    with pg_primary.connect(dbname=remote.dbname, user=remote.user, password=remote.password, tcp=True) as conn:
        with conn.transaction():
            S.deploy(conn, "appliance", deployed_by="old", product_version="0.0.9", upto=1)
    one = make_node("node1")
    one.init()
    done = one.redirect(remote, "primary")
    assert done.returncode == 1 and "--upgrade_schema" in done.stderr
    done = one.redirect(remote, "primary", extra="--upgrade_schema")
    assert done.returncode == 0, done.stderr
    assert "Upgrading database schema appliance from v1" in done.stdout
    assert remote.rows("SELECT schema_version FROM appliance.meta") == [(S.latest_version(),)]


def test_secondary_on_a_copied_database_is_refused(make_node, remote):
    one, two = make_node("node1"), make_node("node2")
    one.init()
    two.init()
    assert one.redirect(remote, "primary").returncode == 0
    remote.rows("UPDATE appliance.meta SET system_identifier = '1'")  # as after a dump/restore elsewhere
    done = two.redirect(remote, "standby")
    assert done.returncode == 1 and "is not the one cluster" in done.stderr


def test_foreign_objects_are_listed(make_node, remote, pg_primary):
    with pg_primary.connect(dbname=remote.dbname) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA appliance AUTHORIZATION {}").format(sql.Identifier(remote.user)))
        conn.execute("CREATE TABLE appliance.customers (id int)")
    one = make_node("node1")
    one.init()
    done = one.redirect(remote, "primary")
    assert done.returncode == 1 and "customers" in done.stderr and "not this appliance's" in done.stderr


def test_tampered_credentials_stop_the_redirect(make_node, remote):
    one = make_node("node1")
    one.init()
    victim = (one.state / "credentials" / "current").resolve() / "agent.cred"
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01
    victim.chmod(0o600)
    victim.write_bytes(bytes(data))
    done = one.redirect(remote, "primary")
    assert done.returncode == 1 and "tamper" in done.stderr.lower()


def test_init_twice_changes_nothing(make_node):
    one = make_node("node1")
    one.init()
    before = (one.targets(), (one.state / "node-id").read_text())
    again = one.run("appliance-admin", "init")
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert (one.targets(), (one.state / "node-id").read_text()) == before


def test_port_list_must_match_hosts(make_node, remote):
    one = make_node("node1")
    one.init()
    done = one.sh("redirect --db_host 127.0.0.1,localhost --db_port 1,2,3 --db_user u --db_pass - "
                  "--is_primary_node --yes", stdin="x\n")
    assert done.returncode == 2 and "3 ports for 2 hosts" in done.stderr


def _service_pids(node: Node) -> list[int]:
    pids = []
    for pidfile in (node.state / "run").glob("*.pid"):
        pid = int(pidfile.read_text())
        if os.path.exists(f"/proc/{pid}"):
            pids.append(pid)
    return pids
