"""Backup, restore, the support bundle and an HA-aware reboot, on real PostgreSQL with the real shell.

Standalone nodes run on their own database (a :class:`~appliance.testkit.nodes.Node`); the cluster
tests use real agents (:class:`~appliance.testkit.hacluster.HaCluster`). The shell runs as a separate
process without a terminal, as ``ssh ems@vm '...' > file`` runs it. Only the last step of a reboot is
not real: the privileged helper's socket is one of the test's (:mod:`tests.helpersocket`), which
records the request instead of rebooting this machine.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from appliance.node import read_targets
from appliance.services import ProcessServices
from appliance.testkit.hacluster import HaCluster
from appliance.testkit.nodes import BIN, Node
from appliance.testkit.pgcluster import PgCluster
from tests.helpersocket import HelperSocket, config_line

TIMEOUT = 120


def shell(config: Path, line: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    """``appliance-shell -c LINE`` without a terminal; stdout as bytes (an archive or a dump)."""
    done = subprocess.run([str(BIN / "appliance-shell"), "--config", str(config), "-c", line], input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "USER": "ems", "HOME": str(config.parent)},
                          timeout=TIMEOUT, check=False)
    return done.returncode, done.stdout, done.stderr.decode(errors="replace")


def text(config: Path, line: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    status, out, err = shell(config, line, stdin)
    return status, out.decode(errors="replace"), err


@pytest.fixture
def standalone(tmp_path: Path, pg_primary: PgCluster) -> Iterator[Node]:
    node = Node(tmp_path, "solo", pg_primary)
    node.init()
    yield node
    ProcessServices(node.config).stop()
    pg_primary.drop_database(node.config.local_db.name)
    pg_primary.drop_role(node.config.local_db.user)


def local_sql(node: Node, cluster: PgCluster, query: sql.Composable | str, params: tuple[object, ...] = ()) -> list:
    return cluster.sql(query, params, dbname=node.config.local_db.name)  # type: ignore[arg-type]


def settings(node: Node, cluster: PgCluster) -> dict[str, str]:
    return dict(local_sql(node, cluster, "SELECT key, value FROM appliance.cluster_settings"))


# --- backup and restore ---------------------------------------------------------------------------


def test_backup_restore_round_trip(standalone: Node, pg_primary: PgCluster) -> None:
    config = standalone.config_path
    before = settings(standalone, pg_primary)
    lease_before = local_sql(standalone, pg_primary, "SELECT holder::text, epoch FROM appliance.lease")
    status, dump, err = shell(config, "execute backup --output -")
    assert status == 0, err
    assert dump.startswith(b"PGDMP") and err == ""

    assert text(config, "ha set keepalive-interval 7 --yes")[0] == 0
    assert text(config, "ha maintenance enable --yes")[0] == 0
    local_sql(standalone, pg_primary, "INSERT INTO appliance.system_settings (key, value) VALUES ('x', 'y')")
    assert settings(standalone, pg_primary)["keepalive_interval_s"] == "7"

    status, out, err = text(config, "execute restore --input - --yes", stdin=dump)
    assert status == 0, out + err
    assert "cluster setting keepalive_interval_s: 7 -> 10" in out and "cluster setting maintenance: on -> off" in out
    assert "system settings: 1 -> 0 entries (x)" in out
    assert "It keeps this cluster's identity, nodes and lease (and its events" in out
    assert "Saved the current state first:" in out and "Done:" in out
    after = settings(standalone, pg_primary)
    assert {k: after[k] for k in before} == before
    assert local_sql(standalone, pg_primary, "SELECT count(*) FROM appliance.system_settings") == [(0,)]
    assert local_sql(standalone, pg_primary, "SELECT holder::text, epoch FROM appliance.lease") == lease_before
    saved = sorted((standalone.state / "backups").glob("pre-restore-*.dump"))
    assert len(saved) == 1 and oct(saved[0].stat().st_mode & 0o777) == "0o600"

    # The saved state restores the change back, from its file name.
    status, out, err = text(config, f"execute restore --input {saved[0].name} --yes")
    assert status == 0, err
    assert "keepalive_interval_s: 10 -> 7" in out
    assert settings(standalone, pg_primary)["keepalive_interval_s"] == "7"


def test_backup_to_a_file_is_verified_and_named(standalone: Node) -> None:
    status, out, err = text(standalone.config_path, "execute backup")
    assert status == 0, err
    assert "Backup written and verified:" in out
    [dump] = (standalone.state / "backups").glob("appliance-solo-*.dump")
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    digest = hashlib.sha256(dump.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in out
    assert (dump.parent / (dump.name + ".sha256")).read_text() == f"{digest}  {dump.name}\n"
    status, out, err = text(standalone.config_path, "execute backup --json")
    assert status == 2  # backup is not a get: --json is not one of its flags


def damaged(dump: bytes) -> list[tuple[str, bytes]]:
    flipped = bytearray(dump)
    flipped[len(flipped) - 400] ^= 0xFF
    return [("truncated", dump[: len(dump) // 2]), ("a flipped byte", bytes(flipped)),
            ("not a dump", b"-- a plain SQL file\nDROP SCHEMA appliance CASCADE;\n"), ("empty", b"")]


def test_a_damaged_dump_is_refused_before_anything_changes(standalone: Node, pg_primary: PgCluster) -> None:
    config = standalone.config_path
    status, dump, _err = shell(config, "execute backup --output -")
    assert status == 0
    text(config, "ha set keepalive-interval 7 --yes")
    for what, data in damaged(dump):
        status, out, err = text(config, "execute restore --input - --yes", stdin=data)
        assert status in (1, 2), what
        assert err.startswith("error: ") and out == "", (what, out, err)
    assert settings(standalone, pg_primary)["keepalive_interval_s"] == "7"
    assert not list((standalone.state / "backups").glob("pre-restore-*"))


def test_a_dump_of_a_newer_schema_or_with_a_bad_setting_is_refused(standalone: Node, pg_primary: PgCluster) -> None:
    config = standalone.config_path
    [(version,)] = local_sql(standalone, pg_primary, "SELECT schema_version FROM appliance.meta")
    local_sql(standalone, pg_primary, "UPDATE appliance.meta SET schema_version = 99")
    newer = shell(config, "execute backup --output -")[1]
    local_sql(standalone, pg_primary, "UPDATE appliance.meta SET schema_version = %s", (version,))
    local_sql(standalone, pg_primary, "UPDATE appliance.cluster_settings SET value = 'soon' WHERE key = 'maintenance'")
    bad = shell(config, "execute backup --output -")[1]
    local_sql(standalone, pg_primary, "UPDATE appliance.cluster_settings SET value = 'off' WHERE key = 'maintenance'")
    status, _out, err = text(config, "execute restore --input - --yes", stdin=newer)
    assert status == 1 and "newer schema (v99)" in err and "hint: upgrade this appliance first" in err
    status, _out, err = text(config, "execute restore --input - --yes", stdin=bad)
    assert status == 1 and "setting is not valid: maintenance must be 'on' or 'off'" in err


def test_a_failure_half_way_rolls_everything_back(standalone: Node, pg_primary: PgCluster) -> None:
    config = standalone.config_path
    dump = shell(config, "execute backup --output -")[1]
    text(config, "ha set keepalive-interval 7 --yes")
    local_sql(standalone, pg_primary, "INSERT INTO appliance.system_settings (key, value) VALUES ('keep', 'me')")
    # The last step (the system settings) fails in the database: the settings written before it must go too.
    local_sql(standalone, pg_primary, "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS "
              "$$BEGIN RAISE EXCEPTION 'refused by the test'; END$$")
    local_sql(standalone, pg_primary, "CREATE TRIGGER refuse BEFORE DELETE ON appliance.system_settings "
              "FOR EACH STATEMENT EXECUTE FUNCTION public.refuse()")
    try:
        status, out, err = text(config, "execute restore --input - --yes", stdin=dump)
    finally:
        local_sql(standalone, pg_primary, "DROP TRIGGER refuse ON appliance.system_settings")
        local_sql(standalone, pg_primary, "DROP FUNCTION public.refuse()")
    assert status == 1, out
    assert "rolled back, nothing was replaced" in err and "refused by the test" not in err.split("hint:")[1]
    assert settings(standalone, pg_primary)["keepalive_interval_s"] == "7"
    assert local_sql(standalone, pg_primary, "SELECT key, value FROM appliance.system_settings") == [("keep", "me")]


# --- the support bundle ---------------------------------------------------------------------------


def key_material(node: Node) -> list[bytes]:
    found = []
    for path in (node.state / "keys").glob("*.key"):
        raw = path.read_bytes()
        found += [raw, raw.hex().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw)]
    assert found, "the node has no master key"
    return found


def bundle_members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_primary: PgCluster) -> Iterator[HaCluster]:
    """Two nodes with their agents, node1 primary; shared by the tests below, in file order (the reboot,
    which moves the primary role to node2, is the last)."""
    c = HaCluster(tmp_path_factory.mktemp("admin") / "cluster", pg_primary, local=pg_primary, nodes=2, keepalive_s=1)
    try:
        c.build()
        c.wait_stable()
        yield c
    finally:
        c.stop_all()


def test_the_bundle_holds_the_state_and_no_secret(cluster: HaCluster, pg_primary: PgCluster) -> None:
    node = cluster.nodes["node1"]
    config = node.node.config_path
    # A password typed on a command line (masked in the audit trail), and one in the agent's log file.
    text(config, f"redirect --db_host 192.0.2.1 --db_user x --db_pass {cluster.remote.password} --is_primary_node")
    status, archive, err = shell(config, "execute diagnostic --output -")
    assert status == 0, err
    members = bundle_members(archive)
    for name in ("README.txt", "versions.json", "config/appliance.toml", "ha/nodes.json", "ha/status.json",
                 "system/info.json", "system/network.json", "system/time.json", "system/services.json",
                 "db/reachability.json", "logs/audit.log", "logs/shell.log"):
        assert name in members, name
    nodes = json.loads(members["ha/nodes.json"])
    assert sorted(n["name"] for n in nodes["nodes"]) == ["node1", "node2"]
    reach = json.loads(members["db/reachability.json"])
    assert [(r["target"], r["reachable"]) for r in reach] == [("active", True), ("local", True)]
    events = json.loads(members["ha/events.json"])
    assert "redirect" in {e["kind"] for e in events["events"]}, events
    assert b"redirect --db_host 192.0.2.1" in members["logs/audit.log"]

    origin, active = read_targets(node.config)
    secrets = [cluster.remote.password, origin.target.password, active.target.password, pg_primary.superuser_password,
               (node.dir / "admin-pw").read_text().strip()]
    everything = archive + b"".join(members.values())
    for secret in secrets:
        assert secret.encode() not in everything, "a password is in the bundle"
    for material in key_material(node.node):
        assert material not in everything, "key material is in the bundle"

    status, dump, err = shell(config, "execute backup --output -")
    assert status == 0, err
    for secret in secrets:
        assert secret.encode() not in dump, "a password is in the backup"
    for material in key_material(node.node):
        assert material not in dump


def test_a_bundle_kept_on_the_node(cluster: HaCluster) -> None:
    node = cluster.nodes["node2"]
    status, out, err = text(node.node.config_path, "execute diagnostic")
    assert status == 0, err
    path = Path(out.split("Support bundle written: ", 1)[1].split(" (", 1)[0])
    assert path.parent == node.state / "support" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert "ha/nodes.json" in bundle_members(path.read_bytes())


def test_services_and_info_on_a_node_without_systemd(cluster: HaCluster) -> None:
    node = cluster.nodes["node1"]
    status, out, err = text(node.node.config_path, "service get status --json")
    assert status == 0, err
    services = {s["name"]: s for s in json.loads(out)["services"]}
    assert services["agent"]["state"] == "running" and services["agent"]["pid"] == node.agent.pid  # type: ignore[union-attr]
    assert services["demo"]["runs_on"] == "primary only" and services["demo"]["state"] == "running"
    assert services["database"]["state"] == "reachable"
    status, out, err = text(node.node.config_path, "system get info --json")
    assert status == 0, err
    info = json.loads(out)
    assert info["agent_pid"] == node.agent.pid and info["agent_uptime_s"] >= 0  # type: ignore[union-attr]
    assert info["disks"][0]["volume"] == "state"


# --- restore and reboot in a cluster ----------------------------------------------------------------


def test_restore_runs_on_the_primary_only(cluster: HaCluster) -> None:
    primary, standby = cluster.nodes["node1"].node.config_path, cluster.nodes["node2"].node.config_path
    dump = shell(primary, "execute backup --output -")[1]
    status, _out, err = text(standby, "execute restore --input - --yes", stdin=dump)
    assert status == 1 and "not the acting primary (the primary is node1)" in err
    epoch = cluster.epoch()
    assert text(primary, "ha maintenance enable --yes")[0] == 0
    status, out, err = text(primary, "execute restore --input - --yes", stdin=dump)
    assert status == 0, err
    assert "maintenance: on -> off" in out and "(this cluster)" in out
    assert cluster.epoch() == epoch and cluster.lease()[0] == "node1"


def test_reboot_of_the_primary_hands_over_first(cluster: HaCluster) -> None:
    node = cluster.nodes["node1"]
    helper = HelperSocket(lambda argv, uid: (0, "reboot in 3 s"))  # this machine is not rebooted
    with node.node.config_path.open("a") as handle:
        handle.write(config_line(helper))
    try:
        _reboot_then_shutdown(cluster, node, helper)
    finally:
        helper.close()


def _reboot_then_shutdown(cluster: HaCluster, node: Any, helper: HelperSocket) -> None:
    status, out, err = text(node.node.config_path, "execute reboot --yes")
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[0] == ("This node is the primary: the role is handed over to node2 first (switchover), then this "
                        "node will reboot and rejoin as a standby.")
    assert lines[1] == "Switching over to node2..."
    assert lines[2].startswith("Switched over from node1 to node2 in ") and "(epoch " in lines[2]
    assert lines[3] == "This node will reboot now (reboot in 3 s)."
    assert cluster.lease()[0] == "node2"
    assert helper.requests == [["power", "reboot"]]
    audit = [json.loads(line) for line in (node.state / "audit.log").read_text().splitlines()]
    assert audit[-1]["line"] == "execute reboot --yes" and audit[-1]["status"] == 0

    # The standby that now is node1 just goes.
    status, out, err = text(node.node.config_path, "execute shutdown --yes")
    assert status == 0, err
    assert out.startswith("This node is a standby (the primary is node2)")
    assert cluster.lease()[0] == "node2"
