"""``redirect`` fault cases (``creds-schema.md``, "Bad input / fault cases"), end to end.

Real ``appliance-shell -c "redirect ..."`` processes against real PostgreSQL 15 servers. The cases
already covered by ``test_redirect.py`` are not repeated here. For every refusal the test checks the
exit status, that stderr holds exactly ONE ``error:`` line saying what failed and naming host:port
and user (never the password), that a pre-flight refusal never got as far as "Stopping services",
and that the node is untouched (same credential set, same generation on disk, same services).

Most refusals share one idle, initialised node and one empty remote database (module scope): a
refusal must leave both exactly as they were, so sharing them also checks that nothing leaked from
one case into the next. Only the cases that need a standby or a failover start a ``pg_pair``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import pytest
from psycopg import sql

from appliance.config import load_config
from appliance.db import schema as S
from appliance.services import ProcessServices
from appliance.shell.types import Host
from appliance.testkit.nodes import BIN, SECRET, TIMEOUT, Node, Remote
from tests.integration import test_redirect

# test_redirect.py's fixtures, made visible to pytest in this module (an assignment rather than an
# import, so that using them as test parameters does not read as shadowing an import).
make_node = test_redirect.make_node
remote = test_redirect.remote

# Quotes, spaces, '=', '%', backslash, non-ASCII and a leading '-' (case 28 of the design).
ODD_PASSWORD = "-q'uo\"te sp ace=100%\\back ö€ß"


# --- helpers ------------------------------------------------------------------------------------------


class Db:
    """A remote database with a role of our choosing (``Remote`` always uses its own password)."""

    def __init__(self, cluster, *, password: str | None = None, owner: bool = True) -> None:
        self.cluster = cluster
        self.port = cluster.port
        tag = uuid.uuid4().hex[:8]
        self.user, self.dbname = f"dba_{tag}", f"shared_{tag}"
        self.password = password if password is not None else SECRET + tag
        cluster.create_role(self.user, self.password)
        cluster.create_database(self.dbname, owner=self.user if owner else None)

    def rows(self, query):
        return self.cluster.sql(query, dbname=self.dbname)

    def drop(self) -> None:
        self.cluster.drop_database(self.dbname)
        self.cluster.drop_role(self.user)


def quote(value: str) -> str:
    """POSIX single-quoting, as the appliance shell's tokenizer reads it."""
    return "'" + value.replace("'", "'\\''") + "'"


