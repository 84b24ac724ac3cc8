"""The HA decision: a pure function of a cluster snapshot, this node's local state and its clock.

No I/O, no clock reads: :func:`decide` is given ``now`` (this node's monotonic clock) and returns an
:class:`~appliance.ha.model.Decision` with a one-line reason; the runtime carries it out.

The timing rules (lease lifetime, trust window, renewal cadence, liveness window) live in
:mod:`appliance.ha.timing`; the rules of *who* acts live here:
* when the lease expires, only the highest-priority online node (ties: lowest node id) takes it, with
  a compare-and-set on the epoch; the previous holder, if still online, is preferred (no needless
  switch after a database outage); a planned successor (``handover_to``) takes it at once;
* a holder whose trust window ended steps down before anything else is considered;
* while the database cannot be trusted (two read-write nodes) the node decides as if it were
  unreachable.
"""

from __future__ import annotations

from dataclasses import replace

from appliance.ha.model import Action, ClusterView, Decision, Local, NodeState
from appliance.ha.timing import WAKE_SLACK_S, renew_every_s


def decide(view: ClusterView | None, local: Local, now: float) -> Decision:
    """Decide what this node does now.

    :param view: the snapshot, or None when the store could not be read.
    :param local: this node's own state.
    :param now: this node's monotonic clock.
    """
    trusted = local.trusted_until is not None and now < local.trusted_until
    if local.db_alarm is not None:
        # Writing to either of two read-write database nodes could fork the cluster's state: act as if
        # the database were unreachable (the primary self-fences when its trust window ends).
        unreachable = decide(None, replace(local, db_alarm=None), now)
        return Decision(unreachable.action, f"ALARM: {local.db_alarm}; writing to neither. {unreachable.reason}",
                        wake_in_s=unreachable.wake_in_s)
    if view is None:
        if local.acting and local.stopping:
            return Decision(Action.DEMOTE, "stopping with the database unreachable: stepping down (the lease "
                            "expires by itself)")
        if local.acting and not trusted:
            return Decision(Action.DEMOTE, "the database is unreachable and the trust window has ended: stepping down")
        if local.acting:
            left = (local.trusted_until or now) - now
            return Decision(Action.STAY, f"the database is unreachable; still trusted for {left:.1f} s",
                            wake_in_s=max(0.0, min(left, 1.0)))
        return Decision(Action.STAY, "the database is unreachable; waiting for it")
    if local.acting and not trusted:
        # Checked before anything else: after a pause the lease may already belong to someone else.
        return Decision(Action.DEMOTE, "the trust window ended before a renewal succeeded: stepping down")

    lease = view.lease
    keepalive = view.keepalive_s
    me = view.node(local.node_id)
    holder = view.node(lease.holder) if lease.holder else None
    holder_name = holder.name if holder else (lease.holder or "nobody")
    if me is None:
        if local.acting:
            return Decision(Action.DEMOTE, "this node is no longer registered in the cluster: stepping down")
        return Decision(Action.STAY, "this node is not registered in the cluster")

    if local.stopping or me.admin_state == "stopped":
        why = "stopping" if local.stopping else "taken out of the cluster (STOP)"
        if lease.holder == me.node_id and not lease.expired:
            successor = _best_other(view, me.node_id)
            return Decision(Action.RESIGN, f"{why}: handing the lease over to "
                            f"{successor.name if successor else 'whoever is next'}",
                            expected_epoch=lease.epoch, target=successor.node_id if successor else None)
        if local.acting:
            return Decision(Action.DEMOTE, f"{why}: stepping down")
        if local.stopping:
            return Decision(Action.STAY, "stopping: not the primary, nothing to hand over")
        return Decision(Action.STAY, f"{why}: not taking part in elections")

    if lease.holder == me.node_id:
        if local.epoch is not None and local.epoch != lease.epoch:
            return Decision(Action.DEMOTE, f"the lease moved to epoch {lease.epoch} without this node: stepping down")
        if lease.handover_to and lease.handover_to != me.node_id:
            target = view.node(lease.handover_to)
            if target is not None and target.admin_state == "active" and view.online(target):
                if lease.expired:
                    # Already released to it: wait for it to take over (resigning again would only
                    # wake everyone again), until it does or drops offline.
                    return Decision(Action.STAY, f"handed the lease over to {target.name}; waiting for it",
                                    wake_in_s=keepalive / 4)
                return Decision(Action.RESIGN, f"switchover requested: handing the lease over to {target.name}",
                                expected_epoch=lease.epoch, target=target.node_id)
        yielding = _yield_to(view, me)
        if yielding is not None:
            if lease.expired:  # released already: renewing would take it back
                return Decision(Action.STAY, f"{yielding.reason.split(':')[0]}: released the lease",
                                wake_in_s=keepalive / 4)
            return yielding
        return Decision(Action.RENEW, f"primary (epoch {lease.epoch}): renewing the lease",
                        expected_epoch=lease.epoch, wake_in_s=renew_every_s(keepalive))

    if local.acting:
        return Decision(Action.DEMOTE, f"the lease is held by {holder_name} (epoch {lease.epoch}): stepping down")

    if not lease.expired:
        nxt = [n for n in view.candidates() if n.node_id != lease.holder]
        first = bool(nxt) and nxt[0].node_id == me.node_id
        wake = min(keepalive, max(0.0, (lease.remaining_s or 0.0)) + WAKE_SLACK_S) if first else keepalive
        return Decision(Action.STAY, f"standby: {holder_name} is primary (epoch {lease.epoch})", wake_in_s=wake)

    # The lease is free or expired.
    if lease.handover_to == me.node_id:
        return Decision(Action.ACQUIRE, f"the lease was handed over to this node by {holder_name}",
                        expected_epoch=lease.epoch)
    if lease.handover_to is not None:
        target = view.node(lease.handover_to)
        if target is not None and target.admin_state == "active" and view.online(target):
            return Decision(Action.STAY, f"handover to {target.name} in progress", wake_in_s=keepalive / 4)
    if view.maintenance:
        return Decision(Action.STAY, "maintenance mode: automatic failover is paused", wake_in_s=keepalive)
    if local.grace_until is not None and now < local.grace_until:
        return Decision(Action.STAY, "grace window after a database failover: nobody is judged dead yet",
                        wake_in_s=min(keepalive, local.grace_until - now))
    candidates = view.candidates()
    if holder is not None and holder in candidates:
        lapsed_for = -(lease.remaining_s or 0.0)
        if lapsed_for <= keepalive:
            # Still online: it will renew (after a database outage, say); switching would gain nothing.
            return Decision(Action.STAY, f"the lease of {holder.name} lapsed but it is online: waiting for it "
                            "to renew", wake_in_s=keepalive / 2)
        # Online but not renewing for a whole interval (it can heartbeat but not renew): replace it.
        candidates = [n for n in candidates if n.node_id != holder.node_id]
    if not candidates:
        return Decision(Action.STAY, no_candidate_reason(view), wake_in_s=keepalive)
    best = candidates[0]
    if best.node_id == me.node_id:
        was = f"held by {holder_name}, epoch {lease.epoch}" if lease.holder else f"free, epoch {lease.epoch}"
        return Decision(Action.ACQUIRE, f"taking over: the lease is {was}, and this node is the "
                        "highest-priority online node", expected_epoch=lease.epoch)
    return Decision(Action.STAY, f"{best.name} is first in line to take over", wake_in_s=keepalive)


