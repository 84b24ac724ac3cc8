"""No password crosses the network in a usable form; TLS is verified when asked for; through redirect too.

Against a fake server that asks for the password the way an attacker on the path would (clear text, MD5,
or "trust" without asking), and against real PostgreSQL 15 clusters with TLS (a CA made for the test,
``appliance.sandbox.tls``): every connection the product opens goes through ``appliance.db.connect``.
"""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from appliance.db.connect import connect
from appliance.db.errors import DbError, DbErrorKind
from appliance.db.target import DbTarget
from appliance.sandbox.tls import TlsMaterial, make_tls
from appliance.testkit.fakepg import MODES, fake_postgres
from appliance.testkit.nodes import BIN, SECRET, Node, Remote
from appliance.testkit.pgcluster import PgCluster
from appliance.testkit.pghost import chown_to_pg_user
from tests.integration import test_redirect

make_node = test_redirect.make_node

PASSWORD = "Pw-SEKRIT-" + "x7"


def fake_target(port: int, sslmode: str) -> DbTarget:
    return DbTarget(("127.0.0.1",), (port,), "appliance_dba", PASSWORD, "appliance", sslmode)


# --- a server that asks for a usable password gets none ----------------------------------------------


def test_the_fake_server_does_get_a_password_from_a_client_that_does_not_insist_on_scram():
    """The harness itself: plain libpq (no require_auth) sends the password to it, in clear text or MD5."""
    for mode in ("cleartext", "md5"):
        with fake_postgres(mode) as fake, pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.1", port=fake.port, user="u", password=PASSWORD, dbname="d",
                            sslmode="disable", connect_timeout=5)
        [sent] = fake.passwords
        assert sent == PASSWORD.encode() + b"\0" if mode == "cleartext" else sent.startswith(b"md5")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer", "require"])
def test_a_server_asking_for_a_cleartext_or_md5_password_or_none_gets_no_password(mode, sslmode):
    with fake_postgres(mode) as fake, pytest.raises(DbError) as info:
        connect(fake_target(fake.port, sslmode), application_name="appliance-test")
    assert fake.passwords == [] and b"SEKRIT" not in fake.received
    expected = DbErrorKind.TLS if sslmode == "require" else DbErrorKind.INSECURE_AUTH  # no TLS, no further
    assert info.value.kind is expected
    if expected is DbErrorKind.INSECURE_AUTH:
        assert {"cleartext": "in clear text", "md5": "MD5", "trust": "trust"}[mode] in info.value.message
    if sslmode == "require":
        assert fake.ssl_requests and not fake.startups  # it never got past asking for TLS
    else:
        assert fake.startups and all(s.get("user") == "appliance_dba" for s in fake.startups)


def test_an_older_libpq_is_refused_before_any_connection():
    if ctypes.util.find_library("pq") is None:
        pytest.skip("no system libpq to run psycopg's python implementation on")
    with fake_postgres("cleartext") as fake:
        code = ("from appliance.db.connect import connect\nfrom appliance.db.target import DbTarget\n"
                "from appliance.db.errors import DbError\n"
                f"try:\n    connect(DbTarget(('127.0.0.1',), ({fake.port},), 'u', 'pw', 'd', 'disable'),"
                " application_name='t')\nexcept DbError as exc:\n    print(exc.kind.name, exc.message)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "PSYCOPG_IMPL": "python"}, check=False)
        assert fake.received == b""  # not even a startup message
    assert done.stdout.startswith("TOO_OLD the PostgreSQL client library is libpq 15."), done.stdout + done.stderr


# --- TLS against a real server -----------------------------------------------------------------------


def serve_tls(cluster: PgCluster, material: TlsMaterial) -> None:
    """TLS on ``cluster`` with ``material``; TCP clients must use TLS (hostssl), SCRAM as before."""
    for name, data in (("server.crt", material.server_cert), ("server.key", material.server_key)):
        path = cluster.data_dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        chown_to_pg_user(path)
    cluster.settings.update({"ssl": True, "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"})
    cluster.hba_lines = [line.replace("host all all", "hostssl all all") for line in cluster.hba_lines]
    cluster.write_config()
    cluster.restart()  # turning ssl on by a reload races pg_hba.conf's check of the hostssl lines


@pytest.fixture
def tls_cluster(pg_fresh: PgCluster, tmp_path: Path) -> Iterator[tuple[PgCluster, Path]]:
    material = make_tls("test server")
    serve_tls(pg_fresh, material)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(material.ca_cert)
    yield pg_fresh, ca


def cluster_target(cluster: PgCluster, sslmode: str, root: Path | str | None = None,
                   host: str = "127.0.0.1") -> DbTarget:
    return DbTarget((host,), (cluster.port,), cluster.superuser, cluster.superuser_password, "postgres", sslmode,
                    None if root is None else str(root))


def ssl_in_use(target: DbTarget) -> bool:
    with connect(target, application_name="appliance-test", autocommit=True) as conn:
        return bool(conn.pgconn.ssl_in_use)


def test_verify_full_with_the_servers_ca_connects_over_channel_bound_tls(tls_cluster):
    cluster, ca = tls_cluster
    # channel_binding=require: libpq itself refuses the connection unless SCRAM-SHA-256-PLUS was used.
    assert ssl_in_use(cluster_target(cluster, "verify-full", ca))
    assert ssl_in_use(cluster_target(cluster, "verify-full", ca, host="localhost"))


def test_verify_full_refuses_another_ca_and_a_name_the_certificate_does_not_hold(tls_cluster, tmp_path):
    cluster, _ca = tls_cluster
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_tls("someone else").ca_cert)
    with pytest.raises(DbError) as info:
        ssl_in_use(cluster_target(cluster, "verify-full", other))
    assert info.value.kind is DbErrorKind.TLS and "certificate verify failed" in info.value.message
    only_localhost = make_tls("test server", names=("localhost",))
    serve_tls(cluster, only_localhost)
    ca = tmp_path / "localhost-ca.crt"
    ca.write_bytes(only_localhost.ca_cert)
    with pytest.raises(DbError) as info:
        ssl_in_use(cluster_target(cluster, "verify-full", ca))  # dialled as 127.0.0.1
    assert info.value.kind is DbErrorKind.TLS and "127.0.0.1" in info.value.message
    assert ssl_in_use(cluster_target(cluster, "verify-ca", ca))  # verify-ca does not check the name


