"""The only way the product opens a PostgreSQL connection.

:func:`connect` opens a psycopg 3 connection from a :class:`~appliance.db.target.DbTarget` with
explicit :class:`~appliance.db.target.Timeouts`, passing every libpq parameter as a keyword (a
password with quotes, spaces, ``=`` or backslashes needs no escaping, and no conninfo string is ever
built from pieces). Several hosts are given to libpq as comma lists; psycopg tries them in order, each
with the full ``connect_timeout``, and with ``read_write=True`` skips standbys
(``target_session_attrs=read-write``). :func:`probe` reports the state of one server.

No password ever crosses the network in a form an attacker can use: every connection sends
``require_auth=scram-sha-256`` (libpq refuses a server that asks for a cleartext or MD5 password, or
skips authentication: a fake server gets nothing), and ``channel_binding=require`` whenever TLS is in
use (a relay that terminates TLS cannot reuse the SCRAM exchange). libpq 16 or later is needed for
``require_auth``; :func:`check_libpq` refuses an older one (the binary wheel bundles a recent one).
``sslmode=prefer`` and ``allow`` are carried out as two attempts, TLS with channel binding and plain,
because libpq's own fallback would make channel binding optional on the TLS attempt too. Unix-socket
hosts never use TLS (nothing crosses a network), so channel binding does not apply to them.

Every failure is raised as one :class:`~appliance.db.errors.DbError`, built by
:func:`~appliance.db.errors.error_from_exception`. The password is kept out of every message, repr
and traceback: the keyword dict holding it is dropped as soon as the connection is made, and errors
are raised outside the ``except`` block so no psycopg exception (or frame holding the parameters)
hangs off ``__context__``.

psycopg is imported lazily: importing this module does not load it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, LiteralString

from appliance.db.errors import DbError, DbErrorKind, error_for, error_from_exception, server_too_old, version_text
from appliance.db.target import MIN_SERVER_VERSION, DbTarget, Timeouts, format_hostport

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIN_LIBPQ_VERSION", "ServerInfo", "check_libpq", "connect", "probe", "tls_attempts"]

MIN_LIBPQ_VERSION = 160000  # require_auth appeared in libpq 16

_checked_libpq = False


def check_libpq() -> None:
    """Refuse a libpq that cannot insist on SCRAM (``require_auth`` is libpq 16+); checked once.

    :raises DbError: kind TOO_OLD, naming the library's version and what to do.
    """
    global _checked_libpq
    if _checked_libpq:
        return
    from psycopg import pq

    version = pq.version()
    if version < MIN_LIBPQ_VERSION:
        raise libpq_too_old(version, pq.__impl__, MIN_LIBPQ_VERSION)
    _checked_libpq = True


def libpq_too_old(version_num: int, implementation: str, min_version_num: int) -> DbError:
    """The error for a client library that cannot insist on SCRAM (``require_auth`` needs libpq 16)."""
    return DbError.make(
        DbErrorKind.TOO_OLD,
        f"the PostgreSQL client library is libpq {version_text(version_num)} (psycopg implementation "
        f"{implementation!r}); at least {version_text(min_version_num)} is needed to refuse servers that ask "
        "for a cleartext or MD5 password, so no connection was attempted.",
        "Install psycopg[binary] (it bundles a recent libpq) and do not set PSYCOPG_IMPL.",
    )


def tls_attempts(target: DbTarget) -> list[dict[str, str]]:
    """The TLS settings of each connection attempt, in order: one attempt, or two for prefer/allow.

    Whenever an attempt may use TLS, it requires channel binding; an attempt without TLS is made only
    where the mode allows plaintext (``prefer``: after the server said it has no TLS; ``allow``: first).
    """
    root = {"sslrootcert": target.sslrootcert} if target.sslrootcert else {}
    if all(host.startswith("/") for host in target.hosts):
        return [{"sslmode": "disable", "channel_binding": "disable"}]  # a Unix socket: no network, no TLS
    plain = {"sslmode": "disable", "channel_binding": "disable"}
    # sslcertmode=disable: the appliance authenticates with SCRAM and never sends a client certificate;
    # without it libpq opens ~/.postgresql/postgresql.crt, and under the agent's ProtectHome=yes that
    # fails with "Permission denied" instead of "not found", which refuses the connection.
    secure = {"sslmode": "require" if target.sslmode in ("allow", "prefer") else target.sslmode,
              "channel_binding": "require", "sslcertmode": "disable", **root}
    if target.sslmode == "disable":
        return [plain]
    if target.sslmode == "prefer":
        return [secure, plain]
    if target.sslmode == "allow":
        return [plain, secure]
    return [secure]


def _conn_kwargs(target: DbTarget, *, application_name: str, timeouts: Timeouts, read_write: bool,
                 tls: dict[str, str]) -> dict[str, Any]:
    return {
        "host": ",".join(target.hosts),
        "port": ",".join(str(p) for p in target.ports),
        "user": target.user,
        "password": target.password,
        "dbname": target.dbname,
        **tls,
        # The password goes only into a SCRAM exchange: never in clear text, never as an MD5 hash, and a
        # server that asks for neither (trust, a fake server's AuthenticationOk) is refused.
        "require_auth": "scram-sha-256",
        "application_name": application_name,
        "target_session_attrs": "read-write" if read_write else "any",
        "connect_timeout": timeouts.effective_connect_timeout,
        "options": timeouts.options(),
        "keepalives": 1,
        "keepalives_idle": timeouts.keepalives_idle,
        "keepalives_interval": timeouts.keepalives_interval,
        "keepalives_count": timeouts.keepalives_count,
        "tcp_user_timeout": round(timeouts.tcp_user_timeout * 1000),
        "client_encoding": "UTF8",
        # No Kerberos on the appliance: do not let libpq probe for GSS encryption first.
        "gssencmode": "disable",
    }


def connect(
    target: DbTarget,
    *,
    application_name: str,
    timeouts: Timeouts | None = None,
    read_write: bool = True,
    autocommit: bool = False,
    min_server_version: int | None = MIN_SERVER_VERSION,
) -> psycopg.Connection[tuple[Any, ...]]:
    """Open a connection to the first suitable host of ``target``.

    :param application_name: shown in ``pg_stat_activity`` (say who we are: ``appliance-shell``...).
    :param read_write: require a read-write server (``target_session_attrs=read-write``), skipping
        standbys; otherwise any server will do.
    :param min_server_version: refuse older servers (``server_version_num``, e.g. 130000); None: any.
    :raises DbError: for every failure, with a message naming host, port, user and database.
    """
    import psycopg

    check_libpq()
    timeouts = timeouts or Timeouts()
    attempts = tls_attempts(target)
    conn: psycopg.Connection[tuple[Any, ...]] | None = None
    error: DbError | None = None
    tried: DbTarget | None = target
    for index, tls in enumerate(attempts):
        assert tried is not None
        kwargs = _conn_kwargs(tried, application_name=application_name, timeouts=timeouts, read_write=read_write,
                              tls=tls)
        first, error = error, None
        try:
            conn = psycopg.Connection.connect(autocommit=autocommit, **kwargs)
        except psycopg.Error as exc:
            error = error_from_exception(exc, tried, timeouts=timeouts)
        finally:
            del kwargs  # holds the password: keep it out of this frame's locals from here on
        if error is not None and first is not None:
            error = _both(target, first, error)
        if error is None or index + 1 == len(attempts):
            break
        tried = _second_attempt(tried, error, tls)
        if tried is None:
            break
    if error is not None:
        raise error  # outside the except block: no __context__ pointing at psycopg's exception
    assert conn is not None
    if min_server_version is not None and conn.info.server_version < min_server_version:
        version = conn.info.server_version
        where = f"{target.user}@{format_hostport(conn.info.host, conn.info.port)}/{target.dbname}"
        conn.close()
        raise server_too_old(where, version, min_server_version)
    return conn


def _both(target: DbTarget, first: DbError, second: DbError) -> DbError:
    """One error for two attempts: each host as its last attempt failed, in the target's order."""
    again = {(f.host, f.port) for f in second.failures}
    order = {hp: i for i, hp in enumerate(target.host_ports())}
    failures = [f for f in first.failures if (f.host, f.port) not in again] + list(second.failures)
    failures.sort(key=lambda f: order.get((f.host or "", f.port or 0), len(order)))
    return error_for(target, failures)


