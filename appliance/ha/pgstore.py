"""The PostgreSQL :class:`~appliance.ha.store.HaStore`: the cluster's HA state in the shared database.

Why it looks the way it does:

* **One dedicated connection** (autocommit), separate from any pool, so pool exhaustion or recycling
  can never starve heartbeats and renewals. It is opened lazily and thrown away after *any* failure:
  a connection that saw an error (timeout, lost link, a read-only server) is not trusted again. The
  next call reconnects with ``target_session_attrs=read-write``, which is how the store follows a
  database failover of a multi-host target without being recreated.
* **Short timeouts** (:func:`ha_timeouts`): the HA loop must fail fast and visibly. A call that cannot
  finish within ``lock_timeout``/``statement_timeout`` raises :class:`StoreUnavailable`; the caller
  treats the outcome as unknown (a renewal as *not* renewed).
* **The database clock only**: every time written or compared is ``now()`` (the transaction's start
  time, the same for every statement of one transaction); ages and remainders are computed by the
  server, so no decision compares this host's clock with another's.
* **Every failure is a StoreUnavailable** whose message comes from
  :func:`~appliance.db.connect.error_from_exception` (host, port, user and database; never the
  password) and that is raised outside the ``except`` block, so no psycopg exception (or frame
  holding connection parameters) hangs off it. A missing node row is :class:`NotRegistered`.

psycopg is imported lazily: importing this module does not load it.
"""

from __future__ import annotations

import contextlib
import selectors
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, LiteralString, TypeVar

from appliance.db.connect import DbError, DbTarget, Timeouts, connect, error_from_exception
from appliance.ha.model import ClusterView, Lease, NodeState
from appliance.ha.store import HaStore, NotRegistered, StoreUnavailable

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["ADMIN_STATES", "PREVIOUS_KEEPALIVE_KEY", "PgStore", "ha_timeouts"]

_T = TypeVar("_T")

ADMIN_STATES = ("active", "stopped")
KEEPALIVE_KEY = "keepalive_interval_s"
# Written by set_setting in the same transaction as a new keepalive interval: the interval it replaced
# (value) and when (updated_at), so that a snapshot can judge liveness by the longer of the two while
# the change propagates (the same rule as the in-memory store).
PREVIOUS_KEEPALIVE_KEY = "keepalive_previous_s"
DEFAULT_KEEPALIVE_S = 10.0  # the schema's default, if the row were ever missing


def ha_timeouts(keepalive_s: float = DEFAULT_KEEPALIVE_S) -> Timeouts:
    """Timeouts for the HA connection, scaled to the keepalive interval ``I``.

    A statement must end well inside one interval (at most I/2, at most 5 s): a renewal slower than
    that is worth less than a clear failure. A row lock held by someone else (an idle-in-transaction
    session, a paused process) is given at most 1 s. A dead link is noticed by ``tcp_user_timeout``
    while we send and by keepalives while idle, within seconds rather than the OS's two hours. An
    open transaction of ours never outlives an interval (a process paused mid-transaction must not
    keep the lease row locked).
    """
    statement = min(5.0, max(0.5, keepalive_s / 2))
    return Timeouts(
        connect_timeout=2.0,  # per host; psycopg's minimum
        statement_timeout=statement,
        lock_timeout=min(1.0, statement / 2),
        idle_in_transaction_session_timeout=max(1.0, keepalive_s),
        tcp_user_timeout=max(2.0, min(10.0, keepalive_s)),
        keepalives_idle=max(1, min(10, round(keepalive_s))),
        keepalives_interval=1,
        keepalives_count=3,
    )


