"""The store contract: where the cluster's HA state lives (PostgreSQL in production, memory in tests).

Every method is one atomic step. The docstrings state *how* it must be atomic; both implementations
(:mod:`appliance.ha.pgstore`, :mod:`appliance.ha.memstore`) pass one contract test suite. Times are
the store's own clock (the database's ``now()``); callers never pass a wall-clock time in.

Every method raises :class:`StoreUnavailable` when the store cannot be reached or does not answer
in time; the caller then treats the outcome as unknown (for a renewal: *not* renewed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from appliance.errors import Conflict, Unavailable
from appliance.ha.events import Event, NewEvent
from appliance.ha.model import Claimed, ClaimOutcome, ClusterView, JoinCodeInfo, NodeIdentity, Registration
from appliance.ha.notify import Channels
from appliance.ha.settings import Setting

PRIORITY_RANGE = (0, 1_000_000)  # the schema's CHECK; 0: never primary
REGISTRATION_PRIORITY = (1, 1_000_000)  # registration picks a random one in it
BOOT_START = ("enabled", "disabled", "keep")


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not \
            PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise ValueError(f"priority must be a whole number from {PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}")
    return priority


def check_boot_start(mode: str) -> str:
    if mode not in BOOT_START:
        raise ValueError(f"boot start must be one of {', '.join(BOOT_START)}, not {mode!r}")
    return mode


class StoreUnavailable(Unavailable):
    """The store could not be reached, or did not answer within its timeouts."""


class NotRegistered(Unavailable):
    """This node has no row in the registry (it was never redirected/initialised, or was removed)."""


class HaStore(ABC):
    def close(self) -> None:  # noqa: B027 (deliberately not abstract: a store may hold nothing to close)
        """Let go of any connection; the store stays usable (the next call connects again)."""

    # --- the HA loop -------------------------------------------------------------------------------

    @abstractmethod
    def heartbeat(self, node_id: str) -> None:
        """Record that ``node_id`` is alive: ``last_heartbeat = now()``, ``heartbeat_seq + 1``.

        One single-row UPDATE. :raises NotRegistered: no such node.
        """

    @abstractmethod
    def snapshot(self) -> ClusterView:
        """Read nodes, lease and settings in ONE transaction (a consistent view), with every age and
        remainder computed against the store's clock inside that transaction."""

    @abstractmethod
    def try_acquire(self, node_id: str, expected_epoch: int, ttl_s: float) -> int | None:
        """Take the lease if it is free; return the new epoch, or None if someone else won.

        Must be ONE compare-and-set: ``UPDATE lease SET holder = me, epoch = epoch + 1,
        expires_at = now() + ttl, handover_to = NULL WHERE epoch = expected AND (holder IS NULL OR
        expires_at IS NULL OR expires_at <= now())``. Two nodes racing can never both succeed, and a
        live lease is never taken, not even by a planned successor: it waits for :meth:`release`,
        which expires the lease. In the same transaction the registry's roles follow.
        """

    @abstractmethod
    def renew(self, node_id: str, epoch: int, ttl_s: float) -> bool:
        """Extend the lease to ``now() + ttl`` if ``node_id`` still holds it at ``epoch``.

        ONE conditional UPDATE scoped to holder *and* epoch (a stale node can never renew a lease
        that changed hands). False: not renewed (lost).
        """

    @abstractmethod
    def release(self, node_id: str, epoch: int, handover_to: str | None) -> bool:
        """Give the lease up at once (``expires_at = now()``), naming a successor if any.

        ONE conditional UPDATE scoped to holder, epoch and a live lease; the holder stays recorded so
        that only ``handover_to`` (or, if None, the best candidate) takes over. False: not the holder,
        or already released/lapsed (then nothing changes and nobody is woken).
        """

    @abstractmethod
    def request_handover(self, target: str | None, *, event: NewEvent | None = None) -> None:
        """Ask the current holder to hand over to ``target`` (switchover), recording when it was asked
        (the lease's ``handover_requested_s``); None clears the request. ``event`` is recorded in the
        same transaction (as by :meth:`record_events`, delivered by any node)."""

    @abstractmethod
    def set_admin_state(self, node_id: str, state: str, *, event: NewEvent | None = None) -> None:
        """``active`` or ``stopped`` (taken out of the cluster), with ``event`` in the same transaction.
        :raises NotRegistered: no such node."""

    @abstractmethod
    def set_priority(self, node_id: str, priority: int, *, event: NewEvent | None = None) -> None:
        """Set the node's priority (higher: preferred when the lease is free; ties: lowest node id; 0: never
        primary), with ``event`` in the same transaction. One UPDATE.
        :raises ValueError: outside ``PRIORITY_RANGE``. :raises NotRegistered: no such node."""

    @abstractmethod
    def set_boot_start(self, node_id: str, mode: str, *, event: NewEvent | None = None) -> None:
        """Set what the node does when its agent starts (``BOOT_START``), with ``event`` in the same
        transaction. :raises ValueError: another mode. :raises NotRegistered: no such node."""

    @abstractmethod
    def rename(self, node_id: str, name: str) -> None:
        """Record the node's current name (after ``system set hostname``). One UPDATE.

        :raises NotRegistered: no such node.
        """

    # --- settings ----------------------------------------------------------------------------------

    @abstractmethod
    def set_setting(self, setting: Setting | str, value: str, *, event: NewEvent | None = None) -> None:
        """Write a cluster setting (value checked with :meth:`Setting.check` first: ValueError).

        One transaction, ``event`` recorded in it. A new keepalive interval also records, atomically, the
        interval it replaced and when (:func:`~appliance.ha.timing.previous_to_record`), so that liveness
        is judged by the longer of the two while the change spreads. Listening agents are woken at commit.
        """

    @abstractmethod
    def seed_settings(self, values: dict[Setting, str]) -> None:
        """Give a cluster nobody runs on yet its first settings (at deployment): written as they are,
        no change of interval recorded. Values checked as in :meth:`set_setting`."""

    # --- membership --------------------------------------------------------------------------------

    @abstractmethod
    def register_node(self, me: NodeIdentity, *, role: str, product_version: str) -> Registration:
        """Register (or re-register) ``me`` with ``role`` (``primary`` | ``standby``), in one transaction.

        Lock order lease -> nodes (the same as :meth:`try_acquire`, so the two never deadlock). A primary
        registration is refused while another registered primary is online (by the judged interval); a
        dead one is demoted to standby. The primary takes the lease with a new epoch and the lease
        lifetime of the current interval; a node re-joining as standby gives up a lease it held (the
        epoch grows). A new node gets a random priority; a known one keeps its own. The node's address is
        the one the store sees it connect from (none in memory).

        :raises Conflict: another primary is online, or another node has this hardware id.
        """

    @abstractmethod
    def undo_registration(self, me: NodeIdentity, done: Registration) -> None:
        """Put the registry back as it was before ``done`` (one transaction). The epoch only ever grows:
        putting the previous holder back is a new epoch."""

    @abstractmethod
    def unregister_node(self, node_id: str, *, event: NewEvent | None = None) -> None:
        """Remove ``node_id`` from the registry (one transaction, ``event`` recorded in it); a lease it holds
        is freed with a new epoch, a handover naming it is withdrawn, the join codes it issued go with it.
        :raises NotRegistered: no such node."""

    # --- join codes --------------------------------------------------------------------------------

    @abstractmethod
    def issue_join_code(self, code_id: str, secret_hash: bytes, issued_by: str, lifetime_s: float) -> None:
        """Record a new code, valid for ``lifetime_s`` from now (store clock); only the hash of its secret
        is kept. Codes spent, revoked or expired for a day are forgotten. :raises NotRegistered: no such
        issuer. :raises Conflict: the id exists."""

    @abstractmethod
    def join_codes(self) -> list[JoinCodeInfo]:
        """Every code not yet forgotten, newest first, with its state by the store's clock."""

    @abstractmethod
    def revoke_join_code(self, code_id: str) -> bool:
        """Cancel a code that may still be used; False: no such code, or it is spent/expired/revoked."""

    @abstractmethod
    def claim_join_code(self, code_id: str, secret_hash: bytes, hardware_id: str, *,
                        max_failures: int) -> ClaimOutcome:
        """The join service's check, one transaction on the code's row: OK if the secret matches and the
        code is outstanding (or claimed by the same hardware id: a retry); it is then claimed by
        ``hardware_id``. A wrong secret counts a failure; at ``max_failures`` the code is revoked."""

    @abstractmethod
    def use_join_code(self, code_id: str, hardware_id: str, node_name: str) -> None:
        """Spend the code (in the joining node's registration transaction): it must be claimed by
        ``hardware_id``, not expired, revoked or used. :raises Conflict: it cannot be used (why)."""

    @abstractmethod
    def outstanding_join_codes(self, issued_by: str) -> float | None:
        """Seconds (store clock) until the last of the codes ``issued_by`` issued that may still be used
        expires; None: none (its join service may stop listening)."""

    # --- events and notifications ------------------------------------------------------------------

    @abstractmethod
    def record_events(self, events: Sequence[NewEvent], *, deliver_by: str | None) -> list[str]:
        """Record events (one transaction), each at ``now() - age_s`` (or its ``wall_time`` when given),
        skipping one whose id is recorded already (a retried write) or whose ``dedup_key`` was recorded
        within :data:`~appliance.ha.events.DEDUP_WINDOW_S` (the same occurrence reported by another
        node). An event without an epoch gets the lease's. For every channel configured now, a pending
        delivery is created, claimed by ``deliver_by`` (the writer's agent sends it). Events beyond the
        retention bounds are removed. Listening agents are woken at commit. Returns the ids recorded."""

    @abstractmethod
    def events(self, *, since_s: float | None = None, limit: int = 50, kind: str | None = None) -> list[Event]:
        """The newest ``limit`` events (of ``kind``, at most ``since_s`` old), oldest first, with the
        state of their deliveries."""

    @abstractmethod
    def claim_deliveries(self, node_id: str, channels: Sequence[str], *, liveness_s: float, claim_s: float,
                         limit: int = 8, busy: Sequence[tuple[int, str]] = ()) -> Claimed:
        """Claim (one transaction) pending deliveries on ``channels`` (not those in ``busy``, (event seq,
        channel) pairs the caller is sending already) that are due and unclaimed, or
        claimed by ``node_id``, or by a node that is not online (heartbeat older than ``liveness_s``, or
        not registered any more), or whose claim expired; each claim lasts ``claim_s``. Also says when
        another pending one may become claimable. A delivery past its deadline is marked failed."""

    @abstractmethod
    def finish_delivery(self, event_seq: int, channel: str, node_id: str, *, delivered: bool,
                        error: str | None = None, retry_in_s: float | None = None) -> bool:
        """Record an attempt's outcome if ``node_id`` still holds the claim: delivered; or failed, then
        pending again in ``retry_in_s`` (claim released) or, past the deadline or with None, failed for
        good. False: the claim had moved on (nothing recorded)."""

    @abstractmethod
    def notify_channels(self) -> Channels:
        """The configured channels and their sealed secrets."""

    @abstractmethod
    def set_notify_channel(self, channel: str, config: str | None, secrets: dict[str, bytes | None], *,
                           event: NewEvent | None = None) -> None:
        """Set (JSON, checked like the setting) or remove (None) a channel, and in the same transaction its
        sealed secrets (name -> value; None removes it) and ``event``."""


def twin_conflict(name: str, node_id: str, hardware_id: str) -> Conflict:
    """The refusal when another registered node has this node's hardware id (both stores raise it)."""
    return Conflict(
        f"node {name} ({node_id}) is registered with this node's hardware id {hardware_id}",
        hint="remove the stale registration first (it is this machine, initialised again)",
    )


def live_primary_conflict(name: str, heartbeat_age_s: float | None) -> Conflict:
    """The refusal of a primary registration while another primary is online (both stores raise it)."""
    return Conflict(
        f"node {name} is already the live primary of this cluster (heard from {heartbeat_age_s or 0:.0f} s ago)",
        hint="join this node with --is_secondary_node, or stop the other primary first",
    )


def code_conflict(code_id: str, why: str) -> Conflict:
    """The refusal to spend a join code that cannot be used (both stores raise it)."""
    return Conflict(f"join code {code_id} cannot be used: {why}",
                    hint="issue a new code with 'ha add node' on an online node of the cluster")


def not_registered(node_id: str) -> NotRegistered:
    return NotRegistered(f"node {node_id} is not registered in the cluster")