def redirect(node: Node, *, port, user: str, dbname: str, password: str | None, role: str = "primary",
             host: str = "127.0.0.1", yes: bool = True, extra: str = "",
             pass_arg: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``redirect``; the password goes on stdin (``--db_pass -``) unless ``pass_arg`` is given."""
    flag = "--is_primary_node" if role == "primary" else "--is_secondary_node"
    line = (f"redirect --db_host {host} --db_port {port} --db_user {user} --db_name {dbname} "
            f"--db_pass {pass_arg if pass_arg is not None else '-'} {flag}{' --yes' if yes else ''} {extra}")
    return node.sh(line, stdin=None if password is None else password + "\n")


def snapshot(node: Node):
    """What "untouched" compares: the decrypted credential set and the generation it lives in."""
    return node.targets(), (node.state / "credentials" / "current").resolve()


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"want exactly one error line:\n{done.stderr}"
    return errors[0]


def assert_refused(node: Node, done: subprocess.CompletedProcess[str], before, *, status: int = 1,
                   says: tuple[str, ...] = (), names: tuple[str, ...] = (), password: str | None = None,
                   running: tuple[str, ...] = ("beat", "demo")) -> str:
    """A clean refusal before anything changed; returns the error line."""
    out = done.stdout + done.stderr
    assert done.returncode == status, out
    err = error_line(done)
    for text in (*says, *names):
        assert text.lower() in err.lower(), f"{text!r} not in {err!r}"
    assert "internal error" not in err and "Traceback" not in out
    if password is not None:
        assert password not in out
    assert "Stopping services" not in done.stdout  # refused in pre-flight
    assert snapshot(node) == before
    assert node.running() == list(running)
    return err


@pytest.fixture(scope="module")
def idle(tmp_path_factory, pg_primary):
    """One initialised node, on its local DB as primary; every test using it must leave it so."""
    node = Node(tmp_path_factory.mktemp("faults"), "idle", pg_primary)
    node.init()
    yield node
    ProcessServices(node.config).stop()


@pytest.fixture(scope="module")
def empty_db(pg_primary):
    """An empty remote database (refusals must never deploy into it)."""
    db = Db(pg_primary)
    yield db
    assert db.rows("SELECT count(*) FROM pg_namespace WHERE nspname = 'appliance'") == [(0,)]
    db.drop()


# --- cases 1-9, 12-14: pre-flight refusals on the shared idle node -------------------------------------


def test_unknown_user_reads_like_a_wrong_password(idle, empty_db):
    before = snapshot(idle)
    ghost = f"nobody_{uuid.uuid4().hex[:6]}"
    done = redirect(idle, port=empty_db.port, user=ghost, dbname=empty_db.dbname, password=empty_db.password)
    assert_refused(idle, done, before, says=("wrong user name or password",),
                   names=(f"127.0.0.1:{empty_db.port}", ghost), password=empty_db.password)


def test_unresolvable_host(idle, empty_db):
    """Run in a network namespace of its own (no interfaces up), so the lookup fails here and no DNS
    query can leave this machine, whatever resolver /etc/resolv.conf names."""
    if os.geteuid() != 0 or subprocess.run(["/usr/bin/unshare", "-n", "true"], check=False).returncode != 0:
        pytest.skip("needs root to create a network namespace (a lookup outside one could leave this machine)")
    before = snapshot(idle)
    line = (f"redirect --db_host no-such-host.invalid --db_port {empty_db.port} --db_user {empty_db.user} "
            f"--db_name {empty_db.dbname} --db_pass - --is_primary_node --yes")
    t0 = time.monotonic()
    done = subprocess.run(["/usr/bin/unshare", "-n", str(BIN / "appliance-shell"), "--config", str(idle.config_path),
                           "-c", line], input=empty_db.password + "\n", capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(idle.dir)})
    assert time.monotonic() - t0 < 15
    assert_refused(idle, done, before, says=("cannot resolve host name no-such-host.invalid",),
                   names=(f"no-such-host.invalid:{empty_db.port}", empty_db.user), password=empty_db.password)


def test_closed_port(idle, empty_db, closed_port):
    before = snapshot(idle)
    done = redirect(idle, port=closed_port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password)
    assert_refused(idle, done, before, says=("connection refused", "nothing listens"),
                   names=(f"127.0.0.1:{closed_port}", empty_db.user), password=empty_db.password)


def test_silent_host_gives_up_after_the_connect_timeout(idle, empty_db, silent_port):
    before = snapshot(idle)
    t0 = time.monotonic()
    done = redirect(idle, port=silent_port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password)
    took = time.monotonic() - t0
    assert took < 15, f"took {took:.1f} s; connect_timeout_s is 3"
    assert took >= 2.5, f"gave up after {took:.1f} s, before the 3 s connect timeout"
    assert_refused(idle, done, before, says=("no answer within 3 s",),
                   names=(f"127.0.0.1:{silent_port}", empty_db.user), password=empty_db.password)


def test_pg_hba_reject(idle, empty_db, pg_primary):
    before = snapshot(idle)
    with pg_primary.hba_override(f"host all {empty_db.user} 127.0.0.1/32 reject"):
        done = redirect(idle, port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                        password=empty_db.password)
    assert_refused(idle, done, before, says=("pg_hba.conf", "rejects", "client 127.0.0.1"),
                   names=(f"127.0.0.1:{empty_db.port}", empty_db.user, empty_db.dbname), password=empty_db.password)
    assert "database administrator" in done.stderr  # the hint asks for a DBA change
    # hba_override restored pg_hba.conf: the same user gets past it again (to the wrong-database check).
    done = redirect(idle, port=empty_db.port, user=empty_db.user, dbname="nosuchdb", password=empty_db.password)
    assert_refused(idle, done, before, says=('database "nosuchdb" does not exist',))


def test_tls_required_but_the_server_has_none(idle, empty_db):
    before = snapshot(idle)
    original = idle.config_path.read_text()
    assert 'sslmode = "disable"\n' in original  # the test clusters have no TLS (appliance/testkit/nodes.py)
    try:
        idle.config_path.write_text(original.replace('sslmode = "disable"\n', 'sslmode = "require"\n', 1))
        idle.config = load_config(idle.config_path)
        assert idle.config.database.sslmode == "require"
        done = redirect(idle, port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                        password=empty_db.password)
    finally:
        idle.config_path.write_text(original)
        idle.config = load_config(idle.config_path)
    assert_refused(idle, done, before, says=("does not offer TLS", "sslmode=require"),
                   names=(f"127.0.0.1:{empty_db.port}", empty_db.user), password=empty_db.password)


def test_database_does_not_exist(idle, empty_db, pg_primary):
    before = snapshot(idle)
    done = redirect(idle, port=empty_db.port, user=empty_db.user, dbname="nosuchdb", password=empty_db.password)
    assert_refused(idle, done, before, says=('database "nosuchdb" does not exist',),
                   names=(f"127.0.0.1:{empty_db.port}", empty_db.user), password=empty_db.password)
    assert pg_primary.sql("SELECT count(*) FROM pg_database WHERE datname = 'nosuchdb'") == [(0,)]  # not created


def test_primary_without_create_on_the_database(idle, empty_db, pg_primary):
    before = snapshot(idle)
    weak = Db(pg_primary, owner=False)  # LOGIN, CONNECT through PUBLIC, but no CREATE on its database
    try:
        done = redirect(idle, port=weak.port, user=weak.user, dbname=weak.dbname, password=weak.password)
        assert_refused(idle, done, before, says=("lacks CREATE on the database",),
                       names=(f"127.0.0.1:{weak.port}", weak.user), password=weak.password)
        assert weak.rows("SELECT count(*) FROM pg_namespace WHERE nspname = 'appliance'") == [(0,)]
    finally:
        weak.drop()


def test_no_password_never_connects(idle, empty_db):
    """Case 3: an empty password is a usage error; the (listening) target never sees a connection."""
    before = snapshot(idle)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        port = trap.getsockname()[1]
        empty_arg = redirect(idle, port=port, user=empty_db.user, dbname=empty_db.dbname, password=None,
                             pass_arg="''")
        empty_stdin = redirect(idle, port=port, user=empty_db.user, dbname=empty_db.dbname, password="")
        no_stdin = redirect(idle, port=port, user=empty_db.user, dbname=empty_db.dbname, password=None)
        left_out = idle.sh(f"redirect --db_host 127.0.0.1 --db_port {port} --db_user {empty_db.user} "
                           "--is_primary_node --yes")
        trap.setblocking(False)
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody connected
    assert_refused(idle, empty_arg, before, status=2, says=("--db_pass", "must not be empty"))
    assert_refused(idle, empty_stdin, before, status=2, says=("--db_pass -", "nothing was read"))
    assert_refused(idle, no_stdin, before, status=2, says=("--db_pass -", "nothing was read"))
    assert_refused(idle, left_out, before, status=2, says=("--db_pass", "no terminal"))


def test_ipv6_literal_brackets_and_trailing_dot(idle, empty_db):
    before = snapshot(idle)
    # The cluster listens on 127.0.0.1 only: [::1] is loopback too, and refused.
    done = redirect(idle, host="::1", port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password)
    assert_refused(idle, done, before, says=("connection refused",),
                   names=(f"[::1]:{empty_db.port}", empty_db.user), password=empty_db.password)
    # Brackets belong to URLs, not to --db_host: refused by the tokenizer unquoted, by the host type quoted.
    done = redirect(idle, host="[::1]", port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password)
    assert_refused(idle, done, before, status=2, says=("'[' is not allowed outside quotes",))
    done = redirect(idle, host="'[::1]'", port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password)
    assert_refused(idle, done, before, status=2, says=("--db_host",), password=empty_db.password)
    # A trailing dot: an IP address with one is refused at parse time ...
    done = redirect(idle, host="127.0.0.1.", port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password)
    assert_refused(idle, done, before, status=2, says=("--db_host", "neither a valid IP address nor a host name"),
                   password=empty_db.password)
    # ... a DNS name with one is accepted as the fully qualified name it is (resolving it here could
    # query an outside DNS server, so only the parser is checked for that).
    assert Host().parse("db.example.") == "db.example."


def test_no_yes_and_no_terminal(idle, empty_db):
    before = snapshot(idle)
    done = redirect(idle, port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password, yes=False)
    assert_refused(idle, done, before, status=3, says=("needs confirmation", "no terminal"),
                   password=empty_db.password)
    assert "--yes" in done.stderr
    assert f"Node {idle.name} will move from its local database to {empty_db.user}@127.0.0.1:{empty_db.port}" \
        in done.stdout  # the pre-flight summary was shown; then nothing ran


def test_schema_absent_names_the_target(idle, empty_db):
    before = snapshot(idle)
    done = redirect(idle, port=empty_db.port, user=empty_db.user, dbname=empty_db.dbname,
                    password=empty_db.password, role="standby")
    assert_refused(idle, done, before, says=("not deployed",),
                   names=(f"127.0.0.1:{empty_db.port}", empty_db.user), password=empty_db.password)


# --- case 8b: a secondary whose role may not use the deployed schema -----------------------------------


@pytest.fixture(scope="module")
def deployed_db(pg_primary):
    """A remote database holding a current schema (deployed directly: the refusals come before any node check)."""
    db = Db(pg_primary)
    with pg_primary.connect(dbname=db.dbname, user=db.user, password=db.password, tcp=True) as conn:
        with conn.transaction():
            db.cluster_id = S.deploy(conn, "appliance", deployed_by="elsewhere", product_version="0.0.0")
    yield db
    assert db.rows("SELECT count(*) FROM appliance.nodes") == [(0,)]  # no refusal registered anything
    db.drop()


@pytest.fixture
def reader(pg_primary, deployed_db):
    """A role that can log in and connect (CONNECT through PUBLIC), with no privilege on the schema."""
    tag = uuid.uuid4().hex[:8]
    name, password = f"reader_{tag}", SECRET + tag
    pg_primary.create_role(name, password)
    yield name, password
    pg_primary.sql(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)), dbname=deployed_db.dbname)
    pg_primary.drop_role(name)


def test_secondary_without_any_privilege_on_the_schema(idle, deployed_db, reader):
    user, password = reader
    before = snapshot(idle)
    done = redirect(idle, port=deployed_db.port, user=user, dbname=deployed_db.dbname, password=password,
                    role="standby")
    err = assert_refused(idle, done, before, says=("schema appliance",),
                         names=(f"127.0.0.1:{deployed_db.port}", user), password=password)
    assert "USAGE" in err or "permission denied" in err


def test_secondary_without_privileges_on_the_tables(idle, deployed_db, reader, pg_primary):
    user, password = reader
    # USAGE on the schema and SELECT on meta (so the schema can be read), nothing else: every table is named.
    for grant in ("GRANT USAGE ON SCHEMA appliance TO {}", "GRANT SELECT ON appliance.meta TO {}"):
        pg_primary.sql(sql.SQL(grant).format(sql.Identifier(user)), dbname=deployed_db.dbname)
    before = snapshot(idle)
    done = redirect(idle, port=deployed_db.port, user=user, dbname=deployed_db.dbname, password=password,
                    role="standby")
    err = assert_refused(idle, done, before, says=("lacks", "INSERT/UPDATE/DELETE on appliance.meta",
                                                   "SELECT/INSERT/UPDATE/DELETE on appliance.nodes"),
                         names=(f"127.0.0.1:{deployed_db.port}", user), password=password)
    for table in S.TABLES:
        assert f"appliance.{table}" in err


# --- case 16 (design 35): a secondary of cluster A pointed at cluster B ---------------------------------


@pytest.fixture(scope="module")
def rejoin(tmp_path_factory, pg_primary, deployed_db):
    """node2 joined cluster A (node1 primary), then tries to join cluster B (``deployed_db``) as a secondary."""
    base = tmp_path_factory.mktemp("rejoin")
    cluster_a = Remote(pg_primary)
    one, two = Node(base, "node1", pg_primary), Node(base, "node2", pg_primary)
    try:
        one.init()
        two.init()
        assert one.redirect(cluster_a, "primary").returncode == 0
        assert two.redirect(cluster_a, "standby").returncode == 0
        before = snapshot(two)
        done = redirect(two, port=deployed_db.port, user=deployed_db.user, dbname=deployed_db.dbname,
                        password=deployed_db.password, role="standby")
        yield two, cluster_a, done, before
    finally:
        for node in (one, two):
            ProcessServices(node.config).stop()
        pg_primary.drop_database(cluster_a.dbname)
        pg_primary.drop_role(cluster_a.user)


def test_secondary_of_one_cluster_cannot_join_another(rejoin, deployed_db):
    two, cluster_a, done, before = rejoin
    joined = before[0][1].cluster_id
    assert joined != deployed_db.cluster_id
    assert_refused(two, done, before, says=(f"belongs to cluster {joined}", deployed_db.cluster_id),
                   password=deployed_db.password, running=("beat",))
    assert cluster_a.rows("SELECT name, role FROM appliance.nodes ORDER BY name") == [
        ("node1", "primary"), ("node2", "standby")]


def test_cluster_mismatch_names_the_target(rejoin, deployed_db):
    _two, _cluster_a, done, _before = rejoin
    err = error_line(done)
    assert f"127.0.0.1:{deployed_db.port}" in err and deployed_db.user in err


# --- case 15 (design 19): primary and secondary at the same time ---------------------------------------


def _start_redirect(node: Node, remote, flag: str) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(node.dir)}
    line = (f"redirect --db_host 127.0.0.1 --db_port {remote.port} --db_user {remote.user} "
            f"--db_name {remote.dbname} --db_pass - {flag} --yes")
    proc = subprocess.Popen([str(BIN / "appliance-shell"), "--config", str(node.config_path), "-c", line],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None
    proc.stdin.write(remote.password + "\n")
    proc.stdin.close()
    proc.stdin = None  # communicate() must not touch it again
    return proc


def _assert_joined_or_untouched(one: Node, two: Node, remote, done: subprocess.CompletedProcess[str], before) -> None:
    """No half state: node2 is either the standby of node1's cluster, or exactly as it was."""
    if done.returncode == 0:
        assert remote.rows("SELECT name, role FROM appliance.nodes ORDER BY name") == [
            ("node1", "primary"), ("node2", "standby")]
        assert two.targets()[1].cluster_id == one.targets()[1].cluster_id
        assert two.targets()[1].role == "standby" and two.running() == ["beat"]
    else:
        assert_refused(two, done, before, says=("schema appliance is not deployed",), password=remote.password)
        assert "hint: redirect the primary node first" in done.stderr
        if remote.rows("SELECT to_regclass('appliance.nodes')") != [(None,)]:
            assert remote.rows("SELECT count(*) FROM appliance.nodes WHERE name = 'node2'") == [(0,)]


def test_primary_and_secondary_started_together(make_node, remote):
    """The natural race: which one looks first is up to the scheduler; both outcomes are clean."""
    one, two = make_node("node1"), make_node("node2")
    one.init()
    two.init()
    before = snapshot(two)
    procs = [_start_redirect(one, remote, "--is_primary_node"), _start_redirect(two, remote, "--is_secondary_node")]
    (out1, err1), (out2, err2) = (p.communicate(timeout=TIMEOUT) for p in procs)
    assert procs[0].returncode == 0, out1 + err1
    assert remote.password not in out1 + err1 + out2 + err2
    _assert_joined_or_untouched(one, two, remote, subprocess.CompletedProcess([], procs[1].returncode, out2, err2),
                                before)
    assert one.running() == ["beat", "demo"] and one.targets()[1].role == "primary"


def test_secondary_while_the_primary_is_still_deploying(make_node, remote, pg_primary):
    """Forced overlap: the primary is held at the deploy lock (services stopped, nothing deployed yet)."""
    one, two = make_node("node1"), make_node("node2")
    one.init()
    two.init()
    before = snapshot(two)
    with pg_primary.connect(dbname=remote.dbname) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (S.lock_key("appliance"),))
        primary = _start_redirect(one, remote, "--is_primary_node")
        assert primary.stdout is not None
        seen = ""
        deadline = time.monotonic() + 20
        while "waiting" not in seen.lower() and time.monotonic() < deadline:
            seen += primary.stdout.readline()
        assert "waiting" in seen.lower(), seen
        done = redirect(two, port=remote.port, user=remote.user, dbname=remote.dbname, password=remote.password,
                        role="standby")
        assert done.returncode == 1
        _assert_joined_or_untouched(one, two, remote, done, before)
    out, err = primary.communicate(timeout=TIMEOUT)  # lock released with the holder's session
    assert primary.returncode == 0, seen + out + err
    assert "Deploying database schema appliance" in seen + out
    # Once the primary is done, the same secondary redirect joins.
    done = redirect(two, port=remote.port, user=remote.user, dbname=remote.dbname, password=remote.password,
                    role="standby")
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_joined_or_untouched(one, two, remote, done, before)


