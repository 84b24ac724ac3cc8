"""How a PostgreSQL failure is reported: one :class:`DbError` built from what psycopg and libpq said.

Every psycopg/libpq failure becomes one :class:`DbError`: a one-line message built here that names
host, port, user and database (never the password), a hint, and a :class:`DbErrorKind` to test on.
At connect time libpq gives no SQLSTATE, so the kind comes from the (English) message text; inside a
session the SQLSTATE decides. The tables that map SQLSTATEs and message fragments to kinds, and the
hints, are data kept next to the code that reads them. ``DbError`` subclasses also derive from the
product's error bases (:class:`~appliance.errors.Unavailable`, :class:`~appliance.errors.PermissionDenied`,
...), so callers may catch either.

Everything here is pure except :func:`error_from_exception`, which may resolve a host name to tell
which host an address-only libpq message is about. The password is scrubbed from every message, and
psycopg is never imported: the exception is read through ``str()`` and its ``sqlstate`` attribute.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from appliance.db.target import DbTarget, Timeouts, format_hostport
from appliance.errors import (
    ApplianceError,
    Conflict,
    NotConfigured,
    PermissionDenied,
    Unavailable,
)

__all__ = [
    "DbConflict",
    "DbError",
    "DbErrorKind",
    "DbNotConfigured",
    "DbOtherError",
    "DbPermissionDenied",
    "DbUnavailable",
    "HostFailure",
    "RawFailure",
    "classify_text",
    "error_for",
    "error_from_exception",
    "parse_failures",
    "server_too_old",
    "version_text",
]


class DbErrorKind(enum.Enum):
    """Why a database operation failed; stable, for tests and callers' decisions."""

    HOST_NOT_FOUND = "host_not_found"  # the host name does not resolve
    REFUSED = "refused"  # nothing listens on host:port
    TIMEOUT = "timeout"  # no answer in time (connect, statement or lock timeout)
    AUTH_FAILED = "auth_failed"  # wrong user name or password
    HBA_REJECTED = "hba_rejected"  # pg_hba.conf refuses this client/user/database
    TLS = "tls"  # TLS required but unavailable, or a TLS/certificate error
    INSECURE_AUTH = "insecure_auth"  # the server asked for a cleartext/MD5 password, or for nothing, or no
    # channel binding: refused before any password left this node
    NO_DATABASE = "no_database"  # the database does not exist
    NO_PRIVILEGE = "no_privilege"  # the role may not log in / connect / do that
    READ_ONLY = "read_only"  # a read-only standby, and no read-write host among the list
    TOO_OLD = "too_old"  # the server version is below the minimum
    UNAVAILABLE = "unavailable"  # server reachable but not taking sessions now (starting, full, closed)
    OTHER = "other"


# Which kind wins when several hosts failed differently: what the operator must fix first, then what
# may come back by itself, then "it is only a standby".
_PRIORITY = (
    DbErrorKind.INSECURE_AUTH,
    DbErrorKind.AUTH_FAILED,
    DbErrorKind.HBA_REJECTED,
    DbErrorKind.TLS,
    DbErrorKind.NO_DATABASE,
    DbErrorKind.NO_PRIVILEGE,
    DbErrorKind.TOO_OLD,
    DbErrorKind.TIMEOUT,
    DbErrorKind.REFUSED,
    DbErrorKind.UNAVAILABLE,
    DbErrorKind.HOST_NOT_FOUND,
    DbErrorKind.OTHER,
    DbErrorKind.READ_ONLY,
)


@dataclass(frozen=True)
class HostFailure:
    """Why one host (or one address of it) failed. ``reason`` is built here and safe to show."""

    host: str | None
    port: int | None
    kind: DbErrorKind
    reason: str
    hostaddr: str | None = None

    def where(self) -> str:
        if self.host is None:
            return "?"
        text = format_hostport(self.host, self.port)
        if self.hostaddr and self.hostaddr != self.host:
            text += f" ({self.hostaddr})"
        return text


