"""The PostgreSQL :class:`~appliance.ha.store.HaStore`: the cluster's HA state in the shared database.

:class:`PgStore` is the store the agent, the shell and ``redirect`` use. It is put together from three
parts, split along the store's seams so that each stays readable: the connection (:mod:`appliance.ha.pgbase`:
one dedicated connection, short timeouts, every failure a ``StoreUnavailable``), the registry and join
codes (:mod:`appliance.ha.pgmembers`) and the events and notifications (:mod:`appliance.ha.pgevents`).
This module holds what the HA loop runs at every tick (heartbeat, snapshot, the lease) and the cluster
settings.

* **The database clock only**: every time written or compared is ``now()`` (the transaction's start
  time, the same for every statement of one transaction); ages and remainders are computed by the
  server, so no decision compares this host's clock with another's.
* **One transaction per contract call**, and each lease change is one conditional UPDATE (see the
  methods).

psycopg is imported lazily: importing this module does not load it (the shell imports it on its start-up
path). The SQL is in :mod:`appliance.ha.pgsql`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from appliance.ha import pgsql as Q
from appliance.ha.events import NewEvent
from appliance.ha.model import ClusterView, Lease, NodeState
from appliance.ha.pgbase import as_uuid, channel_for, events_channel_for
from appliance.ha.pgevents import PgEvents
from appliance.ha.pgmembers import ADMIN_STATES, PgMembership
from appliance.ha.settings import Setting, setting
from appliance.ha.store import HaStore, StoreUnavailable, not_registered
from appliance.ha.timing import DEFAULT_KEEPALIVE_S, judge_keepalive_s, previous_to_record
from appliance.names import node_name_from_db

if TYPE_CHECKING:
    import psycopg

__all__ = ["ADMIN_STATES", "PgStore", "channel_for", "events_channel_for"]


class PgStore(PgMembership, PgEvents, HaStore):
    """The HA store over one psycopg 3 connection to the cluster's database: the lease, heartbeats and
    settings here; the registry and join codes in :class:`PgMembership`, events and notifications in
    :class:`PgEvents`. The constructor's parameters and the threading rules are :class:`PgBase`'s.
    """

    # --- the contract ------------------------------------------------------------------------------

    def heartbeat(self, node_id: str) -> None:
        """One single-row UPDATE by the database clock; no row updated means not registered."""
        nid = as_uuid(node_id)
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
        holder, epoch, remaining, handover_to, in_recovery, timeline, asked = lease_row
        if in_recovery and not self._read_only:
            # A read-write connection cannot land on a standby, but a proxy in between could move it:
            # a standby's rows may be stale, so do not decide anything from them.
            raise self._read_only_server()
        nodes = tuple(
            NodeState(
                node_id=str(r[0]),
                name=node_name_from_db(r[1], str(r[0])),  # checked again: rows may predate schema v5
                priority=int(r[2]),
                role=str(r[3]),
                admin_state=str(r[4]),
                heartbeat_age_s=None if r[5] is None else float(r[5]),
                heartbeat_seq=int(r[6]),
                last_heartbeat=r[7] if isinstance(r[7], datetime) else None,
                boot_start=str(r[8]),
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
            handover_requested_s=None if asked is None or handover_to is None else float(asked),
        )
        db_check = float(settings.get(Setting.DB_CHECK, ("10", 0.0))[0])
        judge = judge_keepalive_s(keepalive, None if previous is None else (self._keepalive(previous[0]), previous[1]))
        vip = settings.get(Setting.VIP, ("", 0.0))[0] or None
        return ClusterView(nodes, lease, keepalive, maintenance, judge_keepalive_s=judge, db_check_s=db_check,
                           vip=vip, failback=settings.get(Setting.FAILBACK, ("off", 0.0))[0] == "on")

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
        me = as_uuid(node_id)
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
        me = as_uuid(node_id)
        if me is None:
            return False
        params = {"me": me, "epoch": epoch, "ttl": float(ttl_s)}
        return self._run("renew the lease", lambda conn: conn.execute(self._q(Q.RENEW), params).fetchone() is not None)

    def release(self, node_id: str, epoch: int, handover_to: str | None) -> bool:
        """One UPDATE scoped to holder and epoch: ``expires_at = now()``, the holder stays recorded.

        Listening agents are notified at commit, so the successor takes over at once, not at its next tick.
        """
        me = as_uuid(node_id)
        if me is None:
            return False
        params = {"me": me, "epoch": epoch, "target": as_uuid(handover_to)}

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
            with conn.transaction():
                released = conn.execute(self._q(Q.RELEASE), params).fetchone() is not None
                if released:
                    self._notify(conn)
                return released

        return self._run("release the lease", body)

    def request_handover(self, target: str | None, *, event: NewEvent | None = None) -> None:
        """Record (or clear) the planned successor and when it was asked; an unknown target is NotRegistered."""
        wanted = as_uuid(target)
        if target is not None and wanted is None:
            raise not_registered(target)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                # KEY SHARE: the target cannot be deleted before we commit.
                if wanted is not None and conn.execute(self._q(Q.NODE_EXISTS), (wanted,)).fetchone() is None:
                    raise not_registered(str(target))
                self._notify(conn)
                if conn.execute(self._q(Q.REQUEST_HANDOVER), {"target": wanted}).rowcount == 0:
                    raise self._no_lease_row()
                if event is not None:
                    self._record(conn, [event], None)

        self._run("request the handover", body)

    # --- settings ----------------------------------------------------------------------------------

    def set_setting(self, setting_: Setting | str, value: str, *, event: NewEvent | None = None) -> None:
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
                if event is not None:
                    self._record(conn, [event], None)
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

