"""The simulation's database as two nodes that can fail over and split: defect 1 of the repmgr issue, modelled.

:class:`PairSim` is a :class:`~tests.unit.ha_sim.Sim` whose shared store is one of two database nodes, ``A``
(first in every app node's host list) and ``B``:

* ``failover()``: A dies; B, a replica that had every committed change, is promoted (timeline + 1) and
  becomes the store the cluster lives on. Every connection to A breaks.
* ``restart_stale()``: A starts again as it was, read-write, on its old timeline: a second read-write
  node whose data the real cluster will throw away when it is rewound.
* ``blip(db)``: every connection to ``db`` is cut (sessions terminated); clients reconnect.

Every app node's connection (:class:`PairNodeStore`) sticks to the database node it connected to until
that connection breaks, then chooses again, in one of two ways:

* ``"first"``: libpq's ``target_session_attrs=read-write``: the first read-write host in the list;
* ``"rule"``: the product's rule (:func:`appliance.ha.dbnodes.choose_writer`) with the node's memory of
  the node it followed, applied at every call, as the agent's DB-node monitor does at every tick.

A call that lands on a stale database node is recorded as a problem (``wrote ... to the stale database
node A``): its effects are lost when the node is rewound, and a lease taken there makes a second primary.
"""

from __future__ import annotations

import copy
from typing import Any

from appliance.ha.dbnodes import Followed, HostState, Verdict, choose_writer
from appliance.ha.model import ClusterView, NodeIdentity, Registration
from appliance.ha.settings import Setting
from appliance.ha.store import HaStore, StoreUnavailable
from tests.unit.ha_sim import CheckedStore, NodeStore, Sim, SimNode

WRITES = frozenset({"heartbeat", "try_acquire", "renew", "release", "request_handover", "set_admin_state",
                    "set_setting", "rename", "set_priority", "seed_settings", "register_node", "undo_registration",
                    "unregister_node"})


class PairSim(Sim):
    def __init__(self, keepalive_s: float, client: str) -> None:
        super().__init__(keepalive_s)
        assert client in ("first", "rule")
        self.client = client
        self.dbs: dict[str, CheckedStore | None] = {"A": self.store, "B": None}
        self.up = {"A": True, "B": False}  # B is a standby: up for replication, not for sessions here
        self.writable = {"A": True, "B": False}
        self.timelines = {"A": 1, "B": 1}
        self.stale: set[str] = set()
        self.generation = {"A": 0, "B": 0}  # a connection made before a cut is broken
        self.conn: dict[str, tuple[str, int] | None] = {}
        self.followed: dict[str, Followed | None] = {}
        self.stale_writes = 0

    def node_store(self, node: SimNode) -> HaStore:
        return PairNodeStore(self, node)

    # --- database faults -----------------------------------------------------------------------------

    def failover(self) -> None:
        a = self.dbs["A"]
        assert a is not None
        self.dbs["B"] = b = _replica(a, self)
        b.timeline = self.timelines["B"] = self.timelines["A"] + 1
        self.store = b  # the cluster lives on B from now on (the invariants look at it)
        self.up["A"], self.writable["A"] = False, False
        self.up["B"], self.writable["B"] = True, True
        self.generation["A"] += 1
        self.log(f"database failover: A dies, B promoted (timeline {b.timeline})")

    def restart_stale(self) -> None:
        self.up["A"], self.writable["A"] = True, True
        self.stale.add("A")
        self.log("database node A started again as a primary (stale, timeline 1)")

    def blip(self, db: str) -> None:
        self.generation[db] += 1
        self.log(f"every session on database node {db} terminated")

    def hosts(self) -> list[HostState]:
        return [HostState(name, 5432, self.up[name], self.writable[name], self.timelines[name], "sys")
                for name in ("A", "B")]

    # --- routing ------------------------------------------------------------------------------------------

    def route(self, node_id: str, method: str) -> CheckedStore:
        """The database node ``node_id``'s call lands on, by its client's way of choosing."""
        conn = self.conn.get(node_id)
        if self.client == "rule":
            choice = choose_writer(self.hosts(), self.followed.get(node_id), "sys")
            if choice.writer is None or choice.verdict is Verdict.REFUSE:
                self.conn[node_id] = None
                raise StoreUnavailable(f"{node_id}: {choice.alarm or 'no read-write database node'}")
            self.followed[node_id] = Followed(choice.writer.host, 5432, choice.writer.timeline, "sys")
            name = choice.writer.host
        elif conn is not None and self.up[conn[0]] and conn[1] == self.generation[conn[0]]:
            name = conn[0]  # libpq keeps its session until it breaks
        else:
            name = next((n for n in ("A", "B") if self.up[n] and self.writable[n]), "")
            if not name:
                self.conn[node_id] = None
                raise StoreUnavailable(f"{node_id}: no read-write database node")
        self.conn[node_id] = (name, self.generation[name])
        db = self.dbs[name]
        assert db is not None
        if name in self.stale and method in WRITES:
            self.stale_writes += 1
            self.fail(f"{node_id} wrote {method} to the stale database node {name}")
        return db