class DbError(ApplianceError):
    """A database failure; ``kind`` says why, ``failures`` has one entry per host tried.

    Instances are of a subclass that also derives from the matching product error base; build them
    with :meth:`make`.
    """

    kind: DbErrorKind
    failures: tuple[HostFailure, ...]

    def __init__(
        self,
        kind: DbErrorKind,
        message: str,
        hint: str | None = None,
        *,
        failures: Iterable[HostFailure] = (),
    ) -> None:
        super().__init__(message, hint)
        self.kind = kind
        self.failures = tuple(failures)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_db_error, (type(self), self.kind, self.message, self.hint, self.failures))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind.name}, message={self.message!r})"

    @staticmethod
    def make(
        kind: DbErrorKind, message: str, hint: str | None = None, *, failures: Iterable[HostFailure] = ()
    ) -> DbError:
        """A DbError of the subclass matching ``kind``."""
        return _CLASS_FOR_KIND[kind](kind, message, hint, failures=failures)


def _rebuild_db_error(
    cls: type[DbError], kind: DbErrorKind, message: str, hint: str | None, failures: tuple[HostFailure, ...]
) -> DbError:
    return cls(kind, message, hint, failures=failures)


class DbUnavailable(DbError, Unavailable):
    """The server cannot be reached or does not take sessions now; retrying may help."""


class DbPermissionDenied(DbError, PermissionDenied):
    """Authentication, pg_hba.conf or a privilege refuses us."""


class DbNotConfigured(DbError, NotConfigured):
    """Something the target needs is missing (the database, TLS on the server, a recent version)."""


class DbConflict(DbError, Conflict):
    """The server's state conflicts with the request (a read-only standby where a primary is needed)."""


class DbOtherError(DbError):
    """A database failure not classified more precisely."""


_CLASS_FOR_KIND: dict[DbErrorKind, type[DbError]] = {
    DbErrorKind.HOST_NOT_FOUND: DbUnavailable,
    DbErrorKind.REFUSED: DbUnavailable,
    DbErrorKind.TIMEOUT: DbUnavailable,
    DbErrorKind.UNAVAILABLE: DbUnavailable,
    DbErrorKind.AUTH_FAILED: DbPermissionDenied,
    DbErrorKind.HBA_REJECTED: DbPermissionDenied,
    DbErrorKind.NO_PRIVILEGE: DbPermissionDenied,
    DbErrorKind.TLS: DbNotConfigured,
    DbErrorKind.INSECURE_AUTH: DbNotConfigured,
    DbErrorKind.NO_DATABASE: DbNotConfigured,
    DbErrorKind.TOO_OLD: DbNotConfigured,
    DbErrorKind.READ_ONLY: DbConflict,
    DbErrorKind.OTHER: DbOtherError,
}

# SQLSTATEs (inside a session; libpq reports none at connect time). Class 08 is handled separately.
_SQLSTATE_KINDS: dict[str, DbErrorKind] = {
    "28P01": DbErrorKind.AUTH_FAILED,  # invalid_password
    "3D000": DbErrorKind.NO_DATABASE,  # invalid_catalog_name
    "42501": DbErrorKind.NO_PRIVILEGE,  # insufficient_privilege
    "25006": DbErrorKind.READ_ONLY,  # read_only_sql_transaction
    "57014": DbErrorKind.TIMEOUT,  # query_canceled (statement_timeout)
    "55P03": DbErrorKind.TIMEOUT,  # lock_not_available (lock_timeout)
    "25P03": DbErrorKind.TIMEOUT,  # idle_in_transaction_session_timeout
    "53300": DbErrorKind.UNAVAILABLE,  # too_many_connections
    "57P01": DbErrorKind.UNAVAILABLE,  # admin_shutdown
    "57P02": DbErrorKind.UNAVAILABLE,  # crash_shutdown
    "57P03": DbErrorKind.UNAVAILABLE,  # cannot_connect_now
}

