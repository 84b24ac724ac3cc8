"""The PostgreSQL store's registry: registration, admin state, priority, boot start, names, join codes.

A part of :class:`~appliance.ha.pgstore.PgStore`, split off along the store's seams (see
:mod:`appliance.ha.pgbase`): membership changes are made by the shell and ``redirect``, rarely, and
never by the HA loop's own ticks, so they live apart from the heartbeat, lease and settings statements.
Every change that an event tells of records it in the same transaction. The contract is
:class:`~appliance.ha.store.HaStore`'s; the SQL is in :mod:`appliance.ha.pgsql`.
"""

from __future__ import annotations

import hmac
import random
from datetime import datetime
from typing import TYPE_CHECKING, Any, LiteralString

from appliance.errors import Conflict
from appliance.ha import pgsql as Q
from appliance.ha.events import NewEvent
from appliance.ha.model import (
    ClaimOutcome,
    CodeState,
    JoinCodeInfo,
    LeaseRecord,
    NodeIdentity,
    RegisteredNode,
    Registration,
)
from appliance.ha.pgbase import PgBase, as_uuid
from appliance.ha.store import (
    REGISTRATION_PRIORITY,
    check_boot_start,
    check_priority,
    code_conflict,
    live_primary_conflict,
    not_registered,
    twin_conflict,
)
from appliance.ha.timing import is_online, lease_ttl_s

if TYPE_CHECKING:
    import psycopg

ADMIN_STATES = ("active", "stopped")