class PairNodeStore(NodeStore):
    """One node's connection: the calls of :class:`NodeStore`, each on the database node it chooses."""

    sim: PairSim

    def _on(self, method: str, *args: Any, **kwargs: Any) -> Any:
        def call(*a: Any) -> Any:
            return getattr(self.sim.route(self.node.node_id, method), method)(*a, **kwargs)

        call.__name__ = method
        return self._call(call, *args)

    def heartbeat(self, node_id: str) -> None:
        self._on("heartbeat", node_id)

    def snapshot(self) -> ClusterView:
        view: ClusterView = self._on("snapshot")
        return view

    def try_acquire(self, node_id: str, expected_epoch: int, ttl_s: float) -> int | None:
        epoch: int | None = self._on("try_acquire", node_id, expected_epoch, ttl_s)
        return epoch

    def renew(self, node_id: str, epoch: int, ttl_s: float) -> bool:
        return bool(self._on("renew", node_id, epoch, ttl_s))

    def release(self, node_id: str, epoch: int, handover_to: str | None) -> bool:
        released = bool(self._on("release", node_id, epoch, handover_to))
        if released:
            self.sim.notify_all()
        return released

    def request_handover(self, target: str | None) -> None:
        self._on("request_handover", target)
        self.sim.notify_all()

    def set_admin_state(self, node_id: str, state: str) -> None:
        self._on("set_admin_state", node_id, state)
        self.sim.notify_all()

    def set_setting(self, key: Setting | str, value: str) -> None:
        self._on("set_setting", key, value)
        self.sim.notify_all()

    def rename(self, node_id: str, name: str) -> None:
        self._on("rename", node_id, name)

    def set_priority(self, node_id: str, priority: int) -> None:
        self._on("set_priority", node_id, priority)

    def seed_settings(self, values: dict[Setting, str]) -> None:
        self._on("seed_settings", values)

    def register_node(self, me: NodeIdentity, *, role: str, product_version: str) -> Registration:
        done: Registration = self._on("register_node", me, role=role, product_version=product_version)
        return done

    def undo_registration(self, me: NodeIdentity, done: Registration) -> None:
        self._on("undo_registration", me, done)

    def unregister_node(self, node_id: str) -> None:
        self._on("unregister_node", node_id)


def _replica(primary: CheckedStore, sim: Sim) -> CheckedStore:
    """A copy of ``primary``'s state, as a streaming standby that had every commit holds it."""
    replica = CheckedStore(sim, float(primary.settings[Setting.KEEPALIVE]))
    for attr in ("_rows", "holder", "epoch", "expires_at", "handover_to", "settings", "_previous_keepalive",
                 "lease_timeline", "acquires"):
        setattr(replica, attr, copy.deepcopy(getattr(primary, attr)))
    return replica


def new_pair_sim(priorities: list[int], keepalive_s: float, client: str) -> PairSim:
    sim = PairSim(keepalive_s, client)
    for i, prio in enumerate(priorities):
        sim.add_node(f"n{i}", prio)
        sim.start(f"n{i}", 0.0)
    return sim
