"""The PostgreSQL :class:`~appliance.ha.store.HaStore`: the cluster's HA state in the shared database.

Why it looks the way it does:

* **One dedicated connection** (autocommit), separate from any pool, so pool exhaustion or recycling
  can never starve heartbeats and renewals. It is opened lazily and thrown away after *any* failure:
  a connection that saw an error (timeout, lost link, a read-only server) is not trusted again. The
  next call reconnects with ``target_session_attrs=read-write``, which is how the store follows a
  database failover of a multi-host target without being recreated.
* **Short timeouts** (:func:`~appliance.ha.timing.ha_timeouts`, scaled to the keepalive interval and
  changed with it by :meth:`PgStore.retune`): the HA loop must fail fast and visibly. A call that cannot
  finish within ``lock_timeout``/``statement_timeout`` raises :class:`StoreUnavailable`; the caller
  treats the outcome as unknown (a renewal as *not* renewed).
* **The database clock only**: every time written or compared is ``now()`` (the transaction's start
  time, the same for every statement of one transaction); ages and remainders are computed by the
  server, so no decision compares this host's clock with another's.
* **Every failure is a StoreUnavailable** whose message comes from
  :func:`~appliance.db.errors.error_from_exception` (host, port, user and database; never the
  password) and that is raised outside the ``except`` block, so no psycopg exception (or frame
  holding connection parameters) hangs off it. A missing node row is :class:`NotRegistered`.

psycopg is imported lazily: importing this module does not load it (the shell imports it on its start-up
path). The SQL is in :mod:`appliance.ha.pgsql`.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, LiteralString, TypeVar

from appliance.db.connect import connect
from appliance.db.errors import DbError, error_from_exception
from appliance.db.target import DbTarget, Timeouts
from appliance.ha import pgsql as Q
from appliance.ha.model import (
    ClusterView,
    Lease,
    LeaseRecord,
    NodeIdentity,
    NodeState,
    RegisteredNode,
    Registration,
)
from appliance.ha.settings import Setting, setting
from appliance.ha.store import (
    PRIORITY_RANGE,
    HaStore,
    StoreUnavailable,
    check_priority,
    live_primary_conflict,
    not_registered,
    twin_conflict,
)
from appliance.ha.timing import (
    DEFAULT_KEEPALIVE_S,
    ha_timeouts,
    is_online,
    judge_keepalive_s,
    lease_ttl_s,
    previous_to_record,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["ADMIN_STATES", "PgStore", "channel_for"]

_T = TypeVar("_T")

ADMIN_STATES = ("active", "stopped")


def _uuid(value: str | None) -> uuid.UUID | None:
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


class PgStore(HaStore):
    """The HA store over one psycopg 3 connection to the cluster's database.

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
    def on_connection(cls, conn: psycopg.Connection[Any], target: DbTarget, schema: str) -> PgStore:
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

    # --- the contract ------------------------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        """One single-row UPDATE by the database clock; no row updated means not registered."""
        nid = _uuid(node_id)
        if nid is None:
            raise not_registered(node_id)
        updated = self._run("record the heartbeat", lambda conn: conn.execute(self._q(Q.HEARTBEAT), (nid,)).rowcount)
        if updated == 0:
            raise not_registered(node_id)

    def snapshot(self) -> ClusterView:
        """Nodes, lease and settings in one REPEATABLE READ, READ ONLY transaction.

        REPEATABLE READ makes the three queries see one snapshot of the data, and ``now()`` is the
        same instant for all of them, so every age and remainder is measured from one point in time.
        """
        return self._run("read the cluster state", self._snapshot)

    def _snapshot(self, conn: psycopg.Connection[tuple[Any, ...]]) -> ClusterView:
        from psycopg import pq

        # Inside a caller's open transaction (registration in redirect) the snapshot is that transaction's.
        own = conn.info.transaction_status == pq.TransactionStatus.IDLE
        with conn.transaction():
            if own:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            node_rows = conn.execute(self._q(Q.SNAPSHOT_NODES)).fetchall()
            lease_row = conn.execute(self._q(Q.SNAPSHOT_LEASE)).fetchone()
            setting_rows = conn.execute(self._q(Q.SNAPSHOT_SETTINGS)).fetchall()
        if lease_row is None:
            raise self._no_lease_row()
        holder, epoch, remaining, handover_to, in_recovery, timeline = lease_row
        if in_recovery and not self._read_only:
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
                last_heartbeat=r[7] if isinstance(r[7], datetime) else None,
            )
            for r in node_rows
        )
        settings = {str(key): (str(value), float(age)) for key, value, age in setting_rows}
        keepalive = self._keepalive(settings.get(Setting.KEEPALIVE, (str(DEFAULT_KEEPALIVE_S), 0.0))[0])
        previous = settings.get(Q.PREVIOUS_KEEPALIVE_KEY)
        maintenance = settings.get(Setting.MAINTENANCE, ("off", 0.0))[0] == "on"
        lease = Lease(
            holder=None if holder is None else str(holder),
            epoch=int(epoch),
            remaining_s=None if remaining is None else float(remaining),
            handover_to=None if handover_to is None else str(handover_to),
            timeline=None if timeline is None else int(timeline),
        )
        db_check = float(settings.get(Setting.DB_CHECK, ("10", 0.0))[0])
        judge = judge_keepalive_s(keepalive, None if previous is None else (self._keepalive(previous[0]), previous[1]))
        vip = settings.get(Setting.VIP, ("", 0.0))[0] or None
        return ClusterView(nodes, lease, keepalive, maintenance, judge_keepalive_s=judge, db_check_s=db_check,
                           vip=vip)

    def _no_lease_row(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"HA store: schema {self._schema} on {self._server.hosts_text()} has no lease row",
            "The schema is damaged; redeploy it.",
        )

    def _keepalive(self, value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0:  # also NaN
            raise StoreUnavailable(
                f"HA store: cluster setting {Setting.KEEPALIVE.value} in schema {self._schema} has the invalid "
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
            raise not_registered(node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int | None:
            with conn.transaction():
                if conn.execute(self._q(Q.NODE_EXISTS), (me,)).fetchone() is None:
                    raise not_registered(node_id)
                row = conn.execute(
                    self._q(Q.ACQUIRE), {"me": me, "expected": expected_epoch, "ttl": float(ttl_s)}
                ).fetchone()
                if row is None:
                    return None
                conn.execute(self._q(Q.DEMOTE_OTHERS), (me,))
                conn.execute(self._q(Q.PROMOTE), (me,))
                return int(row[0])

        return self._run("take the lease", body)

    def renew(self, node_id: str, epoch: int, ttl_s: float) -> bool:
        """One UPDATE scoped to holder and epoch: a node that lost the lease can never extend it."""
        me = _uuid(node_id)
        if me is None:
            return False
        params = {"me": me, "epoch": epoch, "ttl": float(ttl_s)}
        return self._run("renew the lease", lambda conn: conn.execute(self._q(Q.RENEW), params).fetchone() is not None)

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
                released = conn.execute(self._q(Q.RELEASE), params).fetchone() is not None
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
            raise not_registered(target)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                # KEY SHARE: the target cannot be deleted before we commit.
                if wanted is not None and conn.execute(self._q(Q.NODE_EXISTS), (wanted,)).fetchone() is None:
                    raise not_registered(str(target))
                self._notify(conn)
                if conn.execute(self._q(Q.REQUEST_HANDOVER), (wanted,)).rowcount == 0:
                    raise self._no_lease_row()

        self._run("request the handover", body)

    def set_admin_state(self, node_id: str, state: str) -> None:
        """One UPDATE; ``state`` must be ``active`` or ``stopped`` (ValueError otherwise: a bug)."""
        if state not in ADMIN_STATES:
            raise ValueError(f"admin state must be one of {', '.join(ADMIN_STATES)}, not {state!r}")
        nid = _uuid(node_id)
        if nid is None:
            raise not_registered(node_id)
        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            with conn.transaction():
                count = conn.execute(self._q(Q.SET_ADMIN_STATE), (state, nid)).rowcount
                self._notify(conn)
                return count

        updated = self._run("set the admin state", body)
        if updated == 0:
            raise not_registered(node_id)

    def rename(self, node_id: str, name: str) -> None:
        """One UPDATE of the node's name; no row updated means not registered."""
        nid = _uuid(node_id)
        if nid is None:
            raise not_registered(node_id)
        updated = self._run("record the node's name", lambda conn: conn.execute(
            self._q(Q.RENAME), (name, nid)).rowcount)
        if updated == 0:
            raise not_registered(node_id)

    def set_priority(self, node_id: str, priority: int) -> None:
        """One UPDATE of the node's priority, woken agents at commit; no row updated: not registered."""
        check_priority(priority)
        nid = _uuid(node_id)
        if nid is None:
            raise not_registered(node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            with conn.transaction():
                count = conn.execute(self._q(Q.SET_PRIORITY), (priority, nid)).rowcount
                self._notify(conn)
                return count

        if self._run("set the node's priority", body) == 0:
            raise not_registered(node_id)

    # --- settings ----------------------------------------------------------------------------------

    def set_setting(self, setting_: Setting | str, value: str) -> None:
        """Upsert a setting; a new keepalive interval also records the one it replaces, atomically.

        The keepalive row is locked first, so concurrent changes serialise and ``keepalive_previous_s``
        always holds the value that was current just before the last change (or an older, longer one
        that may still be spreading: :func:`~appliance.ha.timing.previous_to_record`).
        """
        key = setting(setting_)
        key.check(value)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                if key is Setting.KEEPALIVE:
                    old = conn.execute(self._q(Q.LOCK_KEEPALIVE)).fetchone()
                    if old is not None and float(old[0]) != float(value):
                        row = conn.execute(self._q(Q.PREVIOUS_KEEPALIVE)).fetchone()
                        earlier = None if row is None else (float(row[0]), float(row[1]))
                        keep = previous_to_record(float(old[0]), earlier)
                        conn.execute(self._q(Q.UPSERT_SETTING), (Q.PREVIOUS_KEEPALIVE_KEY, f"{keep:g}"))
                conn.execute(self._q(Q.UPSERT_SETTING), (key.value, value))
                self._notify(conn)

        self._run(f"set {key.value}", body)

    def seed_settings(self, values: dict[Setting, str]) -> None:
        """The first settings of a freshly deployed cluster: upserted as they are, no change recorded."""
        checked = [(setting(k).value, setting(k).check(v)) for k, v in values.items()]

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                for key, value in checked:
                    conn.execute(self._q(Q.UPSERT_SETTING), (key, value))
                conn.execute(self._q(Q.FORGET_PREVIOUS_KEEPALIVE))
                self._notify(conn)

        self._run("set the cluster's first settings", body)

    # --- membership --------------------------------------------------------------------------------

    def register_node(self, me: NodeIdentity, *, role: str, product_version: str) -> Registration:
        """The contract's registration in one transaction; the node's address is the one the server sees."""
        if role not in ("primary", "standby"):
            raise ValueError(f"role must be primary or standby, not {role!r}")
        nid = _uuid(me.node_id)
        if nid is None:
            raise not_registered(me.node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> Registration:
            with conn.transaction():
                lease_before = _lease_record(conn.execute(self._q(Q.LOCK_LEASE)).fetchone())
                everyone = [_registered_node(r) for r in conn.execute(self._q(Q.LOCK_NODES)).fetchall()]
                view = self._snapshot(conn)  # the judged interval, by the same transaction's clock
                previous = next((n for n in everyone if n.node_id == me.node_id), None)
                twin = next((n for n in everyone if n.hardware_id == me.hardware_id and n.node_id != me.node_id),
                            None)
                if twin is not None:
                    raise twin_conflict(twin.name, twin.node_id, me.hardware_id)
                demoted = None
                if role == "primary":
                    other = next((n for n in everyone if n.role == "primary" and n.node_id != me.node_id), None)
                    if other is not None:
                        if is_online(other.heartbeat_age_s, view.judge_keepalive_s or view.keepalive_s):
                            raise live_primary_conflict(other.name, other.heartbeat_age_s)
                        conn.execute(self._q(Q.DEMOTE_NODE), (other.node_id,))
                        demoted = other
                addresses = tuple(str(r[0]) for r in conn.execute(self._q(Q.NODE_ADDRESSES), (nid,)).fetchall())
                # Priority is random at first registration (ties: node id); a known node keeps its own.
                priority = previous.priority if previous is not None else _random_priority()
                conn.execute(self._q(Q.UPSERT_NODE), (nid, me.hardware_id, me.name, priority, role, product_version))
                conn.execute(self._q(Q.DELETE_ADDRESSES), (nid,))
                conn.execute(self._q(Q.RECORD_CLIENT_ADDRESS), (nid,))
                if role == "primary":
                    if lease_before.holder != me.node_id:
                        conn.execute(self._q(Q.TAKE_LEASE), (nid, lease_ttl_s(view.keepalive_s)))
                elif lease_before.holder == me.node_id:
                    # A node re-joining as standby must not keep the lease it held as primary.
                    conn.execute(self._q(Q.DROP_LEASE))
                lease_after = _lease_record(conn.execute(self._q(Q.LEASE_ROW)).fetchone())
                self._notify(conn)
                return Registration(previous, addresses, demoted, lease_before, lease_after, view.keepalive_s)

        return self._run("register the node", body)

    def undo_registration(self, me: NodeIdentity, done: Registration) -> None:
        nid = _uuid(me.node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                if done.previous is None:
                    conn.execute(self._q(Q.UNDO_NEW_NODE_LEASE), (nid,))
                    conn.execute(self._q(Q.DELETE_NODE), (nid,))
                else:
                    p = done.previous
                    conn.execute(self._q(Q.RESTORE_NODE), (p.name, p.role, p.admin_state, nid))
                    conn.execute(self._q(Q.DELETE_ADDRESSES), (nid,))
                    for address in done.previous_addresses:
                        conn.execute(self._q(Q.INSERT_ADDRESS), (nid, address))
                if done.demoted is not None:
                    conn.execute(self._q(Q.PROMOTE_NODE), (_uuid(done.demoted.node_id),))
                before = done.lease_before
                holder = _uuid(before.holder)
                conn.execute(self._q(Q.RESTORE_LEASE), (holder, before.expires_at, holder))
                self._notify(conn)

        self._run("undo the registration", body)

    def unregister_node(self, node_id: str) -> None:
        nid = _uuid(node_id)
        if nid is None:
            raise not_registered(node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            with conn.transaction():
                conn.execute(self._q(Q.LOCK_LEASE))
                conn.execute(self._q(Q.FREE_LEASE_OF), (nid,))
                conn.execute(self._q(Q.WITHDRAW_HANDOVER_TO), (nid,))
                count = conn.execute(self._q(Q.DELETE_NODE), (nid,)).rowcount
                self._notify(conn)
                return count

        if self._run("remove the node from the cluster", body) == 0:
            raise not_registered(node_id)


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the HA state under ``schema`` (a plain identifier)."""
    return f"appliance_ha_{schema}"



def _lease_record(row: tuple[Any, ...] | None) -> LeaseRecord:
    if row is None:
        return LeaseRecord(None, 0, None)
    timeline = row[3] if len(row) > 3 and row[3] is not None else None
    return LeaseRecord(None if row[0] is None else str(row[0]), int(row[1]), row[2],
                       None if timeline is None else int(timeline))


def _registered_node(row: tuple[Any, ...]) -> RegisteredNode:
    return RegisteredNode(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), str(row[5]),
                          None if row[6] is None else float(row[6]))


def _random_priority() -> int:
    return random.randint(*PRIORITY_RANGE)