def test_prefer_uses_tls_where_offered_and_plain_text_only_where_not(tls_cluster, pg_primary):
    cluster, _ca = tls_cluster
    assert ssl_in_use(cluster_target(cluster, "prefer")) and ssl_in_use(cluster_target(cluster, "require"))
    assert not ssl_in_use(cluster_target(pg_primary, "prefer"))  # no TLS there: the second attempt
    with pytest.raises(DbError) as info:
        ssl_in_use(cluster_target(cluster, "disable"))  # hostssl only
    assert info.value.kind is DbErrorKind.HBA_REJECTED


# --- through redirect ----------------------------------------------------------------------------------


def redirect(node: Node, port: int, user: str, *extra: str, password: str = SECRET, dbname: str = "appliance"):
    line = (f"redirect --db_host 127.0.0.1 --db_port {port} --db_user {user} --db_name {dbname} --db_pass - "
            f"--is_primary_node --yes {' '.join(extra)}")
    return node.sh(line, stdin=password + "\n")


@pytest.mark.parametrize("mode", ["cleartext", "md5"])
def test_redirect_to_a_server_asking_for_a_usable_password_sends_none(make_node, mode):
    node = make_node("node1")
    node.init()
    before = node.targets()
    for sslmode in ("disable", "prefer"):
        with fake_postgres(mode) as fake:
            done = redirect(node, fake.port, "postgres", "--db_sslmode", sslmode)
        assert done.returncode == 1, done.stdout + done.stderr
        assert fake.passwords == [] and SECRET.encode() not in fake.received and b"SEKRIT" not in fake.received
        assert "refused, nothing was sent" in done.stderr and "hint: The appliance sends a password only" in done.stderr
        assert node.targets() == before and node.running() == ["beat", "demo"]


def test_redirect_with_verify_full_stores_the_tls_settings_and_every_later_connection_uses_them(
        make_node, tls_cluster):
    cluster, ca = tls_cluster
    remote = Remote(cluster)
    node = make_node("node1")
    node.init()
    done = redirect(node, remote.port, remote.user, "--db_sslmode", "verify-full", "--db_sslrootcert", str(ca),
                    password=remote.password, dbname=remote.dbname)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout  # verified: nothing to warn about
    _origin, active = node.targets()
    assert (active.target.sslmode, active.target.sslrootcert) == ("verify-full", str(ca))
    # A later connection (ha get nodes: the cluster's store, the DB host probe) uses the stored settings.
    shown = node.sh("ha get nodes --json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["db_nodes"][0]["status"] == "online"
    sessions = cluster.sql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                           "WHERE a.usename = %s AND NOT s.ssl", (remote.user,))
    assert sessions == [(0,)]  # nothing of ours in plain text
    # pg_dump (the system's libpq) gets the stored CA and channel binding too: a backup works over it.
    dump = subprocess.run([str(BIN / "appliance-shell"), "--config", str(node.config_path), "-c",
                           "execute backup --output -"], capture_output=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert dump.returncode == 0 and dump.stdout.startswith(b"PGDMP"), dump.stderr


def test_redirect_below_verify_full_says_so_in_one_line_with_the_flags_that_fix_it(make_node, tls_cluster):
    cluster, _ca = tls_cluster
    remote = Remote(cluster)
    node = make_node("node1")
    node.init()
    done = redirect(node, remote.port, remote.user, "--db_sslmode", "require", password=remote.password,
                    dbname=remote.dbname)
    assert done.returncode == 0, done.stdout + done.stderr
    [warning] = [line for line in done.stdout.splitlines() if line.startswith("Warning:")]
    assert "not verified (sslmode=require" in warning and "--db_sslmode verify-full --db_sslrootcert" in warning


@pytest.mark.parametrize(("extra", "says"), [
    (("--db_sslmode", "verify-full"), "--db_sslmode verify-full needs --db_sslrootcert"),
    (("--db_sslmode", "prefer", "--db_sslrootcert", "/etc/hostname"), "--db_sslrootcert is used with"),
    (("--db_sslmode", "require", "--db_sslrootcert", "system"), "system needs --db_sslmode verify-full"),
    (("--db_sslmode", "verify-full", "--db_sslrootcert", "/etc/hostname"), "holds no PEM certificate"),
    (("--db_sslmode", "verify-full", "--db_sslrootcert", "/nonexistent/ca.crt"), "cannot read the CA file"),
])
def test_tls_settings_that_cannot_work_are_refused_before_connecting(make_node, extra, says):
    node = make_node("node1")  # not even initialised: the flags are checked before anything else
    with fake_postgres("cleartext") as fake:
        done = redirect(node, fake.port, "postgres", *extra)
    assert done.returncode in (1, 2) and says in done.stderr, done.stderr
    assert fake.received == b""