# --- case 17: an awkward password, on stdin and on the command line ------------------------------------


def test_odd_password_end_to_end(make_node, pg_primary):
    db = Db(pg_primary, password=ODD_PASSWORD)
    try:
        one, two = make_node("node1"), make_node("node2")
        one.init()
        two.init()
        done = redirect(one, port=db.port, user=db.user, dbname=db.dbname, password=ODD_PASSWORD)
        assert done.returncode == 0, done.stdout + done.stderr
        done_cli = redirect(two, port=db.port, user=db.user, dbname=db.dbname, password=None, role="standby",
                            pass_arg=quote(ODD_PASSWORD))
        assert done_cli.returncode == 0, done_cli.stdout + done_cli.stderr
        for node in (one, two):
            assert node.targets()[1].target.password == ODD_PASSWORD  # byte for byte through encryption
            audit = (node.state / "audit.log").read_text()
            assert "--db_pass ********" in audit, audit
            for chunk in ("uo\"te", "ace=100%", "back ö€ß", "\\u00f6\\u20ac"):  # nor any recognisable part
                assert chunk not in audit, audit
            assert ODD_PASSWORD not in node.all_text()
        for run in (done, done_cli):
            assert ODD_PASSWORD not in run.stdout + run.stderr
        assert db.rows("SELECT name, role FROM appliance.nodes ORDER BY name") == [
            ("node1", "primary"), ("node2", "standby")]
    finally:
        db.drop()


