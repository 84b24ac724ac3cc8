"""A planned switchover: choose the successor, ask the primary to hand over, wait for it, report.

The primary's agent does the handover itself (it stops its primary-only services, then releases the
lease naming the successor, which takes it at once: see :func:`~appliance.ha.decide.decide`); this
module only records the request and watches the lease move, within
:func:`~appliance.ha.timing.switchover_wait_s`. If it does not move in time, the request is withdrawn
so that it cannot take effect later, unexpectedly.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.clock import Clock
from appliance.errors import CommandFailed, Conflict, NotConfigured
from appliance.ha.events import EventKind, NewEvent
from appliance.ha.model import ClusterView, NodeIdentity, NodeState
from appliance.ha.store import HaStore
from appliance.ha.timing import switchover_wait_s

POLL_S = 0.05  # how often the lease is looked at while waiting


@dataclass(frozen=True)
class SwitchoverDone:
    source: str  # the previous primary's name
    target: str  # the new primary's name
    seconds: float  # from the request to the target holding the lease
    epoch: int  # the lease's epoch under the new primary


def choose(view: ClusterView, to: str | None) -> tuple[NodeState, NodeState]:
    """The current primary and the node to hand over to (``to``, or the best online standby).

    :raises Conflict: no primary, no standby online, the target is the primary, stopped or offline.
    :raises NotConfigured: no node named ``to``.
    """
    holder = view.holder()
    if holder is None:
        raise Conflict("there is no primary to switch over from", hint="see 'ha get nodes'")
    if to:
        target = view.named(to)
        if target is None:
            raise NotConfigured(f"no node named {to} in this cluster", hint="see 'ha get nodes'")
        if target.node_id == holder.node_id:
            raise Conflict(f"{target.name} is already the primary")
    else:
        found = next((n for n in view.candidates() if n.node_id != holder.node_id), None)
        if found is None:
            raise Conflict("no standby is online to take over", hint="see 'ha get nodes'")
        target = found
    if target.priority == 0:
        raise Conflict(f"{target.name} has priority 0 (never primary)",
                       hint=f"give it a priority above 0 first: ha set priority N --node {target.name}")
    if target.admin_state != "active":
        raise Conflict(f"{target.name} is taken out of the cluster (STOP)", hint=f"run 'ha start' on {target.name}")
    if not view.online(target):
        raise Conflict(f"{target.name} is offline", hint="choose an online standby (see 'ha get nodes')")
    return holder, target


def switchover(store: HaStore, to: str | None, clock: Clock, *, by: NodeIdentity | None = None) -> SwitchoverDone:
    """Hand the primary role to ``to`` (or the best online standby) and wait until it holds the lease.

    ``by``: the node the request is made on, recorded with the ``switchover`` event (requested, or
    withdrawn; the new primary records it done, with its duration).

    :raises CommandFailed: it did not complete in time (the request was withdrawn).
    """
    view = store.snapshot()
    holder, target = choose(view, to)
    started = clock.monotonic()

    def event(phase: str) -> NewEvent | None:
        return None if by is None else NewEvent(EventKind.SWITCHOVER, by.name, by.node_id,
                                                {"phase": phase, "from": holder.name, "to": target.name})

    store.request_handover(target.node_id, event=event("requested"))
    deadline = started + switchover_wait_s(view.keepalive_s)
    while clock.monotonic() < deadline:
        lease = store.snapshot().lease
        if lease.holder == target.node_id and not lease.expired:
            return SwitchoverDone(holder.name, target.name, clock.monotonic() - started, lease.epoch)
        clock.sleep(POLL_S)
    store.request_handover(None, event=event("withdrawn"))
    raise CommandFailed(f"the switchover to {target.name} did not complete within {deadline - started:.0f} s; "
                        "the request was withdrawn", hint="check both nodes' agents with 'ha get status'")