# Message fragments (lower case, first match wins), from libpq, psycopg and the server (lc_messages=C).
_TEXT_KINDS: tuple[tuple[str, DbErrorKind], ...] = (
    # libpq refusing what require_auth=scram-sha-256 / channel_binding=require forbid (libpq 16+).
    ("authentication method requirement", DbErrorKind.INSECURE_AUTH),
    ("channel binding is required", DbErrorKind.INSECURE_AUTH),
    ("channel binding required", DbErrorKind.INSECURE_AUTH),
    ("failed to resolve host", DbErrorKind.HOST_NOT_FOUND),  # psycopg's own resolver
    ("could not translate host name", DbErrorKind.HOST_NOT_FOUND),  # libpq
    ("name or service not known", DbErrorKind.HOST_NOT_FOUND),
    ("temporary failure in name resolution", DbErrorKind.HOST_NOT_FOUND),
    ("no address associated with hostname", DbErrorKind.HOST_NOT_FOUND),
    ("server does not support ssl", DbErrorKind.TLS),
    ("ssl error", DbErrorKind.TLS),
    ("certificate", DbErrorKind.TLS),
    ("ssl negotiation", DbErrorKind.TLS),
    ("ssl is not supported", DbErrorKind.TLS),
    ("sslmode value", DbErrorKind.TLS),
    ("password authentication failed", DbErrorKind.AUTH_FAILED),
    ("no password supplied", DbErrorKind.AUTH_FAILED),
    ("authentication failed", DbErrorKind.AUTH_FAILED),
    ("pg_hba.conf rejects", DbErrorKind.HBA_REJECTED),
    ("no pg_hba.conf entry", DbErrorKind.HBA_REJECTED),
    ("is not permitted to log in", DbErrorKind.NO_PRIVILEGE),
    ("permission denied", DbErrorKind.NO_PRIVILEGE),
    ("must be superuser", DbErrorKind.NO_PRIVILEGE),
    ("session is read-only", DbErrorKind.READ_ONLY),  # target_session_attrs=read-write on a standby
    ("server is in hot standby mode", DbErrorKind.READ_ONLY),  # target_session_attrs=primary
    ("read-only transaction", DbErrorKind.READ_ONLY),
    ("connection timeout expired", DbErrorKind.TIMEOUT),
    ("timeout expired", DbErrorKind.TIMEOUT),
    ("connection timed out", DbErrorKind.TIMEOUT),
    ("statement timeout", DbErrorKind.TIMEOUT),
    ("lock timeout", DbErrorKind.TIMEOUT),
    ("connection refused", DbErrorKind.REFUSED),
    ("the database system is", DbErrorKind.UNAVAILABLE),  # starting up / shutting down / in recovery mode
    ("not yet accepting connections", DbErrorKind.UNAVAILABLE),
    ("too many clients", DbErrorKind.UNAVAILABLE),
    ("too many connections", DbErrorKind.UNAVAILABLE),
    ("connection slots are reserved", DbErrorKind.UNAVAILABLE),
    ("server closed the connection unexpectedly", DbErrorKind.UNAVAILABLE),
    ("terminating connection", DbErrorKind.UNAVAILABLE),
    ("connection reset", DbErrorKind.UNAVAILABLE),
    ("no route to host", DbErrorKind.UNAVAILABLE),
    ("network is unreachable", DbErrorKind.UNAVAILABLE),
)

_DB_MISSING_RE = re.compile(r'database "(?P<db>[^"]*)" does not exist')


def classify_text(text: str, sqlstate: str | None = None) -> DbErrorKind:
    """The kind of one failure from its SQLSTATE (if any) and its message text. Pure."""
    if sqlstate:
        if sqlstate in _SQLSTATE_KINDS:
            return _SQLSTATE_KINDS[sqlstate]
        if sqlstate == "28000":  # invalid_authorization_specification: hba, NOLOGIN, unknown role
            lowered = text.lower()
            if "pg_hba.conf" in lowered:
                return DbErrorKind.HBA_REJECTED
            if "not permitted to log in" in lowered:
                return DbErrorKind.NO_PRIVILEGE
            return DbErrorKind.AUTH_FAILED
        if sqlstate.startswith("08"):
            return DbErrorKind.UNAVAILABLE
    lowered = text.lower()
    if _DB_MISSING_RE.search(text):
        return DbErrorKind.NO_DATABASE
    for fragment, kind in _TEXT_KINDS:
        if fragment in lowered:
            return kind
    if "no such file or directory" in lowered and "socket" in lowered:
        return DbErrorKind.REFUSED  # unix socket path without a server
    return DbErrorKind.OTHER


@dataclass(frozen=True)
class RawFailure:
    """One per-host failure as psycopg/libpq reported it (``text`` is raw: do not show it as is)."""

    host: str | None
    port: int | None
    hostaddr: str | None
    text: str


