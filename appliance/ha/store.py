"""The store contract: where the cluster's HA state lives (PostgreSQL in production, memory in tests).

Every method is one atomic step. The docstrings state *how* it must be atomic; both implementations
(:mod:`appliance.ha.pgstore`, :mod:`appliance.ha.memstore`) pass one contract test suite. Times are
the store's own clock (the database's ``now()``); callers never pass a wall-clock time in.

Every method raises :class:`StoreUnavailable` when the store cannot be reached or does not answer
in time; the caller then treats the outcome as unknown (for a renewal: *not* renewed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from appliance.errors import Unavailable
from appliance.ha.model import ClusterView

KEEPALIVE_RANGE_S = (1, 30)


class StoreUnavailable(Unavailable):
    """The store could not be reached, or did not answer within its timeouts."""


class NotRegistered(Unavailable):
    """This node has no row in the registry (it was never redirected/initialised, or was removed)."""


class HaStore(ABC):
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
    def rename(self, node_id: str, name: str) -> None:
        """Record the node's current name (after ``system set hostname``). One UPDATE.

        :raises NotRegistered: no such node.
        """

    @abstractmethod
    def set_setting(self, key: str, value: str) -> None:
        """Write a cluster setting (``keepalive_interval_s``, ``maintenance``); validated by the caller."""
