"""``execute reboot`` and ``execute shutdown``, HA-aware: the primary hands its role over first.

:func:`plan` is the decision, pure over a cluster snapshot: if this node holds the lease and a
standby can take it (:func:`appliance.ha.switchover.choose`, the same rule as ``ha switchover``), the
role is handed over before the node goes down; otherwise the plan says what the cluster will live
through. The plan's text is shown above the confirmation question. :func:`execute` runs it: the
switchover through the core (:func:`appliance.ha.control.switchover`, which waits until the standby
holds the lease), then the power action through the privileged helper, which runs it a few seconds
later so that the shell can answer and write its audit record before logind ends the session.
If the switchover fails, the node stays up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import ApplianceError, CommandFailed, Conflict
from appliance.ha import control
from appliance.ha.model import ClusterView, NodeIdentity
from appliance.ha.session import cluster_snapshot
from appliance.ha.switchover import choose
from appliance.node import read_targets
from appliance.privileged.client import call_helper, check_available

VERBS = {"reboot": "reboot", "poweroff": "shut down"}
HELPER_TIMEOUT_S = 30


@dataclass(frozen=True)
class PowerPlan:
    action: str  # reboot | poweroff
    handover_to: str | None  # the node the primary role goes to first, if any
    text: str  # what will happen, for the confirmation

    def as_dict(self) -> dict[str, object]:
        return {"action": self.action, "handover_to": self.handover_to, "plan": self.text}


def plan(action: str, view: ClusterView | None, me: NodeIdentity | None, *, local: bool,
         unreachable: str | None = None) -> PowerPlan:
    """What ``execute reboot|shutdown`` will do on this node.

    :param view: the cluster as its database shows it now; None if it could not be read.
    :param local: the node runs on its own database (standalone: no cluster to hand over to).
    :param unreachable: why the cluster could not be read (with ``view`` None).
    """
    verb = VERBS[action]
    if local:
        return PowerPlan(action, None, f"This node runs on its own database (standalone): it will {verb}; "
                         "its services stop until it is back.")
    if view is None or me is None:
        return PowerPlan(action, None, f"The cluster's database cannot be read ({unreachable or 'unknown'}): this "
                         f"node will {verb} without handing anything over. If it is the primary, its "
                         "primary-only services stop and a standby takes over when the lease expires.")
    holder = view.holder()
    if holder is None or holder.node_id != me.node_id:
        primary = f"the primary is {holder.name}" if holder is not None else "there is no primary now"
        return PowerPlan(action, None, f"This node is a standby ({primary}): it will {verb}; the cluster "
                         "keeps running.")
    try:
        _holder, target = choose(view, None)
    except ApplianceError as exc:
        return PowerPlan(action, None, f"This node is the primary and no standby can take over ({exc.message}): "
                         f"it will {verb}, and the cluster has no primary until a node takes the role.")
    return PowerPlan(action, target.name, f"This node is the primary: the role is handed over to {target.name} "
                     f"first (switchover), then this node will {verb} and rejoin as a standby.")


def current_plan(config: Config, action: str) -> PowerPlan:
    """:func:`plan` for this node now, reading the cluster through a short-lived store.

    :raises NotConfigured: the privileged helper is not available (nothing would go down: say so
        before anything, a switchover included, happens).
    """
    check_available(config)

    try:
        _origin, active = read_targets(config)
    except ApplianceError as exc:  # not initialised, or unreadable credentials: nothing to hand over
        return plan(action, None, None, local=False, unreachable=exc.message)
    try:
        view, _active, me = cluster_snapshot(config)
    except ApplianceError as exc:
        return plan(action, None, None, local=active.local, unreachable=exc.message)
    return plan(action, view, me, local=active.local)


def execute(config: Config, chosen: PowerPlan, clock: Clock) -> Iterator[str]:
    """Hand over if planned, then ask the helper for the power action. Lines say what happened."""
    check_available(config)  # never hand over for a power action that cannot follow
    if chosen.handover_to is not None:
        yield f"Switching over to {chosen.handover_to}..."
        try:
            done = control.switchover(config, chosen.handover_to, clock)
        except (Conflict, CommandFailed) as exc:
            raise CommandFailed(f"the switchover to {chosen.handover_to} failed ({exc.message}); this node stays up",
                                hint="see `ha get nodes`; retry, or take this node out with `ha stop` first") from None
        yield f"Switched over from {done.source} to {done.target} in {done.seconds:.2f} s (epoch {done.epoch})."
    report = call_helper(config, ["power", chosen.action], timeout_s=HELPER_TIMEOUT_S)
    yield f"This node will {VERBS[chosen.action]} now ({report})."
