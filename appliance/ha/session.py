"""The shell's short-lived access to the cluster's HA state: one store, one connection, then closed.

The agent keeps its own long-lived store; a shell command opens one for the length of the command,
with the timeouts a waiting person needs (:func:`~appliance.ha.timing.report_timeouts`), on the
node's active target as the credential set has it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from appliance.config import Config
from appliance.ha.model import ClusterView, NodeIdentity
from appliance.ha.pgstore import PgStore
from appliance.ha.timing import report_timeouts
from appliance.node import ActiveTarget, identity, read_targets


@contextmanager
def cluster_store(config: Config) -> Iterator[tuple[PgStore, ActiveTarget, NodeIdentity]]:
    """The store of the cluster this node belongs to (its local database while standalone), closed after."""
    me = identity(config)
    _origin, active = read_targets(config)
    store = PgStore(active.target, active.schema, application_name=f"appliance-shell:{me.name}"[:63],
                    timeouts=report_timeouts())
    try:
        yield store, active, me
    finally:
        store.close()


def cluster_snapshot(config: Config) -> tuple[ClusterView, ActiveTarget, NodeIdentity]:
    """One consistent read of the cluster, over a connection opened and closed for it."""
    with cluster_store(config) as (store, active, me):
        return store.snapshot(), active, me