# --- cases 9-11: standby, multi-host and failover (pg_pair) ----------------------------------------------


def test_standby_target_refused_then_host_list_finds_the_primary(make_node, pg_pair):
    primary, standby = pg_pair
    db = Db(primary)
    primary.wait_standbys()
    one = make_node("node1")
    one.init()
    before = snapshot(one)
    done = redirect(one, port=standby.port, user=db.user, dbname=db.dbname, password=db.password)
    assert_refused(one, done, before, says=("read-only standby",),
                   names=(f"127.0.0.1:{standby.port}", db.user), password=db.password)
    # Both hosts, standby first: libpq skips the read-only one.
    done = redirect(one, host="127.0.0.1,localhost", port=f"{standby.port},{primary.port}", user=db.user,
                    dbname=db.dbname, password=db.password)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on localhost:{primary.port})" in done.stdout  # pre-flight saw the read-write one
    active = one.targets()[1]
    assert active.target.hosts == ("127.0.0.1", "localhost")
    assert active.target.ports == (standby.port, primary.port)
    assert db.rows("SELECT name, role FROM appliance.nodes") == [("node1", "primary")]


def test_secondary_joins_after_the_database_failed_over(make_node, pg_pair):
    primary, standby = pg_pair
    db = Db(primary)
    hosts, ports = "127.0.0.1,localhost", f"{primary.port},{standby.port}"
    one, two, three = make_node("node1"), make_node("node2"), make_node("node3")
    for node in (one, two, three):
        node.init()
    done = redirect(one, host=hosts, port=ports, user=db.user, dbname=db.dbname, password=db.password)
    assert done.returncode == 0, done.stdout + done.stderr
    done = redirect(two, host=hosts, port=ports, user=db.user, dbname=db.dbname, password=db.password,
                    role="standby")
    assert done.returncode == 0, done.stdout + done.stderr
    cluster_id = one.targets()[1].cluster_id
    sysid = primary.sql("SELECT system_identifier::text FROM pg_control_system()")[0][0]
    primary.wait_standbys()
    primary.kill9()
    standby.promote()
    done = redirect(three, host=hosts, port=ports, user=db.user, dbname=db.dbname, password=db.password,
                    role="standby")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on localhost:{standby.port})" in done.stdout  # the promoted ex-standby
    active = three.targets()[1]
    assert active.cluster_id == cluster_id and active.role == "standby"
    assert active.target.hosts == ("127.0.0.1", "localhost") and active.target.ports == (primary.port, standby.port)
    assert standby.sql("SELECT system_identifier::text FROM pg_control_system()")[0][0] == sysid
    assert standby.sql("SELECT system_identifier FROM appliance.meta", dbname=db.dbname) == [(sysid,)]
    assert standby.sql("SELECT name, role FROM appliance.nodes ORDER BY name", dbname=db.dbname) == [
        ("node1", "primary"), ("node2", "standby"), ("node3", "standby")]
    assert three.running() == ["beat"]
