"""The store contract: where the cluster's HA state lives (PostgreSQL in production, memory in tests).

Every method is one atomic step. The docstrings state *how* it must be atomic; both implementations
(:mod:`appliance.ha.pgstore`, :mod:`appliance.ha.memstore`) pass one contract test suite. Times are
the store's own clock (the database's ``now()``); callers never pass a wall-clock time in.

Every method raises :class:`StoreUnavailable` when the store cannot be reached or does not answer
in time; the caller then treats the outcome as unknown (for a renewal: *not* renewed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from appliance.errors import Conflict, Unavailable
from appliance.ha.model import ClusterView, NodeIdentity, Registration
from appliance.ha.settings import Setting

PRIORITY_RANGE = (1, 1_000_000)  # the schema's CHECK; registration picks a random one in it


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not \
            PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise ValueError(f"priority must be a whole number from {PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}")
    return priority


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
    def request_handover(self, target: str | None) -> None:
        """Ask the current holder to hand over to ``target`` (switchover); None clears the request."""

    @abstractmethod
    def set_admin_state(self, node_id: str, state: str) -> None:
        """``active`` or ``stopped`` (taken out of the cluster). :raises NotRegistered: no such node."""

    @abstractmethod
    def set_priority(self, node_id: str, priority: int) -> None:
        """Set the node's priority (higher: preferred when the lease is free; ties: lowest node id).
        One UPDATE. :raises ValueError: outside ``PRIORITY_RANGE``. :raises NotRegistered: no such node."""

    @abstractmethod
    def rename(self, node_id: str, name: str) -> None:
        """Record the node's current name (after ``system set hostname``). One UPDATE.

        :raises NotRegistered: no such node.
        """

    # --- settings ----------------------------------------------------------------------------------

    @abstractmethod
    def set_setting(self, setting: Setting | str, value: str) -> None:
        """Write a cluster setting (value checked with :meth:`Setting.check` first: ValueError).

        One transaction. A new keepalive interval also records, atomically, the interval it replaced
        and when (:func:`~appliance.ha.timing.previous_to_record`), so that liveness is judged by the
        longer of the two while the change spreads. Listening agents are woken at commit.
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
    def unregister_node(self, node_id: str) -> None:
        """Remove ``node_id`` from the registry (one transaction); a lease it holds is freed with a new
        epoch, and a handover naming it is withdrawn. :raises NotRegistered: no such node."""


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


def not_registered(node_id: str) -> NotRegistered:
    return NotRegistered(f"node {node_id} is not registered in the cluster")
