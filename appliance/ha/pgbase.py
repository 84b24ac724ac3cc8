"""The PostgreSQL store's connection: how :class:`~appliance.ha.pgstore.PgStore` talks to the database.

Split from the store along its one real seam: this module owns the *connection* (opening it on the host
the writer rule names, trusting it, timeouts, turning every failure into :class:`StoreUnavailable`);
:mod:`appliance.ha.pgstore` (the HA loop and the settings), :mod:`appliance.ha.pgmembers` (the registry
and join codes) and :mod:`appliance.ha.pgevents` (events, notifications) own what is said over it.

Why it looks the way it does:

* **One dedicated connection** (autocommit), separate from any pool, so pool exhaustion or recycling
  can never starve heartbeats and renewals. It is opened lazily and thrown away after *any* failure:
  a connection that saw an error (timeout, lost link, a read-only server) is not trusted again. The
  next call reconnects with ``target_session_attrs=read-write``, which is how the store follows a
  database failover of a multi-host target without being recreated.
* **Short timeouts** (:func:`~appliance.ha.timing.ha_timeouts`, scaled to the keepalive interval and
  changed with it by :meth:`PgBase.retune`): the HA loop must fail fast and visibly. A call that cannot
  finish within ``lock_timeout``/``statement_timeout`` raises :class:`StoreUnavailable`; the caller
  treats the outcome as unknown (a renewal as *not* renewed).
* **Every failure is a StoreUnavailable** whose message comes from
  :func:`~appliance.db.errors.error_from_exception` (host, port, user and database; never the
  password) and that is raised outside the ``except`` block, so no psycopg exception (or frame
  holding connection parameters) hangs off it. A missing node row is :class:`NotRegistered`.

psycopg is imported lazily: importing this module does not load it (the shell imports it on its start-up
path). The SQL is in :mod:`appliance.ha.pgsql`.
"""

from __future__ import annotations

import contextlib
import selectors
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, LiteralString, Self, TypeVar

from appliance.db.connect import connect
from appliance.db.errors import DbError, error_from_exception
from appliance.db.target import DbTarget, Timeouts
from appliance.ha.events import NewEvent
from appliance.ha.model import ClusterView
from appliance.ha.store import StoreUnavailable
from appliance.ha.timing import ha_timeouts

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

_T = TypeVar("_T")


