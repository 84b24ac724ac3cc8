"""What the shell's ``ha`` commands ask of the cluster: one request each, through the store.

Each function opens the cluster's store for the length of the request (:mod:`appliance.ha.session`),
makes one contract call (or the switchover, :mod:`appliance.ha.switchover`) and returns what the
command reports. The agents act on the change themselves: every write wakes them (LISTEN/NOTIFY).
Every change is recorded as an event in the same transaction (``setting``, ``maintenance``,
``node_stop``/``node_start``, ``switchover``), attributed to the node the command runs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.clock import Clock
from appliance.config import Config
from appliance.errors import NotConfigured
from appliance.ha import switchover as switchover_
from appliance.ha.events import Event, EventKind, NewEvent
from appliance.ha.model import ClusterView, NodeIdentity, NodeState
from appliance.ha.session import cluster_store
from appliance.ha.settings import Setting


def _setting_event(me: NodeIdentity, key: str, old: Any, new: Any, node: str | None = None) -> NewEvent:
    details: dict[str, Any] = {"key": key, "old": old, "new": new}
    if node is not None:
        details["node"] = node
    return NewEvent(EventKind.SETTING, me.name, me.node_id, details)


def set_keepalive(config: Config, seconds: int) -> float:
    """Set the cluster's keepalive interval; return the one it replaced."""
    with cluster_store(config) as (store, _active, me):
        old = store.snapshot().keepalive_s
        store.set_setting(Setting.KEEPALIVE, str(seconds),
                          event=_setting_event(me, "keepalive_interval_s", old, seconds))
    return old


def set_db_check(config: Config, seconds: int) -> float:
    """Set the cluster's DB check interval; return the one it replaced."""
    with cluster_store(config) as (store, _active, me):
        old = store.snapshot().db_check_s
        store.set_setting(Setting.DB_CHECK, str(seconds), event=_setting_event(me, "db_check_interval_s", old, seconds))
    return old


def set_vip(config: Config, address: str | None) -> str | None:
    """Set (or with None remove) the cluster's virtual IP; return the one it replaced, if any."""
    with cluster_store(config) as (store, _active, me):
        old = store.snapshot().vip
        store.set_setting(Setting.VIP, address or "", event=_setting_event(me, "vip", old, address))
    return old


def set_failback(config: Config, on: bool) -> bool:
    """Turn automatic failback on or off; return what it was."""
    with cluster_store(config) as (store, _active, me):
        old = store.snapshot().failback
        store.set_setting(Setting.FAILBACK, "on" if on else "off",
                          event=_setting_event(me, "failback", "on" if old else "off", "on" if on else "off"))
    return old


def set_maintenance(config: Config, on: bool) -> None:
    with cluster_store(config) as (store, _active, me):
        store.set_setting(Setting.MAINTENANCE, "on" if on else "off",
                          event=NewEvent(EventKind.MAINTENANCE, me.name, me.node_id, {"on": on}))


def set_admin_state(config: Config, state: str) -> None:
    """Take this node out of the cluster (``stopped``) or back in (``active``)."""
    with cluster_store(config) as (store, _active, me):
        kind = EventKind.NODE_STOP if state == "stopped" else EventKind.NODE_START
        why = "taken out of the cluster (ha stop)" if state == "stopped" else "back in the cluster (ha start)"
        store.set_admin_state(me.node_id, state, event=NewEvent(kind, me.name, me.node_id, {"why": why}))


def switchover(config: Config, to: str | None, clock: Clock) -> switchover_.SwitchoverDone:
    with cluster_store(config) as (store, _active, me):
        return switchover_.switchover(store, to, clock, by=me)


@dataclass(frozen=True)
class NodeChange:
    node: str
    old: Any
    this_node: bool
    view: ClusterView


def named_node(view: ClusterView, name: str | None, me: NodeIdentity) -> NodeState:
    """The node called ``name`` (this node when None). :raises NotConfigured: none such."""
    node = view.node(me.node_id) if name is None else view.named(name)
    if node is None:
        if name is None:
            raise NotConfigured(f"this node ({me.name}) is not registered in the cluster",
                                hint="run redirect (or appliance-admin init) again")
        known = ", ".join(n.name for n in view.nodes)
        raise NotConfigured(f"no node named {name} in this cluster", hint=f"nodes: {known}")
    return node


def set_priority(config: Config, priority: int, name: str | None) -> NodeChange:
    """Set a node's priority (0: never primary); return what it was."""
    with cluster_store(config) as (store, _active, me):
        view = store.snapshot()
        node = named_node(view, name, me)
        store.set_priority(node.node_id, priority, event=_setting_event(me, "priority", node.priority, priority,
                                                                         node.name))
    return NodeChange(node.name, node.priority, node.node_id == me.node_id, view)


def set_boot_start(config: Config, mode: str, name: str | None) -> NodeChange:
    """Set what a node does when its agent starts; return what it was."""
    with cluster_store(config) as (store, _active, me):
        view = store.snapshot()
        node = named_node(view, name, me)
        store.set_boot_start(node.node_id, mode, event=_setting_event(me, "boot_start", node.boot_start, mode,
                                                                      node.name))
    return NodeChange(node.name, node.boot_start, node.node_id == me.node_id, view)


def preview_priority(config: Config, priority: int, name: str | None) -> str | None:
    """What the confirmation says when a priority change moves the primary role (None: nothing to say)."""
    with cluster_store(config) as (store, _active, me):
        view = store.snapshot()
    node = named_node(view, name, me)
    holder = view.holder()
    if holder is None or priority == node.priority:
        return None
    if holder.node_id == node.node_id and priority == 0:
        other = next((n for n in view.candidates() if n.node_id != node.node_id), None)
        return (f"{node.name} is the primary: with priority 0 it hands the role over to {other.name}." if other else
                f"{node.name} is the primary and no other node may take over: the cluster will have no primary.")
    if view.failback and holder.node_id != node.node_id and priority > holder.priority and view.online(node):
        return f"Failback is on: {node.name} takes the primary role over from {holder.name}."
    return None


def events(config: Config, *, since_s: float | None, limit: int, kind: str | None) -> list[Event]:
    with cluster_store(config) as (store, _active, _me):
        return store.events(since_s=since_s, limit=limit, kind=kind)
