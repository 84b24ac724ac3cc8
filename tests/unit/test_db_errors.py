"""The pure parts of appliance.db.connect: classification, parsing, messages, targets, timeouts.

The message texts below were captured from psycopg 3.3.9 (libpq 18) against PostgreSQL 15.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import traceback

import psycopg
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from appliance.db.errors import DbError, DbErrorKind, classify_text, error_from_exception, parse_failures
from appliance.db.target import DbTarget, Timeouts
from appliance.errors import ApplianceError, Conflict, NotConfigured, PermissionDenied, Unavailable, UsageError

K = DbErrorKind
PREFIX = 'connection failed: connection to server at "127.0.0.1", port 5433 failed: '
REFUSED = "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?"

OBSERVED = [
    (PREFIX + 'FATAL:  password authentication failed for user "app"', K.AUTH_FAILED),
    (PREFIX + "fe_sendauth: no password supplied", K.AUTH_FAILED),
    (PREFIX + 'FATAL:  role "nologin" is not permitted to log in', K.NO_PRIVILEGE),
    (
        PREFIX + 'FATAL:  permission denied for database "appdb"\nDETAIL:  User does not have CONNECT privilege.',
        K.NO_PRIVILEGE,
    ),
    (PREFIX + 'FATAL:  database "nodb" does not exist', K.NO_DATABASE),
    (
        PREFIX + 'FATAL:  pg_hba.conf rejects connection for host "127.0.0.1", user "rejected", '
        'database "appdb", no encryption',
        K.HBA_REJECTED,
    ),
    (
        PREFIX + 'FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "u", database "d", no encryption',
        K.HBA_REJECTED,
    ),
    (PREFIX + REFUSED, K.REFUSED),
    ("failed to resolve host 'no-such-host.invalid': [Errno -2] Name or service not known", K.HOST_NOT_FOUND),
    ("connection timeout expired", K.TIMEOUT),
    (PREFIX + "server does not support SSL, but SSL was required", K.TLS),
    (PREFIX + "session is read-only", K.READ_ONLY),
    (PREFIX + "FATAL:  the database system is starting up", K.UNAVAILABLE),
    (PREFIX + "FATAL:  sorry, too many clients already", K.UNAVAILABLE),
    (PREFIX + "server closed the connection unexpectedly", K.UNAVAILABLE),
    (
        'connection is bad: connection to server on socket "/tmp/x/.s.PGSQL.5433" failed: No such file or '
        "directory\n\tIs the server running locally and accepting connections on that socket?",
        K.REFUSED,
    ),
    # require_auth=scram-sha-256 and channel_binding=require refusing a server (libpq 18).
    (PREFIX + 'authentication method requirement "scram-sha-256" failed: server requested a cleartext password',
     K.INSECURE_AUTH),
    (PREFIX + 'authentication method requirement "scram-sha-256" failed: server requested a hashed password',
     K.INSECURE_AUTH),
    (PREFIX + 'authentication method requirement "scram-sha-256" failed: server did not complete authentication',
     K.INSECURE_AUTH),
    (PREFIX + "channel binding required, but SSL not in use", K.INSECURE_AUTH),
    (PREFIX + "channel binding is required, but server did not offer an authentication method that supports "
     "channel binding", K.INSECURE_AUTH),
    ('connection is bad: invalid port number: "0"', K.OTHER),
    ("something nobody has seen before", K.OTHER),
]


@pytest.mark.parametrize(("text", "kind"), OBSERVED)
def test_classify_observed_texts(text: str, kind: DbErrorKind) -> None:
    assert classify_text(text) is kind


@pytest.mark.parametrize(
    ("sqlstate", "text", "kind"),
    [
        ("42501", "permission denied for schema public", K.NO_PRIVILEGE),
        ("25006", "cannot execute CREATE TABLE in a read-only transaction", K.READ_ONLY),
        ("28P01", "password authentication failed for user x", K.AUTH_FAILED),
        ("28000", 'pg_hba.conf rejects connection for host "h"', K.HBA_REJECTED),
        ("28000", 'role "x" is not permitted to log in', K.NO_PRIVILEGE),
        ("28000", 'role "x" does not exist', K.AUTH_FAILED),
        ("3D000", 'database "x" does not exist', K.NO_DATABASE),
        ("57014", "canceling statement due to statement timeout", K.TIMEOUT),
        ("55P03", "canceling statement due to lock timeout", K.TIMEOUT),
        ("53300", "sorry, too many clients already", K.UNAVAILABLE),
        ("57P01", "terminating connection due to administrator command", K.UNAVAILABLE),
        ("08006", "whatever", K.UNAVAILABLE),
        ("42P01", 'relation "t" does not exist', K.OTHER),
    ],
)
def test_classify_by_sqlstate(sqlstate: str, text: str, kind: DbErrorKind) -> None:
    assert classify_text(text, sqlstate) is kind


MULTI = (
    PREFIX.replace("5433", "5999") + REFUSED + "\nMultiple connection attempts failed. All failures were:\n"
    "- host: '127.0.0.1', port: '5433', hostaddr: '127.0.0.1': connection failed: connection to server at "
    '"127.0.0.1", port 5433 failed: session is read-only\n'
    "- host: '127.0.0.1', port: '5999', hostaddr: '127.0.0.1': " + PREFIX.replace("5433", "5999") + REFUSED + "\n"
    "- host: 'localhost', port: '5999', hostaddr: '::1': connection timeout expired"
)


def test_parse_multi_host_message() -> None:
    failures = parse_failures(MULTI)
    assert [(f.host, f.port, f.hostaddr) for f in failures] == [
        ("127.0.0.1", 5433, "127.0.0.1"),
        ("127.0.0.1", 5999, "127.0.0.1"),
        ("localhost", 5999, "::1"),
    ]
    assert [classify_text(f.text) for f in failures] == [K.READ_ONLY, K.REFUSED, K.TIMEOUT]


def test_parse_single_messages() -> None:
    (f,) = parse_failures(PREFIX + "session is read-only")
    assert (f.host, f.port, f.text) == ("127.0.0.1", 5433, "session is read-only")
    (f,) = parse_failures("failed to resolve host 'db.invalid': [Errno -2] Name or service not known")
    assert (f.host, f.port) == ("db.invalid", None)
    (f,) = parse_failures("connection timeout expired")
    assert (f.host, f.port) == (None, None)


def target(**changes: object) -> DbTarget:
    values: dict[str, object] = {
        "hosts": ("db1.invalid",),
        "ports": (5432,),
        "user": "ems",
        "password": "Sekr3t-pw",
        "dbname": "emsdb",
    }
    values.update(changes)
    return DbTarget(**values)  # type: ignore[arg-type]


def test_error_message_single_host() -> None:
    exc = psycopg.OperationalError(
        'connection failed: connection to server at "db1.invalid" (10.1.1.1), port 5432 failed: '
        'FATAL:  password authentication failed for user "ems"'
    )
    err = error_from_exception(exc, target())
    assert err.kind is K.AUTH_FAILED
    assert err.message == (
        "Cannot connect to PostgreSQL as ems@db1.invalid:5432/emsdb (10.1.1.1): password authentication failed "
        'for user "ems" (wrong user name or password).'
    )
    assert err.hint == "Check the user name and password (the server does not say which one is wrong)."
    assert [(f.host, f.port, f.hostaddr) for f in err.failures] == [("db1.invalid", 5432, "10.1.1.1")]


def test_timeout_without_location_is_attributed_to_the_only_host() -> None:
    err = error_from_exception(
        psycopg.errors.ConnectionTimeout("connection timeout expired"), target(), timeouts=Timeouts(connect_timeout=3)
    )
    assert err.kind is K.TIMEOUT
    assert err.message == (
        "Cannot connect to PostgreSQL as ems@db1.invalid:5432/emsdb: no answer within 3 s "
        "(host down, or a firewall drops the traffic)."
    )


def test_unresolvable_hosts_skipped_by_psycopg_are_reported() -> None:
    t = target(hosts=("127.0.0.1", "gone.invalid", "127.0.0.1", "localhost"), ports=(5433, 5432, 5999, 5999))
    err = error_from_exception(psycopg.OperationalError(MULTI), t)
    assert [(f.host, f.port, f.kind) for f in err.failures] == [
        ("127.0.0.1", 5433, K.READ_ONLY),
        ("gone.invalid", 5432, K.HOST_NOT_FOUND),
        ("127.0.0.1", 5999, K.REFUSED),
        ("localhost", 5999, K.TIMEOUT),
    ]
    assert err.kind is K.TIMEOUT  # a host that may come back beats "the others are standbys"
    assert "gone.invalid:5432: cannot resolve host name gone.invalid" in err.message
    assert "localhost:5999 (::1): no answer in time" in err.message


def test_no_host_resolves() -> None:
    t = target(hosts=("a.invalid", "b.invalid"))
    err = error_from_exception(
        psycopg.OperationalError("failed to resolve host 'b.invalid': [Errno -2] Name or service not known"), t
    )
    assert err.kind is K.HOST_NOT_FOUND
    assert [f.host for f in err.failures] == ["a.invalid", "b.invalid"]


def test_overall_kind_prefers_what_the_operator_must_fix() -> None:
    msg = (
        "x\nMultiple connection attempts failed. All failures were:\n"
        "- host: 'h1', port: '1', hostaddr: '10.0.0.1': connection timeout expired\n"
        "- host: 'h2', port: '2', hostaddr: '10.0.0.2': connection failed: connection to server at \"h2\" "
        '(10.0.0.2), port 2 failed: FATAL:  password authentication failed for user "ems"'
    )
    err = error_from_exception(psycopg.OperationalError(msg), target(hosts=("h1", "h2"), ports=(1, 2)))
    assert err.kind is K.AUTH_FAILED
    assert isinstance(err, PermissionDenied)


def test_session_error_by_sqlstate() -> None:
    exc = psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
    err = error_from_exception(exc, target(), action="Cannot register the node")
    assert err.kind is K.READ_ONLY
    assert err.message == (
        "Cannot register the node as ems@db1.invalid:5432/emsdb: cannot execute INSERT in a read-only transaction."
    )


def test_message_is_one_line_even_with_odd_names() -> None:
    exc = psycopg.OperationalError(PREFIX + 'FATAL:  database "a\nb" does not exist')
    err = error_from_exception(exc, target(user="odd\nuser", dbname="a\nb"))
    assert err.kind is K.NO_DATABASE
    assert "\n" not in err.message


@pytest.mark.parametrize(
    ("kind", "base"),
    [
        (K.HOST_NOT_FOUND, Unavailable),
        (K.REFUSED, Unavailable),
        (K.TIMEOUT, Unavailable),
        (K.UNAVAILABLE, Unavailable),
        (K.AUTH_FAILED, PermissionDenied),
        (K.HBA_REJECTED, PermissionDenied),
        (K.NO_PRIVILEGE, PermissionDenied),
        (K.TLS, NotConfigured),
        (K.NO_DATABASE, NotConfigured),
        (K.TOO_OLD, NotConfigured),
        (K.READ_ONLY, Conflict),
        (K.OTHER, ApplianceError),
    ],
)
def test_error_classes(kind: DbErrorKind, base: type[ApplianceError]) -> None:
    err = DbError.make(kind, "m.", "h.")
    assert isinstance(err, DbError) and isinstance(err, base)
    assert (err.kind, str(err), err.hint) == (kind, "m.", "h.")
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.kind, again.message, again.hint) == (type(err), kind, "m.", "h.")


# -- the password never shows -------------------------------------------------------------------------


def test_target_hides_the_password() -> None:
    t = target(password="Sekr3t-pw")
    assert "Sekr3t-pw" not in repr(t) and "Sekr3t-pw" not in str(t) and "Sekr3t-pw" not in t.describe()
    assert t.describe() == "ems@db1.invalid:5432/emsdb"


def _rendered(err: DbError) -> list[str]:
    return [str(err), repr(err), err.hint or "", repr(err.failures), "".join(traceback.format_exception(err))]


@settings(deadline=None)
@given(
    password=st.text(min_size=4, max_size=24).filter(lambda p: "\x00" not in p and p.strip() == p),
    template=st.sampled_from([text for text, _ in OBSERVED] + [MULTI]),
)
def test_password_never_in_error_even_if_echoed(password: str, template: str) -> None:
    # Even if a server message echoed the password (none does), it must not come out. The server text
    # is made to carry it where the user name and the host appear.
    baseline = error_from_exception(psycopg.OperationalError(template), target(user="u"))
    assume(not any(password in text for text in _rendered(baseline)))  # a coincidence, not a leak
    exc = psycopg.OperationalError(template.replace("app", password).replace("127.0.0.1", password))
    err = error_from_exception(exc, target(password=password, user="u" + password))
    for text in _rendered(err):
        assert password not in text


# -- targets and timeouts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"hosts": ()},
        {"hosts": ("a,b",)},
        {"hosts": ("",)},
        {"hosts": ("db 1",)},
        {"hosts": (" db1",)},
        {"hosts": ("db1\n",)},
        {"ports": (0,)},
        {"ports": (70000,)},
        {"hosts": ("a", "b", "c"), "ports": (1, 2)},
        {"password": ""},
        {"password": "a\x00b"},
        {"user": ""},
        {"dbname": ""},
        {"sslmode": "sometimes"},
    ],
)
def test_bad_targets_are_usage_errors(changes: dict[str, object]) -> None:
    with pytest.raises(UsageError) as info:
        target(**changes)
    assert "Sekr3t-pw" not in str(info.value)


def test_target_normalises_and_expands_ports() -> None:
    t = target(hosts=["a", "b"], ports=5433)
    assert t.hosts == ("a", "b") and t.ports == (5433,)
    assert t.host_ports() == [("a", 5433), ("b", 5433)]
    assert target(hosts=("::1", "b"), ports=(1, 2)).describe() == "ems@[::1]:1,b:2/emsdb"
    assert t.for_host("b", 7).host_ports() == [("b", 7)]


def test_timeouts() -> None:
    t = Timeouts(connect_timeout=0.5, statement_timeout=2.25, lock_timeout=0, idle_in_transaction_session_timeout=60)
    assert t.effective_connect_timeout == 2  # psycopg's minimum
    assert Timeouts(connect_timeout=3.2).effective_connect_timeout == 4
    assert t.options() == "-c statement_timeout=2250 -c lock_timeout=0 -c idle_in_transaction_session_timeout=60000"
    with pytest.raises(UsageError):
        Timeouts(connect_timeout=0)
    with pytest.raises(UsageError):
        Timeouts(statement_timeout=-1)


def test_import_does_not_load_psycopg() -> None:
    code = "import sys, appliance.db, appliance.db.connect; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("asked", "says"), [
    ("server requested a cleartext password", "asked for the password in clear text; refused, nothing was sent"),
    ("server requested a hashed password", "asked for an MD5-hashed password; refused, nothing was sent"),
    ("server did not complete authentication", "without checking the password (trust): refused"),
])
def test_a_server_asking_for_a_usable_password_is_named_as_such(asked: str, says: str) -> None:
    target = DbTarget(("127.0.0.1",), (5433,), "app", "pw-secret", "appdb")
    exc = error_from_exception(
        psycopg.OperationalError(PREFIX + f'authentication method requirement "scram-sha-256" failed: {asked}'),
        target)
    assert exc.kind is K.INSECURE_AUTH and isinstance(exc, NotConfigured)
    assert says in exc.message and "scram-sha-256" in (exc.hint or "")


@pytest.mark.parametrize(("sslmode", "attempts"), [
    ("disable", [("disable", "disable")]),
    ("allow", [("disable", "disable"), ("require", "require")]),
    ("prefer", [("require", "require"), ("disable", "disable")]),
    ("require", [("require", "require")]),
    ("verify-ca", [("verify-ca", "require")]),
    ("verify-full", [("verify-full", "require")]),
])
def test_channel_binding_is_required_whenever_an_attempt_may_use_tls(sslmode: str, attempts: list) -> None:
    from appliance.db.connect import tls_attempts

    root = "/etc/ca.pem" if sslmode.startswith("verify") else None
    target = DbTarget(("db1", "db2"), (5432,), "app", "pw", "appdb", sslmode, root)
    got = tls_attempts(target)
    assert [(a["sslmode"], a["channel_binding"]) for a in got] == attempts
    assert all(a.get("sslrootcert") == root for a in got if a["sslmode"] != "disable")
    assert all(a["sslcertmode"] == "disable" for a in got if a["sslmode"] != "disable")  # never a client cert
    socket_target = DbTarget(("/var/run/postgresql",), (5432,), "app", "pw", "appdb", sslmode, root)
    assert tls_attempts(socket_target) == [{"sslmode": "disable", "channel_binding": "disable"}]