def _second_attempt(target: DbTarget, error: DbError, tls: dict[str, str]) -> DbTarget | None:
    """The hosts worth a second attempt in the other mode, or None: prefer's plain attempt goes only to the
    hosts that said they have no TLS, allow's TLS attempt only to those whose pg_hba.conf refused plain
    text. A host that timed out or refused the password is not tried (and waited for) twice."""
    if tls["sslmode"] == "disable":
        again = [f for f in error.failures if f.kind is DbErrorKind.HBA_REJECTED]
    else:
        again = [f for f in error.failures if f.kind is DbErrorKind.TLS and "does not offer TLS" in f.reason]
    if not again:
        return None
    pairs = [(f.host, f.port) for f in again]
    if any(host is None or port is None for host, port in pairs):
        return target  # not told which host it was: all of them again
    return replace(target, hosts=tuple(str(h) for h, _p in pairs), ports=tuple(int(p or 0) for _h, p in pairs))


@dataclass(frozen=True)
class ServerInfo:
    """What :func:`probe` found on one server."""

    host: str
    port: int
    version_num: int  # server_version_num, e.g. 150018
    version: str  # e.g. "15.18 (Debian 15.18-0+deb12u1)"
    is_in_recovery: bool  # True on a standby
    timeline: int | None  # primary: current WAL timeline; standby: last restartpoint's; None if unknown
    system_identifier: int | None  # same on a primary and its standbys (pg_control_system())
    connect_ms: float  # TCP + TLS + authentication
    latency_ms: float  # median round trip of a trivial query


