"""App nodes without a database of their own: for many agents on one machine (``bench/ha_scale.py``).

:class:`BareHaCluster` is an :class:`~appliance.testkit.hacluster.HaCluster` whose nodes skip
``appliance-admin init`` and ``redirect``:
what those leave on a node is written directly: the master key, the
hardware id, the node id and the credential set (the shared database as origin and active target), and
the node's registration through the product's store. The schema is deployed once. A node then costs
its agent and nothing else: no local PostgreSQL, no shell process.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from appliance import credentials
from appliance.config import Config
from appliance.db import schema as S
from appliance.db.connect import connect
from appliance.db.target import DbTarget, Timeouts
from appliance.ha.pgstore import PgStore
from appliance.node import ActiveTarget, identity, write_targets
from appliance.testkit.hacluster import SCHEMA, HaCluster, HaNode
from appliance.testkit.pghost import free_port


class BareHaCluster(HaCluster):
    """A :class:`HaCluster` of agents only (no local database, no init, no redirect per node)."""

    def build(self, *, start: bool = True) -> HaCluster:
        names = [f"node{i + 1}" for i in range(self._count)]
        for name in names:
            self.nodes[name] = HaNode(self.base, name, self._local, self.demo_log,
                                      free_port() if self._health else None)
        target = DbTarget(hosts=("127.0.0.1",), ports=(self.db.port,), user=self.remote.user,
                          password=self.remote.password, dbname=self.remote.dbname)
        ids = register_directly(target, SCHEMA, [self.nodes[n].config for n in names])
        with self.store() as store:
            for name, priority in zip(names, self._priorities, strict=False):
                self.nodes[name].node_id = ids[name]
                store.set_priority(ids[name], priority)
        self.set_keepalive(self.keepalive_s)
        if start:
            for name in names:
                self.start_agent(name)
        return self


def register_directly(target: DbTarget, schema: str, configs: Sequence[Config]) -> dict[str, str]:
    """Deploy ``schema`` on ``target`` and make every node of ``configs`` a member (the first as primary);
    returns node name -> node id."""
    with connect(target, application_name="testkit-bare", timeouts=Timeouts(5, 30), autocommit=True) as conn, \
            conn.transaction():
        cluster_id = S.deploy(conn, schema, deployed_by="testkit", product_version="testkit")
    ids: dict[str, str] = {}
    with PgStore(target, schema, application_name="testkit-bare") as store:
        for index, config in enumerate(configs):
            state = config.paths.state_dir
            state.mkdir(parents=True, exist_ok=True)
            credentials.backend_for(config).initialise()
            (state / "hardware-id").write_text(config.node.hardware_id + "\n")
            (state / "node-id").write_text(f"{uuid.uuid4()}\n")
            role = "primary" if index == 0 else "standby"
            active = ActiveTarget(target, schema, cluster_id, role, local=False)
            write_targets(config, active, active)
            me = identity(config)
            store.register_node(me, role=role, product_version="testkit")
            ids[config.node.default_hostname] = me.node_id
    return ids
