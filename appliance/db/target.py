"""Where and as whom the product connects to PostgreSQL, and with which timeouts: plain values.

:class:`DbTarget` (hosts, ports, user, password, database, TLS mode and CA) and :class:`Timeouts` are frozen
dataclasses checked when they are built (a bad value is a :class:`~appliance.errors.UsageError`), so
every connection is made from a valid target with explicit, bounded timeouts. The password never
appears in a ``repr`` or a message: :meth:`DbTarget.describe` is what messages show. Nothing here
imports psycopg; :mod:`appliance.db.connect` turns these values into libpq parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from appliance.errors import UsageError

__all__ = ["MIN_SERVER_VERSION", "SSLMODES", "SYSTEM_CA", "DbTarget", "Timeouts", "format_hostport"]

MIN_SERVER_VERSION = 130000  # PostgreSQL 13
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SYSTEM_CA = "system"  # sslrootcert=system: the operating system's trusted CAs (libpq 16+)


def format_hostport(host: str, port: int | None) -> str:
    """``host:port`` for messages, an IPv6 literal in brackets (``[::1]:5432``); the host alone without a port."""
    if port is None:
        return host
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"  # IPv6 literal
    return f"{host}:{port}"


def _bad_host_char(c: str) -> bool:
    return c in ",\x00" or c.isspace() or not c.isprintable()


@dataclass(frozen=True)
class DbTarget:
    """Where and as whom to connect. ``ports`` has one entry per host, or one port for all hosts.

    The password is excluded from ``repr``/``str``; use :meth:`describe` in messages.
    """

    hosts: tuple[str, ...]
    ports: tuple[int, ...]
    user: str
    password: str = field(repr=False)
    dbname: str
    sslmode: str = "prefer"
    # The CA certificate(s) that must have signed the server's certificate: an absolute path, or
    # "system" (the OS's trusted CAs); None: libpq's default (none, unless ~/.postgresql/root.crt).
    sslrootcert: str | None = None

    def __post_init__(self) -> None:
        # Be forgiving about a bare string / int / list, which would otherwise split into characters.
        if isinstance(self.hosts, str):
            object.__setattr__(self, "hosts", (self.hosts,))
        elif not isinstance(self.hosts, tuple):
            object.__setattr__(self, "hosts", tuple(self.hosts))
        if isinstance(self.ports, int):
            object.__setattr__(self, "ports", (self.ports,))
        elif not isinstance(self.ports, tuple):
            object.__setattr__(self, "ports", tuple(self.ports))
        if not self.hosts:
            raise UsageError("database target: no host given")
        for host in self.hosts:
            if not isinstance(host, str) or not host or any(_bad_host_char(c) for c in host):
                raise UsageError(f"database target: invalid host name {host!r}")
        if len(self.ports) not in (1, len(self.hosts)):
            raise UsageError(
                f"database target: {len(self.ports)} ports for {len(self.hosts)} hosts (give one port, or one per host)"
            )
        for port in self.ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise UsageError(f"database target: invalid port {port!r} (1-65535)")
        for what, value in (("user", self.user), ("database name", self.dbname)):
            if not isinstance(value, str) or not value or "\x00" in value:
                raise UsageError(f"database target: invalid {what} {value!r}")
        if not isinstance(self.password, str) or not self.password:
            # An empty password would make libpq fall back to ~/.pgpass: never do that silently.
            raise UsageError(f"database target: no password given for user {self.user}")
        if "\x00" in self.password:
            raise UsageError(f"database target: the password for user {self.user} contains a NUL character")
        if self.sslmode not in SSLMODES:
            raise UsageError(f"database target: invalid sslmode {self.sslmode!r} (one of {', '.join(SSLMODES)})")
        root = self.sslrootcert
        if root is not None and root != SYSTEM_CA and (
            not isinstance(root, str) or not root.startswith("/") or any(_bad_host_char(c) for c in root)
        ):
            raise UsageError(f"database target: invalid sslrootcert {root!r} (an absolute path, or {SYSTEM_CA})")

    @property
    def verified(self) -> bool:
        """The server's identity is checked: its certificate is signed by the CA and names the host."""
        return self.sslmode == "verify-full"

    def host_ports(self) -> list[tuple[str, int]]:
        """(host, port) for every host, in order."""
        ports = self.ports * len(self.hosts) if len(self.ports) == 1 else self.ports
        return list(zip(self.hosts, ports, strict=True))

    def for_host(self, host: str, port: int) -> DbTarget:
        """The same target narrowed to one host."""
        return replace(self, hosts=(host,), ports=(port,))

    def hosts_text(self) -> str:
        return ",".join(format_hostport(h, p) for h, p in self.host_ports())

    def describe(self) -> str:
        """``user@host:port/dbname`` (hosts comma-separated), for messages. Never the password."""
        return f"{self.user}@{self.hosts_text()}/{self.dbname}"

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class Timeouts:
    """Client and session timeouts, in seconds (0 disables a session timeout).

    ``connect_timeout`` applies to each host (and each address of a host) separately; psycopg rounds
    it up to a whole number of seconds and to at least 2 s.
    """

    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    lock_timeout: float = 10.0
    idle_in_transaction_session_timeout: float = 60.0
    tcp_user_timeout: float = 30.0  # how long sent data may stay unacknowledged before the link is dead
    keepalives_idle: int = 30
    keepalives_interval: int = 10
    keepalives_count: int = 3

    def __post_init__(self) -> None:
        if not self.connect_timeout > 0:
            raise UsageError("connect_timeout must be > 0 (0 would mean psycopg's 130 s default)")
        for name in (
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
            "tcp_user_timeout",
        ):
            if not getattr(self, name) >= 0:
                raise UsageError(f"{name} must be >= 0")
        for name in ("keepalives_idle", "keepalives_interval", "keepalives_count"):
            if not getattr(self, name) >= 1:
                raise UsageError(f"{name} must be >= 1")

    @property
    def effective_connect_timeout(self) -> int:
        """The per-host connect timeout psycopg really applies, in whole seconds."""
        return max(2, math.ceil(self.connect_timeout))

    def options(self) -> str:
        """The libpq ``options`` value setting the session timeouts (milliseconds)."""
        return " ".join(
            f"-c {name}={round(getattr(self, name) * 1000)}"
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        )