def probe(
    target: DbTarget,
    host: str,
    port: int,
    *,
    application_name: str,
    timeouts: Timeouts | None = None,
    samples: int = 3,
    min_server_version: int | None = MIN_SERVER_VERSION,
) -> ServerInfo:
    """Connect to one node (primary or standby) of ``target`` and report its state.

    :raises DbError: as :func:`connect`; also for a failure in the checking queries.
    """
    import statistics  # deferred: it loads fractions, decimal and random, and the shell's start-up imports this module

    import psycopg

    single = target.for_host(host, port)
    t0 = time.perf_counter()
    conn = connect(
        single,
        application_name=application_name,
        timeouts=timeouts,
        read_write=False,
        autocommit=True,
        min_server_version=min_server_version,
    )
    connect_ms = (time.perf_counter() - t0) * 1000
    error: DbError | None = None
    info: ServerInfo | None = None
    with conn:
        try:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('server_version'),"
                " current_setting('server_version_num')::int"
            ).fetchone()
            assert row is not None
            in_recovery, version, version_num = bool(row[0]), str(row[1]), int(row[2])
            rtts = []
            for _ in range(max(1, samples)):
                t1 = time.perf_counter()
                conn.execute("SELECT 1").fetchone()
                rtts.append((time.perf_counter() - t1) * 1000)
            info = ServerInfo(
                host=host,
                port=port,
                version_num=version_num,
                version=version,
                is_in_recovery=in_recovery,
                timeline=_timeline(conn, in_recovery),
                system_identifier=_optional_int(conn, "SELECT system_identifier FROM pg_control_system()"),
                connect_ms=round(connect_ms, 3),
                latency_ms=round(statistics.median(rtts), 3),
            )
        except psycopg.Error as exc:
            error = error_from_exception(exc, single, timeouts=timeouts, action="Cannot check PostgreSQL")
    if error is not None:
        raise error
    assert info is not None
    return info


def _optional_int(conn: psycopg.Connection[tuple[Any, ...]], query: LiteralString) -> int | None:
    import psycopg

    try:
        row = conn.execute(query).fetchone()
    except psycopg.Error:
        return None  # not allowed for this role, or not available: it was only "if cheap"
    return int(row[0]) if row and row[0] is not None else None


def _timeline(conn: psycopg.Connection[tuple[Any, ...]], in_recovery: bool) -> int | None:
    import psycopg

    if in_recovery:
        # The timeline of the last restartpoint: right in steady state, may lag just after a switch.
        return _optional_int(conn, "SELECT timeline_id FROM pg_control_checkpoint()")
    try:
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    except psycopg.Error:
        return None
    # A WAL file name starts with the timeline in 8 hex digits; unlike pg_control_checkpoint() it is
    # current right after a promotion.
    return int(str(row[0])[:8], 16) if row and row[0] else None