def _best_other(view: ClusterView, node_id: str) -> NodeState | None:
    return next((n for n in view.candidates() if n.node_id != node_id), None)


def _yield_to(view: ClusterView, me: NodeState) -> Decision | None:
    """The holder hands the role over by itself: it has priority 0 (never primary), or failback is on and
    a node of higher priority is online (a preferred node came back)."""
    if me.priority == 0:
        other = _best_other(view, me.node_id)
        return Decision(Action.RESIGN, "priority 0 (never primary): " + (
            f"handing the lease over to {other.name}" if other else "stepping down; no other node may take over"),
            expected_epoch=view.lease.epoch, target=other.node_id if other else None)
    if view.failback and not view.maintenance:
        better = next((n for n in view.candidates() if n.node_id != me.node_id and n.priority > me.priority), None)
        if better is not None:
            return Decision(Action.RESIGN, f"failback: {better.name} has a higher priority ({better.priority} > "
                            f"{me.priority}); handing the lease over to it", expected_epoch=view.lease.epoch,
                            target=better.node_id)
    return None


def no_candidate_reason(view: ClusterView) -> str:
    """Why no node may take a free lease (shown by the agents and by ``ha get nodes``)."""
    online = [n for n in view.nodes if view.online(n)]
    witnesses = [n.name for n in online if n.admin_state == "active" and n.priority == 0]
    stopped = [n.name for n in online if n.admin_state == "stopped"]
    parts = ["no node may take the lease"]
    if witnesses:
        parts.append(f"{', '.join(witnesses)} online with priority 0 (never primary)")
    if stopped:
        parts.append(f"{', '.join(stopped)} taken out of the cluster (STOP)")
    if not online:
        parts.append("no node is online")
    return ": ".join(parts[:1]) + (": " + "; ".join(parts[1:]) if len(parts) > 1 else "")