_MULTI_MARK = "Multiple connection attempts failed. All failures were:"
_ATTEMPT_RE = re.compile(
    r"^- host: (?P<host>'[^'\n]*'|\"[^\"\n]*\"|None), port: (?P<port>'[^'\n]*'|\"[^\"\n]*\"|None), "
    r"hostaddr: (?P<addr>'[^'\n]*'|\"[^\"\n]*\"|None): ",
    re.MULTILINE,
)
_LIBPQ_TCP_RE = re.compile(
    r'connection to server at "(?P<host>[^"]*)"(?: \((?P<addr>[^)]*)\))?, port (?P<port>\d+) failed: '
)
_LIBPQ_UNIX_RE = re.compile(r'connection to server on socket "(?P<sock>[^"]*)" failed: ')
_RESOLVE_RE = re.compile(r"failed to resolve host (?P<host>'[^'\n]*'|\"[^\"\n]*\"|None): ")
_SOCKET_PORT_RE = re.compile(r"^(?P<dir>.*)/\.s\.PGSQL\.(?P<port>\d+)$")


def _unrepr(value: str) -> str | None:
    if value == "None":
        return None
    return value[1:-1]


def _to_port(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _parse_one(text: str, host: str | None, port: int | None, addr: str | None) -> RawFailure:
    m = _LIBPQ_TCP_RE.search(text)
    if m:
        host = host or m["host"]
        port = port or int(m["port"])
        addr = addr or m["addr"] or None
        text = text[m.end() :]
    else:
        m = _LIBPQ_UNIX_RE.search(text)
        if m:
            sm = _SOCKET_PORT_RE.match(m["sock"])
            if sm:
                host = host or sm["dir"]
                port = port or int(sm["port"])
            text = text[m.end() :]
        else:
            m = _RESOLVE_RE.search(text)
            if m:
                host = host or _unrepr(m["host"])
    return RawFailure(host, port, addr, text.strip())


def parse_failures(message: str) -> list[RawFailure]:
    """Split a psycopg connection error message into per-host failures. Pure.

    psycopg makes one attempt per host (and per address); when several failed, its message ends with
    ``Multiple connection attempts failed. All failures were:`` and one ``- host: ..., port: ...,
    hostaddr: ...: <error>`` entry per attempt. A single failure carries libpq's ``connection to server
    at "H", port P failed:`` prefix (or no location at all, e.g. a connect timeout).
    """
    if _MULTI_MARK in message:
        tail = message.split(_MULTI_MARK, 1)[1]
        matches = list(_ATTEMPT_RE.finditer(tail))
        failures = []
        for i, m in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(tail)
            failures.append(
                _parse_one(tail[m.end() : end], _unrepr(m["host"]), _to_port(_unrepr(m["port"])), _unrepr(m["addr"]))
            )
        if failures:
            return failures
        message = message.split(_MULTI_MARK, 1)[0]
    return [_parse_one(message, None, None, None)]


def _first_line(text: str) -> str:
    """The primary message of a raw libpq/server text: no severity prefix, no DETAIL/HINT lines."""
    for prefix in (
        "connection failed: ",
        "connection is bad: ",
        "consuming input failed: ",
        "sending query failed: ",
        "sending query and params failed: ",
    ):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    m = _LIBPQ_TCP_RE.search(text) or _LIBPQ_UNIX_RE.search(text)
    if m:
        text = text[m.end() :]
    line = text.strip().split("\n", 1)[0].strip()
    line = re.sub(r"^(FATAL|ERROR|PANIC):\s+", "", line)
    line = re.sub(r"\s+", " ", line)
    return line[:300]


_HBA_RE = re.compile(
    r'(?P<what>rejects connection|entry) for host "(?P<client>[^"]*)", user "(?P<user>[^"]*)", '
    r'database "(?P<db>[^"]*)"(?:, (?P<enc>[^\n]*))?'
)
_USER_RE = re.compile(r'for user "(?P<user>[^"]*)"')
_PERM_DB_RE = re.compile(r'permission denied for database "(?P<db>[^"]*)"')
_NOLOGIN_RE = re.compile(r'role "(?P<role>[^"]*)" is not permitted to log in')


def _reason(kind: DbErrorKind, raw: RawFailure, target: DbTarget, timeouts: Timeouts | None) -> str:
    """A short, password-free phrase for one failure, built from the parts we understand."""
    text = raw.text
    primary = _first_line(text)
    lowered = text.lower()
    if kind is DbErrorKind.HOST_NOT_FOUND:
        return f"cannot resolve host name {raw.host}" if raw.host else "cannot resolve the host name"
    if kind is DbErrorKind.REFUSED:
        return "connection refused (nothing listens there)"
    if kind is DbErrorKind.TIMEOUT:
        if "connection timeout expired" in lowered or lowered.strip() == "timeout expired":
            secs = f" within {timeouts.effective_connect_timeout} s" if timeouts else " in time"
            return f"no answer{secs} (host down, or a firewall drops the traffic)"
        if "connection timed out" in lowered:
            return "connection timed out (host down, or a firewall drops the traffic)"
        return primary
    if kind is DbErrorKind.AUTH_FAILED:
        if "no password supplied" in lowered:
            return f"the server requires a password for user {target.user}"
        m = _USER_RE.search(text)
        user = m["user"] if m else target.user
        return f'password authentication failed for user "{user}" (wrong user name or password)'
    if kind is DbErrorKind.HBA_REJECTED:
        m = _HBA_RE.search(text)
        if not m:
            return "pg_hba.conf on the server refuses this connection"
        enc = f" ({m['enc'].strip()})" if m["enc"] else ""
        verb = "rejects" if m["what"] == "rejects connection" else "has no entry for"
        return f'pg_hba.conf on the server {verb} client {m["client"]}, user "{m["user"]}", database "{m["db"]}"{enc}'
    if kind is DbErrorKind.INSECURE_AUTH:
        if "cleartext password" in lowered:
            return "the server asked for the password in clear text; refused, nothing was sent"
        if "hashed password" in lowered:
            return "the server asked for an MD5-hashed password; refused, nothing was sent"
        if "did not complete authentication" in lowered:
            return "the server let us in without checking the password (trust): refused, it could be anyone"
        if "ssl not in use" in lowered:
            return "channel binding needs TLS, and the connection is not encrypted"
        if "channel binding" in lowered:
            return "the server did not offer SCRAM with channel binding (a TLS-terminating proxy in between?)"
        return f"the server asked for an authentication method other than SCRAM-SHA-256: {primary}"
    if kind is DbErrorKind.TLS:
        if "server does not support ssl" in lowered:
            return f"the server does not offer TLS, but sslmode={target.sslmode} requires it"
        return f"TLS error: {primary}"
    if kind is DbErrorKind.NO_DATABASE:
        m = _DB_MISSING_RE.search(text)
        return f'database "{m["db"] if m else target.dbname}" does not exist'
    if kind is DbErrorKind.NO_PRIVILEGE:
        m = _PERM_DB_RE.search(text)
        if m:
            return f'user "{target.user}" lacks the CONNECT privilege on database "{m["db"]}"'
        m = _NOLOGIN_RE.search(text)
        if m:
            return f'role "{m["role"]}" is not permitted to log in (NOLOGIN)'
        return primary
    if kind is DbErrorKind.READ_ONLY:
        if "session is read-only" in lowered or "hot standby" in lowered:
            return "the server is a read-only standby"
        return primary
    return primary or "unknown error"


_HINTS: dict[DbErrorKind, str] = {
    DbErrorKind.HOST_NOT_FOUND: "Check the host name (or use an IP address) and the DNS settings.",
    DbErrorKind.REFUSED: "Check that PostgreSQL runs there and listens on that address and port "
    "(listen_addresses, port), and that no firewall rejects the connection.",
    DbErrorKind.TIMEOUT: "Check that the server is up and that firewalls between this appliance and the "
    "server let the port through.",
    DbErrorKind.AUTH_FAILED: "Check the user name and password (the server does not say which one is wrong).",
    DbErrorKind.HBA_REJECTED: "Ask the database administrator to allow this client, user and database in "
    "pg_hba.conf and reload PostgreSQL.",
    DbErrorKind.TLS: "Enable TLS on the server (ssl = on), or choose another --db_sslmode (disable only on a "
    "network path you trust); for a certificate error, check --db_sslrootcert and the host name.",
    DbErrorKind.INSECURE_AUTH: "The appliance sends a password only through SCRAM-SHA-256: set the user's "
    "method to scram-sha-256 in the server's pg_hba.conf (with password_encryption = scram-sha-256, then set "
    "the password again); connect to PostgreSQL directly, not through a proxy that terminates TLS.",
    DbErrorKind.NO_DATABASE: "Create the database first, or check the database name.",
    DbErrorKind.NO_PRIVILEGE: "Grant the role the missing privilege (LOGIN, CONNECT on the database, ...), "
    "or use another role.",
    DbErrorKind.READ_ONLY: "Point to the primary (read-write) server, or include it in the host list.",
    DbErrorKind.TOO_OLD: "Upgrade the PostgreSQL server.",
    DbErrorKind.UNAVAILABLE: "The server does not take new sessions right now (starting, stopping, or at its "
    "connection limit); retry later or check the server log.",
    DbErrorKind.OTHER: "Check the server log for details.",
}


def _overall_kind(kinds: Iterable[DbErrorKind]) -> DbErrorKind:
    present = set(kinds)
    for kind in _PRIORITY:
        if kind in present:
            return kind
    return DbErrorKind.OTHER


def _scrub(text: str, password: str) -> str:
    """``text`` with every occurrence of ``password`` masked (even if masking creates a new one)."""
    if not password:
        return text
    mask = next((m for m in ("***", "###", "?") if password not in m), "")
    for _ in range(3):
        if password not in text:
            return text
        text = text.replace(password, mask)
    return text if password not in text else "(text withheld: it would reveal the password)"


def _scrub_failure(f: HostFailure, password: str) -> HostFailure:
    return replace(
        f,
        host=None if f.host is None else _scrub(f.host, password),
        hostaddr=None if f.hostaddr is None else _scrub(f.hostaddr, password),
        reason=_scrub(f.reason, password),
    )


def _addresses(host: str) -> set[str]:
    """The addresses a host name resolves to now (the socket path itself for a unix socket dir)."""
    if host.startswith("/"):
        return {host}
    import socket  # deferred: only an address-only failure among several hosts needs it; start-up counts

    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()
    return {str(info[4][0]) for info in infos}


def error_from_exception(
    exc: BaseException,
    target: DbTarget,
    *,
    timeouts: Timeouts | None = None,
    action: str | None = None,
) -> DbError:
    """Turn a psycopg error (at connect time or inside a session) into one :class:`DbError`.

    The message is built from ``target`` and the parts of the error text understood here; raw text
    appears only for unclassified errors, and the password is scrubbed from everything. ``exc`` is
    not kept (no ``__cause__``): raise the result outside the ``except`` block, or ``from None``.

    For an error inside a session, pass the target narrowed to the server in use
    (``target.for_host(conn.info.host, conn.info.port)``) so the message names it. ``action``
    replaces the default "Cannot connect to PostgreSQL" at the start of the message.
    """
    sqlstate: str | None = getattr(exc, "sqlstate", None)
    message = str(exc)
    if sqlstate:
        # An error inside a session: one server, known from the target if it has a single host.
        host, port = target.host_ports()[0] if len(target.hosts) == 1 else (None, None)
        raw = [RawFailure(host, port, None, message)]
    else:
        raw = parse_failures(message)
    failures: list[HostFailure] = []
    pw = target.password
    for r in raw:
        kind = classify_text(r.text, sqlstate)
        failures.append(
            HostFailure(
                None if r.host is None else _scrub(r.host, pw),
                r.port,
                kind,
                _scrub(_reason(kind, r, target, timeouts), pw),
                None if r.hostaddr is None else _scrub(r.hostaddr, pw),
            )
        )
    if not sqlstate:
        failures = [_scrub_failure(f, pw) for f in _fill_hosts(failures, target)]
    return error_for(target, failures, action=action)


def error_for(target: DbTarget, failures: list[HostFailure], *, action: str | None = None) -> DbError:
    """The one :class:`DbError` for ``failures`` (already scrubbed), one per host of ``target`` tried."""
    kind = _overall_kind(f.kind for f in failures)
    what = action or "Cannot connect to PostgreSQL"
    if len(failures) == 1:
        f = failures[0]
        if f.host is None:
            where = target.describe()
        else:
            where = f"{target.user}@{format_hostport(f.host, f.port)}/{target.dbname}"
            if f.hostaddr and f.hostaddr != f.host:
                where += f" ({f.hostaddr})"
        text = f"{what} as {where}: {f.reason}"
    else:
        parts = "; ".join(f"{f.where()}: {f.reason}" for f in failures)
        text = f"{what} as {target.user} to database {target.dbname} on {target.hosts_text()}: {parts}"
    hint = _HINTS[kind]
    if kind is DbErrorKind.HBA_REJECTED and any(
        "has no entry" in f.reason and "no encryption" in f.reason for f in failures
    ):
        hint += " The server may accept only TLS connections here: try sslmode=require (--db_sslmode require)."
    if len(failures) > 1 and kind is DbErrorKind.READ_ONLY:
        hint = "None of the hosts is a read-write primary. " + hint
    text = re.sub(r"\s*[\r\n]+\s*", " ", text.rstrip(".") + ".")  # one line, whatever the names hold
    return DbError.make(
        kind,
        _scrub(text, target.password),
        _scrub(hint, target.password),
        failures=failures,
    )


def _fill_hosts(failures: list[HostFailure], target: DbTarget) -> list[HostFailure]:
    """Attribute location-less failures to a host, and report hosts psycopg never tried.

    psycopg silently skips hosts whose name does not resolve when another host does; when none
    resolves, its message names only the last one; and a connect timeout carries no location. All of
    that is reconstructed from the target.
    """
    expected = target.host_ports()
    if len(failures) == 1 and failures[0].kind is DbErrorKind.HOST_NOT_FOUND and failures[0].port is None:
        return [HostFailure(h, p, DbErrorKind.HOST_NOT_FOUND, f"cannot resolve host name {h}") for h, p in expected]
    filled = []
    for f in failures:
        if f.host is not None and f.port is None:
            ports = [p for h, p in expected if h == f.host]
            if len(ports) == 1:
                f = replace(f, port=ports[0])
        filled.append(f)
    failures = filled
    seen = {(f.host, f.port) for f in failures if f.host is not None}
    missing = [hp for hp in expected if hp not in seen]
    if not missing:
        return failures
    # libpq names the address, not the host name, when psycopg resolved the name: map it back (by
    # port; by address only when several hosts share the port).
    for i, f in enumerate(failures):
        if f.host is not None and (f.host, f.port) not in expected:
            names = [hp for hp in missing if hp[1] == f.port]
            if len(names) > 1:
                names = [hp for hp in names if f.host in _addresses(hp[0])]
            if names:
                failures[i] = replace(f, host=names[0][0], hostaddr=f.hostaddr or f.host)
                missing.remove(names[0])
    if len(failures) == 1 and failures[0].host is None:
        # One attempt only, so exactly one host resolved: that is the one that failed.
        candidates = missing if len(missing) == 1 else [hp for hp in missing if _addresses(hp[0])]
        if len(candidates) == 1:
            failures = [replace(failures[0], host=candidates[0][0], port=candidates[0][1])]
            missing.remove(candidates[0])
    if any(f.host is None for f in failures):
        return failures
    # psycopg tries every host it could resolve, so the hosts it did not try are the unresolvable ones.
    extra = [HostFailure(h, p, DbErrorKind.HOST_NOT_FOUND, f"cannot resolve host name {h}") for h, p in missing]
    order = {hp: i for i, hp in enumerate(expected)}
    return sorted([*failures, *extra], key=lambda f: order.get((f.host or "", f.port or 0), len(order)))


def server_too_old(where: str, version_num: int, min_version_num: int) -> DbError:
    """The error for a server below the minimum version; ``where`` is ``user@host:port/dbname``."""
    return DbError.make(
        DbErrorKind.TOO_OLD,
        f"PostgreSQL at {where} is version {version_text(version_num)}; "
        f"at least {version_text(min_version_num)} is required.",
        _HINTS[DbErrorKind.TOO_OLD],
    )


def version_text(num: int) -> str:
    major, minor = divmod(num, 10000)
    return f"{major}.{minor}" if major >= 10 else f"{major}.{minor // 100}.{minor % 100}"
