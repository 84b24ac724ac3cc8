"""What the shell's ``ha`` commands ask of the cluster: one request each, through the store.

Each function opens the cluster's store for the length of the request (:mod:`appliance.ha.session`),
makes one contract call (or the switchover, :mod:`appliance.ha.switchover`) and returns what the
command reports. The agents act on the change themselves: every write wakes them (LISTEN/NOTIFY).
"""

from __future__ import annotations

from appliance.clock import Clock
from appliance.config import Config
from appliance.ha import switchover as switchover_
from appliance.ha.session import cluster_store
from appliance.ha.settings import Setting


def set_keepalive(config: Config, seconds: int) -> float:
    """Set the cluster's keepalive interval; return the one it replaced."""
    with cluster_store(config) as (store, _active, _me):
        old = store.snapshot().keepalive_s
        store.set_setting(Setting.KEEPALIVE, str(seconds))
    return old


def set_db_check(config: Config, seconds: int) -> float:
    """Set the cluster's DB check interval; return the one it replaced."""
    with cluster_store(config) as (store, _active, _me):
        old = store.snapshot().db_check_s
        store.set_setting(Setting.DB_CHECK, str(seconds))
    return old


def set_vip(config: Config, address: str | None) -> str | None:
    """Set (or with None remove) the cluster's virtual IP; return the one it replaced, if any."""
    with cluster_store(config) as (store, _active, _me):
        old = store.snapshot().vip
        store.set_setting(Setting.VIP, address or "")
    return old


def set_maintenance(config: Config, on: bool) -> None:
    with cluster_store(config) as (store, _active, _me):
        store.set_setting(Setting.MAINTENANCE, "on" if on else "off")


def set_admin_state(config: Config, state: str) -> None:
    """Take this node out of the cluster (``stopped``) or back in (``active``)."""
    with cluster_store(config) as (store, _active, me):
        store.set_admin_state(me.node_id, state)


def switchover(config: Config, to: str | None, clock: Clock) -> switchover_.SwitchoverDone:
    with cluster_store(config) as (store, _active, _me):
        return switchover_.switchover(store, to, clock)
