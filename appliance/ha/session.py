"""The shell's short-lived access to the cluster's HA state: one store, one connection, then closed.

The agent keeps its own long-lived store; a shell command opens one for the length of the command,
with the timeouts a waiting person needs (:func:`~appliance.ha.timing.report_timeouts`), on the
node's active target as the credential set has it. For a multi-host target the shell never lets libpq
pick "the first read-write host": it asks every host once and applies the agent's rule
(:func:`~appliance.ha.dbnodes.choose_writer`) with the agent's memory of the node it follows, so a
stale old primary that came back read-write is neither read nor written by the shell either.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from appliance.config import Config
from appliance.db.target import DbTarget
from appliance.ha.dbmonitor import FollowedFile, target_key
from appliance.ha.dbnodes import HostState, WriterChoice, choose_writer
from appliance.ha.dbwatch import probe_hosts
from appliance.ha.model import ClusterView, NodeIdentity
from appliance.ha.pgstore import PgStore
from appliance.ha.store import StoreUnavailable
from appliance.ha.timing import report_timeouts
from appliance.node import ActiveTarget, identity, read_targets


def probe(active: ActiveTarget) -> list[HostState]:
    """Every database host of the active target, asked once now."""
    return probe_hosts(active.target, report_timeouts(), "appliance-shell:probe")


def writer_choice(config: Config, active: ActiveTarget, hosts: list[HostState]) -> WriterChoice:
    """The node the cluster writes to, by the agent's rule and with the agent's memory."""
    return writer_choice_for(config, active.target, active.schema, hosts)


def writer_choice_for(config: Config, target: DbTarget, schema: str, hosts: list[HostState]) -> WriterChoice:
    followed = FollowedFile(config.paths.state_dir).load(target_key(target, schema))
    return choose_writer(hosts, followed, followed.system_id if followed else None)


@contextmanager
def cluster_store(config: Config) -> Iterator[tuple[PgStore, ActiveTarget, NodeIdentity]]:
    """The store of the cluster this node belongs to (its local database while standalone), closed after.

    Its connection goes to the node the cluster writes to; if no node may be written to now, the first
    call raises :class:`StoreUnavailable` saying why.
    """
    _origin, active = read_targets(config)
    with store_for(config, active) as store:
        yield store, active, identity(config)


@contextmanager
def store_for(config: Config, active: ActiveTarget) -> Iterator[PgStore]:
    """The store of ``active`` (a cluster this node is leaving, say), closed after; the writer rule as above."""
    me = identity(config)

    def pick() -> tuple[str, int]:
        choice = writer_choice(config, active, probe(active))
        if choice.writer is None:
            raise StoreUnavailable(f"HA store: {choice.alarm or 'no read-write database node answers'}",
                                   "See 'ha get nodes': it shows every database node and what it answered.")
        return choice.writer.address

    multi = len(active.target.host_ports()) > 1
    store = PgStore(active.target, active.schema, application_name=f"appliance-shell:{me.name}"[:63],
                    timeouts=report_timeouts(), pick_host=pick if multi else None)
    try:
        yield store
    finally:
        store.close()


def cluster_snapshot(config: Config) -> tuple[ClusterView, ActiveTarget, NodeIdentity]:
    """One consistent read of the cluster, over a connection opened and closed for it."""
    with cluster_store(config) as (store, active, me):
        return store.snapshot(), active, me