def _uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID, or None when it is not one (node ids are UUIDs in the schema)."""
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


# --- SQL ({s} is the schema) ------------------------------------------------------------------------

_HEARTBEAT: LiteralString = (
    "UPDATE {s}.nodes SET last_heartbeat = now(), heartbeat_seq = heartbeat_seq + 1 WHERE node_id = %s"
)
_SNAPSHOT_NODES: LiteralString = (
    "SELECT node_id::text, name, priority, role, admin_state,"
    " extract(epoch FROM now() - last_heartbeat)::float8, heartbeat_seq"
    " FROM {s}.nodes ORDER BY name, node_id"
)
_SNAPSHOT_LEASE: LiteralString = (
    "SELECT holder::text, epoch, extract(epoch FROM expires_at - now())::float8, handover_to::text,"
    " pg_is_in_recovery() FROM {s}.lease WHERE id = 1"
)
_SNAPSHOT_SETTINGS: LiteralString = (
    "SELECT key, value, extract(epoch FROM now() - updated_at)::float8 FROM {s}.cluster_settings"
    " WHERE key IN ('keepalive_interval_s', 'keepalive_previous_s', 'maintenance', 'db_check_interval_s')"
)
_NODE_EXISTS: LiteralString = "SELECT 1 FROM {s}.nodes WHERE node_id = %s FOR KEY SHARE"
# The compare-and-set of the contract. `expires_at IS NULL` as the in-memory store: a holder recorded
# without an expiry (never written by the HA core) counts as free rather than held forever.
_ACQUIRE: LiteralString = (
    "UPDATE {s}.lease SET holder = %(me)s, epoch = epoch + 1,"
    " expires_at = now() + make_interval(secs => %(ttl)s), renewed_at = now(), handover_to = NULL"
    " WHERE id = 1 AND epoch = %(expected)s"
    " AND (holder IS NULL OR expires_at IS NULL OR expires_at <= now())"
    " RETURNING epoch"
)
# Demote first, then promote: nodes_one_primary is a unique index checked row by row.
_DEMOTE_OTHERS: LiteralString = "UPDATE {s}.nodes SET role = 'standby' WHERE role = 'primary' AND node_id <> %s"
_PROMOTE: LiteralString = "UPDATE {s}.nodes SET role = 'primary' WHERE node_id = %s AND role <> 'primary'"
_RENEW: LiteralString = (
    "UPDATE {s}.lease SET expires_at = now() + make_interval(secs => %(ttl)s), renewed_at = now()"
    " WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s RETURNING 1"
)
# A successor that is not (or no longer) registered is not recorded: the lease is still given up at
# once, and the best candidate takes over.
_RELEASE: LiteralString = (
    "UPDATE {s}.lease SET expires_at = now(),"
    " handover_to = (SELECT node_id FROM {s}.nodes WHERE node_id = %(target)s)"
    " WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > now() RETURNING 1"
)
_REQUEST_HANDOVER: LiteralString = "UPDATE {s}.lease SET handover_to = %s WHERE id = 1"
_SET_ADMIN_STATE: LiteralString = "UPDATE {s}.nodes SET admin_state = %s WHERE node_id = %s"
_LOCK_KEEPALIVE: LiteralString = "SELECT value FROM {s}.cluster_settings WHERE key = 'keepalive_interval_s' FOR UPDATE"
_UPSERT_SETTING: LiteralString = (
    "INSERT INTO {s}.cluster_settings (key, value, updated_at) VALUES (%s, %s, now())"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"
)


# A statement that waited too long for a lock or for the server (lock_timeout, statement_timeout): the
# generic "is the server up?" hint of a connection timeout would send the operator the wrong way.
_WAIT_SQLSTATES = frozenset({"55P03", "57014"})
_WAIT_HINT = (
    "Another session may hold a lock on the HA tables (look for long or idle-in-transaction sessions in "
    "pg_stat_activity), or the server is overloaded."
)


class PgStore(HaStore):
    """The HA store over one psycopg 3 connection to the cluster's database.

    :param target: the database, possibly several hosts (the read-write one is used).
    :param schema: the schema holding the appliance's tables (``<prefix>appliance``).
    :param application_name: shown in ``pg_stat_activity``, e.g. ``appliance-agent:<node name>``.
    :param timeouts: short ones (default :func:`ha_timeouts`): the HA loop must fail fast.

    Thread-safe (calls are serialised), but meant for one HA loop: give every concurrent user its own
    store, hence its own connection.
    """

    def __init__(
        self,
        target: DbTarget,
        schema: str,
        *,
        application_name: str,
        timeouts: Timeouts | None = None,
    ) -> None:
        self._target = target
        self._schema = schema
        self._application_name = application_name
        self._timeouts = timeouts or ha_timeouts()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._server: DbTarget = target  # narrowed to the host in use once connected, for messages
        self._sql: dict[str, sql.Composed] = {}

    def __repr__(self) -> str:
        return f"<PgStore {self._target.describe()} schema={self._schema}>"

    # --- connection management ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. The store stays usable: the next call opens a new one."""
        with self._lock:
            self._drop()

    def __enter__(self) -> PgStore:
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
        if conn is not None and not self._trusted(conn):
            self._drop()
            conn = None
        if conn is not None:
            return conn
        failure: DbError | None = None
        try:
            conn = connect(
                self._target,
                application_name=self._application_name,
                timeouts=self._timeouts,
                read_write=True,
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

    # --- the contract ------------------------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        """One single-row UPDATE by the database clock; no row updated means not registered."""
        nid = _uuid(node_id)
        if nid is None:
            raise _not_registered(node_id)
        updated = self._run("record the heartbeat", lambda conn: conn.execute(self._q(_HEARTBEAT), (nid,)).rowcount)
        if updated == 0:
            raise _not_registered(node_id)

    def snapshot(self) -> ClusterView:
        """Nodes, lease and settings in one REPEATABLE READ, READ ONLY transaction.

        REPEATABLE READ makes the three queries see one snapshot of the data, and ``now()`` is the
        same instant for all of them, so every age and remainder is measured from one point in time.
        """
        return self._run("read the cluster state", self._snapshot)

    def _snapshot(self, conn: psycopg.Connection[tuple[Any, ...]]) -> ClusterView:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            node_rows = conn.execute(self._q(_SNAPSHOT_NODES)).fetchall()
            lease_row = conn.execute(self._q(_SNAPSHOT_LEASE)).fetchone()
            setting_rows = conn.execute(self._q(_SNAPSHOT_SETTINGS)).fetchall()
        if lease_row is None:
            raise StoreUnavailable(
                f"HA store: schema {self._schema} on {self._server.hosts_text()} has no lease row",
                "The schema is damaged; redeploy it.",
            )
        holder, epoch, remaining, handover_to, in_recovery = lease_row
        if in_recovery:
            # A read-write connection cannot land on a standby, but a proxy in between could move it:
            # a standby's rows may be stale, so do not decide anything from them.
            raise self._read_only_server()
        nodes = tuple(
            NodeState(
                node_id=str(r[0]),
                name=str(r[1]),
                priority=int(r[2]),
                role=str(r[3]),
                admin_state=str(r[4]),
                heartbeat_age_s=None if r[5] is None else float(r[5]),
                heartbeat_seq=int(r[6]),
            )
            for r in node_rows
        )
        settings = {str(key): (str(value), float(age)) for key, value, age in setting_rows}
        keepalive = self._keepalive(settings.get(KEEPALIVE_KEY, (str(DEFAULT_KEEPALIVE_S), 0.0))[0])
        judge = keepalive
        previous = settings.get(PREVIOUS_KEEPALIVE_KEY)
        if previous is not None:
            before, since = self._keepalive(previous[0]), previous[1]
            # While the change propagates, judge liveness by the longer of the two intervals.
            if since <= 2 * max(before, keepalive):
                judge = max(before, keepalive)
        maintenance = settings.get("maintenance", ("off", 0.0))[0] == "on"
        lease = Lease(
            holder=None if holder is None else str(holder),
            epoch=int(epoch),
            remaining_s=None if remaining is None else float(remaining),
            handover_to=None if handover_to is None else str(handover_to),
        )
        db_check = float(settings.get("db_check_interval_s", ("10", 0.0))[0])
        return ClusterView(nodes, lease, keepalive, maintenance, judge_keepalive_s=judge, db_check_s=db_check)

    def _keepalive(self, value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0:  # also NaN
            raise StoreUnavailable(
                f"HA store: cluster setting {KEEPALIVE_KEY} in schema {self._schema} has the invalid "
                f"value {value[:40]!r}",
                "Set the keepalive interval again from the shell.",
            )
        return seconds

    def try_acquire(self, node_id: str, expected_epoch: int, ttl_s: float) -> int | None:
        """The contract's compare-and-set, and the registry's roles, in one transaction.

        Racing nodes serialise on the lease row: the first UPDATE locks it, the others wait and then
        re-check their WHERE against the committed row, whose epoch has moved on, so they update
        nothing. Roles are then set in the same transaction (the old primary demoted first, because
        the one-primary index is checked row by row), so no snapshot sees the new holder with old roles.
        """
        me = _uuid(node_id)
        if me is None:
            raise _not_registered(node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int | None:
            with conn.transaction():
                if conn.execute(self._q(_NODE_EXISTS), (me,)).fetchone() is None:
                    raise _not_registered(node_id)
                row = conn.execute(
                    self._q(_ACQUIRE), {"me": me, "expected": expected_epoch, "ttl": float(ttl_s)}
                ).fetchone()
                if row is None:
                    return None
                conn.execute(self._q(_DEMOTE_OTHERS), (me,))
                conn.execute(self._q(_PROMOTE), (me,))
                return int(row[0])

        return self._run("take the lease", body)

    def renew(self, node_id: str, epoch: int, ttl_s: float) -> bool:
        """One UPDATE scoped to holder and epoch: a node that lost the lease can never extend it."""
        me = _uuid(node_id)
        if me is None:
            return False
        params = {"me": me, "epoch": epoch, "ttl": float(ttl_s)}
        return self._run("renew the lease", lambda conn: conn.execute(self._q(_RENEW), params).fetchone() is not None)

    def release(self, node_id: str, epoch: int, handover_to: str | None) -> bool:
        """One UPDATE scoped to holder and epoch: ``expires_at = now()``, the holder stays recorded.

        Listening agents are notified at commit, so the successor takes over at once, not at its next tick.
        """
        me = _uuid(node_id)
        if me is None:
            return False
        params = {"me": me, "epoch": epoch, "target": _uuid(handover_to)}

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
            with conn.transaction():
                released = conn.execute(self._q(_RELEASE), params).fetchone() is not None
                if released:
                    self._notify(conn)
                return released

        return self._run("release the lease", body)

    def _notify(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Wake every agent listening on this schema's channel (delivered when the transaction commits)."""
        conn.execute("SELECT pg_notify(%s, '')", (channel_for(self._schema),))

    def request_handover(self, target: str | None) -> None:
        """Record (or clear) the planned successor; an unknown target is NotRegistered."""
        wanted = _uuid(target)
        if target is not None and wanted is None:
            raise _not_registered(target)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                # KEY SHARE: the target cannot be deleted before we commit.
                if wanted is not None and conn.execute(self._q(_NODE_EXISTS), (wanted,)).fetchone() is None:
                    raise _not_registered(str(target))
                self._notify(conn)
                if conn.execute(self._q(_REQUEST_HANDOVER), (wanted,)).rowcount == 0:
                    raise StoreUnavailable(
                        f"HA store: schema {self._schema} on {self._server.hosts_text()} has no lease row",
                        "The schema is damaged; redeploy it.",
                    )

        self._run("request the handover", body)

    def set_admin_state(self, node_id: str, state: str) -> None:
        """One UPDATE; ``state`` must be ``active`` or ``stopped`` (ValueError otherwise: a bug)."""
        if state not in ADMIN_STATES:
            raise ValueError(f"admin state must be one of {', '.join(ADMIN_STATES)}, not {state!r}")
        nid = _uuid(node_id)
        if nid is None:
            raise _not_registered(node_id)
        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            with conn.transaction():
                count = conn.execute(self._q(_SET_ADMIN_STATE), (state, nid)).rowcount
                self._notify(conn)
                return count

        updated = self._run("set the admin state", body)
        if updated == 0:
            raise _not_registered(node_id)

    def rename(self, node_id: str, name: str) -> None:
        """One UPDATE of the node's name; no row updated means not registered."""
        nid = _uuid(node_id)
        if nid is None:
            raise _not_registered(node_id)
        updated = self._run("record the node's name", lambda conn: conn.execute(
            self._q("UPDATE {s}.nodes SET name = %s WHERE node_id = %s"), (name, nid)).rowcount)
        if updated == 0:
            raise _not_registered(node_id)

    def set_setting(self, key: str, value: str) -> None:
        """Upsert a setting; a new keepalive interval also records the one it replaces, atomically.

        The keepalive row is locked first, so concurrent changes serialise and ``keepalive_previous_s``
        always holds the value that was current just before the last change.
        """

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                if key == KEEPALIVE_KEY:
                    old = conn.execute(self._q(_LOCK_KEEPALIVE)).fetchone()
                    if old is not None and float(old[0]) != float(value):
                        before = float(old[0])
                        prev = conn.execute(self._q(
                            "SELECT value, extract(epoch FROM now() - updated_at)::float8 FROM {s}.cluster_settings"
                            " WHERE key = 'keepalive_previous_s'")).fetchone()
                        # Changed again while an earlier change still spreads: keep the longest interval
                        # some node may still be beating at.
                        if prev is not None and float(prev[1]) <= 2 * max(float(prev[0]), before):
                            before = max(before, float(prev[0]))
                        conn.execute(self._q(_UPSERT_SETTING), (PREVIOUS_KEEPALIVE_KEY, f"{before:g}"))
                conn.execute(self._q(_UPSERT_SETTING), (key, value))
                self._notify(conn)

        self._run(f"set {key}", body)


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the HA state under ``schema`` (a plain identifier)."""
    return f"appliance_ha_{schema}"


def _not_registered(node_id: str) -> NotRegistered:
    return NotRegistered(f"node {node_id} is not registered in the cluster")
