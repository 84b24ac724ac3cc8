"""The HA core's data: an immutable snapshot of the cluster, this node's local state, and decisions.

Times in a snapshot are *ages and remainders computed by the database clock* (``now() - x``), so no
decision ever compares this node's clock with another's. Local deadlines are on this node's
monotonic clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from appliance.ha.timing import DEFAULT_KEEPALIVE_S, is_online


@dataclass(frozen=True)
class NodeIdentity:
    """Who a node is: its key in the registry, its stable hardware id, and its current name."""

    node_id: str
    hardware_id: str
    name: str


@dataclass(frozen=True)
class NodeState:
    """One registered app node as seen in a snapshot."""

    node_id: str
    name: str
    priority: int
    role: str  # primary | standby (as registered; the lease says who leads)
    admin_state: str  # active | stopped (taken out of the cluster by the admin)
    heartbeat_age_s: float | None  # now() - last_heartbeat, by the DB clock; None: never
    heartbeat_seq: int
    last_heartbeat: datetime | None = None  # as the store recorded it: shown to people, never compared
    boot_start: str = "enabled"  # enabled | disabled | keep: what the node does when its agent starts


@dataclass(frozen=True)
class Lease:
    holder: str | None
    epoch: int  # fencing token: grows with every change of holder
    remaining_s: float | None  # expires_at - now(), by the DB clock; negative once expired; None: never set
    handover_to: str | None  # a planned successor (switchover, clean stop)
    # The database history (timeline) the epoch was issued on: (timeline, epoch) is the fencing token,
    # which tells apart epochs issued on two diverged histories after a database split brain.
    timeline: int | None = None
    # Seconds since an admin asked for the handover (a switchover), by the DB clock; None: not asked
    # (none pending, or a clean stop named the successor).
    handover_requested_s: float | None = None

    @property
    def expired(self) -> bool:
        return self.holder is None or self.remaining_s is None or self.remaining_s <= 0


@dataclass(frozen=True)
class ClusterView:
    """Everything a decision needs, read in one transaction."""

    nodes: tuple[NodeState, ...]
    lease: Lease
    keepalive_s: float  # the interval nodes heartbeat and renew at now
    maintenance: bool
    # The interval liveness is judged by: the longer of the old and new one while a change of the
    # keepalive interval propagates, so nobody is judged dead by a node that has not adopted it yet.
    judge_keepalive_s: float | None = None
    db_check_s: float = DEFAULT_KEEPALIVE_S  # how often each node probes the configured database hosts
    vip: str | None = None  # the cluster's virtual IP (ADDRESS/PREFIX), held by the acting primary
    failback: bool = False  # a preferred (higher-priority) node coming back takes the role over

    def node(self, node_id: str) -> NodeState | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def named(self, name: str) -> NodeState | None:
        return next((n for n in self.nodes if n.name == name), None)

    def online(self, node: NodeState) -> bool:
        """Heard from recently enough (:func:`~appliance.ha.timing.is_online`, by the DB clock)."""
        return is_online(node.heartbeat_age_s, self.judge_keepalive_s or self.keepalive_s)

    def holder(self) -> NodeState | None:
        """The node holding a live lease (the acting primary), if any."""
        lease = self.lease
        return None if lease.expired or lease.holder is None else self.node(lease.holder)

    def live_primary(self, exclude: str | None = None) -> NodeState | None:
        """The node registered as primary, if it is online (another primary must not register then)."""
        return next((n for n in self.nodes if n.role == "primary" and n.node_id != exclude and self.online(n)),
                    None)

    def candidates(self) -> list[NodeState]:
        """Nodes that may lead, best first: online, in the cluster, priority above 0 (0: never primary);
        highest priority, then lowest id."""
        eligible = [n for n in self.nodes if n.admin_state == "active" and n.priority > 0 and self.online(n)]
        return sorted(eligible, key=lambda n: (-n.priority, n.node_id))


@dataclass(frozen=True)
class Local:
    """What this node knows about itself, on its own clock.

    :param acting: this node's primary-only services are running (it acts as primary).
    :param epoch: the lease epoch this node holds, if it believes it holds one.
    :param trusted_until: monotonic deadline up to which it may act as primary: anchored at the
        *start* of the last successful renewal, so it always ends before the lease can expire.
    :param stopping: a clean stop was requested (SIGTERM): resign and hand over.
    :param grace_until: monotonic deadline of a grace window (after a DB failover) during which no
        other node is judged dead.
    :param db_alarm: set while the database cannot be trusted (two read-write nodes): the node writes
        to none of them and decides as if the database were unreachable. The text says why.
    """

    node_id: str
    acting: bool = False
    epoch: int | None = None
    trusted_until: float | None = None
    stopping: bool = False
    grace_until: float | None = None
    db_alarm: str | None = None


class Action(enum.Enum):
    STAY = "stay"  # nothing to change
    RENEW = "renew"  # holder: extend the lease (and start acting if not yet)
    ACQUIRE = "acquire"  # take the lease with a compare-and-set on its epoch, then act
    DEMOTE = "demote"  # stop acting as primary now (lost the lease, or the trust window ended)
    RESIGN = "resign"  # stop acting, then release the lease to ``target`` (clean stop, switchover)


@dataclass(frozen=True)
class Decision:
    """What to do now, and why (one line, logged by the agent).

    :param expected_epoch: for ACQUIRE/RENEW/RESIGN, the epoch the compare-and-set must find.
    :param target: for RESIGN, the node the lease is handed to (None: whoever is best).
    :param wake_in_s: when to decide again at the latest (a standby next in line wakes as the lease
        expires rather than a whole interval later).
    """

    action: Action
    reason: str
    expected_epoch: int | None = None
    target: str | None = None
    wake_in_s: float | None = None


class NodeStatus(enum.Enum):
    """Node states shown to the admin (after Milestone's)."""

    PRIM = "PRIM"  # primary with a healthy standby
    ALONE = "ALONE"  # primary with no online standby: no redundancy
    SECOND = "SECOND"  # standby
    STOP = "STOP"  # taken out of the cluster by the admin
    WAIT = "WAIT"  # starting, or waiting for the database or the lease


# --- registration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredNode:
    """A node's registry row as registration found it (what an undo puts back)."""

    node_id: str
    hardware_id: str
    name: str
    priority: int
    role: str
    admin_state: str
    heartbeat_age_s: float | None = None


@dataclass(frozen=True)
class LeaseRecord:
    """The lease row as registration found or left it; ``expires_at`` by the store's clock."""

    holder: str | None
    epoch: int
    expires_at: datetime | None
    timeline: int | None = None


@dataclass(frozen=True)
class Registration:
    """What :meth:`~appliance.ha.store.HaStore.register_node` changed, so that
    :meth:`~appliance.ha.store.HaStore.undo_registration` can put it back."""

    previous: RegisteredNode | None
    previous_addresses: tuple[str, ...]
    demoted: RegisteredNode | None  # a dead primary this registration demoted
    lease_before: LeaseRecord
    lease_after: LeaseRecord
    keepalive_s: float


# --- join codes and notifications ----------------------------------------------------------------------


class CodeState(enum.Enum):
    """Where a join code stands (by the store's clock)."""

    OUTSTANDING = "outstanding"  # may still be used
    CLAIMED = "claimed"  # a node fetched the credentials with it and has not registered yet (still usable by it)
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class JoinCodeInfo:
    """A join code as ``ha get join-codes`` shows it (never its secret)."""

    code_id: str
    issued_by: str  # the issuing node's name
    issued_by_id: str
    issued_at: datetime
    expires_in_s: float  # by the store's clock; negative once expired
    state: CodeState
    claimed_by: str | None = None  # hardware id of the node that fetched the credentials
    used_by: str | None = None  # name of the node that joined with it
    failures: int = 0


class ClaimOutcome(enum.Enum):
    """What the join service learns when it checks a code (the joining node learns less: see joinservice)."""

    OK = "ok"
    UNKNOWN = "unknown"  # no such code, or the secret does not match
    EXPIRED = "expired"
    USED = "used"
    REVOKED = "revoked"  # revoked by an admin, or burned by too many wrong secrets
    TAKEN = "taken"  # another node already fetched the credentials with it


@dataclass(frozen=True)
class Delivery:
    """One notification to send: the event (as its JSON document) on one channel."""

    event_seq: int
    channel: str
    attempts: int  # failed attempts so far
    event: dict[str, object]
    deadline_in_s: float  # by the store's clock: retries end then


@dataclass(frozen=True)
class Claimed:
    """What :meth:`~appliance.ha.store.HaStore.claim_deliveries` found: the deliveries this node now
    holds, and when (seconds from now, by the store's clock) another pending one may become due, if any."""

    deliveries: tuple[Delivery, ...]
    next_due_s: float | None