class PgMembership(PgBase):
    """Registry and join-code methods of :class:`~appliance.ha.pgstore.PgStore`."""

    def _update_node(self, action: str, statement: LiteralString, value: object, node_id: str,
                     event: NewEvent | None) -> None:
        """One UPDATE of the node's row and ``event``, in one transaction; woken agents at commit."""
        nid = as_uuid(node_id)
        if nid is None:
            raise not_registered(node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            with conn.transaction():
                count = conn.execute(self._q(statement), (value, nid)).rowcount
                if count and event is not None:
                    self._record(conn, [event], None)
                self._notify(conn)
                return count

        if self._run(action, body) == 0:
            raise not_registered(node_id)

    def set_admin_state(self, node_id: str, state: str, *, event: NewEvent | None = None) -> None:
        """One UPDATE; ``state`` must be ``active`` or ``stopped`` (ValueError otherwise: a bug)."""
        if state not in ADMIN_STATES:
            raise ValueError(f"admin state must be one of {', '.join(ADMIN_STATES)}, not {state!r}")
        self._update_node("set the admin state", Q.SET_ADMIN_STATE, state, node_id, event)

    def rename(self, node_id: str, name: str) -> None:
        """One UPDATE of the node's name; no row updated means not registered."""
        nid = as_uuid(node_id)
        if nid is None:
            raise not_registered(node_id)
        updated = self._run("record the node's name", lambda conn: conn.execute(
            self._q(Q.RENAME), (name, nid)).rowcount)
        if updated == 0:
            raise not_registered(node_id)

    def set_priority(self, node_id: str, priority: int, *, event: NewEvent | None = None) -> None:
        """One UPDATE of the node's priority, woken agents at commit; no row updated: not registered."""
        check_priority(priority)
        self._update_node("set the node's priority", Q.SET_PRIORITY, priority, node_id, event)

    def set_boot_start(self, node_id: str, mode: str, *, event: NewEvent | None = None) -> None:
        check_boot_start(mode)
        self._update_node("set the node's boot start", Q.SET_BOOT_START, mode, node_id, event)

    def register_node(self, me: NodeIdentity, *, role: str, product_version: str) -> Registration:
        """The contract's registration in one transaction; the node's address is the one the server sees."""
        if role not in ("primary", "standby"):
            raise ValueError(f"role must be primary or standby, not {role!r}")
        nid = as_uuid(me.node_id)
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
        nid = as_uuid(me.node_id)

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
                    conn.execute(self._q(Q.PROMOTE_NODE), (as_uuid(done.demoted.node_id),))
                before = done.lease_before
                holder = as_uuid(before.holder)
                conn.execute(self._q(Q.RESTORE_LEASE), (holder, before.expires_at, holder))
                self._notify(conn)

        self._run("undo the registration", body)

    def unregister_node(self, node_id: str, *, event: NewEvent | None = None) -> None:
        nid = as_uuid(node_id)
        if nid is None:
            raise not_registered(node_id)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            with conn.transaction():
                conn.execute(self._q(Q.LOCK_LEASE))
                conn.execute(self._q(Q.FREE_LEASE_OF), (nid,))
                conn.execute(self._q(Q.WITHDRAW_HANDOVER_TO), (nid,))
                conn.execute(self._q(Q.DELETE_CODES_OF), (nid,))
                count = conn.execute(self._q(Q.DELETE_NODE), (nid,)).rowcount
                if count and event is not None:
                    self._record(conn, [event], None)
                self._notify(conn)
                return count

        if self._run("remove the node from the cluster", body) == 0:
            raise not_registered(node_id)


    # --- join codes --------------------------------------------------------------------------------

    def issue_join_code(self, code_id: str, secret_hash: bytes, issued_by: str, lifetime_s: float) -> None:
        issuer = as_uuid(issued_by)
        if issuer is None:
            raise not_registered(issued_by)

        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                if conn.execute(self._q(Q.NODE_EXISTS), (issuer,)).fetchone() is None:
                    raise not_registered(issued_by)
                conn.execute(self._q(Q.FORGET_CODES))
                if conn.execute(self._q(Q.ISSUE_CODE), (code_id, secret_hash, issuer, float(lifetime_s))
                                ).fetchone() is None:
                    raise Conflict(f"join code {code_id} exists already")
                self._notify_events(conn)

        self._run("record the join code", body)

    def join_codes(self) -> list[JoinCodeInfo]:
        rows = self._run("read the join codes", lambda conn: conn.execute(self._q(Q.LIST_CODES)).fetchall())
        return [_code_info(r) for r in rows]

    def revoke_join_code(self, code_id: str) -> bool:
        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
            with conn.transaction():
                done = conn.execute(self._q(Q.REVOKE_CODE), (code_id,)).fetchone() is not None
                self._notify_events(conn)
                return done

        return self._run("revoke the join code", body)

    def claim_join_code(self, code_id: str, secret_hash: bytes, hardware_id: str, *,
                        max_failures: int) -> ClaimOutcome:
        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> ClaimOutcome:
            with conn.transaction():
                row = conn.execute(self._q(Q.LOCK_CODE), (code_id,)).fetchone()
                if row is None:
                    return ClaimOutcome.UNKNOWN
                stored, valid, used, revoked, claimed_by = row
                if not hmac.compare_digest(bytes(stored), secret_hash):
                    conn.execute(self._q(Q.CODE_FAILED), (max_failures, code_id))
                    self._notify_events(conn)
                    return ClaimOutcome.UNKNOWN
                if used:
                    return ClaimOutcome.USED
                if revoked:
                    return ClaimOutcome.REVOKED
                if not valid:
                    return ClaimOutcome.EXPIRED
                if claimed_by not in (None, hardware_id):
                    return ClaimOutcome.TAKEN
                conn.execute(self._q(Q.CLAIM_CODE), (hardware_id, code_id))
                return ClaimOutcome.OK

        return self._run("check the join code", body)

    def use_join_code(self, code_id: str, hardware_id: str, node_name: str) -> None:
        def body(conn: psycopg.Connection[tuple[Any, ...]]) -> str | None:
            with conn.transaction():
                if conn.execute(self._q(Q.USE_CODE), (node_name, code_id, hardware_id)).fetchone() is not None:
                    self._notify_events(conn)
                    return None
                row = conn.execute(self._q(Q.LOCK_CODE), (code_id,)).fetchone()
                if row is None:
                    return "it is unknown to this cluster"
                _stored, valid, used, revoked, claimed_by = row
                return ("it was used already" if used else "it was revoked" if revoked else
                        "it expired" if not valid else "another node claimed it" if claimed_by != hardware_id
                        else "it cannot be used")

        why = self._run("spend the join code", body)
        if why is not None:
            raise code_conflict(code_id, why)

    def outstanding_join_codes(self, issued_by: str) -> float | None:
        issuer = as_uuid(issued_by)
        if issuer is None:
            return None
        row = self._run("read the outstanding join codes", lambda conn: conn.execute(
            self._q(Q.OUTSTANDING_CODES), (issuer,)).fetchone())
        return None if row is None or row[0] is None else float(row[0])


def _code_info(row: tuple[Any, ...]) -> JoinCodeInfo:
    code_id, issuer, issuer_id, issued_at, left, claimed_by, used_by, used, revoked, failures = row
    state = CodeState.USED if used else CodeState.REVOKED if revoked else CodeState.EXPIRED if float(left) <= 0 \
        else CodeState.CLAIMED if claimed_by else CodeState.OUTSTANDING
    return JoinCodeInfo(str(code_id), str(issuer), str(issuer_id), issued_at if isinstance(issued_at, datetime)
                        else datetime.fromisoformat(str(issued_at)), float(left), state,
                        None if claimed_by is None else str(claimed_by), None if used_by is None else str(used_by),
                        int(failures))


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
    return random.randint(*REGISTRATION_PRIORITY)