def as_uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID, or None when it is not one (node ids are UUIDs in the schema)."""
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


# A statement that waited too long for a lock or for the server (lock_timeout, statement_timeout): the
# generic "is the server up?" hint of a connection timeout would send the operator the wrong way.
_WAIT_SQLSTATES = frozenset({"55P03", "57014"})
_WAIT_HINT = (
    "Another session may hold a lock on the HA tables (look for long or idle-in-transaction sessions in "
    "pg_stat_activity), or the server is overloaded."
)


class PgBase:
    """The HA store's one psycopg 3 connection to the cluster's database.

    :param target: the database, possibly several hosts (the read-write one is used).
    :param schema: the schema holding the appliance's tables (``<prefix>appliance``).
    :param application_name: shown in ``pg_stat_activity``, e.g. ``appliance-agent:<node name>``.
    :param timeouts: short ones (default :func:`~appliance.ha.timing.ha_timeouts`): the HA loop must fail fast.
    :param read_only: for reports while no read-write node answers: connect to any node and read its
        (possibly seconds old) rows; every write then fails.
    :param pick_host: chooses the one host to connect to, before every connection (see
        :meth:`appliance.ha.dbmonitor.DbMonitor.pick_writer`); None lets libpq take the first read-write host.

    Thread-safe (calls are serialised), but meant for one HA loop: give every concurrent user its own
    store, hence its own connection. :meth:`on_connection` makes a store that works inside a caller's
    connection and transaction instead (``redirect`` and node initialisation register the node in the
    same transaction as the schema deployment).
    """

    def __init__(
        self,
        target: DbTarget,
        schema: str,
        *,
        application_name: str,
        timeouts: Timeouts | None = None,
        pick_host: Callable[[], tuple[str, int]] | None = None,
        read_only: bool = False,
    ) -> None:
        self._target = target
        # Who chooses the host of a multi-host target before each connection (the DB-node monitor's
        # rule, over a fresh probe of every host); None: libpq's first read-write host.
        self._pick_host = pick_host
        # Reports only: read from any node, a standby included (while no read-write node answers).
        self._read_only = read_only
        self._schema = schema
        self._application_name = application_name
        self._timeouts = timeouts or ha_timeouts()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._server: DbTarget = target  # narrowed to the host in use once connected, for messages
        self._sql: dict[str, sql.Composed] = {}
        self._borrowed = False  # the connection is the caller's: never closed or replaced here

    @classmethod
    def on_connection(cls, conn: psycopg.Connection[Any], target: DbTarget, schema: str) -> Self:
        """A store that runs every call on ``conn``, inside the caller's transaction if one is open
        (its own transactions become savepoints). A failure is raised, the connection is left to the
        caller (who rolls back)."""
        store = cls(target, schema, application_name="(caller's connection)")
        store._conn = conn
        store._server = target.for_host(conn.info.host, conn.info.port)
        store._borrowed = True
        return store

    def retune(self, timeouts: Timeouts) -> None:
        """Use ``timeouts`` from now on (the keepalive interval changed): the open connection, made with
        the old ones, is closed; the next call connects with the new."""
        with self._lock:
            if timeouts != self._timeouts:
                self._timeouts = timeouts
                if not self._borrowed:
                    self._drop()

    @property
    def timeouts(self) -> Timeouts:
        return self._timeouts

    def __repr__(self) -> str:
        return f"<PgStore {self._target.describe()} schema={self._schema}>"

    # --- connection management ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. The store stays usable: the next call opens a new one."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected_to(self) -> str | None:
        """``host:port`` of the server in use, or None when no connection is open (for status/tests)."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        return self._server.hosts_text()

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = self._conn
        if self._borrowed and conn is not None:
            return conn
        if conn is not None and not self._trusted(conn):
            self._drop()
            conn = None
        if conn is not None:
            return conn
        target = self._target
        if self._pick_host is not None:
            target = target.for_host(*self._pick_host())  # raises StoreUnavailable: nothing to write to
        failure: DbError | None = None
        try:
            conn = connect(
                target,
                application_name=self._application_name,
                timeouts=self._timeouts,
                read_write=not self._read_only,
                autocommit=True,
            )
        except DbError as err:
            failure = err
        if failure is not None:
            message = failure.message[:1].lower() + failure.message[1:]  # "Cannot connect..." mid-sentence
            raise StoreUnavailable(f"HA store: {message}", failure.hint)
        assert conn is not None
        # No server-side prepared statements: they do not survive a transaction-pooling proxy, and
        # these few statements gain nothing from them.
        conn.prepare_threshold = None
        self._conn = conn
        self._server = self._target.for_host(conn.info.host, conn.info.port)
        return conn

    @staticmethod
    def _trusted(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
        """Whether an idle connection still looks usable, without a round trip.

        Anything waiting to be read on an idle connection means the server spoke unprompted: it is
        ending the session (shutdown, restart, ``pg_terminate_backend``, a proxy recycling it) or
        reporting a changed setting such as ``default_transaction_read_only``. Either way a new
        connection is cheaper than a call that fails for a reason that is already known, which would
        cost the HA loop a whole interval (a renewal counted as failed) after every database restart.
        """
        from psycopg import pq

        if conn.closed or conn.broken or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            return False
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(conn.fileno(), selectors.EVENT_READ)
                return not selector.select(0)
        except (OSError, ValueError):
            return False

    def _drop(self) -> None:
        if self._borrowed:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _q(self, text: LiteralString) -> sql.Composed:
        query = self._sql.get(text)
        if query is None:
            from psycopg import sql

            query = self._sql[text] = sql.SQL(text).format(s=sql.Identifier(self._schema))
        return query

    def _run(self, action: str, body: Callable[[psycopg.Connection[tuple[Any, ...]]], _T]) -> _T:
        """Run ``body`` on the connection; turn every failure into StoreUnavailable and drop the link.

        Exceptions of the contract raised by ``body`` itself (NotRegistered) pass through and keep the
        connection: the session is fine, the row is just not there.
        """
        import psycopg

        with self._lock:
            conn = self._connection()
            try:
                return body(conn)
            except psycopg.Error as exc:
                error = error_from_exception(
                    exc, self._server, timeouts=self._timeouts, action=f"HA store: cannot {action}"
                )
                waited = exc.sqlstate in _WAIT_SQLSTATES
            except StoreUnavailable:
                self._drop()
                raise
            self._drop()  # never trust a connection that failed: the next call reconnects
        # Raised outside the except block: no psycopg exception in __context__.
        raise StoreUnavailable(error.message, _WAIT_HINT if waited else error.hint)

    def _read_only_server(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"HA store: the server {self._server.hosts_text()} is a read-only standby (in recovery); "
            "the next call reconnects to a read-write host",
            "Check the database failover: the HA state can only be written on the primary.",
        )

    def _notify(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Wake every agent listening on this schema's channel (delivered when the transaction commits)."""
        conn.execute("SELECT pg_notify(%s, '')", (channel_for(self._schema),))

    def _notify_events(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Wake the agents' background work (new events, join codes, channels): its own channel, so that
        the HA loop is not woken for it."""
        conn.execute("SELECT pg_notify(%s, '')", (events_channel_for(self._schema),))

    def _no_lease_row(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"HA store: schema {self._schema} on {self._server.hosts_text()} has no lease row",
            "The schema is damaged; redeploy it.",
        )

    # --- what the parts of the store provide each other ----------------------------------------------

    def _snapshot(self, conn: psycopg.Connection[tuple[Any, ...]]) -> ClusterView:
        """The HA loop's snapshot in the caller's transaction (:class:`~appliance.ha.pgstore.PgStore`)."""
        raise NotImplementedError

    def _record(self, conn: psycopg.Connection[tuple[Any, ...]], events: Sequence[NewEvent],
                deliver_by: str | None) -> list[str]:
        """Record events in the caller's transaction (:class:`~appliance.ha.pgevents.PgEvents`)."""
        raise NotImplementedError


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the HA state under ``schema`` (a plain identifier)."""
    return f"appliance_ha_{schema}"


def events_channel_for(schema: str) -> str:
    """The channel of the agents' background work (events, join codes, notification channels)."""
    return f"appliance_ev_{schema}"
